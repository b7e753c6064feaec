"""Names, versions, aliases and refs: what is allowed, and how a ref string is read.

A name becomes a directory (or an object-store prefix), so only a narrow alphabet is accepted: no separators,
no dots at the start, no ``..``, no percent-escapes, no NUL. Everything is checked before it touches a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path

from shipml.errors import InvalidNameError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '_', '-', '.', starting with a letter or"
            " digit, without '..'"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '_' or '-', starting with a letter"
        )
    return alias


@total_ordering
@dataclass(frozen=True)
class Version:
    """A semantic version MAJOR.MINOR.PATCH (no pre-release tags: a registry version is a release)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise InvalidNameError(f"invalid version {text!r}: expected MAJOR.MINOR.PATCH such as 1.2.0")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    def next_minor(self) -> Version:
        return Version(self.major, self.minor + 1, 0)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)


FIRST_VERSION = Version(1, 0, 0)


@dataclass(frozen=True)
class Ref:
    """What a user names: ``name`` (latest), ``name:1.2.0``, ``name@alias``, or a package directory."""

    name: str | None = None
    version: str | None = None
    alias: str | None = None
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> Ref:
        if not isinstance(text, str) or not text or "\x00" in text:
            raise InvalidNameError(f"invalid model reference {text!r}")
        if text.startswith(("/", "./", "../", "~/")) or (Path(text) / "shipml.json").is_file():
            return cls(path=Path(text).expanduser())
        if "@" in text:
            name, _, alias = text.partition("@")
            return cls(name=check_name(name), alias=check_alias(alias))
        if ":" in text:
            name, _, version = text.partition(":")
            return cls(name=check_name(name), version=str(Version.parse(version)))
        return cls(name=check_name(text))

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return str(self.name)
