"""Watchdog for simulators started out of process (mosaik ``cmd`` / ``connect``).

mosaik 3.6 has no timeout on a remote simulator once it runs, and it does not
notice a child that died between two calls:

- A child killed while mosaik is *not* waiting for it (``kill -9`` of the grid
  child between its steps) closes the socket; the channel's reader task ends on
  the EOF. The next request is written into the closed socket and waits for a
  reply that nobody will read: the co-simulation hangs in epoll for ever
  (reproduced: > 120 s, no message).
- A child that stops answering (stopped, deadlocked, an endless loop in a user
  simulator) hangs the run the same way.
- The start-up wait is one world-wide 10 s (``start_timeout``), too short on a
  loaded 2-core machine where the grid child's import alone takes ~11 s, and a
  child that crashes on import is only noticed when that wait ends.

This module wraps ``RemoteProxy.send`` so that every request to a watched
simulator is bounded: the request fails with :class:`RemoteSimulatorError` as
soon as the child's process has exited (polled every :data:`POLL_S`), its
connection is gone, or the reply takes longer than the simulator's timeout
(``step_timeout_s`` for ``step``/``get_data``, ``start_timeout_s`` for the set-up
calls). A child that timed out is killed (it is ours: ``cmd``); a ``connect``
simulator's connection is closed. ``RemoteProxy.stop`` skips the goodbye message
to a simulator that failed, so the world's shutdown cannot hide the error.

Use :class:`WatchedCmdStarter` / :class:`WatchedConnectStarter` as the values of
the world's ``sim_config`` (mosaik accepts :class:`~mosaik.starters.Starter`
objects there), create the world with ``mosaik_config=world_config(...)`` (the
``init`` call is bounded by the world-wide ``start_timeout``) and call
:func:`install` once. Simulators started any other way are not affected.

The patch is applied only to the mosaik versions it was checked against
(:data:`CHECKED_VERSIONS`); elsewhere :func:`install` returns False and the
starters still give the configurable start-up timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from mosaik.proxies import RemoteProxy
from mosaik.starters import CmdStarter, ConnectStarter
from mosaik_api_v3.connection import Channel

#: mosaik versions the proxy patch was checked against.
CHECKED_VERSIONS = ("3.6",)

#: How often a pending request checks whether the child process is still alive [s].
POLL_S = 0.2
#: How long a closed connection waits for the child's exit status to be known [s].
EXIT_WAIT_S = 3.0

#: Defaults of the scenario fields ``simulators.<name>.start_timeout_s`` and
#: ``step_timeout_s`` [s]. Start: the grid child's import took ~11 s on a loaded
#: 2-core machine (mosaik's own default is 10 s). Step: above the scheduler's
#: default solver time limit (60 s) with room for its AC re-checks.
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_STEP_TIMEOUT_S = 300.0

#: Requests bounded by the step timeout; every other one (init, create,
#: setup_done, ...) by the start-up timeout.
STEP_METHODS = frozenset({"step", "get_data"})

_ORIGINAL_SEND = RemoteProxy.send
_ORIGINAL_STOP = RemoteProxy.stop


class RemoteSimulatorError(RuntimeError):
    """A remote simulator died, lost its connection or did not answer in time.

    Attributes
    ----------
    sim_id : str
        mosaik simulator id (``"Grid-0"``).
    method : str
        The mosaik API call that failed (``"step"``, ``"get_data"``, ``"init"``, ...).
    time : int or None
        mosaik time [ticks] of the simulator's last ``step`` request, None before the first.
    reason : str
        What happened, in words (exit status, timeout).
    """

    def __init__(self, sim_id: str, method: str, time: int | None, reason: str):
        self.sim_id, self.method, self.time, self.reason = sim_id, method, time, reason
        at = "" if time is None else f" (step at t = {time})"
        super().__init__(f"simulator {sim_id}: {reason} during its '{method}' call{at}")


@dataclass
class Watch:
    """What the watchdog knows of one remote simulator."""

    sim_id: str
    start_timeout_s: float
    step_timeout_s: float
    process: subprocess.Popen | None = None
    time: int | None = None  # tick of the last step request
    failed: bool = field(default=False)

    def exit_reason(self) -> str | None:
        """How the child process ended, or None while it runs (or for ``connect``)."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            return None
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"its process (pid {self.process.pid}) was killed by signal {name}"
        return f"its process (pid {self.process.pid}) exited with status {code}"

    def kill(self) -> None:
        """Kill the child process (a stopped child ignores SIGTERM until continued)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5.0)


async def _closed_reason(watch: "Watch") -> str:
    """Why a connection closed: the child's exit status if it ends within :data:`EXIT_WAIT_S`.

    A child killed by a signal closes its socket a moment before the OS can report
    its status; on a loaded machine that moment is longer than one poll.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (EXIT_WAIT_S if watch.process is not None else 0.0)
    while True:
        reason = watch.exit_reason()
        if reason or loop.time() >= deadline:
            return reason or "its connection was closed"
        await asyncio.sleep(POLL_S)


