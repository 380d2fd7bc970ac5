"""The built-in studies build the same worlds: recorded tables bit for bit as on main.

``tests/data/world_hashes.json`` was written by ``python -m tests.support.world_hashes``
on main before the world-builder work of issue 10 (default.toml at 3ee03dc, before the
stock-component options; simbench_lv.toml at 954f7ee); wall-time columns are left out
(tests/support/world_hashes.py).
"""

from __future__ import annotations

import json

import pytest

from tests.support.world_hashes import HASHES, RUNS, run_hashes


@pytest.mark.parametrize("scenario", sorted(RUNS))
def test_recorded_tables_unchanged(scenario, tmp_path):
    expected = json.loads(HASHES.read_text())[scenario]
    assert run_hashes(scenario, RUNS[scenario], tmp_path) == expected
