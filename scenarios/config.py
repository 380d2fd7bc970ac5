"""Scenario files: frozen dataclasses loaded from TOML and validated in one pass.

:func:`load_scenario` reads a TOML file, checks every field, and raises one
:class:`ScenarioError` that lists *every* problem (field name, allowed range, value)
before anything is built or started. The file format is documented field by field in
``docs/scenarios.md``; ``scenarios/default.toml`` is a complete example.

A scenario may hold several ``[[cases]]``: each case overrides fields of the
``[scheduler]``, ``[fleet]`` and ``[grid]`` tables and is run as its own
co-simulation (one output sub-folder per case).

A scenario may instead hold a ``[sweep]``: axes (EV penetration, strategy, seed,
network, target SOC) whose product, or an explicit list of points, gives one
co-simulation per point (``scenarios/sweep.py`` runs them on Dask). Every axis value
is checked here, with the others, in the same single pass.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from adapters.networks import SIMBENCH_STUDY_CASES, check_network_name, check_study_case
from adapters.remote_watchdog import DEFAULT_START_TIMEOUT_S, DEFAULT_STEP_TIMEOUT_S, parse_addr

STRATEGIES = ("uncoordinated", "smart", "smart_q", "v2g", "v2g_q", "autonomous", "replay", "flex_max")
MODES = ("day_ahead", "receding", "day_ahead_daily")
STARTERS = ("python", "cmd", "connect")
SIMULATOR_NAMES = ("grid", "baseload", "der", "pv", "fleet", "scheduler", "recorder", "dso")
DER_OPTIONS = ("auto", "profile", "off", "pv", "static")
BASELOAD_SOURCES = ("simbench", "csv", "nominal")
#: who computes the power flow: the project's grid, or the stock mosaik-pandapower-2 package
GRID_SIMULATORS = ("builtin", "mosaik-pandapower-2")
#: who serves a CSV base load: the project's simulator, or the stock mosaik-csv package
BASELOAD_READERS = ("builtin", "mosaik-csv")
ARRIVALS = ("gev", "fixed")
#: fleet.sampling: seed 000 counts per bus, or seed 003 commuters on the loads (simulators/ev_fleet/commuters.py)
FLEET_SAMPLINGS = ("counts", "seed003")
DSO_POLICIES = ("scheduled", "voltage", "congestion")
DIRECTIONS = ("up", "down")
#: scheduler solvers ("auto": PIQP, or for cone = "soc" Clarabel unless no cone is left) and the module each needs
SOLVER_MODULES = {"piqp": "piqp", "clarabel": "clarabel", "highs": "highspy"}

# Size bounds (docs/scenarios.md, "Size bounds"): a run beyond them would exhaust
# memory or time long after it started (1e17 EVs ended in a MemoryError, an `end` a
# century away grew until killed), so they are refused before anything starts.
MAX_HORIZON_DAYS = 366
MAX_STEPS = 527_040  # one leap year of 1-minute steps
MAX_EVS = 100_000  # sampled (fleet.counts) plus listed (fleet.evs), per case
# EV rows of a run (EVs x steps): the summary reads the EV table into memory,
# about 100 B a row, so 2e8 rows are about 20 GB
MAX_EV_STEPS = 200_000_000


class ScenarioError(ValueError):
    """A scenario file has problems; ``problems`` lists each one."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = list(problems)
        text = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the scenario:\n{text}")


# --- a field spec is (type, lower, upper, choices); bounds are inclusive unless the
# --- lower bound is given as ("gt", x) for strictly greater.


def _spec(lo=None, hi=None, choices=None, gt=False):
    return {"lo": lo, "hi": hi, "choices": choices, "gt": gt}


@dataclass(frozen=True)
class ScenarioMeta:
    """``[scenario]``: name, clock and randomness."""

    name: str = "scenario"
    description: str = ""
    seed: int = field(default=0, metadata=_spec(lo=0))
    start: dt.datetime = dt.datetime(2024, 5, 15, 16, 0)
    end: dt.datetime = dt.datetime(2024, 5, 16, 8, 0)
    step_s: int = field(default=900, metadata=_spec(lo=1, hi=86400))
    latitude_deg: float = field(default=48.8, metadata=_spec(lo=-90, hi=90))
    longitude_deg: float = field(default=2.3, metadata=_spec(lo=-180, hi=180))
    altitude_m: float = field(default=100.0, metadata=_spec(lo=-500, hi=9000))
    timezone: str = "Europe/Paris"

    @property
    def horizon_s(self) -> int:
        return int((self.end - self.start).total_seconds())

    @property
    def n_steps(self) -> int:
        return self.horizon_s // self.step_s


@dataclass(frozen=True)
class GridConfig:
    """``[grid]``: network and operating limits."""

    network: str = "cigre_lv"
    vm_min_pu: float = field(default=0.92, metadata=_spec(lo=0.5, hi=1.0, gt=True))
    vm_max_pu: float = field(default=1.08, metadata=_spec(lo=1.0, hi=1.5))
    max_line_loading_percent: float = field(default=100.0, metadata=_spec(lo=0, hi=1000, gt=True))
    max_trafo_loading_percent: float = field(default=100.0, metadata=_spec(lo=0, hi=1000, gt=True))
    ext_grid_vm_pu: float | None = field(default=None, metadata=_spec(lo=0.8, hi=1.2))
    # summary and voltage plots over these buses only: a prefix of the buses' short
    # names (e.g. "R" for CIGRE LV's residential feeder R0..R18); "" = every bus
    monitor_buses: str = ""
    # the network's own sgens and storage units (simulators/der/): on SimBench's
    # profiles, off, PV sgens replaced by the project's PV model, or static
    der: str = field(default="auto", metadata=_spec(choices=DER_OPTIONS))
    der_forecast_error_std: float = field(default=0.0, metadata=_spec(lo=0, hi=1))
    # SimBench study case (snapshot): loads, sgens and slack voltage of that case
    study_case: str = field(default="", metadata=_spec(choices=("", *SIMBENCH_STUDY_CASES)))
    # "mosaik-pandapower-2": the power flow in the stock simulator (adapters/pandapower2.py;
    # docs/external_simulators.md): no transformer results, a non-converged step fails the run
    simulator: str = field(default="builtin", metadata=_spec(choices=GRID_SIMULATORS))


@dataclass(frozen=True)
class BaseLoadConfig:
    """``[baseload]``: household/commercial demand per load."""

    source: str = field(default="simbench", metadata=_spec(choices=BASELOAD_SOURCES))
    csv_path: str = ""
    # "mosaik-csv": the stock mosaik_csv:CSV simulator serves csv_path (adapters/load_relay.py;
    # docs/external_simulators.md); the scheduler's forecast still reads the file itself
    reader: str = field(default="builtin", metadata=_spec(choices=BASELOAD_READERS))
    scale: float = field(default=1.0, metadata=_spec(lo=0, hi=10))
    # load-name prefix -> SimBench profile name; "*" is the fallback
    profiles: dict = field(default_factory=lambda: {"R": "H0-A", "C": "G1-A", "I": "G3-A", "*": "H0-A"})
    forecast_error_std: float = field(default=0.0, metadata=_spec(lo=0, hi=1))
    # 1..12: every day is that month's average day of the SimBench profiles (seed 003: May); 0: off
    average_month: int = field(default=0, metadata=_spec(lo=0, hi=12))


