"""The three transports against each other: one ``respond`` behind granian (:class:`ShipmlRSGI`), behind uvicorn
with shipml's own HTTP/1 cycle (``uvicorn_http.py``) and behind any ASGI server (:class:`AsgiRequest` +
``send_asgi``, as under Ray Serve) sees the same request and its reply reaches the client the same way - bodies
whole or chunked, limits, a client gone mid-body, a failing handler, draining, the token gate."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.log import LogLevels
from granian.server.embed import Server

from shipml.errors import ConflictError, PayloadTooLarge, RequestTimeout
from shipml.server import http
from shipml.server.auth import TokenGate, TokenStore
from shipml.server.rsgi import ShipmlRSGI, listen_address
from shipml.server.uvicorn_http import ConnectionGuard, protocol_for
from tests.e2e.server_process import free_port
from tests.e2e.slow_clients import read_until_closed
from tests.server.test_rejected_garbage import close

LIMIT = 2_000_000
BODY_TIMEOUT_S = 1.0


class Probe:
    """A stand-in for ShipmlApp.respond: answers with what it was given. ``/fail`` raises; ``seen`` records
    how each request ended (``disconnected``, ``too large``, ``timed out``, ``answered``)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.done = threading.Event()
        self.draining = False
        self.read_deadlines = http.ReadDeadlines(BODY_TIMEOUT_S)
        self.max_body = LIMIT

    async def respond(self, request: http.Request) -> http.Reply | None:
        if request.path == "/fail":
            raise RuntimeError("the handler failed")
        try:
            body = await request.body(LIMIT)
        except http.ClientDisconnected:
            self.seen.append("disconnected")
            self.done.set()
            return None
        except (PayloadTooLarge, RequestTimeout) as exc:
            self.seen.append("too large" if exc.status == 413 else "timed out")
            return http.Reply(exc.status, orjson.dumps({"error": str(exc)}))
        self.seen.append("answered")
        names = ("content-type", "x-multi", "x-token", "missing")
        answer = {"method": request.method, "path": request.path, "size": len(body), "token_id": request.token_id,
                  "headers": {name: request.header(name) for name in names}}
        return http.Reply(201, orjson.dumps(answer), [("x-answer", "yes"), ("x-request-id", "abc")],
                          content_type="application/vnd.test+json")


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port}")


@contextmanager
def asgi_server(probe: Probe) -> Iterator[str]:
    """Stock uvicorn with the probe behind the ASGI adapters (what Ray Serve's proxy calls)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        reply = await probe.respond(http.AsgiRequest(scope, receive, probe.read_deadlines))
        if reply is not None:
            await http.send_asgi(send, reply)

    with _uvicorn(uvicorn.Config(asgi, host="127.0.0.1", port=free_port(), loop="uvloop", http="httptools",
                                 lifespan="off", log_config=None, access_log=False)) as url:
        yield url


async def _no_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise AssertionError("shipml's own HTTP/1 cycle never calls the ASGI app")


@contextmanager
def direct_server(probe: Probe, gate: TokenGate | None = None, header_timeout_s: float = 10.0) -> Iterator[str]:
    """uvicorn running shipml's own HTTP/1 cycle, calling the probe directly (as ``shipml serve --http uvicorn``)."""
    guard = ConnectionGuard(header_timeout_s, 100, draining=lambda: probe.draining)
    protocol = protocol_for(guard, probe, gate)  # type: ignore[arg-type]
    with _uvicorn(uvicorn.Config(_no_asgi, host="127.0.0.1", port=free_port(), loop="uvloop", http=protocol,
                                 ws="none", lifespan="off", log_config=None, access_log=False)) as url:
        yield url


@contextmanager
def _uvicorn(config: uvicorn.Config) -> Iterator[str]:
    port = config.port
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        _wait_listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


@contextmanager
def granian_server(app: ShipmlRSGI) -> Iterator[str]:
    port = free_port()
    server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.RSGI, http=HTTPModes.http1,
                    websockets=False, log_level=LogLevels.critical)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),))
    thread.start()
    try:
        _wait_listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join()
        close(loop)


@pytest.fixture(scope="module")
def probe() -> Probe:
    return Probe()


@pytest.fixture(scope="module")
def servers(probe: Probe) -> Iterator[dict[str, str]]:
    with asgi_server(probe) as asgi_url, direct_server(probe) as uvicorn_url, \
            granian_server(ShipmlRSGI(probe)) as granian_url:  # type: ignore[arg-type]
        yield {"asgi": asgi_url, "uvicorn": uvicorn_url, "granian": granian_url}


def both(servers: dict[str, str], method: str, target: str, **kwargs: Any) -> dict[str, httpx.Response]:
    return {name: httpx.request(method, url + target, **kwargs) for name, url in servers.items()}


def test_the_request_is_seen_the_same(servers: dict[str, str]) -> None:
    answers = both(servers, "POST", "/models/caf%C3%A9%20x/predict?b=2", content=b"{}",
                   headers=[("Content-Type", "application/json"), ("X-Token", "Abc"), ("x-multi", "1"),
                            ("X-Multi", "2")])
    seen = {name: a.json() for name, a in answers.items()}
    assert seen["granian"] == seen["uvicorn"] == seen["asgi"]
    assert seen["granian"] == {
        "method": "POST", "path": "/models/café x/predict", "size": 2, "token_id": None,
        "headers": {"content-type": "application/json", "x-multi": "1", "x-token": "Abc",
                    "missing": None}}


