"""Two fixes to mosaik 3.6's scheduler bookkeeping, installed by the runner.

1. **Per-step cost growing with the step count.** mosaik waits for a simulator's
   next step by racing ``Progress.has_reached(t)`` against a "newer step" event
   (``mosaik.scheduler.next_step_settled``) and cancels the loser. ``Progress``
   keeps the cancelled futures until the simulation reaches ``t``, and every
   ``Progress.set`` (five to six per simulator step and simulator) walks them all.
   An event-based simulator without self steps waits for ``t = until``, so each of
   its steps leaves one cancelled future behind for the rest of the run: the
   bookkeeping per step grows linearly with the run length (``bench/mosaik_floor.py``,
   no-op simulators in a study's world shape: 8.9 ms/step over 256 steps, 20.2 ms/step
   over 1 024; with the fixes 1.8-2.0 ms/step). The fix drops cancelled futures before ``set`` walks the list. A
   cancelled future is never resolved (mosaik skips and deletes it when its time
   comes), so the simulation is the same, step for step.

2. **"cannot progress backwards" with out-of-process simulators.** A simulator's
   progress (the earliest time it may still be asked to step) is bounded by the
   next steps of the simulators that can trigger it
   (``mosaik.scheduler.advance_progress``). An ancestor that is *inside* a step
   has already popped that step from its queue, so it is left out while it waits
   for a remote ``step``/``get_data`` reply. Its successors' progress then jumps
   past the step whose output is still on the way, and the output's arrival
   fails an assertion (reproduced: fleet and base load both started with
   ``cmd``). In-process simulators never yield inside a step, which is why this
   only shows with remote ones. The fix also counts an ancestor's current step.
   This bound is never later than mosaik's, so it cannot let a simulator run
   ahead; the ancestor finishing its step releases it.

The replacement ``advance_progress`` also skips calls that see the same steps as
the call before (mosaik calls it for every simulator after every simulator step);
the tiered-time arithmetic they repeated was a third of mosaik's own time per step.
The calls that remain compute on plain tuples (:func:`add_duration`, checked against
mosaik's own arithmetic in the tests).

All of this is applied only to the mosaik versions it was checked against.

:func:`cancel_leftover_tasks` is for any version: when a simulator fails, mosaik
stops waiting but leaves the other simulators' tasks pending in its loop, and
closing the loop then prints "Task was destroyed but it is pending!" for each of
them after the run's real error.
"""

from __future__ import annotations

import asyncio
from importlib import metadata

import mosaik.scheduler
from mosaik.progress import Progress
from mosaik.tiered_time import TieredDuration, TieredTime

#: mosaik versions these fixes were checked against.
CHECKED_VERSIONS = ("3.6",)

_ORIGINAL_SET = Progress.set
_ORIGINAL_ADVANCE = mosaik.scheduler.advance_progress


def _set_without_cancelled(self: Progress, time: TieredTime) -> None:
    """``Progress.set`` that first forgets futures nobody waits for any more (fix 1)."""
    futures = self._futures
    if futures and any(future.cancelled() for _, future in futures):
        self._futures = [entry for entry in futures if not entry[1].cancelled()]
    _ORIGINAL_SET(self, time)


def _advance_progress(sim, world) -> None:
    """mosaik's ``advance_progress`` counting ancestors that are mid-step (fix 2).

    The progress of ``sim`` is the earliest of: its own current and next step,
    every triggering ancestor's current and next step plus the shortest
    connection delay from that ancestor, and the end of the simulation.

    mosaik calls this for every simulator after every simulator step; most calls
    see the same steps as the call before. Those are skipped (the progress would
    be set to the value it has, which triggers nothing): the tiered-time
    arithmetic was a third of mosaik's own time per step.
    """
    if world.rt_factor:  # real-time runs keep mosaik's own function (wall-clock bound)
        _ORIGINAL_ADVANCE(sim, world)
        return
    ancestors = sim.triggering_ancestors
    key = (_tiers(sim), *(_tiers(a) for a in ancestors))
    if getattr(sim, "_progress_key", None) == key:
        return
    # Bounds as plain tuples (TieredTime orders by its tuple): mosaik's TieredTime
    # and MinimalDurations arithmetic was the largest part of this function.
    bounds = [add_duration((world.until,), sim.from_world_time)]
    if sim.next_steps:
        bounds.append(sim.next_steps[0].tiers)
    if sim.current_step is not None:
        bounds.append(sim.current_step.tiers)
    for ancestor, distance in ancestors.items():
        for step in (ancestor.next_steps[0] if ancestor.next_steps else None, ancestor.current_step):
            if step is not None:
                bounds.extend(add_duration(step.tiers, d) for d in distance.durations)
    new_progress = TieredTime(*min(bounds))
    sim.progress.set(new_progress)
    sim.tqdm.update(new_progress.time - sim.tqdm.n)
    sim._progress_key = key


def add_duration(tiers: tuple[int, ...], duration: TieredDuration) -> tuple[int, ...]:
    """``(TieredTime(*tiers) + duration).tiers`` without the intermediate objects.

    mosaik's rule: the first ``duration.cutoff`` tiers add up component-wise, the
    duration's remaining tiers replace the rest.
    """
    cut, dt = duration.cutoff, duration.tiers
    if cut == 1:
        return (tiers[0] + dt[0],) + dt[1:]
    return tuple([a + b for a, b in zip(tiers[:cut], dt)]) + dt[cut:]


def _tiers(sim) -> tuple:
    """What a progress bound reads of ``sim``: its next and its current step."""
    nxt = sim.next_steps[0].tiers if sim.next_steps else None
    cur = sim.current_step.tiers if sim.current_step is not None else None
    return nxt, cur


def applies(version: str | None = None, checked: tuple[str, ...] = CHECKED_VERSIONS) -> bool:
    """True if the installed (or given) mosaik version is one of ``checked`` (these fixes' own by default)."""
    version = version if version is not None else metadata.version("mosaik")
    return any(version == v or version.startswith(v + ".") for v in checked)


def install() -> bool:
    """Install both fixes (idempotent). Returns whether they are active."""
    if not applies():
        return False
    Progress.set = _set_without_cancelled
    mosaik.scheduler.advance_progress = _advance_progress
    return True


def uninstall() -> None:
    """Restore mosaik's own functions."""
    Progress.set = _ORIGINAL_SET
    mosaik.scheduler.advance_progress = _ORIGINAL_ADVANCE


def cancel_leftover_tasks(world) -> int:
    """Cancel the tasks a failed ``world.run`` left pending; returns how many.

    Call after ``world.run`` returned or raised, before the world shuts down. The
    tasks that carry the connections to remote simulators stay (the shutdown
    needs them); everything else still pending (the simulators' step loops and
    the waits they started) is cancelled. A run that finished leaves none.
    """
    loop = world.loop
    if loop.is_closed() or loop.is_running():
        return 0
    keep = set()
    for proxy in world._async_world._proxies.values():
        keep.add(getattr(proxy, "_reader_task", None))
        keep.add(getattr(getattr(proxy, "_channel", None), "_receiver_task", None))
    pending = [t for t in asyncio.all_tasks(loop) if not t.done() and t not in keep]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    return len(pending)