@dataclass(frozen=True)
class PVUnit:
    """One rooftop PV unit (``[[pv.units]]``)."""

    bus: str | int
    kwp: float = field(metadata=_spec(lo=0, hi=100000, gt=True))
    s_kva: float | None = field(default=None, metadata=_spec(lo=0, hi=100000, gt=True))


@dataclass(frozen=True)
class PVConfig:
    """``[pv]``: rooftop PV with VDE-AR-N 4105 cos phi(P)."""

    tilt_deg: float = field(default=30.0, metadata=_spec(lo=0, hi=90))
    azimuth_deg: float = field(default=180.0, metadata=_spec(lo=0, hi=360))
    units: tuple[PVUnit, ...] = ()
    forecast_error_std: float = field(default=0.0, metadata=_spec(lo=0, hi=1))
    # "seed003": also one unit per customer with PV, sizes by simulators/pv/placement.py
    sampling: str = field(default="units", metadata=_spec(choices=("units", "seed003")))
    share: float = field(default=0.5, metadata=_spec(lo=0, hi=1))


@dataclass(frozen=True)
class EVEntry:
    """One explicitly listed EV (``[[fleet.evs]]``); times in hours after ``start``."""

    bus: str | int
    arrival_h: float = field(metadata=_spec(lo=0))
    departure_h: float = field(metadata=_spec(lo=0))
    soc_initial: float = field(default=0.5, metadata=_spec(lo=0, hi=1))


@dataclass(frozen=True)
class FleetConfig:
    """``[fleet]``: EV counts per bus, parameters and sampling distributions."""

    counts: dict = field(default_factory=dict)
    evs: tuple[EVEntry, ...] = ()
    battery_kwh: float = field(default=16.0, metadata=_spec(lo=0, hi=1000, gt=True))
    charger_kva: float = field(default=3.6, metadata=_spec(lo=0, hi=1000, gt=True))
    efficiency: float = field(default=0.9, metadata=_spec(lo=0, hi=1, gt=True))
    soc_target: float = field(default=1.0, metadata=_spec(lo=0, hi=1))
    soc_min: float = field(default=0.0, metadata=_spec(lo=0, hi=1))
    soc_max: float = field(default=1.0, metadata=_spec(lo=0, hi=1))
    can_discharge: bool = False
    can_reactive: bool = False
    autonomous: bool = False
    arrival: str = field(default="gev", metadata=_spec(choices=ARRIVALS))
    arrival_fixed_h: float = field(default=16.0, metadata=_spec(lo=0, hi=48))
    arrival_gev_shape: float = field(default=-0.06, metadata=_spec(lo=-1, hi=1))
    arrival_gev_scale_h: float = field(default=0.85, metadata=_spec(lo=0, hi=24, gt=True))
    arrival_gev_loc_h: float = field(default=17.3, metadata=_spec(lo=0, hi=48))
    departure_weibull_scale_h: float = field(default=7.67, metadata=_spec(lo=0, hi=48, gt=True))
    departure_weibull_shape: float = field(default=21.83, metadata=_spec(lo=0, hi=1000, gt=True))
    soc_initial_mean: float = field(default=0.49, metadata=_spec(lo=0, hi=1))
    soc_initial_std: float = field(default=0.04, metadata=_spec(lo=0, hi=1))
    consumption_kwh_per_km: float = field(default=0.160, metadata=_spec(lo=0, hi=10))
    e_star_kwh: float | None = field(default=None, metadata=_spec(lo=0, hi=100))
    sampling: str = field(default="counts", metadata=_spec(choices=FLEET_SAMPLINGS))
    ev_share: float = field(default=0.2, metadata=_spec(lo=0, hi=1))
    reserve_soc: float = field(default=0.2, metadata=_spec(lo=0, hi=1))
    catalogue: str = ""
    # EVs sampled from counts come home every day of the horizon (a new stay with
    # fresh draws each evening; docs/scenarios.md), not only on the first evening
    daily_stays: bool = False


@dataclass(frozen=True)
class SchedulerConfig:
    """``[scheduler]``: strategy, planning mode and solver settings."""

    strategy: str = field(default="uncoordinated", metadata=_spec(choices=STRATEGIES))
    mode: str = field(default="receding", metadata=_spec(choices=MODES))
    k_weight: float = field(default=1e-4, metadata=_spec(lo=0, hi=1))
    cone: str = field(default="soc", metadata=_spec(choices=("soc", "polygon")))
    polygon_sides: int = field(default=16, metadata=_spec(lo=4, hi=256))
    solver: str = field(default="auto", metadata=_spec(choices=("auto", *SOLVER_MODULES)))
    time_limit_s: float = field(default=60.0, metadata=_spec(lo=0, hi=86400, gt=True))
    soft_penalty: float = field(default=1e4, metadata=_spec(lo=0, hi=1e12, gt=True))
    relinearise: bool = False
    # voltage rows by constraint generation, seeded by the previous solve (exact;
    # docs/performance.md); false: every screened row in one solve
    row_generation: bool = True
    ac_iterations: int = field(default=0, metadata=_spec(lo=0, hi=20))
    # move blocking (optional approximation, docs/strategies.md): the first
    # fine_steps steps keep their own power, later ones are held over block_steps;
    # 0 = exact model
    fine_steps: int = field(default=0, metadata=_spec(lo=0, hi=10000))
    block_steps: int = field(default=4, metadata=_spec(lo=1, hi=1000))
    # strategy "autonomous" (seed 001; docs/autonomous.md): cost of each EV charging
    # away from home [-], and whether the outbound drive is charged only to EVs that
    # moved (false: the paper's bookkeeping, every movable EV pays it)
    autonomous_move_penalty: float = field(default=1e-3, metadata=_spec(lo=0, hi=1e3))
    autonomous_exact_drive_energy: bool = True
    # strategy "replay": apply the EV powers recorded by another case of the scenario
    replay_case: str = ""
    replay_zero_q: bool = False
    # day-ahead mode: what the scheduler is told about every EV, with seeded
    # errors (the fleet itself behaves as sampled): arrival time + N(0, std) [h],
    # initial SOC + N(0, std) [-]; receding mode learns each EV when it plugs in
    forecast_arrival_std_h: float = field(default=0.0, metadata=_spec(lo=0, hi=24))
    # mode day_ahead_daily: the clock hour of the daily re-plan [h after midnight,
    # the scenario's clock], a multiple of step_s (docs/strategies.md)
    replan_at_h: float = field(default=12.0, metadata=_spec(lo=0, hi=24))
    forecast_soc_std: float = field(default=0.0, metadata=_spec(lo=0, hi=1))
    # strategy "flex_max" (seed 003; docs/flexibility.md): C_{s,t} of eq. (4) for the
    # downward (s = 0) and upward (s = 1) flexibility, a number or one value per step;
    # the activation scenarios kept; the EVs' constant power factor (eq. (8))
    flex_c_down: float | list = 1.0
    flex_c_up: float | list = 1.0
    flex_scenarios: list = field(default_factory=lambda: ["down", "up"])
    ev_power_factor: float = 1.0
    flex_tie_break: str = "none"   # "peak": lowest aggregate charging peak among the optima
    # grid model of flex_max: "linear" (sensitivities, LP in HiGHS) or "ac" (the AC power
    # flow of eqs. (11)-(12) as a pyomo NLP; flex_nlp_solver "pounce" or "ripopt")
    flex_grid_model: str = "linear"
    flex_nlp_solver: str = "pounce"


