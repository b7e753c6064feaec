"""The README is a promise: every code block in it runs as written, in order (issue 12, item 19).

In one empty directory, with ``$SHIPML_HOME`` pointing at a fresh registry there and this venv's ``shipml`` first
on PATH: Python blocks run with this venv's Python; a YAML block whose first line names a file (``# shipml.yaml``)
is written to that file; shell blocks run with bash, each block as one script (a background server started in a
block is stopped in it), and each command must exit 0, or the code its comment documents (``exit code 1``).
One substitution: port 8000 becomes a free port, as another program may hold 8000 on a test machine.

A shell block whose first line is ``# needs: WHAT`` needs what a test machine may not have:

- ``podman``: run when podman is installed (with a local base image, as in tests/e2e/test_container.py), skipped
  otherwise; on CI (CI=true) podman must be there.
- ``an S3 bucket``: run against a real S3-protocol server (moto on 127.0.0.1, as in the S3 registry's tests) with
  a bucket ``team-models``, its address and test credentials in the environment as a user sets them.
- ``a Kubernetes cluster``: not run; its lines must be ``kubectl apply -k DIR``, and the manifests in DIR (written
  by an earlier block) are validated strictly against the Kubernetes schemas instead.
- ``a fresh clone of this repository``: not run (``make test`` runs this test, ``make demo`` serves until
  Ctrl-C); its lines must be ``make TARGET`` with a target the Makefile has (``make -n``).

Anything else (a block in another language, an unknown need, a YAML block without a file name) fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.e2e import podman
from tests.e2e.server_process import free_port
from tests.s3_support import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NEEDS = re.compile(r"\A# needs: ([^(\n]+?)\s*(\(.*\))?\s*$")
IMAGE_PODMAN = "registry.example.com/ml/cancer:1.0.0"  # what the README's podman block builds and runs
BUCKET = "team-models"  # what the README's S3 block uses
CONTAINER = "cancer"


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based

    @property
    def needs(self) -> str | None:
        first = self.text.split("\n", 1)[0]
        m = NEEDS.match(first)
        return m.group(1) if m else None


def blocks(text: str) -> list[Block]:
    return [Block(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment) of one shell line: the comment starts at a ``#`` after a blank, outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


@dataclass(frozen=True)
class Command:
    text: str
    comment: str
    line: int

    @property
    def expected_exit(self) -> int:
        m = re.search(r"exit code (\d+)", self.comment)
        return int(m.group(1)) if m else 0

    @property
    def background(self) -> bool:
        return self.text.endswith("&") and not self.text.endswith("&&")


def commands(block: Block) -> list[Command]:
    """The block's commands, continuation lines joined; comment-only and blank lines dropped."""
    out: list[Command] = []
    pending: list[str] = []
    comments: list[str] = []
    start = 0
    for offset, raw in enumerate(block.text.splitlines()):
        code, comment = split_comment(raw)
        if not pending:
            start = block.line + 1 + offset
        if comment:
            comments.append(comment)
        if code.endswith("\\"):
            pending.append(code[:-1].rstrip())
            continue
        if code.strip() or pending:
            out.append(Command(" ".join([*pending, code.strip()]).strip(), " ".join(comments), start))
        pending, comments = [], []
    assert not pending, f"README line {block.line}: a command ends with a continuation backslash"
    return out


def script(block: Block, work: Path) -> str:
    """The block as a bash script that checks each command's exit code and stops its background jobs."""
    lines = ["set -o pipefail", f"cd {shlex.quote(str(work))}"]
    for cmd in commands(block):
        lines.append(f"printf '+ %s\\n' {shlex.quote(cmd.text)} >&2")
        lines.append(cmd.text)
        if cmd.background:
            continue
        lines += [
            "rc=$?",
            f'if [ "$rc" -ne {cmd.expected_exit} ]; then',
            f"  printf 'README line {cmd.line} exited %s, expected {cmd.expected_exit}: %s\\n' \"$rc\""
            f" {shlex.quote(cmd.text)} >&2",
            "  kill $(jobs -p) 2>/dev/null; exit 97",
            "fi",
        ]
    lines.append("wait")
    return "\n".join(lines) + "\n"


