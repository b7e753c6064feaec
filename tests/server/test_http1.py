"""shipml's own HTTP/1 cycle under uvicorn (``server/uvicorn_http.py``), against the real app on 127.0.0.1, over raw
sockets: pipelining, ``Expect: 100-continue``, HEAD, HTTP/1.0 and ``Connection: close``, answers before the body,
chunked bodies, garbage, a client that does not read its answers - and hypothesis-chosen header values, request
targets and pipelined request sequences, each answered by one well-formed response with no header line but the
server's own."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.server.runner import _config, build_parts
from shipml.spec import DeploymentSpec
from tests.e2e.server_process import free_port

NAMES = [f"x{i}" for i in range(4)]
ROW = {name: 0.5 for name in NAMES}
GOOD = orjson.dumps({"instances": [ROW]})
#: The headers a shipml answer may carry: anything else in an answer was injected.
OWN_HEADERS = {"content-type", "content-length", "date", "connection", "x-request-id", "x-shipml-version",
               "x-shipml-variant", "allow", "retry-after", "www-authenticate"}
FRESH_ID = re.compile(r"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+")


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("http1")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(300, len(NAMES))), columns=NAMES)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=3, verbose=-1).fit(X, (X["x0"] > 0).astype(int))
    shipml.save_model(model, "clf", sample=X, registry=root)
    number = free_port()
    spec = DeploymentSpec.model_validate({
        "registry": str(root), "server": {"access_log": False, "compile": "off", "port": number},
        "limits": {"max_body_bytes": 4096, "body_timeout_s": 2},
        "endpoints": [{"name": "clf", "models": ["clf"]}]})
    app, gate = build_parts(spec)
    server = uvicorn.Server(_config(spec, app, gate))
    thread = threading.Thread(target=server.run)
    thread.start()
    deadline = time.monotonic() + 30
    while not app.is_ready:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    yield number
    server.should_exit = True
    thread.join(30)


class Answer:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        assert len(values) <= 1, f"{name} twice: {values}"
        return values[0] if values else None


class Client:
    """One connection, reading answers as a strict client would (Content-Length framing, no body for HEAD)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def answer(self, head_only: bool = False, interim: bool = False) -> Answer:
        """The next answer (a 100 Continue is skipped unless ``interim``)."""
        while True:
            while b"\r\n\r\n" not in self.buffer:
                assert self._fill(), f"closed before an answer; got {self.buffer!r}"
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            match = re.fullmatch(r"HTTP/1\.1 (\d{3}) [^\r\n]*", lines[0])
            assert match, lines[0]
            headers = []
            for line in lines[1:]:
                name, sep, value = line.partition(": ")
                assert sep and name == name.lower() and name in OWN_HEADERS, f"header line {line!r}"
                headers.append((name, value))
            status = int(match.group(1))
            if status == 100 and not interim:
                continue
            answer = Answer(status, headers, b"")
            if status != 100 and not head_only:
                length = int(answer.header("content-length") or "0")
                while len(self.buffer) < length:
                    assert self._fill(), "closed mid-body"
                answer.body, self.buffer = self.buffer[:length], self.buffer[length:]
            return answer

    def closed(self, within_s: float = 5) -> bool:
        """True when the server closes the connection (having sent nothing more) within ``within_s``."""
        self.sock.settimeout(within_s)
        try:
            return not self._fill() and not self.buffer
        except ConnectionResetError:  # closed with bytes of ours unread: the kernel resets
            return not self.buffer
        except TimeoutError:
            return False


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            .encode() + extra + b"\r\n" + body)


def get(path: str, method: str = "GET", extra: bytes = b"") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n".encode() + extra + b"\r\n"