@dataclass(frozen=True)
class DSORequest:
    """One scheduled activation request (``[[dso.requests]]``); hours after ``start``."""

    direction: str = field(metadata=_spec(choices=DIRECTIONS))
    p_kw: float = field(metadata=_spec(lo=0))
    start_h: float = field(metadata=_spec(lo=0))
    end_h: float = field(metadata=_spec(lo=0))
    group: str = ""


@dataclass(frozen=True)
class DSOConfig:
    """``[dso]``: the grid operator that calls the fleet's flexibility (``simulators/dso``)."""

    # empty: no DSO in the world (no activation)
    policies: tuple = ()
    # group name -> list of bus references; requests name a group ("" = whole fleet)
    groups: dict = field(default_factory=dict)
    requests: tuple[DSORequest, ...] = ()
    allow_beyond_offer: bool = False
    lead_s: int = field(default=0, metadata=_spec(lo=0, hi=86400))
    voltage_buses: tuple = ()
    # thresholds in (0, 2) pu: checked by _check_dso
    voltage_min_pu: float = 0.95
    voltage_max_pu: float = 1.05
    voltage_margin_pu: float = field(default=0.0, metadata=_spec(lo=0, hi=0.5))
    voltage_duration_s: int = field(default=3600, metadata=_spec(lo=1, hi=86400))
    voltage_group: str = ""
    congestion_element: str = field(default="trafo", metadata=_spec(choices=("trafo", "line")))
    congestion_loading_max_percent: float = field(default=100.0, metadata=_spec(lo=0, hi=1000, gt=True))
    congestion_margin_percent: float = field(default=0.0, metadata=_spec(lo=0, hi=100))
    congestion_duration_s: int = field(default=3600, metadata=_spec(lo=1, hi=86400))
    congestion_group: str = ""


@dataclass(frozen=True)
class StarterConfig:
    """How one simulator is started: in-process, subprocess or connect."""

    starter: str = field(default="python", metadata=_spec(choices=STARTERS))
    # "host:port" to connect to (starter "connect"; port 1..65535)
    addr: str = "127.0.0.1:0"
    # out of process only (adapters/remote_watchdog.py): longest wait for the
    # simulator to connect and for each set-up call, and for each step's reply;
    # a dead child is noticed within 0.2 s whatever these are
    start_timeout_s: float = field(default=DEFAULT_START_TIMEOUT_S, metadata=_spec(lo=0, hi=3600, gt=True))
    step_timeout_s: float = field(default=DEFAULT_STEP_TIMEOUT_S, metadata=_spec(lo=0, hi=86400, gt=True))


@dataclass(frozen=True)
class Case:
    """One co-simulation run of a scenario (after applying a ``[[cases]]`` entry)."""

    name: str
    scenario: ScenarioMeta
    grid: GridConfig
    baseload: BaseLoadConfig
    pv: PVConfig
    fleet: FleetConfig
    scheduler: SchedulerConfig
    simulators: dict[str, StarterConfig]
    base_dir: Path
    dso: DSOConfig = field(default_factory=DSOConfig)
    # [simulators.<name>] tables of user simulators (scenarios/external_config.py)
    externals: tuple = ()


#: Sweep axes, in the order a point id names them (docs/scenarios.md, ``[sweep]``).
SWEEP_AXES = ("network", "penetration_percent", "strategy", "soc_target", "seed")


@dataclass(frozen=True)
class SweepConfig:
    """``[sweep]``: the points of a parameter sweep and how they are run.

    ``points`` holds every point as a tuple of ``(axis, value)`` pairs in
    :data:`SWEEP_AXES` order (the product of ``[sweep.axes]`` or the explicit
    ``[[sweep.points]]``); ``networks`` holds per-network ``[grid]`` overrides.
    """

    points: tuple[tuple[tuple[str, Any], ...], ...]
    axes: tuple[str, ...]
    networks: tuple[tuple[str, GridConfig], ...] = ()
    workers: int = field(default=0, metadata=_spec(lo=0, hi=1024))
    point_plots: bool = False
    retries: int = field(default=3, metadata=_spec(lo=0, hi=100))


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file: shared settings and its cases (or its sweep)."""

    source: Path
    cases: tuple[Case, ...]
    compare: tuple[str, ...] = ()
    sweep: SweepConfig | None = None


# ---------------------------------------------------------------- validation ---


def _type_ok(value: Any, annotation: Any) -> bool:
    ann = str(annotation)
    if "float" in ann and isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    if "int" in ann and isinstance(value, int) and not isinstance(value, bool):
        return True
    if "str" in ann and isinstance(value, str):
        return True
    if "bool" in ann and isinstance(value, bool):
        return True
    if "datetime" in ann and isinstance(value, dt.datetime):
        return True
    if "dict" in ann and isinstance(value, dict):
        return True
    if "list" in ann and isinstance(value, list):
        return True
    if "None" in ann and value is None:
        return True
    return False


def _range_problem(name: str, value: Any, meta: dict) -> str | None:
    if meta.get("choices") is not None and value not in meta["choices"]:
        return f"{name}: must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    lo, hi, gt = meta.get("lo"), meta.get("hi"), meta.get("gt")
    if value != value or value in (float("inf"), float("-inf")):
        return f"{name}: must be a finite number, got {value!r}"
    low_bad = lo is not None and (value <= lo if gt else value < lo)
    high_bad = hi is not None and value > hi
    if low_bad or high_bad:
        left = "(" if gt else "["
        lo_txt = "-inf" if lo is None else f"{lo:g}"
        hi_txt = "inf" if hi is None else f"{hi:g}"
        return f"{name}: must be in {left}{lo_txt}, {hi_txt}], got {value!r}"
    return None


def _build(cls, raw: Any, prefix: str, problems: list[str], base=None):
    """Instantiate dataclass ``cls`` from a TOML table, collecting problems."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix}: must be a table, got {type(raw).__name__}")
        return base if base is not None else None
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}"
        if key not in known:
            problems.append(f"{name}: unknown field (allowed: {', '.join(sorted(known))})")
            continue
        f = known[key]
        if key == "units":
            values[key] = tuple(_build_list(PVUnit, value, name, problems))
            continue
        if key == "evs":
            values[key] = tuple(_build_list(EVEntry, value, name, problems))
            continue
        if key == "requests":
            # None keeps the place of a bad entry, so later checks name the right index
            # (a scenario with a bad entry never loads)
            values[key] = tuple(_build_list(DSORequest, value, name, problems, keep_place=True))
            continue
        if key in ("policies", "voltage_buses"):
            if not isinstance(value, list) or not all(isinstance(x, (str, int)) for x in value):
                problems.append(f"{name}: must be an array of names, got {value!r}")
                continue
            values[key] = tuple(value)
            continue
        if not _type_ok(value, f.type):
            problems.append(f"{name}: must be of type {f.type}, got {type(value).__name__} {value!r}")
            continue
        if isinstance(value, int) and not isinstance(value, bool) and "float" in str(f.type):
            value = float(value)
        problem = _range_problem(name, value, dict(f.metadata))
        if problem:
            problems.append(problem)
            continue
        values[key] = value
    missing = [
        n for n, f in known.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and n not in values and (base is None)
    ]
    for n in missing:
        if not any(p.startswith(f"{prefix}.{n}:") for p in problems):
            problems.append(f"{prefix}.{n}: required field is missing")
    if missing:
        return None
    try:
        return replace(base, **values) if base is not None else cls(**values)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        problems.append(f"{prefix}: {exc}")
        return None


