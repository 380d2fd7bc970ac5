"""Step-wise result store: Arrow IPC streams while running, Parquet when complete.

A run directory holds::

    metadata.json                  written before the first step (scenario, seed, versions)
    results/<table>/part-0000.arrows
                                   Arrow IPC *stream* of record batches, one batch per
                                   step, flushed to the OS after every step
    results/<table>.parquet        the same table, written by :meth:`StepWriter.consolidate`
                                   when the run completed (the streams are then removed)
    COMPLETE                       completion marker, written last
    FAILED                         failure marker of a run that started and could not
                                   finish (failed or interrupted; its error as JSON,
                                   also in summary.json; scenarios/failure.py)

Why two formats: a Parquet file is only readable once its footer is written, so a
run killed mid-way would lose everything written to an open Parquet file, and one
Parquet file per step and table costs ~5 ms a file (too slow at thousands of EVs).
An Arrow IPC stream has no footer: every batch written before a crash stays
readable (:func:`read_table` stops at a truncated last batch). Completed runs are
converted to one Parquet file per table for everyone else's tools.

Tables are long-format: ``time_s``, ``entity`` and one column per attribute. A table
whose column types change between steps (e.g. a column that was all-null) continues
in a new stream part; parts are concatenated with type promotion when read.

Columns derived from ``metadata.json`` when a table is read or consolidated
(:func:`derive_columns`): ``timestamp`` (clock time of ``time_s``, time-zone aware
in the scenario's ``timezone``) and, where a simulator publishes a bus as its
pandapower index (``EV.bus``) or names it in an entity id (``EVBus-<index>``), the
bus's entity name (``Bus-R11``) in ``bus``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pandas as pd

# pandas and pyarrow.parquet are imported where they are used: the background
# writer process (simulators/recorder/writer_process.py) needs neither, and they
# would double its start-up time.

COMPLETE_MARKER = "COMPLETE"
FAILED_MARKER = "FAILED"
RESULTS_DIR = "results"


class _TableStream:
    """Append-only Arrow IPC stream(s) of one table."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.part = 0
        self.file = None
        self.writer = None
        self.schema = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None or not table.schema.equals(self.schema):
            self.close()
            path = self.directory / f"part-{self.part:04d}.arrows"
            self.part += 1
            # Arrow's own buffered file: no Python call per Arrow buffer, and one
            # system call per batch at the flush that hands the step to the OS.
            self.file = pa.BufferedOutputStream(pa.OSFile(str(path), "wb"), 1 << 16)
            self.writer = pa.ipc.new_stream(self.file, table.schema)
            self.schema = table.schema
        self.writer.write_table(table)
        self.file.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.file.close()
        self.writer = self.file = None


