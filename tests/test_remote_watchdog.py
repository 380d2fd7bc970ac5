"""The remote-simulator watchdog (adapters/remote_watchdog.py) on tiny worlds.

A Ticker child that is killed, stopped, never connects or crashes on start must
fail the run within the configured time, naming the simulator and the call.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import mosaik
import pytest

from adapters import mosaik_fixes, remote_watchdog
from adapters.remote_watchdog import RemoteSimulatorError, WatchedCmdStarter, WatchedConnectStarter
from tests.support.faults import children

pytestmark = pytest.mark.faults

TICKER_CMD = f"{sys.executable} -m tests.support.ticker %(addr)s"


@pytest.fixture(autouse=True)
def _watchdog(monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert remote_watchdog.install()
    yield
    remote_watchdog.uninstall()


def _world(starter) -> mosaik.World:
    config = {"Ticker": starter, "Sink": {"python": "tests.support.collector:Collector"}}
    return mosaik.World(config, mosaik_config=remote_watchdog.world_config([starter.start_timeout_s]),
                        cache=False, skip_greetings=True, configure_logging=False)


def _run(starter, sig=None, at=5, until=10**6):
    """Ticker (remote) -> Collector; optionally signal the child when tick ``at`` arrives."""
    from tests.support import collector

    seen = []
    original = collector.Collector.step

    def step(self, time_, inputs, max_advance):
        seen.append(time_)
        if sig is not None and time_ == at:
            for pid in children("tests.support.ticker"):
                os.kill(pid, sig)
        return original(self, time_, inputs, max_advance)

    collector.Collector.step = step
    try:
        with _world(starter) as world:
            tick = world.start("Ticker", step=1).Tick()
            sink = world.start("Sink").Sink()
            world.connect(tick, sink, "value")
            try:
                world.run(until=until, print_progress=False)
            finally:
                mosaik_fixes.cancel_leftover_tasks(world)
    finally:
        collector.Collector.step = original
    return seen


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_child_fails_the_run_at_once(sig):
    t0 = time.monotonic()
    with pytest.raises(RemoteSimulatorError, match=rf"Ticker-0: its process .* {sig.name}") as info:
        _run(WatchedCmdStarter(TICKER_CMD, step_timeout_s=60), sig=sig)
    assert time.monotonic() - t0 < 30
    assert info.value.sim_id == "Ticker-0" and info.value.time is not None and info.value.time >= 5
    assert not children("tests.support.ticker")


def test_stopped_child_fails_after_step_timeout_and_is_killed():
    t0 = time.monotonic()
    with pytest.raises(RemoteSimulatorError, match=r"Ticker-0: no reply within 1 s .*step_timeout_s"):
        _run(WatchedCmdStarter(TICKER_CMD, step_timeout_s=1.0), sig=signal.SIGSTOP)
    assert time.monotonic() - t0 < 30
    assert not children("tests.support.ticker")  # killed, not left stopped


def test_child_that_dies_before_connecting_is_noticed_at_once():
    t0 = time.monotonic()
    with pytest.raises(RemoteSimulatorError, match=r"exited with status 3 before it connected"):
        _run(WatchedCmdStarter(f"{sys.executable} -c 'raise SystemExit(3)'", start_timeout_s=60))
    assert time.monotonic() - t0 < 10


def test_start_timeout_is_the_simulators_own():
    slow = f"{sys.executable} -c 'import time; time.sleep(60)'"
    t0 = time.monotonic()
    with pytest.raises(RemoteSimulatorError, match=r"did not connect within 1.5 s .*start_timeout_s"):
        _run(WatchedCmdStarter(slow, start_timeout_s=1.5))
    assert 1.4 < time.monotonic() - t0 < 15


def test_slow_starting_child_beyond_mosaiks_10_s_is_fine_with_a_longer_timeout(tmp_path):
    # the child sleeps before its import of mosaik_api_v3, like a loaded machine's 11 s grid import
    cmd = (f"{sys.executable} -c 'import time, runpy, sys; time.sleep(1.0); "
           f"sys.argv = [\"ticker\", sys.argv[1]]; runpy.run_module(\"tests.support.ticker\", "
           f"run_name=\"__main__\")' %(addr)s")
    seen = _run(WatchedCmdStarter(cmd, start_timeout_s=30), until=5)
    assert seen == [0, 1, 2, 3, 4]


def test_connect_to_nothing_fails_with_the_address():
    with pytest.raises(RemoteSimulatorError, match=r"Ticker-0: could not connect to 127.0.0.1:9"):
        _run(WatchedConnectStarter("127.0.0.1", 9, start_timeout_s=2))


def test_unwatched_world_is_unchanged():
    """A healthy remote child: same ticks with and without the watchdog."""
    watched = _run(WatchedCmdStarter(TICKER_CMD), until=20)
    remote_watchdog.uninstall()
    plain = _run(WatchedCmdStarter(TICKER_CMD), until=20)
    assert watched == plain == list(range(20))


@pytest.mark.parametrize(("addr", "ok"), [("127.0.0.1:5555", True), ("host:1", True), ("nonsense", False),
                                          ("h:0", False), ("h:70000", False), (":80", False), ("h:x", False),
                                          ("a:b:c", False)])
def test_parse_addr(addr, ok):
    if ok:
        assert remote_watchdog.parse_addr(addr)[1] >= 1
    else:
        with pytest.raises(ValueError):
            remote_watchdog.parse_addr(addr)


@pytest.mark.parametrize(("version", "expected"), [("3.6.0", True), ("3.7.0", False), ("4.0", False)])
def test_patch_only_for_checked_versions(version, expected):
    assert remote_watchdog.applies(version) is expected