def _build_list(cls, raw: Any, prefix: str, problems: list[str], keep_place: bool = False) -> list:
    if not isinstance(raw, list):
        problems.append(f"{prefix}: must be an array of tables")
        return []
    out = []
    for i, item in enumerate(raw):
        n_before = len(problems)
        obj = _build(cls, item, f"{prefix}[{i}]", problems)
        if keep_place and len(problems) > n_before and isinstance(item, dict):
            # a partly bad entry: keep its good fields for the cross-field checks
            good = {k: v for k, v in item.items()
                    if not any(p.startswith(f"{prefix}[{i}].{k}:") for p in problems[n_before:])}
            obj = _Partial(good)
        if obj is not None or keep_place:
            out.append(obj)
    return out


def _check_scenario_meta(meta: ScenarioMeta, problems: list[str]) -> None:
    if meta.end <= meta.start:
        problems.append(f"scenario.end: must be after scenario.start ({meta.start}), got {meta.end}")
        return
    if meta.horizon_s % meta.step_s:
        problems.append(
            f"scenario.step_s: must divide the horizon of {meta.horizon_s} s "
            f"(start {meta.start} to end {meta.end}), got {meta.step_s}"
        )
    if meta.horizon_s > MAX_HORIZON_DAYS * 86400:
        problems.append(f"scenario.end: the horizon must be at most {MAX_HORIZON_DAYS} days after "
                        f"scenario.start ({meta.start}), got {meta.horizon_s / 86400:g} days (end {meta.end})")
    elif meta.n_steps > MAX_STEPS:
        problems.append(f"scenario.step_s: at most {MAX_STEPS} steps per run (a year of 1-minute steps), "
                        f"got {meta.n_steps} steps of {meta.step_s} s")
    if (meta.start.tzinfo is None) != (meta.end.tzinfo is None):
        problems.append(f"scenario.end: start and end must both have a UTC offset or both have none, "
                        f"got start {meta.start} and end {meta.end}")
    problem = timezone_problem(meta.timezone)
    if problem:
        problems.append(f"scenario.timezone: {problem}")


def timezone_problem(name: str) -> str | None:
    """What is wrong with an IANA time-zone name (None when it is known)."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f"must be an IANA time zone such as 'Europe/Paris' or 'UTC', got {name!r}"
    return None


def _check_solver(sc: SchedulerConfig, prefix: str, problems: list[str]) -> None:
    """The scheduler's solver must be installed and fit the cone and move blocking."""
    import importlib.util

    if sc.solver in SOLVER_MODULES and importlib.util.find_spec(SOLVER_MODULES[sc.solver]) is None:
        installed = [s for s, m in SOLVER_MODULES.items() if importlib.util.find_spec(m) is not None]
        problems.append(f"{prefix}.solver: {sc.solver!r} is not installed (pip install "
                        f"{SOLVER_MODULES[sc.solver]}); installed: {', '.join(['auto', *installed])}")
    if sc.cone == "soc" and sc.solver not in ("auto", "clarabel"):
        problems.append(f"{prefix}.solver: cone = 'soc' (exact second-order cones) needs 'clarabel' "
                        f"or 'auto', got {sc.solver!r}")
    if sc.fine_steps and sc.solver == "highs":
        problems.append(f"{prefix}.solver: fine_steps (move blocking) needs 'piqp', 'clarabel' or 'auto', "
                        f"got 'highs'")


def _check_fleet(fleet: FleetConfig, meta: ScenarioMeta, prefix: str, problems: list[str]) -> None:
    if fleet.soc_min > fleet.soc_max:
        problems.append(f"{prefix}.soc_min: must not exceed soc_max ({fleet.soc_max}), got {fleet.soc_min}")
    if not fleet.soc_min <= fleet.soc_target <= fleet.soc_max:
        problems.append(
            f"{prefix}.soc_target: must be in [soc_min, soc_max] = [{fleet.soc_min}, {fleet.soc_max}], "
            f"got {fleet.soc_target}"
        )
    total = len(fleet.evs)
    for bus, count in fleet.counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_EVS:
            problems.append(f"{prefix}.counts.{bus}: must be an integer in [0, {MAX_EVS}], got {count!r}")
        else:
            total += count
    if total > MAX_EVS:
        problems.append(f"{prefix}.counts: at most {MAX_EVS} EVs per case (counts plus evs), got {total}")
    elif meta.horizon_s <= MAX_HORIZON_DAYS * 86400 and total * meta.n_steps > MAX_EV_STEPS:
        problems.append(f"{prefix}.counts: {total} EVs x {meta.n_steps} steps = {total * meta.n_steps:.3g} "
                        f"EV rows, at most {MAX_EV_STEPS:.0e} (memory of the summary, ~100 B a row); "
                        f"shorten the horizon or use fewer EVs")
    horizon_h = meta.horizon_s / 3600.0
    for i, ev in enumerate(fleet.evs):
        if ev.departure_h <= ev.arrival_h:
            problems.append(
                f"{prefix}.evs[{i}].departure_h: must be after arrival_h ({ev.arrival_h}), got {ev.departure_h}"
            )
        if ev.arrival_h >= horizon_h:
            problems.append(f"{prefix}.evs[{i}].arrival_h: must be in [0, {horizon_h:g}) h (a stay inside "
                            f"the horizon), got {ev.arrival_h}")


class _Partial(dict):
    """Fields of a list entry that had problems (attribute access for the cross-field checks)."""

    def __getattr__(self, name):
        return self.get(name)


def _check_dso(dso: DSOConfig, meta: ScenarioMeta, prefix: str, problems: list[str]) -> None:
    """Consistency of ``[dso]`` (bus references are checked with the network)."""
    for p in dso.policies:
        if p not in DSO_POLICIES:
            problems.append(f"{prefix}.policies: must name policies of {', '.join(DSO_POLICIES)}, got {p!r}")
    # a request after the horizon is allowed (a shortened run never reaches it)
    for i, r in enumerate(dso.requests):
        if r is None:
            continue
        num = (int, float)
        if isinstance(r.end_h, num) and isinstance(r.start_h, num) and r.end_h <= r.start_h:
            problems.append(f"{prefix}.requests[{i}].end_h: must be after start_h ({r.start_h}), got {r.end_h}")
        if r.group and r.group not in dso.groups:
            problems.append(f"{prefix}.requests[{i}].group: unknown group {r.group!r} "
                            f"(groups: {', '.join(sorted(dso.groups)) or 'none'})")
    for name in ("voltage_min_pu", "voltage_max_pu"):
        if not 0.0 < getattr(dso, name) < 2.0:
            problems.append(f"{prefix}.{name}: must be in (0, 2) pu, got {getattr(dso, name)}")
    if 0 < dso.voltage_max_pu < 2 and dso.voltage_min_pu >= dso.voltage_max_pu:
        problems.append(f"{prefix}.voltage_min_pu: must be below voltage_max_pu ({dso.voltage_max_pu}), "
                        f"got {dso.voltage_min_pu}")
    if "voltage" in dso.policies and not dso.voltage_buses:
        problems.append(f"{prefix}.voltage_buses: policy 'voltage' needs at least one monitored bus")
    for name in ("voltage_group", "congestion_group"):
        g = getattr(dso, name)
        if g and g not in dso.groups:
            problems.append(f"{prefix}.{name}: unknown group {g!r}")
    for g, buses in dso.groups.items():
        if not isinstance(buses, list) or not buses:
            problems.append(f"{prefix}.groups.{g}: must be a non-empty array of buses, got {buses!r}")
    if dso.lead_s and dso.lead_s < meta.step_s:
        problems.append(f"{prefix}.lead_s: must be 0 (one step) or >= step_s ({meta.step_s}), got {dso.lead_s}")


