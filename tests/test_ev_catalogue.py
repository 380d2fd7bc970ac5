"""EV catalogue (adapters/ev_catalogue.py, adapters/data/ev_catalogue_2024.csv)."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.ev_catalogue import DEFAULT_CATALOGUE, load_catalogue


def test_shipped_catalogue_numbers():
    cat = load_catalogue()
    assert len(cat.models) == 10
    assert [m.rank for m in cat.models] == list(range(1, 11))
    y = cat.models[0]
    assert (y.model, y.usable_kwh, y.wltp_range_km) == ("Tesla Model Y", 57.5, 455.0)
    # consumption is usable / WLTP range, recomputed here independently
    for m in cat.models:
        assert m.consumption_kwh_per_km == pytest.approx(m.usable_kwh / m.wltp_range_km, rel=5e-3)
    # PMF by H1 2024 registrations: Model Y 101 181 of 386 198 in the top ten
    p = cat.pmf()
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(101181 / 386198, rel=1e-9)


def test_sampling_follows_pmf_and_seed():
    cat = load_catalogue()
    a = cat.sample(np.random.default_rng(7), 20000)
    b = cat.sample(np.random.default_rng(7), 20000)
    assert a == b
    freq = np.array([sum(m is x for x in a) for m in cat.models]) / len(a)
    # binomial standard error <= 0.0035 at n = 20 000: 5 sigma
    assert np.abs(freq - cat.pmf()).max() < 0.018


def _write(tmp_path, body):
    text = DEFAULT_CATALOGUE.read_text().splitlines()
    header = [ln for ln in text if not ln.startswith("#")][0]
    p = tmp_path / "cat.csv"
    p.write_text(header + "\n" + body + "\n")
    return p


def test_bad_rows_named(tmp_path):
    p = _write(tmp_path, "\n".join([
        "1,A,x,100,57.5,455,0.2,s,s,s",          # consumption not usable/range
        "2,B,x,100,-3,455,0.13,s,s,s",           # negative capacity
        "3,D,x,100,60,400,0.15,s,,s",            # missing source
        "4,C,x,100,60,400,0.15,s,s,s",
        "5,C,x,100,60,400,0.15,s,s,s",           # duplicate
    ]))
    with pytest.raises(ValueError) as exc:
        load_catalogue(p)
    msg = str(exc.value)
    assert "row 1: consumption_kwh_per_km 0.2 is not usable_kwh / wltp_range_km" in msg
    assert "row 2: usable_kwh must be in [10, 200]" in msg
    assert "row 3: source_usable_kwh must name" in msg
    assert "row 5: duplicate model 'C'" in msg
    assert "row 4" not in msg


def test_missing_column_and_file(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("rank,model\n1,A\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_catalogue(p)
    with pytest.raises(ValueError, match="no such file"):
        load_catalogue(tmp_path / "nope.csv")
