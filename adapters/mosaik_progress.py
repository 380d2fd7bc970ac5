"""Workaround for a per-step cost in mosaik 3.6 that grows with the number of steps.

mosaik's scheduler (``mosaik.scheduler.next_step_settled``) waits for a simulator's
next step by racing ``Progress.has_reached(t)`` against a "newer step" event and
cancels the loser. ``Progress`` keeps the cancelled futures in its list until the
simulation reaches ``t``, and every ``Progress.set`` (five to six per simulator step
and simulator) walks that whole list. An event-based simulator without self steps
waits for ``t = until``, so each of its steps leaves one cancelled future behind
for the rest of the run: after ``n`` steps ``set`` walks ``n`` entries, and the
bookkeeping per step grows linearly with the run length (measured: 60 stale futures
on the scheduler and the recorder at step 60; ~45 % of mosaik's time per step at
1 000 EVs and 64 steps, quadratic for year-long runs).

:func:`install` drops cancelled futures before ``Progress.set`` walks the list. A
cancelled future is never resolved (mosaik skips it and deletes it when its time
comes), so the simulation is the same, step for step; only the walk is shorter.
The patch is applied only to the mosaik versions it was checked against.
"""

from __future__ import annotations

from importlib import metadata

from mosaik.progress import Progress

#: mosaik versions whose ``Progress`` this patch was checked against.
CHECKED_VERSIONS = ("3.6",)

_ORIGINAL_SET = Progress.set


def _set_without_cancelled(self: Progress, time) -> None:
    """``Progress.set`` that first forgets futures nobody is waiting for any more."""
    futures = self._futures
    if futures and any(future.cancelled() for _, future in futures):
        self._futures = [entry for entry in futures if not entry[1].cancelled()]
    _ORIGINAL_SET(self, time)


def applies(version: str | None = None) -> bool:
    """True if the installed (or given) mosaik version is one the patch was checked on."""
    version = version if version is not None else metadata.version("mosaik")
    return any(version == v or version.startswith(v + ".") for v in CHECKED_VERSIONS)


def install() -> bool:
    """Install the patch (idempotent). Returns whether it is active."""
    if not applies():
        return False
    Progress.set = _set_without_cancelled
    return True


def uninstall() -> None:
    """Restore mosaik's own ``Progress.set``."""
    Progress.set = _ORIGINAL_SET