def dso_bus_refs(dso: DSOConfig, prefix: str) -> list[tuple[str, Any]]:
    """(field name, bus reference) of every bus named in ``[dso]``."""
    refs = [(f"{prefix}.voltage_buses[{i}]", b) for i, b in enumerate(dso.voltage_buses)]
    for g, buses in dso.groups.items():
        if isinstance(buses, list):
            refs += [(f"{prefix}.groups.{g}[{i}]", b) for i, b in enumerate(buses)]
    return refs


def _check_buses(case_prefix: str, grid: GridConfig, pv: PVConfig, fleet: FleetConfig,
                 base_dir: Path, problems: list[str], extra: list | None = None) -> None:
    """Bus references must exist in the network (loads it; cached per process)."""
    from scenarios.buses import resolve_bus
    from adapters.networks import load_network

    net = load_network(grid.network, base_dir)
    refs = [(f"{case_prefix}fleet.counts.{b}", b) for b in fleet.counts]
    refs += [(f"{case_prefix}fleet.evs[{i}].bus", e.bus) for i, e in enumerate(fleet.evs)]
    refs += [(f"{case_prefix}pv.units[{i}].bus", u.bus) for i, u in enumerate(pv.units)]
    refs += list(extra or [])
    for name, ref in refs:
        try:
            resolve_bus(net, ref)
        except KeyError as exc:
            problems.append(f"{name}: {exc.args[0]}")


def _check_fleet_sampling(cases: list[Case], problems: list[str]) -> None:
    """Sample each case's fleet as the runner will (same seed, so the same EVs):
    a fleet whose EVs cannot all get a stay inside the horizon (e.g. a 10:00-14:00
    study with evening arrivals) is refused here instead of failing in the run."""
    from adapters.networks import load_network
    from scenarios.runner import fleet_specs

    seen = set()
    for i, case in enumerate(cases):
        f = case.fleet  # the fields the stays depend on: cases differing elsewhere share one check
        key = (repr(sorted(f.counts.items())), f.arrival, f.arrival_fixed_h, f.arrival_gev_shape,
               f.arrival_gev_scale_h, f.arrival_gev_loc_h, f.departure_weibull_scale_h,
               f.departure_weibull_shape, case.grid.network, case.scenario.seed, f.daily_stays)
        if f.sampling == "seed003":  # the seed 003 draw depends on these too
            key += (f.sampling, f.ev_share, f.reserve_soc, f.catalogue, f.efficiency, f.soc_max,
                    case.scenario.start, case.scenario.end, str(case.base_dir))
        if not (case.fleet.counts or f.sampling == "seed003") or key in seen:
            continue
        seen.add(key)
        try:
            fleet_specs(case, load_network(case.grid.network, case.base_dir))
        except ValueError as exc:
            m = case.scenario
            if f.sampling == "seed003":
                problems.append(f"fleet.sampling (case {case.name!r}): {exc}")
                continue
            problems.append(
                f"fleet.counts (case {case.name!r}): no stay inside [{m.start}, {m.end}] for the sampled EVs "
                f"({exc}); move scenario.start/end to cover the arrivals "
                f"(arrival = {case.fleet.arrival!r}) or list the EVs in [[fleet.evs]]")


def _check_baseload_data(cases: list[Case], problems: list[str]) -> None:
    """Read each case's base-load CSV as the runner will (every step of the horizon):
    text, NaN, a missing load column or times that do not cover the run are
    reported here, naming the file, line and column, instead of failing the run."""
    from adapters.networks import load_network
    from adapters.profiles import ProfileDataError
    from scenarios.runner import baseload_model
    from simulators.baseload.model import BaseLoadError

    seen = set()
    for case in cases:
        b, m = case.baseload, case.scenario
        key = (b.csv_path, repr(sorted(b.profiles.items())), case.grid.network, m.start, m.step_s, m.n_steps)
        if b.source != "csv" or key in seen:
            continue
        seen.add(key)
        try:
            baseload_model(case, load_network(case.grid.network, case.base_dir))
        except (ProfileDataError, BaseLoadError) as exc:
            text = str(exc) if b.csv_path in str(exc) else f"{b.csv_path}: {exc}"
            problems.append(f"baseload.csv_path (case {case.name!r}): {text}")
            continue
        if b.reader == "mosaik-csv":
            # mosaik-csv holds each row until the next one; the built-in reader takes step
            # means. They agree (and the relay's loads are the built-in's) on rows one step apart.
            from adapters.profiles import read_timeseries_csv

            index = read_timeseries_csv(case.base_dir / b.csv_path).frame.index
            gaps = {float(g) for g in index.to_series().diff().dropna().dt.total_seconds()}
            if gaps != {float(m.step_s)}:
                problems.append(f"baseload.reader (case {case.name!r}): 'mosaik-csv' needs rows exactly "
                                f"scenario.step_s = {m.step_s} s apart in {b.csv_path}, got spacings "
                                f"{sorted(gaps)[:4]} s (use reader = 'builtin' to resample)")


#: FlexOptions field -> scenario field of [scheduler]
_FLEX_FIELDS = {"c_down": "flex_c_down", "c_up": "flex_c_up", "scenarios": "flex_scenarios",
                "tie_break": "flex_tie_break", "grid_model": "flex_grid_model",
                "nlp_solver": "flex_nlp_solver",
                "ev_power_factor": "ev_power_factor", "time_limit_s": "time_limit_s"}


def flex_options(sc: SchedulerConfig) -> dict:
    """``FlexOptions`` fields of a ``flex_max`` scheduler table (docs/flexibility.md)."""
    return {"c_down": sc.flex_c_down, "c_up": sc.flex_c_up, "scenarios": tuple(sc.flex_scenarios),
            "ev_power_factor": sc.ev_power_factor, "tie_break": sc.flex_tie_break,
            "grid_model": sc.flex_grid_model, "nlp_solver": sc.flex_nlp_solver}


def flex_options_problems(sc: SchedulerConfig, n_steps: int) -> list[str]:
    """Problems of the ``flex_max`` options as ``"field: message"`` (FlexOptions names)."""
    from simulators.scheduler.flexibility import FlexOptions

    try:
        opts = FlexOptions(**flex_options(sc))
    except (TypeError, ValueError) as exc:
        return [f"flex_scenarios: {exc}"]
    try:
        return opts.problems(n_steps)
    except (TypeError, ValueError) as exc:
        return [f"flex_c_down: {exc}"]


def resolve_der(grid: GridConfig, net) -> str:
    """The DER mode a case runs with: ``grid.der``, with ``"auto"`` resolved to
    ``"static"`` under a study case, else ``"profile"`` when the network has SimBench
    profiles for its sgens/storage and ``"static"`` when it does not."""
    from simulators.der.model import net_has_der_profiles

    if grid.der != "auto":
        return grid.der
    if grid.study_case:
        return "static"
    return "profile" if net_has_der_profiles(net) else "static"


