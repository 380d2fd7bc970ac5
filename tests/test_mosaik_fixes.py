"""The mosaik 3.6 progress workaround: bounded bookkeeping, identical simulation."""

import mosaik
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mosaik.progress import Progress
from mosaik.tiered_time import TieredDuration, TieredTime

from adapters import mosaik_fixes
from tests.support.collector import Collector

SIM_CONFIG = {"Ticker": {"python": "tests.support.ticker:Ticker"},
              "Sink": {"python": "tests.support.collector:Collector"}}
N_STEPS = 300


def _run(patched: bool, monkeypatch) -> tuple[dict, int]:
    """Ticker -> event-based sink for N_STEPS; (what the sink saw, most futures walked)."""
    mosaik_fixes.uninstall()
    if patched:
        assert mosaik_fixes.install()
    inner = Progress.set
    longest = [0]

    def counting_set(self, time):
        inner(self, time)
        longest[0] = max(longest[0], len(self._futures))

    monkeypatch.setattr(Progress, "set", counting_set)
    Collector.store = {}
    with mosaik.World(SIM_CONFIG, cache=False, skip_greetings=True, configure_logging=False) as world:
        tick = world.start("Ticker", step=10).Tick()
        sink = world.start("Sink").Sink()
        world.connect(tick, sink, "value")
        world.run(until=10 * N_STEPS, print_progress=False)
    monkeypatch.undo()
    mosaik_fixes.uninstall()
    return dict(Collector.store), longest[0]


def test_stock_mosaik_keeps_one_cancelled_future_per_step_and_patch_does_not(monkeypatch):
    stock_seen, stock_futures = _run(False, monkeypatch)
    patched_seen, patched_futures = _run(True, monkeypatch)
    # Stock 3.6: the sink leaves a cancelled future behind at every step. If this
    # fails on a newer mosaik, the bug is fixed upstream and the patch can go.
    assert stock_futures >= N_STEPS - 5
    assert patched_futures <= 3
    assert patched_seen == stock_seen
    assert patched_seen[("Tick-0", "value")] == {10 * k: 10 * k for k in range(N_STEPS)}


@pytest.mark.parametrize(("version", "expected"), [("3.6.0", True), ("3.6.2", True), ("3.5.1", False),
                                                    ("3.60.0", False), ("4.0.0", False)])
def test_patch_only_for_checked_versions(version, expected):
    assert mosaik_fixes.applies(version) is expected


@st.composite
def _time_and_duration(draw):
    length = draw(st.integers(1, 4))
    cutoff = draw(st.integers(1, length))
    pre_length = draw(st.integers(cutoff, 4))
    ints = st.integers(0, 10**6)
    duration = TieredDuration(*draw(st.lists(ints, min_size=length, max_size=length)),
                              cutoff=cutoff, pre_length=pre_length)
    time = TieredTime(*draw(st.lists(ints, min_size=pre_length, max_size=pre_length)))
    return time, duration


@given(_time_and_duration())
def test_tuple_arithmetic_equals_mosaiks(case):
    time, duration = case
    assert mosaik_fixes.add_duration(time.tiers, duration) == (time + duration).tiers
