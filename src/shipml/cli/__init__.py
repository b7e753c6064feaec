"""The ``shipml`` command: a thin layer over the library.

Each module in this package that defines ``register(group)`` adds its commands; this file only builds the group.
Commands load on first use (``COMMANDS`` names each one's module): ``shipml serve`` imports the server and
nothing of the training side (pandas, pyarrow, the evaluation code), which keeps a serving process small.
"""

from __future__ import annotations

import importlib

import click

from shipml.cli._common import JSON_HELP, REGISTRY_HELP, Context, add_shared_options

#: command name -> the module of this package whose ``register`` adds it
COMMANDS: dict[str, str] = {
    "alias": "models", "build": "build", "canary": "releases", "delete": "models", "drift": "drift",
    "evaluate": "evaluate", "export": "export", "feedback": "feedback", "gc": "maintenance",
    "history": "models", "import": "importing", "k8s": "k8s", "loadtest": "loadtest", "locustfile": "loadtest",
    "models": "models", "monitor": "monitor",
    "predict": "batch", "predict-sample": "predict_sample", "promote": "evaluate", "ray": "ray_serve",
    "registry": "maintenance",
    "rollback": "releases", "serve": "serve", "show": "models", "token": "token", "versions": "models",
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is asked for (or listed in --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Every command takes --registry and --json after its name too (see shipml.cli._common)."""
        super().add_command(add_shared_options(cmd), name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"{__name__}.{module}").register(self)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--registry", envvar="SHIPML_HOME", metavar="PATH", help=REGISTRY_HELP)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + " Also accepted after the command name.")
@click.version_option(package_name="shipml")
@click.pass_context
def cli(ctx: click.Context, registry: str | None, as_json: bool) -> None:
    """shipml: package, register, validate and serve machine-learning models."""
    ctx.obj = Context(registry_uri=registry, as_json=as_json)


def main() -> None:
    cli.main(prog_name="shipml", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main()
