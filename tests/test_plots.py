"""Every figure of a run is written as PNG and SVG, opens, and carries its title,
units, dated clock-time axis and legend (scenarios/plots.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import matplotlib.image as mpimg
import numpy as np
import pytest

import ev_grid_cosim as egc
from scenarios.plots import plot_comparison

FIGURES = {
    "voltage_bands": ["voltage magnitude [pu]", "clock time [Europe/Paris], 17 Jan 2024", "limits",
                      "monitored buses"],
    "voltage_profile": ["voltage magnitude [pu]", "[km]", "worst step", "Bus-R1"],
    "loading": ["transformer loading [%]", "line loading [%]", "Trafo-R0-R1", "limit", "clock time"],
    "feeder_power": ["active power [kW]", "reactive power [kvar]", "base load", "EV", "PV",
                     "transformer HV side", "clock time"],
    "fleet": ["state of charge [-]", "reactive power Q [kvar]", "clock time"],
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A short smart + reactive-power run of the default study (the voltage limit binds: Q is used)."""
    scenario = egc.load("default", {"fleet.can_reactive": True,
                                    "scheduler.strategy": "smart_q"}, steps=6)
    out = tmp_path_factory.mktemp("plots")
    egc.run(scenario, out=out, plots=True)
    return out


def svg_text(path) -> str:
    root = ET.parse(path).getroot()  # well-formed XML
    return " ".join(t for t in root.itertext())


@pytest.mark.parametrize("stem", sorted(FIGURES))
def test_figure_opens_with_title_units_and_legend(run_dir, stem):
    image = mpimg.imread(run_dir / f"{stem}.png")
    assert image.shape[0] > 400 and image.shape[1] > 1000
    assert np.std(image[..., :3]) > 0.05  # not blank
    text = svg_text(run_dir / f"{stem}.svg")
    assert "default:" in text  # the title names the case
    for word in FIGURES[stem]:
        assert word in text, (stem, word)


def test_comparison_has_title_and_a_legend_entry_per_case(run_dir, tmp_path):
    paths = plot_comparison({"a": run_dir, "b": run_dir}, tmp_path / "comparison.png", title="study")
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    assert mpimg.imread(paths[0]).shape[1] > 1000
    text = svg_text(tmp_path / "comparison.svg")
    assert "study: mean SOC and lowest voltage per case" in text
    assert "lowest monitored voltage [pu]" in text and " a " in f" {text} " and "case" in text