def test_a_prediction_and_its_headers(port: int) -> None:
    with Client(port) as client:
        client.send(post("/predict", GOOD))
        answer = client.answer()
        assert answer.status == 200
        assert answer.header("content-type") == "application/json"
        assert answer.header("x-shipml-version") == "1.0.0" and answer.header("x-shipml-variant") == "stable"
        assert answer.header("date") and answer.header("connection") is None
        body = orjson.loads(answer.body)
        assert body["request_id"] == answer.header("x-request-id") and len(body["predictions"]) == 1
        client.send(get("/healthz"))  # the connection is kept
        assert client.answer().status == 200


KINDS = {
    "health": (get("/healthz"), 200, False),
    "predict": (post("/predict", GOOD), 200, False),
    "bad json": (post("/predict", b'{"instances": ['), 400, False),
    "bad row": (post("/predict", orjson.dumps({"instances": [{"x0": "a"}]})), 422, False),
    "unknown": (get("/nope"), 404, False),
    "head": (get("/healthz", "HEAD"), 405, True),
    "delete": (get("/predict", "DELETE"), 405, False),
    "chunked": (b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + f"{len(GOOD):x}\r\n".encode() + GOOD + b"\r\n0\r\n\r\n", 200, False),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=8))
def test_pipelined_requests_are_answered_in_order(port: int, kinds: list[str]) -> None:
    with Client(port) as client:
        client.send(b"".join(KINDS[k][0] for k in kinds))  # all at once: each waits for the one before
        ids = []
        for kind in kinds:
            _, status, head = KINDS[kind]
            answer = client.answer(head_only=head)
            assert answer.status == status, (kind, answer.body)
            if head:
                assert int(answer.header("content-length") or 0) > 0  # the length of the body not sent
            ids.append(answer.header("x-request-id"))
        client.send(get("/healthz"))  # nothing was left over: the next request is read as one
        assert client.answer().status == 200
    assert len(set(ids) - {None}) == len([i for i in ids if i is not None])


def test_many_pipelined_requests_from_a_client_that_reads_late(port: int) -> None:
    with Client(port) as client:
        client.send(get("/healthz") * 3000)  # ~300 KB of answers pile up before it reads any
        time.sleep(0.5)
        for _ in range(3000):
            assert client.answer().status == 200


def test_expect_100_continue(port: int) -> None:
    with Client(port) as client:
        client.send(post("/predict", b"", b"Expect: 100-continue\r\n").replace(b"Content-Length: 0",
                                                                           f"Content-Length: {len(GOOD)}".encode()))
        assert client.answer(interim=True).status == 100  # the body is wanted
        client.send(GOOD)
        assert client.answer().status == 200
    with Client(port) as client:  # refused before its body is read: no 100, and the body never comes
        client.send(post("/nope", b"", b"Expect: 100-continue\r\n").replace(b"Content-Length: 0",
                                                                        b"Content-Length: 10"))
        answer = client.answer(interim=True)
        assert answer.status == 404 and answer.header("connection") == "close"
        assert client.closed()


def test_an_answer_before_the_body_closes_the_connection(port: int) -> None:
    """The rest of the body is never read as a request."""
    smuggled = get("/healthz")
    with Client(port) as client:
        client.send(post("/nope", b"x" * 40 + smuggled)[:-len(smuggled) - 40])  # headers only: body pending
        answer = client.answer()
        assert answer.status == 404 and answer.header("connection") == "close"
        client.send(b"x" * 40 + smuggled)
        assert client.closed()


def test_a_body_past_the_limit_is_413_and_closes(port: int) -> None:
    with Client(port) as client:
        client.send(b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + (b"400\r\n" + b"1" * 1024 + b"\r\n") * 6)  # streamed: past 4,096 bytes, more to come
        answer = client.answer()
        assert answer.status == 413 and answer.header("connection") == "close"
        assert client.closed()


@pytest.mark.parametrize("request_bytes", [get("/healthz").replace(b"HTTP/1.1", b"HTTP/1.0"),
                                           get("/healthz", extra=b"Connection: close\r\n")])
