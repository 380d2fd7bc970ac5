"""Fuzz scenario files through the CLI's whole set-up (``--check``) and report.

    python bench/fuzz_scenarios.py [N] [--seed S] [--json FILE]

N mutated shipped scenarios (default 500; ``tests/support/scenario_fuzz.py`` says
how they are made and what the outcomes mean) are each written as TOML and run
through ``ev-grid-cosim FILE --check`` in this process. Prints the count of each
outcome and every ``traceback``, ``hang``, ``late`` and ``unnamed`` one with its
mutations and message. Exit status 1 if any traceback or hang.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.support.scenario_fuzz import mutated_documents, outcome, write_scenario  # noqa: E402

BAD = ("traceback", "hang", "late", "unnamed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (same seed, same documents)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per document [s]; beyond is a hang")
    parser.add_argument("--json", type=Path, default=None, help="write every outcome here")
    parser.add_argument("--jsonl", type=Path, default=None,
                        help="append each outcome here as it comes (a run cut short keeps its counts)")
    args = parser.parse_args(argv)

    rows: list[dict] = []
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="fuzz-scenarios-"))

    @settings(max_examples=args.n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(mutated_documents())
    def one(doc):
        base, raw, notes = doc
        folder = scratch / f"{len(rows):04d}"
        path = write_scenario(folder, base, raw)
        t = time.perf_counter()
        kind, text = outcome(path, folder / "out", args.timeout)
        rows.append({"base": base.name, "mutations": notes, "outcome": kind,
                     "seconds": round(time.perf_counter() - t, 2), "message": text.strip()[-800:]})
        if args.jsonl:
            with args.jsonl.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rows[-1], ensure_ascii=False) + "\n")

    import random
    random.seed(args.seed)
    from hypothesis import seed as hseed
    hseed(args.seed)(one)()
    wall = time.perf_counter() - t0
    counts = collections.Counter(r["outcome"] for r in rows)
    print(f"{len(rows)} documents in {wall:.0f} s: " + ", ".join(f"{k} {counts[k]}" for k in
                                                                  ("ok", "usage", *BAD)))
    for r in rows:
        if r["outcome"] in BAD:
            print(f"\n[{r['outcome']}] {r['base']}: {'; '.join(r['mutations'])}\n  {r['message']}")
    if args.json:
        args.json.write_text(json.dumps({"counts": dict(counts), "seconds": round(wall, 1), "rows": rows},
                                        indent=1, ensure_ascii=False))
    return 1 if counts["traceback"] or counts["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
