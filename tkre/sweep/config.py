"""The sweep YAML: a base experiment, a grid, named variants, a search space, an evaluate phase.

    name: search_pretrain
    base: {data: {dataset: semeval, k: 8}, finetune: {epochs: 2}}   # an ExperimentConfig
    variants: {tkre: {}, golden_only: {stages.edkg: false, stages.scdg: false, ...}}
    grid: {variant: [tkre, golden_only], data.seed: [1, 2, 3]}        # dotted ExperimentConfig paths
    search:                                                            # Optuna (TPE) + ASHA, on dev
      space: {pretrain.scl.tau: {type: loguniform, low: 0.03, high: 0.5}}
      num_samples: 6
    evaluate: {seeds: [1, 2, 3, 4, 5]}  # the best config of each grid cell, over these seeds, on test
    resources: {max_concurrent_trials: 2}

Every mistake is a `ConfigError` naming `file:line: field: message` (unknown keys, wrong types,
unknown dotted paths, empty or inverted ranges, variants that do not exist).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from tkre.config import ExperimentConfig, StrictModel, read_yaml, validation_error_message
from tkre.errors import ConfigError
from tkre.overrides import apply_overrides, check_path


class Distribution(StrictModel):
    """One search dimension."""

    type: Literal["uniform", "loguniform", "int", "choice"] = Field(..., description="distribution kind")
    low: float | None = Field(None, description="lower bound (uniform, loguniform, int)")
    high: float | None = Field(None, description="upper bound (uniform, loguniform: exclusive; int: inclusive)")
    values: list[Any] | None = Field(None, description="choice: the candidate values")

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.type == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty 'values' list")
            if self.low is not None or self.high is not None:
                raise ValueError("choice takes 'values', not low/high")
            return self
        if self.values is not None:
            raise ValueError(f"{self.type} takes low/high, not 'values'")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both 'low' and 'high'")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.low > self.high:
            raise ValueError(f"inverted range: low {self.low:g} > high {self.high:g}")
        if self.low == self.high:
            raise ValueError(f"empty range: low == high == {self.low:g} (use a constant in base instead)")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int needs integer low/high")
        return self

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this distribution can give (bounds inclusive, as Optuna's)."""
        if self.type == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and value != int(value):
            return False
        return self.low <= value <= self.high

    def to_optuna(self):
        import optuna.distributions as od

        if self.type == "uniform":
            return od.FloatDistribution(self.low, self.high)
        if self.type == "loguniform":
            return od.FloatDistribution(self.low, self.high, log=True)
        if self.type == "int":
            return od.IntDistribution(int(self.low), int(self.high))
        return od.CategoricalDistribution(list(self.values))


class AshaConfig(StrictModel):
    grace_period: int = Field(1, ge=1, description="fine-tuning epochs before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1.0, description="ASHA halving rate")


class SearchConfig(StrictModel):
    """Optuna TPE over `space`, early stopping with ASHA; selection on dev only."""

    space: dict[str, Distribution] = Field(..., description="dotted ExperimentConfig path -> distribution")
    num_samples: int = Field(8, ge=1, description="Optuna trials per grid cell")
    metric: str = Field("dev_micro_f1", description="dev metric to optimise (test is never searched)")
    mode: Literal["max", "min"] = "max"
    seed: int = Field(0, description="TPE sampler seed")
    asha: AshaConfig | None = Field(default_factory=AshaConfig, description="null = no early stopping")
    start_from_base: bool = Field(
        False, description="the first trial of each search phase runs the grid point's own values of the "
                           "searched fields (base, then variant): the paper's defaults where the base is the "
                           "paper's setting (Optuna's enqueued first point)")

    @model_validator(mode="after")
    def _dev_only(self) -> "SearchConfig":
        if not self.space:
            raise ValueError("search space is empty: give at least one dimension or drop 'search'")
        if not self.metric.startswith("dev_"):
            raise ValueError(f"metric {self.metric!r}: selection uses dev metrics only (dev_...)")
        return self


class EvaluateConfig(StrictModel):
    seeds: list[int] = Field(..., min_length=1, description="data.seed values the best config is run with")


class SweepResources(StrictModel):
    max_concurrent_trials: int = Field(1, ge=1, description="upper bound; lowered to what the cluster fits")
    trial_cpus: float = Field(0.05, gt=0, le=64, description="CPUs of the trial's own driver process")
    generation_slots: int = Field(1, ge=1, description="LLM generation jobs allowed at once, sweep-wide")
    trial_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each trial and its pipeline task also reserve, e.g. "
                                          "{head: 0.01}: keeps the trials' orchestration on the nodes that advertise "
                                          "them (the head), off nodes that may be lost")
    max_failures: int = Field(0, ge=0, description="retries of a trial that crashed or lost its node "
                                                     "(set 1-2 on clusters with spot nodes)")


class WandbSettings(StrictModel):
    enabled: bool = Field(True, description="log every trial to W&B (offline when WANDB_API_KEY is unset)")
    project: str = Field("tkre", description="W&B project; runs are grouped by sweep name")