def _check_grid_inputs(prefix: str, grid: GridConfig, baseload: BaseLoadConfig, base_dir: Path,
                       problems: list[str]) -> None:
    """DER option, study case and load profiles against the network (loads it; cached)."""
    from adapters.networks import load_network
    from adapters.profiles import ProfileDataError, simbench_net_profiles
    from scenarios.buses import monitored_buses
    from simulators.grid.naming import element_eids
    from simulators.der.model import der_specs_from_net, net_has_der_profiles, pv_replacements

    problem = check_study_case(grid.network, grid.study_case or None)
    if problem:
        problems.append(f"{prefix}grid.study_case: {problem}")
        return
    if grid.study_case and baseload.source != "nominal":
        problems.append(f"baseload.source: must be 'nominal' with {prefix}grid.study_case = "
                        f"{grid.study_case!r} (the study case fixes every load), got {baseload.source!r}")
    if grid.study_case and grid.der not in ("auto", "static", "off"):
        problems.append(f"{prefix}grid.der: must be 'auto', 'static' or 'off' with a study case "
                        f"(the study case fixes every sgen), got {grid.der!r}")
    net = load_network(grid.network, base_dir)
    if grid.monitor_buses and not monitored_buses(net, grid.monitor_buses):
        # an unmatched prefix judged no bus: 0 violations reported for any run
        names = sorted({eid.split("-", 1)[1][:1] for eid in element_eids(net, "bus").values()})
        problems.append(f"{prefix}grid.monitor_buses: no bus of {grid.network!r} has a short name starting "
                        f"with {grid.monitor_buses!r} (first letters of its buses: {', '.join(names)}; "
                        f"'' = every bus)")
    specs = der_specs_from_net(net)
    if grid.der == "profile" and specs and not net_has_der_profiles(net):
        problems.append(f"{prefix}grid.der: 'profile' needs SimBench profiles for the network's "
                        f"sgens/storage; {grid.network!r} has none (use 'static' or 'off')")
    if grid.der == "pv" and not pv_replacements(specs):
        problems.append(f"{prefix}grid.der: 'pv' replaces the network's PV sgens by the PV "
                        f"simulator, but {grid.network!r} has no PV sgen")
    if baseload.source == "simbench" and not grid.study_case:
        from adapters.profiles import simbench_load_profile_names

        known = simbench_load_profile_names()
        for prefix_key, name in baseload.profiles.items():
            if not isinstance(name, str) or name not in known:
                shown = ", ".join(n for n in known if re.fullmatch(r"[GHL]\d-[A-Z]", n))
                problems.append(f"baseload.profiles.{prefix_key}: unknown SimBench load profile {name!r} "
                                f"(standard profiles: {shown}; all of simbench's LoadProfile.csv are allowed)")
        try:
            relative = simbench_net_profiles(net, "load")
        except ProfileDataError:
            return
        have = set(relative.columns)
        missing = sorted({p for p in net.load.get("profile", []) if isinstance(p, str)
                          and f"{p}_pload" not in have})
        if missing:
            problems.append(f"baseload.source: the network's load profiles {missing} are missing "
                            f"from its SimBench profiles")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file.

    Raises
    ------
    ScenarioError
        listing every problem found, before anything is built.
    """
    path = Path(path)
    return parse_scenario(read_toml(path), path)


def read_toml(path: Path, not_found: str = "") -> dict:
    """The parsed TOML document of a scenario file; every way it cannot be read
    (missing, a folder, unreadable, not UTF-8, not TOML) as a :class:`ScenarioError`."""
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ScenarioError(str(path), [f"file not found: {path}{not_found}"]) from None
    except IsADirectoryError:
        raise ScenarioError(str(path), [f"is a folder, not a scenario TOML file: {path}"]) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(str(path), [f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                                        f"{exc.start}); a scenario is a TOML file"]) from None
    except OSError as exc:
        raise ScenarioError(str(path), [f"cannot be read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), [f"not valid TOML: {exc}"]) from None


def parse_scenario(raw: dict, path: Path) -> Scenario:
    """Validate an already parsed TOML document (see :func:`load_scenario`)."""
    problems: list[str] = []
    top = {"scenario", "grid", "baseload", "pv", "fleet", "scheduler", "dso", "simulators", "cases", "compare",
           "sweep"}
    for key in raw:
        if key not in top:
            problems.append(f"{key}: unknown table (allowed: {', '.join(sorted(top))})")
    base_dir = path.parent
    meta = _build(ScenarioMeta, raw.get("scenario"), "scenario", problems)
    grid = _build(GridConfig, raw.get("grid"), "grid", problems)
    baseload = _build(BaseLoadConfig, raw.get("baseload"), "baseload", problems)
    pv = _build(PVConfig, raw.get("pv"), "pv", problems)
    fleet = _build(FleetConfig, raw.get("fleet"), "fleet", problems)
    sched = _build(SchedulerConfig, raw.get("scheduler"), "scheduler", problems)
    dso = _build(DSOConfig, raw.get("dso"), "dso", problems)

    simulators: dict[str, StarterConfig] = {}
    sims_raw = raw.get("simulators", {})
    if not isinstance(sims_raw, dict):
        problems.append("simulators: must be a table")
        sims_raw = {}
    for name in SIMULATOR_NAMES:
        simulators[name] = _build(StarterConfig, sims_raw.get(name), f"simulators.{name}", problems) or StarterConfig()
    for name, starter in simulators.items():
        if starter.starter == "connect":
            try:
                parse_addr(starter.addr)
            except ValueError as exc:
                problems.append(f"simulators.{name}.addr: {exc} (starter 'connect')")
    # any other name is a user's simulator (docs/external_simulators.md)
    from scenarios.external_config import check_grid_ends, parse_external, pv_unit_eids

    ext_names = {n for n in sims_raw if n not in SIMULATOR_NAMES}
    externals = tuple(e for n in sorted(ext_names)
                      if (e := parse_external(n, sims_raw[n], base_dir, problems, ext_names)) is not None)
    collectors = [e.name for e in externals if e.replaces == "recorder"]
    if len(collectors) > 1:
        problems.append(f"simulators: at most one collector may replace the recorder, got {collectors}")
    if collectors and "recorder" in sims_raw:
        problems.append(f"simulators.recorder: the recorder is replaced by simulators.{collectors[0]}; "
                        "its starter cannot be set too")

    scenario_raw = raw.get("scenario")
    if not isinstance(scenario_raw, dict) or "end" not in scenario_raw:
        # a missing end silently became a fixed date (11 488 steps from a January start)
        problems.append("scenario.end: required field is missing (the end of the run, "
                        "e.g. end = 2024-05-16T08:00:00; at most "
                        f"{MAX_HORIZON_DAYS} days after scenario.start)")
    if meta is not None:
        _check_scenario_meta(meta, problems)
    if grid is not None:
        net_problem = check_network_name(grid.network, base_dir)
        if net_problem:
            problems.append(f"grid.network: {net_problem}")
            grid = None
    if grid is not None and externals:
        from adapters.networks import load_network

        net = load_network(grid.network, base_dir)
        for ext in externals:
            check_grid_ends(ext, net, problems, pv_unit_eids(pv, grid, net))
    if baseload is not None and baseload.source == "csv":
        csv = base_dir / baseload.csv_path
        if not baseload.csv_path or not csv.is_file():
            problems.append(f"baseload.csv_path: must name an existing CSV file when source = 'csv', got {baseload.csv_path!r}")
    if grid is not None and grid.simulator == "mosaik-pandapower-2" \
            and importlib.util.find_spec("mosaik_components.pandapower") is None:
        problems.append("grid.simulator: 'mosaik-pandapower-2' needs the mosaik-pandapower-2 package "
                        "(pip install mosaik-pandapower-2), which is not installed")
    if baseload is not None and baseload.reader == "mosaik-csv":
        if baseload.source != "csv":
            problems.append(f"baseload.reader: 'mosaik-csv' serves a CSV file: needs source = 'csv', "
                            f"got {baseload.source!r}")
        elif importlib.util.find_spec("mosaik_csv") is None:
            problems.append("baseload.reader: 'mosaik-csv' needs the mosaik-csv package "
                            "(pip install mosaik-csv), which is not installed")

    cases_raw = raw.get("cases", [{}])
    if not isinstance(cases_raw, list) or not cases_raw:
        problems.append("cases: must be a non-empty array of tables")
        cases_raw = [{}]
    cases: list[Case] = []
    names: set[str] = set()
    for i, craw in enumerate(cases_raw):
        prefix = f"cases[{i}]"
        if not isinstance(craw, dict):
            problems.append(f"{prefix}: must be a table")
            continue
        cname = craw.get("name", meta.name if meta else f"case{i}")
        if not isinstance(cname, str) or not cname or "/" in cname:
            problems.append(f"{prefix}.name: must be a non-empty string without '/', got {cname!r}")
            continue
        if cname in names:
            problems.append(f"{prefix}.name: duplicate case name {cname!r}")
        names.add(cname)
        for key in craw:
            if key not in {"name", "scheduler", "fleet", "grid", "dso", "baseload", "pv"}:
                problems.append(f"{prefix}.{key}: unknown field "
                                "(allowed: baseload, dso, fleet, grid, name, pv, scheduler)")
        c_sched = _build(SchedulerConfig, craw.get("scheduler"), f"{prefix}.scheduler", problems, base=sched) if sched else None
        c_fleet = _build(FleetConfig, craw.get("fleet"), f"{prefix}.fleet", problems, base=fleet) if fleet else None
        c_grid = _build(GridConfig, craw.get("grid"), f"{prefix}.grid", problems, base=grid) if grid else None
        c_dso = _build(DSOConfig, craw.get("dso"), f"{prefix}.dso", problems, base=dso) if dso else None
        c_base = _build(BaseLoadConfig, craw.get("baseload"), f"{prefix}.baseload", problems,
                        base=baseload) if baseload else None
        c_pv = _build(PVConfig, craw.get("pv"), f"{prefix}.pv", problems, base=pv) if pv else None
        if c_dso is not None and meta is not None:
            _check_dso(c_dso, meta, f"{prefix}.dso" if "dso" in craw else "dso", problems)
            if "dso" in craw and c_grid is not None:
                _check_buses(f"{prefix}.", c_grid, PVConfig(), FleetConfig(), base_dir, problems,
                             dso_bus_refs(c_dso, f"{prefix}.dso"))
        if c_fleet is not None and meta is not None:
            _check_fleet(c_fleet, meta, f"{prefix}.fleet" if "fleet" in craw else "fleet", problems)
        if c_sched is not None and c_fleet is not None:
            if c_sched.strategy == "autonomous" and not c_fleet.autonomous:
                problems.append(f"{prefix}.fleet.autonomous: must be true for strategy 'autonomous'")
            if c_sched.strategy in ("v2g", "v2g_q") and not c_fleet.can_discharge:
                problems.append(f"{prefix}.fleet.can_discharge: must be true for strategy {c_sched.strategy!r}")
            if c_sched.strategy in ("smart_q", "v2g_q") and not c_fleet.can_reactive:
                problems.append(f"{prefix}.fleet.can_reactive: must be true for strategy {c_sched.strategy!r}")
        if c_sched is not None and c_sched.mode == "day_ahead_daily" and meta is not None:
            sp = f"{prefix}.scheduler" if "scheduler" in craw else "scheduler"
            if c_sched.replan_at_h >= 24 or (c_sched.replan_at_h * 3600) % meta.step_s > 1e-6:
                problems.append(f"{sp}.replan_at_h: must be in [0, 24) h and a multiple of scenario.step_s "
                                f"({meta.step_s} s), got {c_sched.replan_at_h}")
            if c_dso is not None and c_dso.policies:
                problems.append(f"{sp}.mode: 'day_ahead_daily' does not take DSO calls; use 'day_ahead' "
                                f"or 'receding' with [dso]")
        if c_fleet is not None and c_fleet.daily_stays and c_fleet.sampling == "seed003":
            problems.append(f"{prefix}.fleet.daily_stays: applies to fleet.counts, not to sampling 'seed003'")
        if c_dso is not None and c_sched is not None and c_dso.policies and c_sched.strategy not in (
                "smart", "smart_q", "v2g", "v2g_q", "flex_max"):
            problems.append(f"{prefix}.scheduler.strategy: the DSO's calls need an optimising strategy "
                            f"(smart, smart_q, v2g, v2g_q, flex_max), got {c_sched.strategy!r}")
        remote_sched = simulators["scheduler"]
        if c_sched is not None and remote_sched.starter != "python" \
                and c_sched.time_limit_s >= remote_sched.step_timeout_s:
            problems.append(f"simulators.scheduler.step_timeout_s: must exceed {prefix}.scheduler.time_limit_s "
                            f"({c_sched.time_limit_s:g} s) for a remote scheduler, got {remote_sched.step_timeout_s:g}")
        if c_sched is not None and c_sched.strategy == "flex_max" and meta is not None:
            sp = f"{prefix}.scheduler" if "scheduler" in craw else "scheduler"
            problems.extend(f"{sp}.{_FLEX_FIELDS.get(p.split(':')[0], p.split(':')[0])}:{p.split(':', 1)[1]}"
                            for p in flex_options_problems(c_sched, meta.n_steps))
        if c_sched is not None:
            _check_solver(c_sched, f"{prefix}.scheduler" if "scheduler" in craw else "scheduler", problems)
        if c_sched is not None and c_sched.strategy == "replay" and not c_sched.replay_case:
            problems.append(f"{prefix}.scheduler.replay_case: must name an earlier case for strategy 'replay'")
        if c_sched is not None and c_sched.replay_case and c_sched.replay_case not in names - {cname}:
            problems.append(f"{prefix}.scheduler.replay_case: must name an earlier case, got {c_sched.replay_case!r}")
        if None in (meta, c_grid, c_base, c_pv, c_fleet, c_sched, c_dso):
            continue
        if "grid" in craw or i == 0:
            _check_grid_inputs(f"{prefix}." if "grid" in craw else "", c_grid, c_base, base_dir, problems)
        cases.append(Case(cname, meta, c_grid, c_base, c_pv, c_fleet, c_sched, simulators, base_dir, c_dso,
                          externals))

    # Bus references need the network: checked on the shared tables, whatever else failed.
    if grid is not None and (fleet is not None or pv is not None):
        _check_buses("", grid, pv or PVConfig(), fleet or FleetConfig(), base_dir, problems,
                     dso_bus_refs(dso, "dso") if dso is not None else None)

    if not problems:
        _check_fleet_sampling(cases, problems)
        _check_baseload_data(cases, problems)

    compare = raw.get("compare", [])
    if not isinstance(compare, list) or not all(isinstance(c, str) for c in compare):
        problems.append("compare: must be an array of summary keys")
        compare = []
    sweep = None
    if "sweep" in raw:
        if "cases" in raw:
            problems.append("sweep: cannot be combined with [[cases]] (sweep the strategy as an axis instead)")
        elif cases:
            sweep = _build_sweep(raw["sweep"], cases[0], problems)
    if problems:
        # de-duplicate while keeping order (cases share the base tables)
        problems = list(dict.fromkeys(problems))
        raise ScenarioError(str(path), problems)
    return Scenario(path, tuple(cases), tuple(compare), sweep)


# -------------------------------------------------------------------- sweep ---


def _axis_values(raw: Any, name: str, problems: list[str]) -> list | None:
    """An axis as a list: ``[v, ...]`` or ``{start, stop, step}`` (stop included)."""
    if isinstance(raw, dict):
        keys = set(raw)
        if keys != {"start", "stop", "step"}:
            problems.append(f"{name}: a range must have exactly start, stop and step, got {sorted(keys)}")
            return None
        start, stop, step = raw["start"], raw["stop"], raw["step"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, stop, step)):
            problems.append(f"{name}: start, stop and step must be numbers, got {raw!r}")
            return None
        if step <= 0 or stop < start:
            problems.append(f"{name}: a range needs step > 0 and stop >= start, got {raw!r}")
            return None
        n = int(round((stop - start) / step))
        values = [start + k * step for k in range(n + 1)]
        # integers stay integers (seeds); float ranges are rounded to the step's digits
        return [int(v) if all(isinstance(x, int) for x in (start, step)) else round(v, 9) for v in values]
    if not isinstance(raw, list) or not raw:
        problems.append(f"{name}: must be a non-empty array or a {{start, stop, step}} range, got {raw!r}")
        return None
    if len(set(map(repr, raw))) != len(raw):
        problems.append(f"{name}: repeated values in {raw!r}")
    return list(raw)


def _axis_value_problem(axis: str, value: Any, base: Case, networks: dict[str, GridConfig]) -> str | None:
    """What is wrong with one axis value (None when it is fine)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if axis == "penetration_percent":
        if not number or not 0 <= value <= 100:
            return f"must be a number in [0, 100] (EVs per household, in %), got {value!r}"
    elif axis == "seed":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"must be an integer >= 0, got {value!r}"
    elif axis == "soc_target":
        f = base.fleet
        if not number or not f.soc_min <= value <= f.soc_max:
            return f"must be a number in [soc_min, soc_max] = [{f.soc_min}, {f.soc_max}], got {value!r}"
    elif axis == "strategy":
        allowed = [s for s in STRATEGIES if s != "replay"]
        if value not in allowed:
            return f"must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        f = base.fleet
        need = {"autonomous": ("autonomous", f.autonomous), "v2g": ("can_discharge", f.can_discharge),
                "v2g_q": ("can_discharge", f.can_discharge), "smart_q": ("can_reactive", f.can_reactive)}
        if value in need and not need[value][1]:
            return f"strategy {value!r} needs fleet.{need[value][0]} = true"
        if value == "v2g_q" and not f.can_reactive:
            return "strategy 'v2g_q' needs fleet.can_reactive = true"
    elif axis == "network":
        if not isinstance(value, str):
            return f"must be a network name (string), got {value!r}"
        problem = check_network_name(value, base.base_dir)
        if problem:
            return problem
    return None


