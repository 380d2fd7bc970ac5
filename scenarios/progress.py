"""Progress of one case while its mosaik world runs.

On a terminal: a tqdm bar per case (steps, simulated clock time, steps/s, ETA).
Not on a terminal (a log file, CI, a pipe): one line every ``interval_s`` seconds
and one when the case ends, so a log shows the run is alive without filling up
with bar redraws.

mosaik 3.6 updates a tqdm bar of its own after every simulator step
(``world.tqdm.update(avg progress - world.tqdm.n)`` in ``mosaik.scheduler``).
:meth:`CaseProgress.attach` puts this object in that bar's place, so progress
comes from mosaik's own bookkeeping: no extra simulator in the world and no
extra step.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import IO

MODES = ("auto", "bar", "lines", "off")


def resolve_mode(mode: str, stream: IO[str] | None = None) -> str:
    """``auto`` -> ``bar`` on a terminal, ``lines`` otherwise."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    stream = stream or sys.stderr
    return "bar" if hasattr(stream, "isatty") and stream.isatty() else "lines"


def _clock(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class CaseProgress:
    """Progress display of one case, standing in for mosaik's tqdm bar.

    Parameters
    ----------
    name : str
        Case name shown on every line.
    start : datetime
        Simulated clock time of step 0.
    step_s : int
        Step length [s] (mosaik time resolution is 1 s per tick).
    n_steps : int
        Steps of the run.
    mode : {"auto", "bar", "lines", "off"}
        See the module docstring.
    stream : text stream
        Where to write (default ``sys.stderr``).
    interval_s : float
        Wall-clock seconds between two lines in ``lines`` mode.
    """

    def __init__(self, name: str, start: dt.datetime, step_s: int, n_steps: int, mode: str = "auto",
                 stream: IO[str] | None = None, interval_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.name, self.start, self.step_s, self.n_steps = name, start, int(step_s), int(n_steps)
        self.interval_s = interval_s
        self.n = 0  # mosaik's counter: average simulator progress in ticks
        self.steps = 0
        self._t0 = time.perf_counter()
        self._last_line = self._t0
        self._bar = None
        self._closed = False
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.n_steps, desc=name, unit="step", file=self.stream,
                             dynamic_ncols=True, leave=True,
                             # tqdm puts ", " before the postfix (the simulated clock time)
                             bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps{postfix} | "
                                        "{rate_fmt} {elapsed}<{remaining}")
            self._bar.set_postfix_str(_clock(start), refresh=False)

    # --- the part of tqdm's interface mosaik uses --------------------------------

    def update(self, delta: int) -> None:
        """mosaik advanced its counter by ``delta`` ticks."""
        self.n += delta
        steps = min(self.n_steps, self.n // self.step_s)
        if steps == self.steps:
            return
        advanced, self.steps = steps - self.steps, steps
        if self._bar is not None:
            self._bar.set_postfix_str(_clock(self.clock()), refresh=False)
            self._bar.update(advanced)
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self._last_line >= self.interval_s:
                self._last_line = now
                self._line(now)

    def close(self) -> None:
        """End of the run (mosaik calls this also after a failure)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines":
            elapsed = time.perf_counter() - self._t0
            print(f"{self.name}: {self.steps}/{self.n_steps} steps in {_duration(elapsed)}, "
                  f"simulated up to {_clock(self.clock())}", file=self.stream, flush=True)

    # ------------------------------------------------------------------------------

    def clock(self) -> dt.datetime:
        """Simulated time reached [clock time]."""
        return self.start + dt.timedelta(seconds=self.steps * self.step_s)

    def _line(self, now: float) -> None:
        elapsed = now - self._t0
        rate = self.steps / elapsed if elapsed > 0 else 0.0
        eta_txt = _duration((self.n_steps - self.steps) / rate) if rate > 0 else "?"
        print(f"{self.name}: step {self.steps}/{self.n_steps} ({100 * self.steps / self.n_steps:.0f} %), "
              f"simulated {_clock(self.clock())}, {rate:.2f} steps/s, ETA {eta_txt}",
              file=self.stream, flush=True)

    def attach(self, world) -> None:
        """Stand in for the tqdm bar of ``world`` (a mosaik 3.x ``World``/``AsyncWorld``)
        from its ``run`` on; call before ``world.run``."""
        if self.mode == "off":
            return
        inner = getattr(world, "_async_world", world)  # World wraps an AsyncWorld (mosaik 3.6)
        original = inner._init_progress_bars

        def init_progress_bars(until, print_progress):
            original(until, False)
            inner.tqdm = self

        inner._init_progress_bars = init_progress_bars