def test_the_reply_reaches_the_client_the_same(servers: dict[str, str]) -> None:
    for name, answer in both(servers, "POST", "/x", content=b"x" * 1000).items():
        assert answer.status_code == 201, name
        assert answer.headers["content-type"] == "application/vnd.test+json", name
        assert int(answer.headers["content-length"]) == len(answer.content), name
        assert (answer.headers["x-answer"], answer.headers["x-request-id"]) == ("yes", "abc"), name
        assert answer.json()["size"] == 1000, name
    failed = both(servers, "GET", "/fail")
    assert {n: a.status_code for n, a in failed.items()} == {"asgi": 500, "uvicorn": 500, "granian": 500}


def test_bodies_arrive_whole_or_in_chunks_within_the_limit(servers: dict[str, str]) -> None:
    def chunks(n: int) -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(n):
            yield b"y" * 10_000

    for name, url in servers.items():
        assert httpx.post(url + "/x", content=chunks(20)).json()["size"] == 200_000, name
        assert httpx.post(url + "/x", content=chunks(201)).status_code == 413, name  # past the limit, streamed
        declared = httpx.post(url + "/x", content=b"z" * (LIMIT + 1))
        assert declared.status_code == 413, name
        assert "2000001 bytes" in declared.json()["error"], name  # refused from Content-Length, before reading


@pytest.mark.parametrize("name", ["granian", "uvicorn"])
def test_a_client_gone_mid_body_is_a_disconnect(servers: dict[str, str], probe: Probe, name: str) -> None:
    port = httpx.URL(servers[name]).port
    for length in (b"Content-Length: 100000\r\n", b"Content-Length: 1500000\r\n"):  # read whole, streamed
        probe.done.clear()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n" + length + b"\r\n" + b"z" * 10_000)
            time.sleep(0.2)
        assert probe.done.wait(5), length
        assert probe.seen[-1] == "disconnected"


@pytest.mark.parametrize("framing", [b"Content-Length: 100000\r\n\r\n" + b"z" * 10,
                                     b"Transfer-Encoding: chunked\r\n\r\na\r\n" + b"z" * 10 + b"\r\n"])
def test_a_body_not_all_sent_by_its_deadline_gets_408_and_its_connection_closed(servers: dict[str, str],
                                                                                 probe: Probe, framing: bytes) -> None:
    for name, url in servers.items():
        with socket.create_connection(("127.0.0.1", httpx.URL(url).port)) as sock:
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\n" + framing)
            started = time.monotonic()
            answer, closed = read_until_closed(sock, BODY_TIMEOUT_S + 5)
            waited = time.monotonic() - started
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), (name, answer)
        assert b"\r\nconnection: close" in head.lower(), name
        assert orjson.loads(body)["error"] == "the request body did not arrive within 1 s", name
        assert closed, name
        assert waited >= BODY_TIMEOUT_S - 0.05, name
        assert probe.seen[-1] == "timed out"
    assert probe.read_deadlines.reading == 0


@pytest.mark.parametrize("name", ["granian", "uvicorn"])
def test_answers_while_draining_close_their_connection(servers: dict[str, str], probe: Probe, name: str) -> None:
    with socket.create_connection(("127.0.0.1", httpx.URL(servers[name]).port)) as sock:
        request = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
        sock.sendall(request)
        sock.settimeout(5)
        first = sock.recv(65536)
        assert b"connection: close" not in first.lower()
        probe.draining = True
        try:
            sock.sendall(request)
            answer, closed = read_until_closed(sock, 5)
        finally:
            probe.draining = False
    assert answer.startswith(b"HTTP/1.1 201 ") and b"\r\nconnection: close\r\n" in answer.lower()
    assert closed


@pytest.mark.parametrize("name", ["granian", "uvicorn"])
def test_the_token_gate(tmp_path: Path, name: str) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token, info = store.create("predict", model="churn")
    gate = TokenGate(store, default_model="churn")
    app = ShipmlRSGI(Probe(), gate)  # type: ignore[arg-type]
    with granian_server(app) if name == "granian" else direct_server(Probe(), gate) as url:
        missing = httpx.post(url + "/predict", content=b"{}")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="shipml"'
        assert "missing bearer token" in missing.json()["error"]
        wrong = httpx.post(url + "/predict", content=b"{}", headers={"Authorization": "Bearer shipml_x"})
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
        other = httpx.post(url + "/models/fraud/predict", content=b"{}", headers={"Authorization": f"Bearer {token}"})
        assert other.status_code == 403 and "restricted to model 'churn'" in other.json()["error"]
        ok = httpx.post(url + "/predict", content=b"{}", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 201 and ok.json()["token_id"] == info.id
        assert httpx.get(url + "/healthz").status_code == 201  # open routes pass without a token
    assert not app.inflight


def test_a_port_in_use_is_refused_even_by_a_reuse_port_socket() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as granian binds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConflictError, match=f"cannot listen on localhost:{port}"):
            listen_address("localhost", port)
    assert listen_address("localhost", port) == "127.0.0.1"  # names resolve: granian takes addresses only


@pytest.mark.parametrize("name", ["granian", "uvicorn"])
def test_an_endless_header_is_cut_off(servers: dict[str, str], name: str) -> None:
    """A header that never ends is refused before a megabyte of it is read (the server keeps a header whole)."""
    with socket.create_connection(("127.0.0.1", httpx.URL(servers[name]).port)) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 1_000_000:
                sock.sendall(b"a" * 4096)
                sent += 4096
        try:
            answer, closed = read_until_closed(sock, 5)
        except ConnectionResetError:
            answer, closed = b"", True
    assert closed, name  # within 5 s: well before the header timeout (10 s) would close it
    assert answer == b"" or answer.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), (name, answer[:100])
