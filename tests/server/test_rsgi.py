"""The RSGI adapter against uvicorn: the same ASGI app behind granian (through the adapter) and behind uvicorn
is given the same scope and body for the same request, and its answers reach the client the same way."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.log import LogLevels
from granian.server.embed import Server

from shipml.errors import ConflictError
from shipml.server.rsgi import RSGIAdapter, listen_address
from tests.e2e.server_process import free_port

SCOPE_KEYS = ("type", "http_version", "method", "scheme", "path", "raw_path", "query_string", "root_path")


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the scope it was given, the body's size and how many messages brought it."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/fail":
        raise RuntimeError("the app failed before answering")
    size = messages = 0
    more = True
    while more:
        message = await receive()
        messages += 1
        if message["type"] == "http.disconnect":
            break
        size += len(message["body"])
        more = message.get("more_body", False)
    seen = {key: _text(scope[key]) for key in SCOPE_KEYS}
    seen.update(headers=[[_text(k), _text(v)] for k, v in scope["headers"]], client=scope["client"][0],
                server=list(scope["server"]), asgi=scope["asgi"]["version"], size=size, more=messages > 1)
    body = orjson.dumps(seen)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"x-answer", b"yes")]})
    if scope["path"] == "/parts":  # a body sent in three parts
        for part in (body[:10], b"", body[10:]):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.body", "body": body})


def _text(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, bytes) else value


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
def uvicorn_server() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(echo, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                                           lifespan="off", log_config=None, access_log=False))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        _wait_listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


@contextmanager
def granian_server() -> Iterator[str]:
    port = free_port()
    server = Server(RSGIAdapter(echo), address="127.0.0.1", port=port, interface=Interfaces.RSGI,
                    http=HTTPModes.http1, websockets=False, log_level=LogLevels.critical)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),))
    thread.start()
    try:
        _wait_listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join()
        loop.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    with uvicorn_server() as uvicorn_url, granian_server() as granian_url:
        yield {"uvicorn": uvicorn_url, "granian": granian_url}


def both(servers: dict[str, str], method: str, target: str, **kwargs: Any) -> dict[str, httpx.Response]:
    return {name: httpx.request(method, url + target, **kwargs) for name, url in servers.items()}


def test_scope_matches_uvicorn(servers: dict[str, str]) -> None:
    answers = both(servers, "GET", "/models/caf%C3%A9%20x/predict?b=2&a=%20%2F+x&b=%C3%A9",
                   headers=[("Host", "test"), ("X-Token", "Abc"), ("x-multi", "1"), ("X-Multi", "2")])
    seen = {name: a.json() for name, a in answers.items()}
    for name, url in servers.items():
        assert seen[name].pop("server") == ["127.0.0.1", httpx.URL(url).port]
    assert seen["granian"] == seen["uvicorn"]
    assert seen["granian"]["path"] == "/models/café x/predict"
    assert seen["granian"]["raw_path"] == "/models/caf%C3%A9%20x/predict"
    assert seen["granian"]["query_string"] == "b=2&a=%20%2F+x&b=%C3%A9"
    assert ["x-multi", "1"] in seen["granian"]["headers"] and ["x-multi", "2"] in seen["granian"]["headers"]
    assert seen["granian"]["client"] == "127.0.0.1"
    for a in answers.values():
        assert a.headers["x-answer"] == "yes"


def test_an_escaped_slash_is_lost_from_raw_path(servers: dict[str, str]) -> None:
    """granian gives the decoded path only: ``raw_path`` is the path quoted again."""
    seen = {name: a.json() for name, a in both(servers, "GET", "/a%2Fb").items()}
    assert seen["uvicorn"]["path"] == seen["granian"]["path"] == "/a/b"
    assert (seen["uvicorn"]["raw_path"], seen["granian"]["raw_path"]) == ("/a%2Fb", "/a/b")


def test_bodies_arrive_whole_or_in_chunks(servers: dict[str, str]) -> None:
    small = both(servers, "POST", "/x", content=b"x" * 1000)
    assert {n: (a.json()["size"], a.json()["more"]) for n, a in small.items()} == {
        "uvicorn": (1000, False), "granian": (1000, False)}

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(40):
            yield b"y" * 10_000

    for name, url in servers.items():
        answer = httpx.post(url + "/x", content=chunks()).json()
        assert answer["size"] == 400_000 and answer["more"], name


def test_answers_match_uvicorn(servers: dict[str, str]) -> None:
    parts = both(servers, "GET", "/parts", headers={"Host": "test"})
    seen = {name: a.json() for name, a in parts.items()}
    assert seen["granian"].pop("server") != seen["uvicorn"].pop("server")  # each its own port
    assert seen["granian"] == seen["uvicorn"] and seen["granian"]["path"] == "/parts"
    failed = both(servers, "GET", "/fail")
    assert {n: a.status_code for n, a in failed.items()} == {"uvicorn": 500, "granian": 500}


def test_a_client_gone_mid_body_is_a_disconnect() -> None:
    received: list[dict[str, Any]] = []
    done = threading.Event()

    async def reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append({k: v for k, v in message.items() if k != "body"})
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        done.set()

    adapter = RSGIAdapter(reader)
    port = free_port()
    server = Server(adapter, address="127.0.0.1", port=port, interface=Interfaces.RSGI, http=HTTPModes.http1,
                    websockets=False, log_level=LogLevels.critical)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),))
    thread.start()
    try:
        _wait_listening(port)
        for length in (b"Content-Length: 100000\r\n", b"Content-Length: 5000000\r\n"):  # read whole, streamed
            done.clear()
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n" + length + b"\r\n" + b"z" * 10_000)
                time.sleep(0.2)
            assert done.wait(5)
            assert received[-1] == {"type": "http.disconnect"}
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join()
        loop.close()
    assert not adapter.inflight


def test_a_port_in_use_is_refused_even_by_a_reuse_port_socket() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as granian binds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConflictError, match=f"cannot listen on localhost:{port}"):
            listen_address("localhost", port)
    assert listen_address("localhost", port) == "127.0.0.1"  # names resolve: granian takes addresses only


def test_ipv6_addresses_on_a_plain_asyncio_loop() -> None:
    """Addresses in brackets become ASGI tuples; the adapter needs no uvloop (nor granian) to run."""

    async def run() -> list[Any]:
        sent: list[Any] = []

        class Protocol:
            async def __call__(self) -> bytes:
                return b"{}"

            def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                sent.append((status, headers, body))

        class Headers:
            def items(self) -> list[tuple[str, str]]:
                return [("content-length", "2")]

            def get(self, key: str, default: Any = None) -> Any:
                return "2" if key == "content-length" else default

        class Scope:
            proto, http_version, scheme, method, path, query_string = "http", "1.1", "http", "POST", "/p", "q=1"
            server, client, headers = "[::1]:8000", "[::1]:5000", Headers()

        await RSGIAdapter(echo).__rsgi__(Scope(), Protocol())  # type: ignore[arg-type]
        return sent

    [(status, headers, body)] = asyncio.run(run())
    assert status == 200 and ("x-answer", "yes") in headers
    seen = orjson.loads(body)
    assert (seen["client"], seen["server"], seen["query_string"], seen["size"]) == ("::1", ["::1", 8000], "q=1", 2)