def run_script(text: str, work: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    path = work / f".readme-block-{abs(hash(text))}.sh"
    path.write_text(text)
    proc = subprocess.Popen(["bash", str(path)], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"a README block ran longer than {timeout:.0f} s (a background job never stopped?):\n{out[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # what the block left running in its session, if anything
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    directory = tmp_path / "readme"
    directory.mkdir()
    return directory


@pytest.fixture
def env(work: Path) -> dict[str, str]:
    return {**os.environ, "SHIPML_HOME": str(work / "registry"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture
def podman_env(tmp_path: Path) -> Iterator[dict[str, str] | None]:
    """A podman set up as tests/e2e/podman.py does (runc, a local base image), or None without podman."""
    if not podman.available():
        if os.environ.get("CI") == "true":
            pytest.fail("podman is not on PATH: CI must run the README's podman block (.ci/run installs podman)")
        yield None
        return
    env = podman.environment(tmp_path)
    env["SHIPML_BUILD_BASE"] = podman.ensure_base_image(env)
    env["SHIPML_BUILD_VOLUMES"] = f"{podman.HOST_CA}:{podman.HOST_CA}:ro"
    env["SHIPML_BUILD_NETWORK"] = "host"
    try:
        yield env
    finally:
        podman.podman(env, "rm", "--force", "--time", "0", CONTAINER, check=False)
        podman.podman(env, "rmi", "--force", IMAGE_PODMAN, check=False)


def validate_kustomize_dir(directory: Path, line: int) -> None:
    assert directory.is_dir(), f"README line {line}: {directory} was not written by an earlier block"
    listed = yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
    assert listed, f"README line {line}: {directory}/kustomization.yaml lists no resources"
    for name in listed:
        doc = yaml.safe_load((directory / name).read_text())
        try:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"README line {line}: {directory / name} is not a valid Kubernetes object: {exc.message}")


def check_not_run(block: Block, need: str) -> None:
    """A block the test does not run: what it stands for is checked another way."""
    cmds = commands(block)
    assert cmds, f"README line {block.line}: an empty block"
    for cmd in cmds:
        if need == "a Kubernetes cluster":
            m = re.fullmatch(r"kubectl apply -k (\S+)", cmd.text)
            assert m, f"README line {cmd.line}: only `kubectl apply -k DIR` may need a cluster: {cmd.text}"
        elif need == "a fresh clone of this repository":
            m = re.fullmatch(r"make (\w[\w-]*)", cmd.text)
            assert m, f"README line {cmd.line}: only `make TARGET` may need a fresh clone: {cmd.text}"
            dry = subprocess.run(["make", "-n", "-C", str(REPO), m.group(1)], capture_output=True, text=True,
                                 timeout=60, check=False)
            assert dry.returncode == 0, f"README line {cmd.line}: make has no target {m.group(1)}: {dry.stderr}"
        else:
            pytest.fail(f"README line {block.line}: unknown need {need!r}")


def bucket_env(server: S3Server, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the S3 server's address and credentials (and no others), its bucket ``team-models`` made."""
    client = server.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    cleaned = {k: v for k, v in env.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3")}
    return {**cleaned, **server.env(), "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def test_every_readme_block_runs_as_written(work: Path, env: dict[str, str], podman_env: dict[str, str] | None,
                                            s3_server: S3Server) -> None:
    port = str(free_port())
    found = blocks(README.read_text(encoding="utf-8"))
    assert [b.lang for b in found].count("python") >= 1 and [b.lang for b in found].count("sh") >= 4
    ran: list[int] = []
    skipped: list[int] = []
    for block in found:
        text = block.text.replace("8000", port)
        if block.lang == "python":
            path = work / f"readme_block_{block.line}.py"
            path.write_text(text)
            done = subprocess.run([sys.executable, str(path)], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=600, check=False)
            assert done.returncode == 0, f"README line {block.line} (python):\n{done.stdout}{done.stderr}"
        elif block.lang == "yaml":
            m = re.match(r"# ([\w.-]+\.ya?ml)\n", text)
            assert m, f"README line {block.line}: a YAML block starts with `# FILE.yaml` naming where it goes"
            (work / m.group(1)).write_text(text)
        elif block.lang == "sh":
            need = block.needs
            if need == "podman":
                if podman_env is None:
                    skipped.append(block.line)
                    continue
                done = run_script(script(Block("sh", text, block.line), work), work,
                                  {**podman_env, **{k: env[k] for k in ("SHIPML_HOME", "PATH")}}, timeout=1800)
            elif need == "an S3 bucket":
                done = run_script(script(Block("sh", text, block.line), work), work, bucket_env(s3_server, env),
                                  timeout=600)
            elif need is not None:
                check_not_run(block, need)
                if need == "a Kubernetes cluster":
                    for cmd in commands(block):
                        validate_kustomize_dir(work / cmd.text.split()[-1], cmd.line)
                continue
            else:
                done = run_script(script(Block("sh", text, block.line), work), work, env, timeout=600)
            assert done.returncode == 0, f"README block at line {block.line} failed:\n{done.stdout[-6000:]}"
        else:
            pytest.fail(f"README line {block.line}: a code block in {block.lang or 'no language'!r}; the README"
                        " test runs python, sh and yaml blocks (give every block one of these)")
        ran.append(block.line)
    print(f"README blocks run: {ran}; skipped (no podman): {skipped}")


# -- the runner's own rules, checked on small made-up blocks -------------------------------------------------
@pytest.mark.parametrize(("line", "command", "comment"), [
    ("shipml models   # what is registered", "shipml models", "what is registered"),
    ("curl -d '{\"a#b\": 1}' x  # c", "curl -d '{\"a#b\": 1}' x", "c"),
    ("echo a#b", "echo a#b", ""),
    ("# only a comment", "", "only a comment"),
])
def test_comments_are_split_outside_quotes(line: str, command: str, comment: str) -> None:
    assert split_comment(line) == (command, comment)


def test_a_failing_command_fails_its_block(work: Path, env: dict[str, str]) -> None:
    ok = Block("sh", "true\nfalse   # refused: exit code 1\n", 1)
    assert run_script(script(ok, work), work, env, timeout=60).returncode == 0
    bad = Block("sh", "true\nshipml no-such-command\ntrue\n", 10)
    done = run_script(script(bad, work), work, env, timeout=60)
    assert done.returncode == 97 and "README line 12 exited 2, expected 0: shipml no-such-command" in done.stdout
    unexpected_success = Block("sh", "true   # exit code 1\n", 20)
    assert run_script(script(unexpected_success, work), work, env, timeout=60).returncode == 97


def test_a_background_job_is_stopped_when_its_block_fails(work: Path, env: dict[str, str]) -> None:
    block = Block("sh", "sleep 300 &\nfalse\nkill %1\n", 1)
    done = run_script(script(block, work), work, env, timeout=60)
    assert done.returncode == 97