def _receiver_done(proxy: RemoteProxy) -> bool:
    task = getattr(proxy._channel, "_receiver_task", None)
    return task is not None and task.done()


async def _watched_send(self: RemoteProxy, request):
    """``RemoteProxy.send`` bounded by the simulator's timeouts and its process's life."""
    watch: Watch | None = getattr(self, "_ev_watch", None)
    if watch is None:
        return await _ORIGINAL_SEND(self, request)
    method = str(request[0]) if request else "?"
    if method == "step":
        watch.time = int(request[1][0])

    def fail(reason: str) -> RemoteSimulatorError:
        watch.failed = True
        return RemoteSimulatorError(watch.sim_id, method, watch.time, reason)

    dead = watch.exit_reason()
    if dead:
        raise fail(dead)
    if _receiver_done(self):
        raise fail(await _closed_reason(watch))
    limit = watch.step_timeout_s if method in STEP_METHODS else watch.start_timeout_s
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    task = asyncio.ensure_future(_ORIGINAL_SEND(self, request))
    try:
        while True:
            wait = min(POLL_S, max(0.0, deadline - loop.time()))
            done, _ = await asyncio.wait({task}, timeout=wait)
            if done:
                exc = task.exception()
                if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)) or (
                        exc is not None and type(exc).__name__ == "ConnectionClosedError"):
                    # the reply cannot come: say why (the exit status if the child ended)
                    raise fail(await _closed_reason(watch)) from exc
                return task.result()
            dead = watch.exit_reason()
            if dead:
                raise fail(dead)
            if loop.time() >= deadline:
                watch.kill()
                raise fail(f"no reply within {limit:g} s "
                           f"(simulators.<name>.{'step' if method in STEP_METHODS else 'start'}"
                           f"_timeout_s)")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def _watched_stop(self: RemoteProxy) -> None:
    """``RemoteProxy.stop`` that does not talk to a simulator that failed."""
    watch: Watch | None = getattr(self, "_ev_watch", None)
    if watch is None or not (watch.failed or watch.exit_reason() or _receiver_done(self)):
        await _ORIGINAL_STOP(self)
        return
    watch.kill()
    with contextlib.suppress(Exception):
        await self._channel.close()
    receiver = self._channel._receiver_task
    if receiver.done() and not receiver.cancelled():
        receiver.exception()  # the peer's reset, expected now: retrieved, not logged
    # mosaik awaits this task, which ends when the remote's EOF reaches the channel;
    # close() above may have cancelled the channel's reader before it saw the EOF
    self._reader_task.cancel()
    with contextlib.suppress(BaseException):
        await self._reader_task


def applies(version: str | None = None) -> bool:
    """True if the installed (or given) mosaik version is one the patch was checked on."""
    from adapters.mosaik_fixes import applies as version_checked

    return version_checked(version, CHECKED_VERSIONS)


def install() -> bool:
    """Patch ``RemoteProxy.send``/``stop`` (idempotent). Returns whether it is active."""
    if not applies():
        return False
    RemoteProxy.send = _watched_send
    RemoteProxy.stop = _watched_stop
    return True


def uninstall() -> None:
    """Restore mosaik's own methods."""
    RemoteProxy.send = _ORIGINAL_SEND
    RemoteProxy.stop = _ORIGINAL_STOP


def world_config(start_timeouts_s, addr: tuple[str, int] = ("127.0.0.1", 0)) -> dict:
    """``mosaik_config`` for a world: the longest start-up timeout bounds ``init``."""
    timeouts = [float(t) for t in start_timeouts_s] or [DEFAULT_START_TIMEOUT_S]
    return {"addr": addr, "start_timeout": max(timeouts), "stop_timeout": 10}