class SweepConfig(StrictModel):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="sweep name (folder, W&B group)")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="the base ExperimentConfig")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, description="named override sets")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted path (or 'variant') -> values")
    points: list[dict[str, Any]] = Field(
        default_factory=list, description="trials added after the grid's product (dotted overrides, may name a "
                                          "variant), e.g. an axis's zero point that the grid cannot express")
    search: SearchConfig | None = None
    evaluate: EvaluateConfig | None = None
    resources: SweepResources = Field(default_factory=SweepResources)
    storage_path: str | None = Field(None, description="default: base.storage_path")
    trial_timeout_s: float | None = Field(None, gt=0, description="a trial running longer fails (watchdog)")
    sweep_timeout_s: float | None = Field(None, gt=0, description="Tune stops starting/continuing trials after this")
    min_free_gb: float = Field(1.0, ge=0, description="refuse to start with less free disk at storage_path")
    restart_errored: bool = Field(False, description="on --resume, rerun trials that failed")
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    comparisons: list[tuple[str, str]] = Field(
        default_factory=list, description="[variant, baseline] pairs the report compares by seed besides every "
                                          "variant against golden_only (e.g. [tkre, tkre_shuffled])")

    @model_validator(mode="after")
    def _evaluate_needs_search(self) -> "SweepConfig":
        if self.evaluate is not None and self.search is None:
            raise ValueError("'evaluate' runs the best searched config: it needs a 'search' section")
        unknown = sorted({v for pair in self.comparisons for v in pair} - set(self.variants))
        if unknown:
            raise ValueError(f"comparisons name variants the sweep does not define: {', '.join(unknown)}")
        return self

    def plan_dump(self) -> dict:
        """The sweep as plan.json records it, without fields added later while they hold their defaults
        (`comparisons` when it declares none, `search.start_from_base` when false), so a sweep started
        before they existed still resumes."""
        exclude: dict[str, Any] = {} if self.comparisons else {"comparisons": True}
        if self.search is not None and not self.search.start_from_base:
            exclude["search"] = {"start_from_base": True}
        return self.model_dump(exclude=exclude or None)


# ----------------------------------------------------------------------------------- load + check
def _line(lines: dict[tuple, int], *keys: Any) -> str:
    for n in range(len(keys), 0, -1):
        if keys[:n] in lines:
            return f":{lines[keys[:n]]}"
    return ""


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and fully validate a sweep file; every grid cell x variant must be a valid experiment."""
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_error_message(e, str(path), lines, model=SweepConfig)) from None
    try:
        ExperimentConfig.model_validate(sweep.base)
    except ValidationError as e:
        raise ConfigError(validation_error_message(e, str(path), lines, ("base",), ExperimentConfig)) from None
    problems = []
    for name, overrides in sweep.variants.items():
        for key in overrides:
            if (p := check_path(key)) is not None:
                problems.append(f"{path}{_line(lines, 'variants', name, key)}: variants.{name}.{key}: {p}")
    for key, values in sweep.grid.items():
        where = f"{path}{_line(lines, 'grid', key)}: grid.{key}"
        if not values:
            problems.append(f"{where}: empty list of values")
        if key == "variant":
            for v in values:
                if v not in sweep.variants:
                    problems.append(f"{where}: unknown variant {v!r} (declared: {', '.join(sweep.variants) or 'none'})")
        elif (p := check_path(key)) is not None:
            problems.append(f"{where}: {p}")
    for i, point in enumerate(sweep.points):
        for key, value in point.items():
            where = f"{path}{_line(lines, 'points', i, key)}: points[{i}].{key}"
            if key == "variant":
                if value not in sweep.variants:
                    problems.append(f"{where}: unknown variant {value!r} (declared: {', '.join(sweep.variants) or 'none'})")
            elif (p := check_path(key)) is not None:
                problems.append(f"{where}: {p}")
    for key in (sweep.search.space if sweep.search else {}):
        if (p := check_path(key)) is not None:
            problems.append(f"{path}{_line(lines, 'search', 'space', key)}: search.space.{key}: {p}")
        if key in sweep.grid:
            problems.append(f"{path}{_line(lines, 'search', 'space', key)}: search.space.{key}: also in grid")
    if problems:
        raise ConfigError("\n".join(problems))
    points = grid_points(sweep)
    first_explicit = len(points) - len(sweep.points)
    for i, point in enumerate(points):
        try:
            experiment_for(sweep, point)
        except ConfigError as e:
            key = next((k for k in point if k != "variant" and k in str(e)), None) or \
                next((k for k in point if k in sweep.grid), None)
            if i >= first_explicit:
                where = f"{path}{_line(lines, 'points', i - first_explicit)}: points[{i - first_explicit}]"
            else:
                where = f"{path}{_line(lines, 'grid', key) if key else ''}: grid point"
            raise ConfigError(f"{where} {point}: {e}") from None
    _check_search_bounds(sweep, points, path, lines)
    _check_start_points(sweep, points, path, lines)
    return sweep


def bounds(d: Distribution) -> list[Any]:
    """The values a distribution can reach at its edges (every value of a choice)."""
    if d.type == "choice":
        return list(d.values)
    return [int(d.low), int(d.high)] if d.type == "int" else [d.low, d.high]


def _check_search_bounds(sweep: SweepConfig, points: list[dict[str, Any]], path: Path,
                         lines: dict[tuple, int]) -> None:
    """Every bound (and every choice) of the search space, put into every grid point's experiment, must
    be a valid config: `pretrain.p_other` uniform 1.2-1.5 fails here, not in every trial after Ray started."""
    if sweep.search is None:
        return
    problems = []
    for key, dist in sweep.search.space.items():
        for value in bounds(dist):
            for point in points:
                try:
                    experiment_for(sweep, {**point, key: value})
                except ConfigError as e:
                    reason = str(e).splitlines()[0].split(": ", 1)[-1]
                    problems.append(f"{path}{_line(lines, 'search', 'space', key)}: search.space.{key}: "
                                    f"{value!r} is not a valid value ({reason})")
                    break
    if problems:
        raise ConfigError("\n".join(problems))


def config_value(data: Any, dotted: str) -> Any:
    """The value at a dotted ExperimentConfig path in a `model_dump()`."""
    for key in dotted.split("."):
        data = data[key]
    return data


def start_point(sweep: SweepConfig, point: dict[str, Any]) -> dict[str, Any]:
    """The searched fields' values in a grid point's own experiment (`search.start_from_base`)."""
    data = experiment_for(sweep, point).model_dump()
    return {key: config_value(data, key) for key in sweep.search.space}


def _check_start_points(sweep: SweepConfig, points: list[dict[str, Any]], path: Path,
                        lines: dict[tuple, int]) -> None:
    """`start_from_base`: every grid point's own value of a searched field must lie in its distribution."""
    if sweep.search is None or not sweep.search.start_from_base:
        return
    problems = []
    for point in points:
        for key, value in start_point(sweep, point).items():
            dist = sweep.search.space[key]
            if not dist.contains(value):
                reach = dist.values if dist.type == "choice" else f"[{dist.low:g}, {dist.high:g}]"
                problems.append(f"{path}{_line(lines, 'search', 'start_from_base')}: search.start_from_base: "
                                f"grid point {point or '(base)'} has {key} = {value!r}, outside search.space.{key} "
                                f"{reach}")
    if problems:
        raise ConfigError("\n".join(sorted(set(problems))))


