"""Fault 4 of docs/reliability.md: bad data found before anything starts.

Each input below used to pass validation and end in a 27-60-line traceback after
the output folder was made. Now each is one line naming the file or field, exit
status 2 through the command line, and no output folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.networks import load_network
from scenarios.cli import main
from scenarios.config import ScenarioError, load_scenario
from simulators.baseload.model import load_specs_from_net

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "scenarios" / "default.toml"


def load_ids() -> list[str]:
    return [ld.eid for ld in load_specs_from_net(load_network("cigre_lv", None), {"*": "H0-A"})]


def csv_rows(first: str = "2024-01-17 15:00", n: int = 70) -> list[str]:
    """A base-load CSV for every CIGRE LV load, 15-min rows from ``first``
    (70 rows cover the default study's 16:00-08:00)."""
    import pandas as pd

    ids = load_ids()
    rows = ["Date," + ",".join(f"{i}.p_kw" for i in ids)]
    for t in pd.date_range(first, periods=n, freq="15min"):
        rows.append(t.strftime("%Y-%m-%d %H:%M:%S") + "," + ",".join("1.5" for _ in ids))
    return rows


def csv_scenario(tmp_path: Path, content: str | bytes) -> Path:
    data = tmp_path / "load.csv"
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    text = DEFAULT.read_text().replace('source = "simbench"', 'source = "csv"\ncsv_path = "load.csv"', 1)
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def only_problem(path: Path) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


def test_good_csv_loads(tmp_path):
    """The reference file of the bad ones below: valid, so each failure is its one defect."""
    case = load_scenario(csv_scenario(tmp_path, "\n".join(csv_rows()) + "\n")).cases[0]
    assert case.baseload.source == "csv"


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda r: r[:5] + [r[5].rsplit(",", 1)[0] + ",nan"] + r[6:], "line 6, column 'Load-C20.p_kw': not finite: 'nan'"),
    (lambda r: r[:5] + [r[5].rsplit(",", 1)[0] + ",inf"] + r[6:], "line 6, column 'Load-C20.p_kw': not finite: 'inf'"),
    (lambda r: r[:3] + [r[3].rsplit(",", 1)[0] + ",lots"] + r[4:], "line 4, column 'Load-C20.p_kw': not a number: 'lots'"),
    (lambda r: [",".join(x.split(",")[:-1]) for x in r], "missing column(s) ['Load-C20.p_kw']"),
    (lambda r: [r[0], r[2], r[1]] + r[3:], "line 3: time stamp"),
    (lambda r: r[:20], "leave the data range 2024-01-17 15:00:00 to 2024-01-17 19:45:00"),
])
def test_csv_content_is_checked_before_the_run(tmp_path, edit, needle):
    problem = only_problem(csv_scenario(tmp_path, "\n".join(edit(csv_rows())) + "\n"))
    assert problem.startswith("baseload.csv_path (case 'default'): ") and "load.csv" in problem, problem
    assert needle in problem, problem


def test_binary_csv(tmp_path):
    problem = only_problem(csv_scenario(tmp_path, b"\x89PNG\r\n\x1a\n\x00\xff" * 20))
    assert "load.csv: not UTF-8 text (byte 0x89 at offset 0)" in problem, problem


def test_tz_aware_csv_for_a_naive_start(tmp_path):
    rows = csv_rows()
    rows = [rows[0]] + [r.replace(":00,", ":00+01:00,", 1) for r in rows[1:]]
    problem = only_problem(csv_scenario(tmp_path, "\n".join(rows) + "\n"))
    assert "time stamps are tz-aware, so the start 2024-01-17 16:00:00 must be too" in problem, problem


def test_unknown_simbench_profile_name(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(DEFAULT.read_text().replace('R = "H0-A"', 'R = "H9-Z"', 1))
    problem = only_problem(path)
    assert problem.startswith("baseload.profiles.R: unknown SimBench load profile 'H9-Z'"), problem
    assert "H0-A" in problem and "HS0" not in problem  # the standard names, not all 100


@pytest.mark.parametrize("kind", ["folder", "not_utf8"])
def test_scenario_that_is_not_a_toml_text(tmp_path, capsys, kind):
    path = tmp_path / "s.toml"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe[scenario]\n")
    assert main([str(path), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert ("is a folder, not a scenario TOML file" if kind == "folder" else "not UTF-8 text (byte 0xff") in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(("out", "needle"), [
    ("afile", "exists and is not a folder"),
    ("afile/sub", "cannot be created: {tmp}/afile is a file, not a folder"),
    ("/proc/ev-grid-cosim/out", "is not writable: cannot create a file in /proc"),
])
def test_out_that_cannot_be_written(tmp_path, capsys, out, needle):
    (tmp_path / "afile").write_text("")
    target = out if out.startswith("/") else str(tmp_path / out)
    assert main([str(DEFAULT), "--out", target, "--steps", "1", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"--out: {target}") and needle.format(tmp=tmp_path) in err, err
