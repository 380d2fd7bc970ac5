"""Read a stock collector's output back into the project's recorder tables.

A scenario may replace the built-in recorder by another mosaik collector
(``[simulators.<name>] replaces = "recorder"``, ``docs/external_simulators.md``):
it gets every connection the recorder would get. When its table says how its
output is read (``results = { format = ..., file = ... }``), the run rebuilds
the project's tables from that file after the run, through the built-in
recorder's own step logic (:class:`simulators.recorder.mosaik_api.RecorderSimulator`,
``writer = "inline"``), and the summary and plots are computed from them as
usual. Formats:

``mosaik-csv-writer``
    ``mosaik_csv_writer:CSVWriter`` of the stock mosaik-csv package: one row per
    step it was stepped at (column ``date``, ``YYYY-MM-DD HH:MM:SS``), one column
    ``<source full id>-<attribute>`` per input; a ``records`` cell holds the
    Python text of its tables (lists; the runner publishes lists, not numpy
    arrays, to a collector). Attribute names must not contain ``-`` (the
    project's do not).
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import re
from pathlib import Path

import pandas as pd

_NAN = re.compile(r"\bnan\b")


def _cell(value):
    """One CSV cell as the value the collector got (records: its tables)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{") or text.startswith("["):
            return ast.literal_eval(_NAN.sub("None", text))
        if text in ("True", "False"):
            return text == "True"
        if text in ("None", "NaN", "nan", ""):
            return None
        for number in (int, float):
            try:
                return number(text)
            except ValueError:
                pass
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def import_mosaik_csv_writer(path: Path, out_dir: Path, start: dt.datetime, metadata: dict) -> int:
    """Write the recorder tables of ``out_dir`` from a CSVWriter file; returns the steps read.

    Raises
    ------
    ValueError
        If the file is missing, empty or has a column that is not ``<full id>-<attr>``.
    """
    from simulators.recorder.mosaik_api import RecorderSimulator

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: the collector wrote no file there")
    frame = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    columns = []
    for col in frame.columns:
        src, dash, attr = col.rpartition("-")
        if not dash or "." not in src:
            raise ValueError(f"{path}: column {col!r} is not '<source full id>-<attribute>'")
        columns.append((src, attr))
    rec = RecorderSimulator()
    rec.init("Recorder-import", time_resolution=1.0)
    rec.create(1, "Recorder", out_dir=str(out_dir), metadata=metadata, writer="inline")
    start_ts = pd.Timestamp(start.replace(tzinfo=None))
    for date, row in zip(frame.index, frame.itertuples(index=False)):
        time_s = int(round((pd.Timestamp(date) - start_ts).total_seconds()))
        inputs: dict[str, dict] = {}
        for (src, attr), raw in zip(columns, row):
            value = _cell(raw)
            if value is None and attr == "records":
                continue
            inputs.setdefault(attr, {})[src] = value
        rec.step(time_s, {"Recorder": inputs}, time_s)
    rec.finalize()
    return len(frame)
