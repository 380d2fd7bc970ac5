"""Fuzzed scenario files through the command line's whole set-up (issue 14).

Mutations of the shipped scenarios (``tests/support/scenario_fuzz.py``) must end in a
clean error (exit 2 naming a field) or a set-up that succeeds (``--check``: every
case's world built, not run); never a traceback, a late set-up failure or a hang.

Small here (``FUZZ_EXAMPLES``, default 50, derandomized); 500 with a report:
``python bench/fuzz_scenarios.py 500`` (docs/reliability.md).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.scenario_fuzz import BASES, mutated_documents, outcome, write_scenario

pytestmark = pytest.mark.fuzz

N_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
#: the sweep's ~10 s validation is left to the bench
QUICK_BASES = tuple(b for b in BASES if b.stem != "hosting_capacity")


@settings(max_examples=N_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=mutated_documents(QUICK_BASES))
def test_fuzzed_scenario_is_a_clean_error_or_sets_up(doc, tmp_path_factory):
    base, raw, notes = doc
    folder = tmp_path_factory.mktemp("fuzz")
    path = write_scenario(folder, base, raw)
    kind, text = outcome(path, folder / "out", timeout_s=120.0)
    assert kind in ("ok", "usage"), f"{kind} for {base.name} with {notes}:\n{text}"


@pytest.mark.parametrize("base", sorted(set(BASES)), ids=lambda p: p.stem)
def test_unmutated_bases_set_up(base, tmp_path):
    path = write_scenario(tmp_path, base, __import__("tomllib").loads(base.read_text()))
    kind, text = outcome(path, tmp_path / "out")
    assert kind == "ok", text
