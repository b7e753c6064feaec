"""The ``shipml`` command: a thin layer over the library.

Each module in this package that defines ``register(group)`` adds its commands; this file only builds the group
and turns library errors into one clean line and a non-zero exit code.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from shipml.cli._common import Context


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--registry", envvar="SHIPML_HOME", metavar="PATH",
              help="Registry location (default: $SHIPML_HOME or ~/.shipml).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.version_option(package_name="shipml")
@click.pass_context
def cli(ctx: click.Context, registry: str | None, as_json: bool) -> None:
    """shipml: package, register, validate and serve machine-learning models."""
    ctx.obj = Context(registry_uri=registry, as_json=as_json)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(cli)


_register_commands()


def main() -> None:
    cli.main(prog_name="shipml", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main()