def test_http_1_0_and_connection_close_end_the_connection(port: int, request_bytes: bytes) -> None:
    assert closing_answer(port, request_bytes).status == 200


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/9.9\r\n\r\n",
                                     b"POST /predict HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"])
def test_garbage_is_400_and_closes(port: int, garbage: bytes) -> None:
    assert closing_answer(port, garbage).status == 400


def closing_answer(port: int, data: bytes) -> Answer:
    """The answer to ``data`` on a connection of its own, which the answer must close."""
    with Client(port) as client:
        client.send(data)
        answer = client.answer()
        assert answer.header("connection") == "close"
        assert client.closed()
    return answer


def test_a_head_past_64_kib_is_431_and_closes(port: int) -> None:
    """httptools keeps a header whole however long it grows: the head is capped, however slowly it comes."""
    with Client(port) as client:  # a large head within the cap, in small pieces: served
        head = get("/healthz", extra=b"X-Big: " + b"a" * 60_000 + b"\r\n")
        for i in range(0, len(head), 1024):
            client.send(head[i:i + 1024])
        assert client.answer().status == 200
    with Client(port) as client:  # one endless header: refused before a megabyte is read
        client.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sent = 0
        try:
            while sent < 1_000_000:
                client.send(b"a" * 4096)
                sent += 4096
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = client.answer()
        assert answer.status == 431 and answer.header("connection") == "close"
        assert client.closed()


HEADER_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789!#$%&'*+.^`|~", min_size=1, max_size=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(HEADER_NAME | st.sampled_from(["x-request-id", "content-type", "authorization", "expect",
                                                            "connection", "content-length", "transfer-encoding"]),
                          st.binary(max_size=200)), max_size=6))
def test_any_headers_get_one_well_formed_answer(port: int, headers: list[tuple[str, bytes]]) -> None:
    extra = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers)
    with Client(port) as client:
        client.send(post("/predict", GOOD, extra))
        try:
            answer = client.answer()
        except (AssertionError, ConnectionResetError):
            parsed = False
        else:
            parsed = True
        if not parsed:  # only when the request's framing headers make its length unknowable
            assert any(name in ("content-length", "transfer-encoding") for name, _ in headers), headers
            return
        assert answer.status in (200, 400, 408, 413, 415, 422), answer.body
        sent = [v.strip(b" \t") for n, v in headers if n == "x-request-id"]
        returned = answer.header("x-request-id")
        if answer.status != 400 or returned is not None:
            assert returned is not None
            first = sent[0] if sent else b""
            usable = first and first.isascii() and first.decode().isprintable()
            assert returned == (first.decode()[:128] if usable else returned)
            if not usable:
                assert FRESH_ID.fullmatch(returned), returned


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=60).filter(lambda b: b" " not in b and b"\r" not in b and b"\n" not in b)
       | st.text(alphabet="/%abc?#&=.é", min_size=1, max_size=30).map(lambda t: t.encode()))
def test_any_request_target_is_answered_and_never_500(port: int, target: bytes) -> None:
    with Client(port) as client:
        client.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = client.answer()
        assert answer.status in (200, 400, 404, 405), (target, answer.status, answer.body)
        if answer.header("connection") != "close":
            client.send(get("/healthz"))
            assert client.answer().status == 200


def test_a_slow_body_gets_408(port: int) -> None:
    with Client(port) as client:
        client.send(post("/predict", GOOD)[:-5])
        started = time.monotonic()
        answer = client.answer()
        assert answer.status == 408 and answer.header("connection") == "close"
        assert time.monotonic() - started >= 1.9
        assert client.closed()


def test_the_app_path_is_not_the_asgi_one(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The requests above never went through ASGI: the app's ASGI entry refuses to serve here."""
    from shipml.server import app as app_module

    async def refuse(*args: object) -> None:
        raise AssertionError("ASGI entry used")

    monkeypatch.setattr(app_module.ShipmlApp, "handle", refuse)
    with Client(port) as client:
        client.send(post("/predict", GOOD))
        assert client.answer().status == 200