class WatchedCmdStarter(CmdStarter):
    """mosaik's ``cmd`` starter with its own start-up and step timeouts.

    Unlike mosaik's, it notices a child that exits before it connects (an
    import error, a wrong command) at once, with its exit status.

    Parameters
    ----------
    cmd : str
        Command line; ``%(addr)s`` and ``%(python)s`` are replaced as in mosaik.
    start_timeout_s : float
        Longest wait for the child to connect and for each set-up call [s].
    step_timeout_s : float
        Longest wait for each ``step`` and ``get_data`` reply [s].
    """

    def __init__(self, cmd: str, *, start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
                 step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S, **kwargs):
        super().__init__(cmd, connect_timeout=start_timeout_s, **kwargs)
        self.start_timeout_s = float(start_timeout_s)
        self.step_timeout_s = float(step_timeout_s)

    async def start(self, sim_id, mosaik_remote, mosaik_config):
        from mosaik.exceptions import SimulationError

        channel_future: asyncio.Future[Channel] = asyncio.Future()

        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter):
            if not channel_future.done():
                channel_future.set_result(Channel(r, w, name=sim_id))

        server = await asyncio.start_server(on_connect, *(self.bind_addr or mosaik_config["addr"]))
        try:
            host, port = server.sockets[0].getsockname()[:2]
            cmd = self.cmd % {"addr": f"{host}:{port}", "python": sys.executable}
            try:
                proc = subprocess.Popen(shlex.split(cmd), cwd=self.cwd, env={**os.environ, **self.env})
            except OSError as exc:
                raise SimulationError(f"Simulator {sim_id!r} could not be started "
                                      f"({cmd!r}): {exc}") from None
            watch = Watch(sim_id, self.start_timeout_s, self.step_timeout_s, process=proc)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.start_timeout_s
            while not channel_future.done():
                dead = watch.exit_reason()
                if dead:
                    raise RemoteSimulatorError(sim_id, "start", None, f"{dead} before it connected "
                                               f"(command: {cmd})")
                if loop.time() >= deadline:
                    watch.kill()
                    raise RemoteSimulatorError(sim_id, "start", None,
                                               f"did not connect within {self.start_timeout_s:g} s "
                                               "(simulators.<name>.start_timeout_s)")
                await asyncio.wait({channel_future}, timeout=POLL_S)
            proxy = RemoteProxy(channel_future.result(), mosaik_remote,
                                process=(proc, self.auto_terminate))
            proxy._ev_watch = watch
            return proxy
        finally:
            server.close()


class WatchedConnectStarter(ConnectStarter):
    """mosaik's ``connect`` starter with a connect timeout and step timeouts.

    Parameters
    ----------
    host : str
    port : int
    start_timeout_s, step_timeout_s : float
        As for :class:`WatchedCmdStarter` [s].
    """

    def __init__(self, host: str, port: int, *, start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
                 step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S, api_version: str | None = None):
        super().__init__(host, port, api_version=api_version)
        self.start_timeout_s = float(start_timeout_s)
        self.step_timeout_s = float(step_timeout_s)

    async def start(self, sim_id, mosaik_remote, mosaik_config):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                    self.start_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            reason = (f"no connection within {self.start_timeout_s:g} s"
                      if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__)
            raise RemoteSimulatorError(sim_id, "connect", None,
                                       f"could not connect to {self.host}:{self.port}: {reason}") from None
        proxy = RemoteProxy(Channel(reader, writer, name=sim_id), mosaik_remote)
        proxy._ev_watch = Watch(sim_id, self.start_timeout_s, self.step_timeout_s)
        return proxy


def parse_addr(addr: str, allow_port_0: bool = False) -> tuple[str, int]:
    """``"host:port"`` as ``(host, port)``; raise ValueError saying what is wrong.

    ``allow_port_0``: port 0 (any free port) is fine for a bind address, not for
    an address to connect to.
    """
    if not isinstance(addr, str) or addr.count(":") != 1:
        raise ValueError(f"must be 'host:port', got {addr!r}")
    host, port_text = (part.strip() for part in addr.split(":"))
    if not host:
        raise ValueError(f"the host is empty in {addr!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"the port must be an integer, got {port_text!r} in {addr!r}") from None
    low = 0 if allow_port_0 else 1
    if not low <= port <= 65535:
        raise ValueError(f"the port must be in [{low}, 65535], got {port} in {addr!r}")
    return host, port


__all__ = ["RemoteSimulatorError", "WatchedCmdStarter", "WatchedConnectStarter", "install",
           "uninstall", "world_config", "parse_addr", "DEFAULT_START_TIMEOUT_S",
           "DEFAULT_STEP_TIMEOUT_S"]
