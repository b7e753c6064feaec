"""The sliding window of counts: old slices leave it, memory stays bounded whatever the traffic, and a reader
thread can ask for the counts while a writer thread adds batches."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from shipml.monitoring.drift import Counts, Window
from shipml.monitoring.reference import Reference
from tests.unit.drift_models import regressor


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return Reference.from_model(regressor(tmp_path_factory.mktemp("window"), rows=200))


def batch(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x1": rng.normal(size=n), "x2": rng.uniform(0, 10, n)}, rng.normal(5, 3, n)


def test_old_slices_leave_the_window(reference: Reference) -> None:
    window = Window(reference, window_s=60, slices=6)  # slices of 10 s
    columns, predictions = batch(5)
    window.add(columns, predictions, now=1000.0)  # slice [1000, 1010)
    window.add(*batch(3), now=1035.0)  # slice [1030, 1040)
    assert window.counts(1035.0).rows == 8
    assert window.counts(1005.0).rows == 5  # a look back: the later slice is not in [945, 1005]
    assert window.counts(1069.9).rows == 8  # the first slice still overlaps [1009.9, 1069.9]
    assert window.counts(1070.0).rows == 3  # [1010, 1070]: the first slice has ended before it
    assert window.counts(1100.0).rows == 0
    assert window.counts(1100.0) == Counts(reference)


def test_counts_of_the_window_are_the_sum_of_its_batches(reference: Reference) -> None:
    window = Window(reference, window_s=100, slices=4)
    expected = Counts(reference)
    for i in range(10):
        columns, predictions = batch(7, seed=i)
        window.add(columns, predictions, now=500.0 + i * 5)
        expected.add(columns, predictions)
    assert window.counts(560.0) == expected
    assert window.counts(560.0).prediction_rows == 70


def test_a_batch_older_than_the_window_is_not_counted(reference: Reference) -> None:
    window = Window(reference, window_s=10, slices=2)
    window.add(*batch(4), now=100.0)
    window.add(*batch(9), now=50.0)  # arrives late: long out of the window
    assert window.counts(100.0).rows == 4
    window.add(*batch(2), now=97.0)  # late but inside the window
    assert window.counts(100.0).rows == 6


def test_memory_is_bounded_by_the_slices(reference: Reference) -> None:
    window = Window(reference, window_s=30, slices=5)
    columns, predictions = batch(50)
    sizes = set()
    for i in range(3000):
        window.add(columns, predictions, now=i * 0.7)
        assert len(window) <= 6
        if i > 100:
            sizes.add(len(window))
    assert max(sizes) <= 6
    assert window.counts(2999 * 0.7).rows <= 50 * (30 / 0.7 + 1 + 6 / 0.7 + 1)


def test_a_reader_and_a_writer_thread(reference: Reference) -> None:
    window = Window(reference, window_s=1000, slices=10)
    columns, predictions = batch(20)
    seen: list[int] = []

    def write() -> None:
        for i in range(300):
            window.add(columns, predictions, now=100.0 + i * 0.01)

    writer = threading.Thread(target=write)
    writer.start()
    for _ in range(300):
        counts = window.counts(110.0)
        seen.append(counts.rows)
        assert counts.rows % 20 == 0 and int(counts.feature_counts(0).sum()) == counts.rows
    writer.join(timeout=30)
    assert not writer.is_alive()
    assert window.counts(110.0).rows == 6000
    assert seen == sorted(seen)


@pytest.mark.parametrize(("window_s", "slices"), [(0, 5), (-1, 5), (float("nan"), 5), (10, 0)])
def test_bad_window_settings(reference: Reference, window_s: float, slices: int) -> None:
    with pytest.raises(ValueError, match=r"window_s|slices"):
        Window(reference, window_s=window_s, slices=slices)


def test_bad_times(reference: Reference) -> None:
    window = Window(reference, window_s=10)
    with pytest.raises(ValueError, match="finite"):
        window.add(*batch(1), now=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        window.counts(float("nan"))
