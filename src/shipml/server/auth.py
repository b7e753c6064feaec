"""API tokens for the inference server: a hashed token store, the route policy, and an ASGI middleware.

A token reads ``shipml_<id>_<secret>``. The id (12 hex digits) is not secret: it names the token in listings,
logs and ``shipml token revoke``. The secret (43 base62 characters, about 256 bits from :mod:`secrets`) is
shown once at creation and never stored; the store keeps ``sha256(token)`` only. A random secret of that size
needs no slow password hash, and the id lets ``verify`` find the one record to compare without scanning.

The store is a JSON file (``<registry>/tokens.json`` by default, mode 0600) replaced atomically under the
registry's lock. A running server re-reads it when it changes - checked by one ``stat`` at most once a
second - so a revocation takes effect without a restart.

Who may call what is :func:`required_access`, a pure function of method and path; :class:`TokenGate` applies
it to one request, under :class:`AuthMiddleware` (ASGI) or the RSGI app (``server/rsgi.py``). Scopes:
``predict`` (inference and model metadata, optionally for one model only) and ``admin`` (everything; implies
``predict``). The docs (``/docs``, ``/openapi.json``) take a token of either scope.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import logging
import os
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson

from shipml.config import shipml_home
from shipml.errors import NotFoundError, ShipmlError
from shipml.package.lineage import current_user
from shipml.registry import local
from shipml.registry.names import check_name
from shipml.server import http, routes
from shipml.server.routes import Level

__all__ = [
    "Access",
    "AuthMiddleware",
    "Denial",
    "Level",
    "TokenGate",
    "TokenInfo",
    "TokenScope",
    "TokenStore",
    "default_token_path",
    "gated",
    "parse_duration",
    "required_access",
]

log = logging.getLogger("shipml.server.auth")

TokenScope = Literal["predict", "admin"]
SCOPES: tuple[TokenScope, ...] = ("predict", "admin")
TOKENS_FILE = "tokens.json"
FORMAT = 1
PREFIX = "shipml"
_ID_HEX = 12
_SECRET_LEN = 43
_ALPHABET = string.ascii_letters + string.digits
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_TOKEN = re.compile(rf"{PREFIX}_([0-9a-f]{{{_ID_HEX}}})_([A-Za-z0-9]{{{_SECRET_LEN}}})")


# -- tokens -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known about a token, without its secret or hash."""

    id: str
    scope: TokenScope
    model: str | None
    description: str | None
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    revoked: bool = False
    revoked_at: datetime | None = None

    def allows_admin(self) -> bool:
        return self.scope == "admin"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or _now()) >= self.expires_at

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked:
            return "revoked"
        return "expired" if self.is_expired(now) else "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "scope": self.scope, "model": self.model, "description": self.description,
            "created_at": _iso(self.created_at), "created_by": self.created_by,
            "expires_at": _iso(self.expires_at), "revoked": self.revoked, "revoked_at": _iso(self.revoked_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenInfo:
        scope = data["scope"]
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        created_at = _parse_time(data["created_at"])
        if created_at is None:
            raise ValueError("created_at is missing")
        return cls(
            id=str(data["id"]), scope=scope, model=data.get("model"), description=data.get("description"),
            created_at=created_at, created_by=data.get("created_by"),
            expires_at=_parse_time(data.get("expires_at")), revoked=bool(data.get("revoked", False)),
            revoked_at=_parse_time(data.get("revoked_at")),
        )


def default_token_path(root: Path | None = None) -> Path:
    """``tokens.json`` in the registry directory ``root`` (default: :func:`shipml_home`)."""
    return (root if root is not None else shipml_home()) / TOKENS_FILE


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a sum such as ``1d12h``; ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    cleaned = text.strip().lower()
    if not re.fullmatch(r"(\d{1,9}[smhdw])+", cleaned):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (s, m, h, d, w), e.g. 30d")
    seconds = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhdw])", cleaned))
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return timedelta(seconds=seconds)