class StepWriter:
    """Append recorded values step by step.

    Parameters
    ----------
    out_dir : Path
        Run directory; created if missing.
    clean : bool
        Remove earlier results (streams, Parquet files, completion marker) first.
        False for a writer continuing in a directory prepared by another one.
    """

    def __init__(self, out_dir: Path, clean: bool = True):
        self.out_dir = Path(out_dir)
        self.results_dir = self.out_dir / RESULTS_DIR
        self.results_dir.mkdir(parents=True, exist_ok=True)
        if clean:
            for old in list(self.results_dir.glob("*/part-*.arrows")) + list(self.results_dir.glob("*.parquet")):
                old.unlink()
            for name in (COMPLETE_MARKER, FAILED_MARKER):
                marker = self.out_dir / name
                if marker.exists():
                    marker.unlink()
        self._streams: dict[str, _TableStream] = {}
        self._entity_columns: dict[str, tuple[list[str], pa.Array]] = {}

    def write_metadata(self, metadata: Mapping) -> None:
        """Write ``metadata.json`` (scenario, seed, package versions)."""
        _atomic_write(self.out_dir / "metadata.json", json.dumps(metadata, indent=2, default=str))

    def append(self, time_s: int, table: str, rows: Mapping[str, Mapping[str, object]]) -> None:
        """Write one step of one table given row-wise.

        Parameters
        ----------
        time_s : int
            Simulation time of the step [s from start].
        table : str
            Table name (entity type, e.g. ``"EV"``).
        rows : mapping
            entity id -> {attribute: scalar value}. Missing attributes become nulls;
            non-finite floats are stored as nulls (never as stale numbers).
        """
        if not rows:
            return
        entities = sorted(rows)
        attrs = sorted({a for r in rows.values() for a in r})
        columns: dict[str, list] = {"entity": entities}
        for attr in attrs:
            columns[attr] = [rows[e].get(attr) for e in entities]
        self.append_columns(time_s, table, columns)

    def append_columns(self, time_s: int, table: str, columns: Mapping[str, Sequence]) -> None:
        """Write one step of one table given column-wise.

        Parameters
        ----------
        time_s : int
            Simulation time of the step [s from start].
        table : str
            Table name.
        columns : mapping
            ``"entity"`` -> entity ids, and attribute -> values in the same order.
            Non-finite floats are stored as nulls.
        """
        n = len(columns["entity"])
        if n == 0:
            return
        data = {"time_s": pa.array(np.full(n, int(time_s), dtype=np.int64)),
                "entity": self._entities(table, columns["entity"])}
        for name in sorted(columns):
            if name != "entity":
                data[name] = _column(columns[name])
        stream = self._streams.get(table)
        if stream is None:
            stream = self._streams[table] = _TableStream(self.results_dir / table)
        stream.write(pa.table(data))

    def _entities(self, table: str, ids: Sequence[str]) -> pa.Array:
        """The entity column, converted once while a table's entities stay the same."""
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        cached = self._entity_columns.get(table)
        if cached is None or cached[0] != ids:
            cached = self._entity_columns[table] = (ids, pa.array(ids, pa.string()))
        return cached[1]

    def end_step(self) -> None:
        """Mark the end of a step's tables: nothing to do, each was flushed when appended.

        (:class:`simulators.recorder.writer_process.WriterProcess` sends the step here.)
        """

    def close(self) -> None:
        """Close every open stream (the data stays readable)."""
        for stream in self._streams.values():
            stream.close()

    def finish(self, summary: Mapping | None = None) -> None:
        """Close, convert to Parquet and write the completion marker."""
        self.close()
        consolidate(self.out_dir)
        mark_complete(self.out_dir, summary)


def _column(values: Sequence | np.ndarray) -> pa.Array:
    """One column as an Arrow array: NaN and inf become null, nested values JSON text.

    Numeric columns (lists of numbers or numpy arrays, as our simulators publish
    them) go through numpy, which is several times faster than Arrow's conversion
    of Python lists plus a compute kernel for the non-finite mask.
    """
    if isinstance(values, np.ndarray):
        arr = values
    elif len(values) and type(values[0]) in (float, int, bool):
        arr = np.asarray(values)
    else:
        arr = None
    if arr is not None and arr.ndim == 1:
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr)
            return pa.array(arr, mask=bad if bad.any() else None)
        if arr.dtype.kind in "biu":
            return pa.array(arr)
    try:
        out = pa.array(values, from_pandas=True)  # from_pandas: NaN -> null
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([_clean(v) for v in values])
    if pa.types.is_floating(out.type):
        return pc.if_else(pc.is_finite(out), out, pa.scalar(None, out.type))
    if pa.types.is_nested(out.type):
        return pa.array([_clean(v) for v in values])
    return out


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_stream(path: Path) -> list[pa.RecordBatch]:
    """Every complete batch of a stream file (a truncated tail is dropped)."""
    batches = []
    with open(path, "rb") as f:
        try:
            reader = pa.ipc.open_stream(f)
            for batch in reader:
                batches.append(batch)
        except (pa.ArrowInvalid, OSError, EOFError):
            pass  # the run died while writing this batch: keep what is complete
    return batches


def _read_arrow(out_dir: Path, table: str) -> pa.Table | None:
    parquet = Path(out_dir) / RESULTS_DIR / f"{table}.parquet"
    if parquet.exists():
        import pyarrow.parquet as pq

        return pq.read_table(parquet)
    parts = []
    for path in sorted((Path(out_dir) / RESULTS_DIR / table).glob("part-*.arrows")):
        batches = _read_stream(path)
        if batches:
            parts.append(pa.Table.from_batches(batches))
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


def _run_metadata(out_dir: Path) -> dict:
    try:
        return json.loads((Path(out_dir) / "metadata.json").read_text())
    except (OSError, ValueError):
        return {}


