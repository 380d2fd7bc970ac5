"""Write recorded steps in a child process, so the co-simulation never waits for Arrow.

Converting a step's tables to Arrow and writing them cost the recorder 0.9-1.4 ms a
step at 1 000 EVs, all of it on the co-simulation's critical path. A
:class:`WriterProcess` instead pickles each step's columns (numpy arrays, entity ids
only when they changed) into a pipe to ``python -m simulators.recorder.writer_process
OUT_DIR``, which applies them to a :class:`~simulators.recorder.model.StepWriter`: the
same files, the same flush after every step. A thread was tried first and dropped:
the conversion holds the GIL and the fleet's step doubled (``docs/performance.md``).

Guarantees, and what they rest on:

- *Every completed step readable after a kill.* The child owns the files and the
  read end of the pipe. When the co-simulation dies (``SIGKILL`` included) the child
  reads what is still in the pipe, writes it, and exits at end of input. It ignores
  ``SIGINT`` so that Ctrl-C on the terminal's process group does not kill it before
  it has drained the pipe. Only a kill of both processes at once can lose the steps
  still in the pipe (at most the pipe's capacity, typically one or two steps).
- *Failures are not silent.* A child that fails (disk full, unwritable value) exits
  non-zero with its traceback on stderr; the next :meth:`WriterProcess.end_step` or
  :meth:`WriterProcess.close` raises :class:`WriterFailed` with that traceback, which
  fails the run.
- *Complete before read.* :meth:`WriterProcess.close` returns only after the child
  has written everything and exited, so results read afterwards are whole.

Back-pressure is the pipe itself: when the child falls behind, the co-simulation
blocks on the write instead of queueing without bound.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from simulators.recorder.model import StepWriter

#: Linux lets a pipe hold up to /proc/sys/fs/pipe-max-size (1 MiB by default);
#: a larger pipe absorbs the child's start-up and short stalls without blocking.
PIPE_BYTES = 1 << 20
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class WriterFailed(RuntimeError):
    """The writer process stopped with an error (its traceback is the message)."""


class WriterProcess:
    """Drop-in for :class:`StepWriter`'s ``append``/``append_columns`` in a child process.

    Parameters
    ----------
    out_dir : Path
        Run directory, already prepared (earlier results removed, metadata written)
        by a :class:`StepWriter` in this process.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.recorder.writer_process", str(self.out_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)
        _widen_pipe(self._proc.stdin.fileno())
        self._pending: list[tuple] = []
        self._entities: dict[str, list] = {}
        self._failed: WriterFailed | None = None

    def append_columns(self, time_s: int, table: str, columns: Mapping[str, Sequence]) -> None:
        """Queue one table of the current step (see :meth:`StepWriter.append_columns`)."""
        ids = columns["entity"]
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        cols = dict(columns)
        if self._entities.get(table) == ids:
            cols["entity"] = None  # the child keeps the last entity ids of every table
        else:
            self._entities[table] = ids
            cols["entity"] = ids
        self._pending.append(("columns", int(time_s), table, cols))

    def append(self, time_s: int, table: str, rows: Mapping[str, Mapping[str, object]]) -> None:
        """Queue one row-wise table of the current step (see :meth:`StepWriter.append`)."""
        self._pending.append(("rows", int(time_s), table, rows))

    def end_step(self) -> None:
        """Hand the queued tables of this step to the writer.

        Raises
        ------
        WriterFailed
            If the writer process has stopped.
        """
        if not self._pending:
            return
        if self._proc.poll() is not None:
            raise self._failure()
        # Pickled whole before anything is written: a value that cannot be pickled
        # fails here (the step is dropped, the error raised), never leaving half a
        # step in the pipe.
        pending, self._pending = self._pending, []
        data = pickle.dumps(pending, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except OSError:  # BrokenPipeError: the child has gone
            raise self._failure() from None

    def close(self) -> None:
        """Send what is queued, wait until everything is written and the child has exited.

        Raises
        ------
        WriterFailed
            If the writer process failed at any point.
        """
        if self._failed is not None:
            raise self._failed
        if self._stderr.closed:
            return
        self.end_step()
        self._proc.stdin.close()
        if self._proc.wait() != 0:
            raise self._failure()
        self._stderr.close()

    def _failure(self) -> WriterFailed:
        """The child's error, after releasing the pipe and the stderr file."""
        if self._failed is not None:
            return self._failed
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._proc.wait()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        self._stderr.close()
        self._failed = WriterFailed(f"recorder writer process exited with code {self._proc.returncode}"
                                    + (f":\n{text}" if text else ""))
        return self._failed


def _widen_pipe(fd: int) -> None:
    """Enlarge a pipe's buffer where the platform allows it (Linux); else keep it."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


def serve(out_dir: Path, stream) -> None:
    """The child's loop: apply every pickled step from ``stream`` until it ends."""
    writer = StepWriter(out_dir, clean=False)
    # pyarrow imports pandas at its first conversion (~0.7 s here); do it now, while
    # the co-simulation is still being set up, not in the middle of the first step.
    import pyarrow as pa

    pa.array([0.0])
    entities: dict[str, list] = {}
    try:
        while True:
            try:
                ops = pickle.load(stream)
            except (EOFError, pickle.UnpicklingError):
                break  # end of input, or the parent died in the middle of a step
            for kind, time_s, table, payload in ops:
                if kind == "rows":
                    writer.append(time_s, table, payload)
                    continue
                if payload["entity"] is None:
                    payload["entity"] = entities[table]
                else:
                    entities[table] = payload["entity"]
                writer.append_columns(time_s, table, payload)
    finally:
        writer.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the writer process: ``python -m simulators.recorder.writer_process OUT_DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m simulators.recorder.writer_process OUT_DIR")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # drain the pipe even on Ctrl-C (see module doc)
    serve(Path(args[0]), sys.stdin.buffer)
    # Everything is written and closed. Tearing down the interpreter (pandas and
    # pyarrow loaded) would take another ~0.1 s that the co-simulation waits for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
