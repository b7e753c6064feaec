"""The body deadline (``http.ReadDeadlines``) on its own: one timer task for every body being read; a read past
its deadline ends in 408 and leaves its task usable, every other read is untouched, a cancellation from
elsewhere stays a cancellation, and the timer stops when nothing is read."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.errors import RequestTimeout
from shipml.server.http import ReadDeadlines

TIMEOUT_S = 0.1
SLOW_S = 0.3  # well past the deadline and its timer's tick
FAST = (0.0, 0.01)  # well within it


async def read_for(seconds: float) -> bytes:
    await asyncio.sleep(seconds)
    return b"body"


@settings(max_examples=10, deadline=None)
@given(durations=st.lists(st.sampled_from([*FAST, SLOW_S]), min_size=1, max_size=40))
def test_only_the_reads_past_their_deadline_get_408(durations: list[float]) -> None:
    async def main() -> None:
        deadlines = ReadDeadlines(TIMEOUT_S)

        async def one(seconds: float) -> str:
            try:
                body = await deadlines.read(read_for(seconds))
            except RequestTimeout as exc:
                await asyncio.sleep(0)  # the task goes on: the deadline's cancellation was taken back
                return str(exc)
            return body.decode()

        outcomes = await asyncio.gather(*(one(s) for s in durations))
        late = "the request body did not arrive within 0.1 s"
        assert outcomes == [late if s == SLOW_S else "body" for s in durations]
        assert deadlines.reading == 0
        await asyncio.sleep(TIMEOUT_S)
        assert deadlines._timer is None  # nothing to watch: the timer task is gone

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        deadlines = ReadDeadlines(10)
        task = asyncio.create_task(deadlines.read(read_for(5)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert deadlines.reading == 0

    asyncio.run(main())