def derive_columns(table: str, data: pa.Table, metadata: Mapping) -> pa.Table:
    """Add the columns derived from the run's metadata (see the module docstring).

    ``metadata`` keys used: ``start`` (ISO 8601 with UTC offset) and ``timezone``
    for ``timestamp``; ``bus_names`` (pandapower index as text -> entity id) for
    ``bus``. Columns already there are left alone, so this is idempotent.
    """
    names = data.column_names
    if "timestamp" not in names and metadata.get("start") and "time_s" in names:
        import datetime as dt

        start = dt.datetime.fromisoformat(metadata["start"])
        if start.tzinfo is not None:
            t0 = int(start.timestamp())
            seconds = pc.add(data.column("time_s").cast(pa.int64()), t0)
            tz = metadata.get("timezone") or "UTC"
            data = data.add_column(1, "timestamp", seconds.cast(pa.timestamp("s", tz=tz)))
    bus_names = metadata.get("bus_names")
    if bus_names:
        if "bus" in names and pa.types.is_integer(data.schema.field("bus").type):
            idx = data.column("bus").to_numpy(zero_copy_only=False)
            data = data.set_column(data.column_names.index("bus"), "bus", _names_of(idx, bus_names))
        elif table == "EVBus" and "bus" not in names:
            idx = pc.cast(pc.utf8_slice_codeunits(data.column("entity"), len("EVBus-")), pa.int64())
            data = data.append_column("bus", _names_of(idx.to_numpy(zero_copy_only=False), bus_names))
    return data


def _names_of(indices: np.ndarray, bus_names: Mapping[str, str]) -> pa.Array:
    """Entity names of pandapower bus indices (null stays null); one lookup per distinct bus."""
    values = np.asarray(indices, dtype=float)
    known = np.isfinite(values)
    uniq, inverse = np.unique(np.where(known, values, 0).astype(np.int64), return_inverse=True)
    labels = np.array([bus_names.get(str(u), f"Bus-{u}") for u in uniq], dtype=object)[inverse]
    labels[~known] = None
    return pa.array(labels, pa.string())


def consolidate(out_dir: Path) -> None:
    """Turn every table's streams into ``results/<table>.parquet`` (completed runs),
    with the derived columns (:func:`derive_columns`)."""
    import pyarrow.parquet as pq

    rdir = Path(out_dir) / RESULTS_DIR
    metadata = _run_metadata(out_dir)
    for table in tables(out_dir):
        data = _read_arrow(out_dir, table)
        if data is None:
            continue
        data = derive_columns(table, data, metadata)
        tmp = rdir / f"{table}.parquet.tmp"
        pq.write_table(data, tmp)
        os.replace(tmp, rdir / f"{table}.parquet")
        for part in (rdir / table).glob("part-*.arrows"):
            part.unlink()
        (rdir / table).rmdir()


def mark_complete(out_dir: Path, summary: Mapping | None = None) -> None:
    """Write the completion marker (with the run's summary)."""
    _atomic_write(Path(out_dir) / COMPLETE_MARKER, json.dumps(summary or {}, default=str))


def mark_failed(out_dir: Path, error: Mapping) -> None:
    """Write the failure marker (with the run's error: component, step, reason)."""
    _atomic_write(Path(out_dir) / FAILED_MARKER, json.dumps(error, indent=2, default=str))


def tables(out_dir: Path) -> list[str]:
    """Names of the tables recorded in a run directory."""
    rdir = Path(out_dir) / RESULTS_DIR
    if not rdir.exists():
        return []
    names = {p.name for p in rdir.iterdir() if p.is_dir()}
    names |= {p.name[: -len(".parquet")] for p in rdir.glob("*.parquet")}
    return sorted(names)


def read_table(out_dir: Path, table: str) -> pd.DataFrame:
    """All recorded steps of one table as a long DataFrame (sorted by time, entity).

    Works on runs that died mid-way: every completed step is there. The derived
    columns (``timestamp``, bus entity names; :func:`derive_columns`) are included.
    """
    data = _read_arrow(out_dir, table)
    if data is None:
        raise FileNotFoundError(f"no recorded steps for table {table!r} in {out_dir}")
    df = derive_columns(table, data, _run_metadata(out_dir)).to_pandas()
    return df.sort_values(["time_s", "entity"], kind="stable", ignore_index=True)


def pivot(out_dir: Path, table: str, attr: str) -> pd.DataFrame:
    """One attribute of one table as a time x entity frame."""
    df = read_table(out_dir, table)
    return df.pivot(index="time_s", columns="entity", values=attr)


def is_complete(out_dir: Path) -> bool:
    """True if the run wrote its completion marker."""
    return (Path(out_dir) / COMPLETE_MARKER).exists()


def is_failed(out_dir: Path) -> bool:
    """True if the run started and wrote its failure marker (failed or interrupted)."""
    return (Path(out_dir) / FAILED_MARKER).exists()