def grid_points(sweep: SweepConfig) -> list[dict[str, Any]]:
    """The cartesian product of the grid (the base alone without a grid), as dotted-override dicts in
    declaration order, then the sweep's explicit `points`."""
    keys = list(sweep.grid)
    product = [dict(zip(keys, combo)) for combo in itertools.product(*(sweep.grid[k] for k in keys))] or [{}]
    return product + [dict(p) for p in sweep.points]


def experiment_for(sweep: SweepConfig, point: dict[str, Any]) -> ExperimentConfig:
    """The experiment of one trial: base, then the point's variant, then the other overrides."""
    point = dict(point)
    variant = point.pop("variant", None)
    overrides = dict(sweep.variants.get(variant, {})) if variant else {}
    overrides.update(point)
    base = dict(sweep.base)
    if sweep.storage_path:
        base["storage_path"] = sweep.storage_path
    cfg = apply_overrides(base, overrides, source=f"sweep {sweep.name}")
    return cfg.model_copy(update={"name": f"{sweep.name}{'-' + variant if variant else ''}"})


# ------------------------------------------------------------------------------------ sweep files
def packaged_sweeps_dir() -> Path:
    """The shipped sweeps: `tkre/sweeps/` inside the package (the repository's top-level `sweeps`
    is a link to it), so a clone and an installed package read the same files."""
    from importlib import resources

    return Path(str(resources.files("tkre") / "sweeps"))


def resolve_sweep_file(path: str | Path) -> Path:
    """A sweep file path, or the name of a shipped sweep (`quickstart`, `paper_table2`, ...)."""
    p = Path(path)
    if p.is_file():
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    shipped = packaged_sweeps_dir() / name
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(f.stem for f in packaged_sweeps_dir().glob("*.yaml")))
    raise ConfigError(f"{path}: no such sweep file (shipped sweeps: {known})")


# Keys of a trial's point that describe the trial but are not config overrides.
TRIAL_META_KEYS = ("selected_from",)


def _trial_point(config: dict) -> dict[str, Any]:
    out = dict(config.get("point", {}))
    out.update({k: v for k, v in config.items() if k != "point"})
    return out


def trial_overrides(config: dict) -> dict[str, Any]:
    """A trial's dotted overrides from its Tune config ({'point': {...}} or flat search params)."""
    return {k: v for k, v in _trial_point(config).items() if k not in TRIAL_META_KEYS}


def trial_meta(config: dict) -> dict[str, Any]:
    """A trial's row fields that travel in its point but are not overrides (e.g. selected_from)."""
    return {k: v for k, v in _trial_point(config).items() if k in TRIAL_META_KEYS}
