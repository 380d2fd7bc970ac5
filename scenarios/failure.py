"""What a run that started and could not finish leaves behind (fault 7, docs/reliability.md).

A case that fails after it started (a remote simulator died or hung, an external
simulator raised or sent NaN, a power-flow or solver error escaped, an internal
error) or was interrupted (Ctrl-C, SIGINT) gets, in its output folder:

``FAILED``
    marker file; its text is the error as JSON (below).
``summary.json``
    ``"status": "failed"`` or ``"interrupted"``, ``"error"`` (the same JSON) and
    every summary figure that can be computed from the steps recorded so far
    (``scenarios/summary.py``; EV figures at the end of the last recorded step).

The error::

    {"component": "Grid-0",            # mosaik simulator id, "set-up", "mosaik" or "runner"
     "call": "step",                   # the mosaik API call that failed, if a simulator's
     "step": 6,                        # index k of the step being computed (t = k step_s)
     "time_s": 5400,                   # its simulation time [s since scenario.start]
     "timestamp": "2024-01-17T17:30:00",
     "reason": "RemoteSimulatorError: simulator Grid-0: ...",
     "completed_steps": 6}             # steps 0 .. k-1 are on disk and readable

Every completed step stays readable (``simulators.recorder.model.read_table``).

Which simulator and step: :class:`CallWatch` wraps every simulator proxy's ``send``
(the one door mosaik uses for every call, in and out of process) and keeps the
first call that raised. mosaik 3.6 logs a remote simulator's exception and
returns from ``World.run`` as if the run had ended; it also catches a
``KeyboardInterrupt`` inside ``World.run``. The watch sees the first, and
:class:`SigintWatch` the second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

#: ``summary.json`` ``status`` values of a run that started and could not finish.
STATUS_FAILED, STATUS_INTERRUPTED = "failed", "interrupted"


class RunFailed(RuntimeError):
    """A case could not finish; completed steps stay on disk.

    Attributes (None where not known): ``component``, ``step`` (index k of the step
    being computed), ``time_s`` [s], ``reason``, ``out_dir`` (holds ``FAILED`` and
    ``summary.json`` when the run had started), ``error`` (the JSON of the module doc).
    """

    def __init__(self, message: str, component: str | None = None, step: int | None = None,
                 time_s: int | None = None, reason: str | None = None, out_dir: str | None = None,
                 error: dict | None = None):
        super().__init__(message)
        self.component, self.step, self.time_s, self.reason = component, step, time_s, reason
        self.out_dir, self.error = out_dir, error

    def __reduce__(self):  # keeps the attributes across processes (parallel cases)
        return (type(self), (str(self), self.component, self.step, self.time_s, self.reason,
                             self.out_dir, self.error))


class RunInterrupted(KeyboardInterrupt):
    """A case was interrupted (Ctrl-C); its ``FAILED`` marker and ``summary.json`` are written.

    A ``KeyboardInterrupt``: whatever catches that (the CLI: exit 130) still does,
    and ``except Exception`` does not swallow it.
    """

    def __init__(self, message: str, step: int | None = None, out_dir: str | None = None,
                 error: dict | None = None):
        super().__init__(message)
        self.step, self.out_dir, self.error = step, out_dir, error

    def __reduce__(self):
        return (type(self), (str(self), self.step, self.out_dir, self.error))


@dataclass
class Call:
    """A simulator call that raised."""

    sim_id: str
    method: str
    time_s: int | None
    exc: BaseException


class CallWatch:
    """Remembers each simulator's last step time and the first call that raised."""

    def __init__(self) -> None:
        self.first: Call | None = None
        self.time_s: dict[str, int] = {}

    def watch(self, world) -> None:
        """Wrap the ``send`` of every simulator started in ``world`` so far (mosaik 3.6),
        and ``world.start`` so that every simulator started later is watched from its
        ``create`` on (a failing start itself is kept as the simulator's ``init``)."""
        for sid, proxy in world._async_world._proxies.items():
            if not getattr(proxy, "_ev_call_watch", False):
                self._wrap(sid, proxy)
        if getattr(world, "_ev_call_watch", False):
            return
        original = world.start

        def start(sim_name, *args, **kwargs):
            try:
                return original(sim_name, *args, **kwargs)
            except BaseException as exc:
                if self.first is None and not isinstance(exc, KeyboardInterrupt):
                    self.first = Call(str(sim_name), "init", None, exc)
                raise
            finally:
                self.watch(world)

        world.start = start
        world._ev_call_watch = True

    def _wrap(self, sid: str, proxy) -> None:
        original = proxy.send

        async def send(request):
            method = str(request[0]) if request else "?"
            if method == "step":
                self.time_s[sid] = int(request[1][0])
            try:
                return await original(request)
            except (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit):
                raise
            except BaseException as exc:
                if self.first is None:
                    self.first = Call(sid, method, self.time_s.get(sid), exc)
                raise

        proxy.send = send
        proxy._ev_call_watch = True