def _build_sweep(raw: Any, base: Case, problems: list[str]) -> SweepConfig | None:
    """Validate ``[sweep]`` against the scenario's (single) case; every problem listed."""
    import itertools

    if not isinstance(raw, dict):
        problems.append("sweep: must be a table")
        return None
    before = len(problems)
    allowed = {"axes", "points", "networks", "workers", "point_plots", "retries"}
    for key in raw:
        if key not in allowed:
            problems.append(f"sweep.{key}: unknown field (allowed: {', '.join(sorted(allowed))})")
    opts = _build(SweepConfig, {k: raw[k] for k in ("workers", "point_plots", "retries") if k in raw},
                  "sweep", problems, base=SweepConfig(points=(), axes=()))

    networks: dict[str, GridConfig] = {}
    nets_raw = raw.get("networks", {})
    if not isinstance(nets_raw, dict):
        problems.append("sweep.networks: must be a table of per-network [grid] overrides")
        nets_raw = {}
    for net_name, table in nets_raw.items():
        if isinstance(table, dict) and "network" in table:
            problems.append(f"sweep.networks.{net_name}.network: the table's key names the network")
            continue
        g = _build(GridConfig, table, f"sweep.networks.{net_name}", problems,
                   base=replace(base.grid, network=net_name))
        if g is not None:
            networks[net_name] = g

    named: list[dict] = []  # points as {axis: (value, field name for messages)}
    if ("axes" in raw) == ("points" in raw):
        problems.append("sweep: give exactly one of [sweep.axes] (a product) or [[sweep.points]] (a list)")
    elif "axes" in raw:
        axes_raw = raw["axes"]
        if not isinstance(axes_raw, dict) or not axes_raw:
            problems.append(f"sweep.axes: must be a non-empty table of axes ({', '.join(SWEEP_AXES)})")
            axes_raw = {}
        lists = {}
        for axis, values in axes_raw.items():
            name = f"sweep.axes.{axis}"
            if axis not in SWEEP_AXES:
                problems.append(f"{name}: unknown axis (allowed: {', '.join(SWEEP_AXES)})")
                continue
            vals = _axis_values(values, name, problems)
            if vals is not None:
                lists[axis] = [(v, f"{name}[{i}]") for i, v in enumerate(vals)]
        ordered = [a for a in SWEEP_AXES if a in lists]
        named = [dict(zip(ordered, combo)) for combo in itertools.product(*(lists[a] for a in ordered))]
    else:
        pts = raw["points"]
        if not isinstance(pts, list) or not pts or not all(isinstance(p, dict) for p in pts):
            problems.append("sweep.points: must be a non-empty array of tables")
            pts = []
        for i, p in enumerate(pts):
            for axis in p:
                if axis not in SWEEP_AXES:
                    problems.append(f"sweep.points[{i}].{axis}: unknown axis (allowed: {', '.join(SWEEP_AXES)})")
            named.append({a: (p[a], f"sweep.points[{i}].{a}") for a in SWEEP_AXES if a in p})
        keys = {frozenset(p) for p in named}
        if len(keys) > 1:
            problems.append("sweep.points: every point must set the same axes, got "
                            + "; ".join(sorted(", ".join(sorted(k)) for k in keys)))

    checked: set[tuple[str, str]] = set()
    for point in named:
        for axis, (value, name) in point.items():
            if (name, repr(value)) in checked:
                continue
            checked.add((name, repr(value)))
            problem = _axis_value_problem(axis, value, base, networks)
            if problem:
                problems.append(f"{name}: {problem}")
    for net_name in networks:
        if problem := check_network_name(net_name, base.base_dir):
            problems.append(f"sweep.networks.{net_name}: {problem}")
    if len(problems) > before:
        return None

    from scenarios.sweep import check_point_networks

    points = tuple(tuple((a, v) for a, (v, _) in p.items()) for p in named)
    axes = tuple(a for a in SWEEP_AXES if named and a in named[0])
    problems.extend(check_point_networks(base, axes, points, networks))
    if len(set(points)) != len(points):
        problems.append("sweep.points: repeated points")
    if len(problems) > before or opts is None:
        return None
    return replace(opts, points=points, axes=axes, networks=tuple(sorted(networks.items())))