def _now() -> datetime:
    """Now, to the millisecond the file keeps (so a created TokenInfo equals the one read back)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


_Stamp = tuple[int, int, int]  # inode, mtime_ns, size: an atomic replace always changes the inode


class TokenStore:
    """Tokens kept hashed in a JSON file. ``check_interval`` bounds how often :meth:`verify` stats the file;
    ``clock`` (monotonic seconds) is what that interval is measured with."""

    def __init__(self, path: Path | str | None = None, *, check_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path).expanduser().absolute() if path is not None else default_token_path()
        self.check_interval = check_interval
        self._clock = clock
        self._infos: dict[str, TokenInfo] = {}
        self._hashes: dict[str, str] = {}
        self._stamp: _Stamp | None = None
        self._error: ShipmlError | None = None
        self._loaded = False
        self._checked_at = 0.0

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    # -- reading ----------------------------------------------------------------------------------------
    def _refresh(self, force: bool = False) -> None:
        """Reload when the file changed; at most one ``stat`` per ``check_interval`` unless forced."""
        now = self._clock()
        if not force and self._loaded and now - self._checked_at < self.check_interval:
            self._raise_if_broken()
            return
        self._checked_at = now
        try:
            st = os.stat(self.path)
            stamp: _Stamp | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if not self._loaded or stamp != self._stamp:
            self._load()
        self._raise_if_broken()

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    def _load(self) -> None:
        self._loaded = True
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            self._set({}, {}, None)
            return
        try:
            infos, hashes = self._parse(raw)
        except (ValueError, KeyError, TypeError) as exc:
            self._set({}, {}, (st.st_ino, st.st_mtime_ns, st.st_size))
            self._error = ShipmlError(f"token store {self.path} is not valid: {exc}")
            return
        self._set(infos, hashes, (st.st_ino, st.st_mtime_ns, st.st_size))

    def _set(self, infos: dict[str, TokenInfo], hashes: dict[str, str], stamp: _Stamp | None) -> None:
        self._infos, self._hashes, self._stamp, self._error = infos, hashes, stamp, None

    @staticmethod
    def _parse(raw: bytes) -> tuple[dict[str, TokenInfo], dict[str, str]]:
        data = orjson.loads(raw)
        well_formed = isinstance(data, dict) and data.get("format") == FORMAT
        if not well_formed or not isinstance(data.get("tokens"), dict):
            raise ValueError(f"expected {{'format': {FORMAT}, 'tokens': {{...}}}}")
        infos: dict[str, TokenInfo] = {}
        hashes: dict[str, str] = {}
        for token_id, record in data["tokens"].items():
            info = TokenInfo.from_dict({**record, "id": token_id})
            digest = record["hash"]
            if not isinstance(digest, str) or not _HASH.fullmatch(digest):
                raise ValueError(f"token {token_id}: hash must be 'sha256:' and 64 hex digits")
            infos[token_id] = info
            hashes[token_id] = digest
        return infos, hashes

    @staticmethod
    def _dump(infos: dict[str, TokenInfo], hashes: dict[str, str]) -> bytes:
        tokens = {}
        for token_id, info in infos.items():
            record = info.to_dict()
            del record["id"]
            tokens[token_id] = {**record, "hash": hashes[token_id]}
        options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        return orjson.dumps({"format": FORMAT, "tokens": tokens}, option=options)

    def list(self) -> builtins.list[TokenInfo]:
        """Every token (revoked and expired ones too), oldest first."""
        self._refresh(force=True)
        return sorted(self._infos.values(), key=lambda info: (info.created_at, info.id))

    def get(self, token_id: str) -> TokenInfo:
        self._refresh(force=True)
        try:
            return self._infos[token_id]
        except KeyError:
            raise NotFoundError(f"no token with id {token_id!r}") from None

    def find(self, token: str) -> TokenInfo | None:
        """The record whose hash matches ``token`` - revoked or expired ones included - else None."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        self._refresh()
        token_id = match.group(1)
        expected = self._hashes.get(token_id)
        if expected is None or not hmac.compare_digest(expected, _hash(token)):
            return None
        return self._infos[token_id]

    def verify(self, token: str, *, now: datetime | None = None) -> TokenInfo | None:
        """The token's info if it is known, not revoked and not expired; None otherwise."""
        info = self.find(token)
        if info is None or info.status(now) != "active":
            return None
        return info

    # -- writing ----------------------------------------------------------------------------------------
    def create(self, scope: TokenScope = "predict", model: str | None = None, description: str | None = None,
               expires_in: timedelta | str | None = None) -> tuple[str, TokenInfo]:
        """A new token: ``(token_string, info)``. The string is returned here once and never stored."""
        if scope not in SCOPES:
            raise ValueError(f"invalid scope {scope!r}: expected one of {', '.join(SCOPES)}")
        if model is not None:
            if scope == "admin":
                raise ValueError("an admin token cannot be restricted to one model: use scope 'predict'")
            check_name(model)
        if isinstance(expires_in, str):
            expires_in = parse_duration(expires_in)
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValueError("expires_in must be longer than zero")
        created_at = _now()
        with self._locked():
            self._refresh(force=True)
            token_id = secrets.token_hex(_ID_HEX // 2)
            while token_id in self._infos:
                token_id = secrets.token_hex(_ID_HEX // 2)
            token = f"{PREFIX}_{token_id}_{''.join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))}"
            info = TokenInfo(
                id=token_id, scope=scope, model=model, description=description, created_at=created_at,
                created_by=current_user(),
                expires_at=created_at + expires_in if expires_in is not None else None,
            )
            self._save({**self._infos, token_id: info}, {**self._hashes, token_id: _hash(token)})
        return token, info

    def revoke(self, token_id: str) -> TokenInfo:
        """Mark a token revoked (kept in the file, so listings show it). Revoking twice is harmless."""
        with self._locked():
            self._refresh(force=True)
            info = self._infos.get(token_id)
            if info is None:
                raise NotFoundError(f"no token with id {token_id!r}")
            if not info.revoked:
                info = replace(info, revoked=True, revoked_at=_now())
                self._save({**self._infos, token_id: info}, self._hashes)
        return info

    def _locked(self) -> AbstractContextManager[None]:
        return local.locked(self.path.parent)

    def _save(self, infos: dict[str, TokenInfo], hashes: dict[str, str]) -> None:
        """Write, then adopt as the cache (a failed write leaves the cache as the file is)."""
        local.write_atomic(self.path, self._dump(infos, hashes), mode=0o600)
        st = os.stat(self.path)
        self._set(infos, hashes, (st.st_ino, st.st_mtime_ns, st.st_size))


# -- route policy -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Access:
    """What a request needs. ``model``: the model named in the path; ``default_model``: the route serves the
    server's default model (``POST /predict``), which the path does not name."""

    level: Level
    model: str | None = None
    default_model: bool = False


def _model_name(segment: str) -> str:
    """``churn``, ``churn@production`` and ``churn:1.2.0`` all name the model ``churn`` (names never contain
    ``@`` or ``:``)."""
    return re.split(r"[@:]", segment, maxsplit=1)[0]


def required_access(method: str, path: str) -> Access:
    """The access a request needs, from its method and (percent-decoded, root-path-free) path, as the route table
    (server/routes.py) gives it. Anything the table does not serve - unknown paths, other methods on known
    paths - needs admin."""
    method = method.upper()
    found = routes.find("GET" if method == "HEAD" else method, path)
    if found is None:
        return Access(Level.ADMIN)
    route, parts = found
    model = _model_name(parts[0]) if route.model and parts and parts[0] is not None else None
    return Access(route.level, model=model, default_model=route.default_model)


async def gated(gate: TokenGate, request: http.Request, authorization: builtins.list[str],
                respond: Callable[[http.Request], Awaitable[http.Reply | None]]) -> http.Reply | None:
    """The reply to ``request`` (``authorization``: its Authorization header's values) once ``gate`` lets it
    through, its denial otherwise. How the transports that call the app directly (granian's RSGI, shipml's own
    HTTP/1 cycle) apply auth; without auth they call ``respond`` themselves (a coroutine less per request)."""
    outcome = gate.check(request.method, request.path, authorization)
    if isinstance(outcome, Denial):
        return outcome.reply()
    if outcome is not None:
        request.token_id = outcome.id
    return await respond(request)


def route_path(scope: MutableMapping[str, Any]) -> str:
    """The path without the app's ``root_path`` (as Starlette's router sees it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):]
    return path


def authorize(info: TokenInfo, access: Access, default_model: str | None = None) -> str | None:
    """None when ``info`` may make a request needing ``access``, else why not."""
    if access.level in (Level.OPEN, Level.METRICS, Level.DOCS) or info.allows_admin():
        return None
    if access.level is Level.ADMIN:
        return "this token has scope 'predict'; the route needs 'admin'"
    if info.model is None:
        return None
    target = default_model if access.default_model else access.model
    if access.default_model and target is None:
        return f"this token is restricted to model '{info.model}'; name the model in the path"
    if target is not None and target != info.model:
        return f"this token is restricted to model '{info.model}'"
    return None


# -- middleware -------------------------------------------------------------------------------------------
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

_CHALLENGE = 'Bearer realm="shipml"'
_INVALID = _CHALLENGE + ', error="invalid_token"'
_INSUFFICIENT = _CHALLENGE + ', error="insufficient_scope"'
#: The docs also offer Basic: a browser opening /docs cannot send a bearer token, but asks for a user name and a
#: password on this challenge and sends them with every request to the docs (the password is the token). A header
#: of its own: browsers read one challenge per WWW-Authenticate header.
_BASIC = 'Basic realm="shipml", charset="UTF-8"'


class TokenGate:
    """The decision for one request, whatever carries it: ``check(method, path, authorization)`` gives None for a
    route open to all, the caller's :class:`TokenInfo` when the request may go on, or a :class:`Denial`.
    ``default_model`` is the model ``POST /predict`` serves, so that a token restricted to that model may use
    it; with ``metrics_auth`` ``/metrics`` needs an admin token. The docs (``/docs``, its assets and
    ``/openapi.json``) need any valid token - given as a bearer token, or as the password of Basic credentials,
    which is what a browser can send - unless ``open_docs``. Basic credentials are accepted there only: a browser
    sends them unasked with every request to the server, cross-site ones included, and the docs only read.
    ``on_refused(method, path, status)`` is told of every refusal (the app counts them in its metrics: a refused
    request never reaches it)."""

    def __init__(self, store: TokenStore, *, metrics_auth: bool = False, default_model: str | None = None,
                 open_docs: bool = False, on_refused: Callable[[str, str, int], None] | None = None) -> None:
        self.store = store
        self.metrics_auth = metrics_auth
        self.default_model = default_model
        self.open_docs = open_docs
        self.on_refused = on_refused

    def check(self, method: str, path: str, authorization: builtins.list[str]) -> TokenInfo | Denial | None:
        """``authorization``: every value of the Authorization header (a second one is refused)."""
        access = required_access(method, path)
        if access.level is Level.METRICS:
            access = Access(Level.ADMIN if self.metrics_auth else Level.OPEN)
        elif access.level is Level.DOCS and self.open_docs:
            access = Access(Level.OPEN)
        if access.level is Level.OPEN:
            return None
        outcome = self._check(authorization, access)
        if isinstance(outcome, Denial):
            log.info("denied %s %s: %d %s", method, path, outcome.status, outcome.message)
            if self.on_refused is not None:
                self.on_refused(method, path, outcome.status)
        return outcome

    def _check(self, values: builtins.list[str], access: Access) -> TokenInfo | Denial:
        docs = access.level is Level.DOCS
        if not values:
            hint = " (a browser: the token as the password)" if docs else ""
            return Denial(401, f"missing bearer token: send 'Authorization: Bearer <token>'{hint}", _CHALLENGE,
                          basic=docs)
        token = _credential(values, docs)
        if token is None:
            return Denial(401, "malformed Authorization header: expected one 'Bearer <token>'", _CHALLENGE,
                          basic=docs)
        try:
            info = self.store.find(token)
        except ShipmlError as exc:
            log.error("token store unavailable: %s", exc)
            return Denial(500, exc.public_message)
        if info is None:
            return Denial(401, "invalid token", _INVALID, basic=docs)
        if info.revoked:
            return Denial(401, "token revoked", _INVALID, basic=docs)
        if info.is_expired():
            return Denial(401, "token expired", _INVALID, basic=docs)
        reason = authorize(info, access, self.default_model)
        if reason is not None:
            return Denial(403, reason, _INSUFFICIENT, info)
        return info


def _credential(values: builtins.list[str], basic: bool) -> str | None:
    """The token of one Authorization header value: ``Bearer <token>``, or with ``basic`` also ``Basic
    base64(<any user>:<token>)``; None when malformed."""
    parts = values[0].strip().split(None, 1)
    if len(values) > 1 or len(parts) != 2:
        return None
    scheme, credentials = parts[0].lower(), parts[1].strip()
    if scheme == "bearer":
        return credentials
    if scheme != "basic" or not basic:
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon else None


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request may not go on, as an HTTP answer: ``challenge`` is the WWW-Authenticate value; ``basic``
    adds a Basic challenge (the docs), in a header of its own."""

    status: int
    message: str
    challenge: str | None = None
    info: TokenInfo | None = None  # the caller, when the token was valid (a 403)
    basic: bool = False

    def reply(self) -> http.Reply:
        headers = [("www-authenticate", self.challenge)] if self.challenge is not None else None
        if headers is not None and self.basic:
            headers.append(("www-authenticate", _BASIC))
        return http.Reply(self.status, orjson.dumps({"error": self.message}), headers)


class AuthMiddleware:
    """Bearer-token auth as a plain ASGI middleware, applying a :class:`TokenGate`.

    401 (with ``WWW-Authenticate: Bearer``) for a missing, malformed, unknown, expired or revoked token;
    403 for a valid token with the wrong scope or for another model. On success the request scope gets
    ``shipml.token_id``, ``shipml.token_scope`` and ``shipml.token_model`` (for access logs and for routes
    that filter by model), and the ``Authorization`` header is removed so nothing downstream can log it.
    WebSocket connections are checked the same way (closed with 1008 before accept); lifespan and other
    scopes pass through. ``default_model`` is the model ``POST /predict`` serves, so that a token restricted
    to that model may use it. With ``enabled=False`` every request passes and ``store`` may be None.
    """

    def __init__(self, app: ASGIApp, store: TokenStore | None, *, enabled: bool = True,
                 metrics_auth: bool = False, default_model: str | None = None, open_docs: bool = False) -> None:
        if enabled and store is None:
            raise ValueError("auth is enabled but no token store was given")
        self.app = app
        self.gate = TokenGate(store, metrics_auth=metrics_auth, default_model=default_model, open_docs=open_docs) \
            if enabled and store is not None else None

    @classmethod
    def over(cls, app: ASGIApp, gate: TokenGate) -> AuthMiddleware:
        """The middleware applying ``gate`` in front of ``app``."""
        middleware = cls(app, None, enabled=False)
        middleware.gate = gate
        return middleware

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        gate = self.gate
        if gate is None or kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET") if kind == "http" else "GET"
        headers = scope.get("headers", ())
        values = [bytes(v).decode("latin-1") for k, v in headers if k.lower() == b"authorization"]
        outcome = gate.check(method, route_path(scope), values)
        if outcome is None:
            await self.app(scope, receive, send)
            return
        info = outcome if isinstance(outcome, TokenInfo) else outcome.info
        if info is not None:
            scope["shipml.token_id"] = info.id
            scope["shipml.token_scope"] = info.scope
            scope["shipml.token_model"] = info.model
        if isinstance(outcome, Denial):
            await _deny(kind, send, outcome)
            return
        scope["headers"] = [(k, v) for k, v in headers if k.lower() != b"authorization"]
        await self.app(scope, receive, send)


async def _deny(kind: str, send: Send, denial: Denial) -> None:
    if kind == "websocket":  # closing before accept makes the server answer the handshake with 403
        await send({"type": "websocket.close", "code": 1008, "reason": denial.message[:120]})
        return
    await http.send_asgi(send, denial.reply())