class SigintWatch:
    """While active (main thread only): the first SIGINT is remembered, then raised as
    ``KeyboardInterrupt`` (mosaik may catch that and return from ``World.run``);
    later ones are ignored until the world has shut down."""

    def __init__(self) -> None:
        self.seen = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> SigintWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        # once: a second SIGINT (Ctrl-C to the process group and the parent's
        # forwarded one, or an impatient user) must not break the world's shut-down
        if not self.seen:
            self.seen = True
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception; a remote simulator's error without its traceback."""
    from scenarios.external import _describe

    if type(exc).__name__ in ("ExternalSimulatorError", "RemoteSimulatorError"):
        return f"{type(exc).__name__}: {exc}"
    return _describe(exc)


#: module of a frame (simulators.<package>) -> component named in an error
_PACKAGES = {"grid": "Grid", "baseload": "BaseLoad", "der": "DER", "pv": "PV", "ev_fleet": "Fleet",
             "scheduler": "Scheduler", "recorder": "Recorder", "dso": "DSO"}


def _component_from_traceback(exc: BaseException) -> str | None:
    """The simulator package whose code raised (deepest ``simulators.<pkg>`` frame), if any."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        parts = Path(frame.filename).parts
        if "simulators" in parts:
            i = len(parts) - 1 - parts[::-1].index("simulators")
            if i + 1 < len(parts) and parts[i + 1] in _PACKAGES:
                return _PACKAGES[parts[i + 1]]
    return None


def _caused_by(exc: BaseException, cause: BaseException) -> bool:
    """True if ``cause`` is ``exc`` or in its ``__cause__``/``__context__`` chain."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if exc is cause:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def error_record(exc: BaseException | None, calls: CallWatch, *, started: bool, interrupted: bool,
                 start: dt.datetime, step_s: int, completed_steps: int, logged: list[str]) -> dict:
    """The error of a run that could not finish (the JSON of the module doc).

    Parameters
    ----------
    exc : the exception that ended the run (None: ``World.run`` returned early)
    calls : the simulator calls watched during the run
    started : whether ``World.run`` had begun (False: the set-up failed)
    interrupted : SIGINT was seen
    start : scenario start; step_s : step length [s]
    completed_steps : steps recorded on disk
    logged : ERROR messages mosaik logged (a remote simulator's exception)
    """
    first = calls.first
    time_s = None
    if interrupted:
        component, call, reason = "interrupt", None, "interrupted by SIGINT (Ctrl-C)"
    elif first is not None:
        component, call, time_s = first.sim_id, first.method, first.time_s
        # an outer wrapper (external simulators' checks) may have said more
        reason = describe(exc if exc is not None and _caused_by(exc, first.exc) else first.exc)
    elif exc is not None:
        call = getattr(exc, "method", None)  # typed errors: RemoteSimulatorError, ExternalSimulatorError
        component = getattr(exc, "sim_id", None) or _component_from_traceback(exc)
        time_s = getattr(exc, "time", None)
        if component is None:
            component = "mosaik" if started else "set-up"
        elif not started:
            component = f"set-up ({component})"
        reason = describe(exc)
    else:
        component, call = "mosaik", None
        reason = "; ".join(logged[:3]) or "the world stopped before the last step"
    if time_s is None and started:
        time_s = completed_steps * step_s  # the step that was being computed
    step = None if time_s is None else int(time_s // step_s)
    return {
        "component": component, "call": call, "step": step, "time_s": time_s,
        "timestamp": None if time_s is None else (start + dt.timedelta(seconds=time_s)).isoformat(),
        "reason": reason, "completed_steps": completed_steps,
        **({"logged_errors": logged[:5]} if logged else {}),
    }


def write_record(out_dir: Path, error: dict, figures: dict, interrupted: bool) -> None:
    """``FAILED`` (the error) and ``summary.json`` (status, error, figures) in ``out_dir``."""
    from simulators.recorder.model import mark_failed

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_failed(out_dir, error)  # first: cheap, and says the most
    summary = {"status": STATUS_INTERRUPTED if interrupted else STATUS_FAILED, "error": error, **figures}
    tmp = out_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(out_dir / "summary.json")


def message(case_name: str, error: dict, out_dir: Path, interrupted: bool) -> str:
    """One paragraph for the user: where, when, why, and what is on disk."""
    when = "" if error["step"] is None else f" at step {error['step']} ({error['timestamp']})"
    kept = error["completed_steps"]
    if interrupted:
        head = f"case {case_name!r} interrupted (Ctrl-C){when}"
    else:
        where = error["component"] + (f" ({error['call']} call)" if error.get("call") else "")
        head = f"case {case_name!r} failed in {where}{when}: {error['reason']}"
    return (f"{head}{'' if head.endswith(('.', '!', '?')) else '.'} "
            f"{kept} completed step{'s' if kept != 1 else ''} stay readable in {out_dir} "
            f"(FAILED marker and summary.json hold the error)")
