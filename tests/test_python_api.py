"""docs/python_api.md: its code runs as written, in a plain script and inside a
running event loop (Jupyter's situation)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "python_api.md"


def doc_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    return "\n".join(blocks)


def test_doc_code_runs_in_a_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(doc_code(), str(DOC), "exec"), {"__name__": "__doc__"})
    out = capsys.readouterr()
    assert "Bus-R" in out.out and "Europe/Paris" in out.out
    assert "must be in [0, 1]" in out.out  # the error example lists the problems
    assert "INFO" not in out.err  # quiet by default


def test_doc_code_runs_inside_a_running_event_loop(tmp_path, monkeypatch):
    """The doc's code (which itself calls asyncio.run at the end) is not run here;
    run() is, from a coroutine: the situation of a notebook cell."""
    import ev_grid_cosim as egc

    monkeypatch.chdir(tmp_path)

    async def cell():
        assert asyncio.get_running_loop()
        return egc.run(egc.load("default", {"fleet.counts": {"R1": 2}}, steps=3), out="out/loop")

    results = asyncio.run(cell())
    assert results.summary()["recorded_steps"].iloc[0] == 3
    assert results.table("EV")["bus"].eq("Bus-R1").all()


def test_unknown_case_is_a_key_error(tmp_path):
    import ev_grid_cosim as egc

    with pytest.raises(KeyError, match="nosuch"):
        egc.run(egc.load("default", steps=1), out=tmp_path, cases=["nosuch"])
