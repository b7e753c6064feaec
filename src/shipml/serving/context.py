"""The typed context of one request, from the transport to the dataplane: who asked, what answered."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass

__all__ = ["RequestContext", "new_request_id"]

_ids = itertools.count(1)
_PREFIX = f"{os.getpid():x}-{int(time.time()):x}"


def new_request_id() -> str:
    return f"{_PREFIX}-{next(_ids):x}"


@dataclass(slots=True)  # not frozen: filled in as the request goes (which model, version and variant answered)
class RequestContext:
    """``route``: the route's metrics label; ``model``/``version``/``variant``: what answered (empty until known);
    ``rows``: rows predicted; ``token_id``: the caller's token, when auth is on; ``key``: the request's routing
    key (A/B endpoints), once the release has read it; ``started``: when it arrived (``time.monotonic()``)."""

    id: str
    route: str = ""
    model: str = ""
    version: str = ""
    variant: str = ""
    rows: int | None = None
    token_id: str | None = None
    key: str | None = None
    started: float = 0.0

    def answered_by(self, model: str, version: str, variant: str) -> None:
        self.model, self.version, self.variant = model, version, variant
