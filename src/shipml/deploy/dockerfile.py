"""The Dockerfile of a shipml image, and the checks on the image references that go into it.

Two stages: the builder makes a virtual environment at ``/opt/venv`` (``python3 -m venv``, so it works on
``python:3.11-slim`` and on a Debian base with Debian's python3 alike) and pip-installs the pinned requirements
into it; the final stage starts again from the base, copies only that venv (pip removed, no compilers, no
caches), the models and the spec, and runs as a fixed non-root uid. Everything under ``/app`` belongs to root and
is read-only for the server. The file is hadolint clean (tests/deploy/test_container_context.py runs it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from shipml.errors import SpecError

APP_DIR = "/app"
REGISTRY_DIR = f"{APP_DIR}/registry"
SPEC_PATH = f"{APP_DIR}/shipml.yaml"
VENV_DIR = "/opt/venv"
UID = 10001
USER_NAME = "shipml"

# name[:tag][@digest], with an optional registry host[:port] - the grammar of docker's reference package, loosely.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# A first component is a registry host only if it is localhost, has a dot or has a port (as docker decides).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:(?:localhost|{_LABEL}(?:\.{_LABEL})+)(?::[0-9]+)?/|{_LABEL}:[0-9]+/)"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_NAME_RE = re.compile(rf"{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(_TAG)
_REF_RE = re.compile(rf"(?P<name>{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*)(?::(?P<tag>{_TAG}))?"
                     r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?")


def check_image_name(name: str) -> str:
    """An image name without tag (``shipml-churn``, ``registry.example:5000/team/churn``)."""
    if len(name) > 255 or not _NAME_RE.fullmatch(name):
        raise SpecError(f"invalid image name {name!r}: use lowercase letters, digits and '.', '_', '-' separators,"
                        " with an optional registry host and '/'-separated path")
    return name


def check_image_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise SpecError(f"invalid image tag {tag!r}: use up to 128 letters, digits, '_', '.' or '-',"
                        " not starting with '.' or '-'")
    return tag


def check_image_ref(ref: str, what: str = "image") -> str:
    """A full reference (``python:3.11-slim``, ``mirror.local/library/python:3.11-slim@sha256:...``)."""
    if len(ref) > 512 or not _REF_RE.fullmatch(ref):
        raise SpecError(f"invalid {what} reference {ref!r}: expected NAME[:TAG][@sha256:DIGEST] such as"
                        " python:3.11-slim")
    return ref


def split_image_ref(ref: str) -> tuple[str, str | None]:
    """``name:tag`` → (name, tag); ``name`` → (name, None). The ':' of a registry port is not a tag."""
    m = _REF_RE.fullmatch(ref)
    if m is None or m.group("digest"):
        raise SpecError(f"invalid image reference {ref!r}: expected NAME or NAME:TAG such as shipml-churn:1.2.0")
    return m.group("name"), m.group("tag")


@dataclass(frozen=True)
class DockerfileInputs:
    """What the Dockerfile is made from; every string here has been checked (no newlines, no quotes)."""

    base: str
    port: int
    title: str
    version: str
    models: tuple[str, ...]  # name:version, one per packaged model
    shipml_version: str
    has_wheels: bool
    system_packages: tuple[str, ...] = ()  # Debian packages the frameworks load at run time (libgomp1)


def healthcheck_command(port: int) -> list[str]:
    """Liveness from inside the container with the venv's python: slim images have no curl or wget."""
    probe = ("import sys, urllib.request; "
             f"r = urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=4); "
             "sys.exit(0 if r.status == 200 else 1)")
    return ["python", "-c", probe]


def render_dockerfile(inputs: DockerfileInputs) -> str:
    models = " ".join(inputs.models)
    labels = {
        "org.opencontainers.image.title": inputs.title,
        "org.opencontainers.image.version": inputs.version,
        "org.opencontainers.image.description": f"shipml serving {models}",
        "org.opencontainers.image.base.name": inputs.base,
        "io.shipml.models": models,
        "io.shipml.version": inputs.shipml_version,
    }
    label_lines = " \\\n      ".join(f"{key}={json.dumps(value)}" for key, value in labels.items())
    wheels = "COPY wheels/ /build/wheels/\n" if inputs.has_wheels else ""
    healthcheck = json.dumps(healthcheck_command(inputs.port))
    entrypoint = json.dumps(["shipml", "serve", "--spec", SPEC_PATH])
    setup = "RUN "
    if inputs.system_packages:
        setup = (
            "# Shared libraries the frameworks load, from the base's own Debian release (and its security updates),\n"
            "# so unpinned on purpose; the Python packages are pinned in requirements.txt.\n"
            "# hadolint ignore=DL3008\n"
            "RUN apt-get update \\\n"
            f" && apt-get install --yes --no-install-recommends {' '.join(inputs.system_packages)} \\\n"
            " && apt-get clean && rm -rf /var/lib/apt/lists/* \\\n"
            " && "
        )
    return f"""\
# Generated by shipml build {inputs.shipml_version}: {models}
# Build stage: a venv with the pinned requirements. Nothing of this stage but /opt/venv reaches the image.
FROM {inputs.base} AS builder
ENV PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PIP_ROOT_USER_ACTION=ignore
COPY requirements.txt /build/requirements.txt
{wheels}RUN python3 -m venv {VENV_DIR} \\
 && {VENV_DIR}/bin/python -m pip install --no-cache-dir --requirement /build/requirements.txt \\
 && {VENV_DIR}/bin/python -m pip uninstall --yes pip

# Final stage: the base, the venv, the models and the spec; a fixed non-root uid; nothing to compile with.
FROM {inputs.base}
LABEL {label_lines}
{setup}groupadd --gid {UID} {USER_NAME} \\
 && useradd --no-log-init --uid {UID} --gid {UID} --no-create-home --home-dir /nonexistent \\
      --shell /usr/sbin/nologin {USER_NAME}
COPY --from=builder {VENV_DIR} {VENV_DIR}
COPY --chown=0:0 registry {REGISTRY_DIR}
COPY --chown=0:0 shipml.yaml {SPEC_PATH}
ENV PATH="{VENV_DIR}/bin:$PATH" \\
    PYTHONUNBUFFERED=1 \\
    SHIPML_HOME={REGISTRY_DIR}
WORKDIR {APP_DIR}
USER {UID}:{UID}
EXPOSE {inputs.port}
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD {healthcheck}
ENTRYPOINT {entrypoint}
"""
