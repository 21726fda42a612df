"""The experiment file: a base config and named variants of it, trained side by side and reported together.

An experiment is a TOML file (or a built-in preset, see ``trainwell presets``)::

    name = "cifar10-exercise"          # the experiment folder: experiments/<name>[-quick]/
    description = "..."                # the report's opening paragraph
    repeat = 1                         # optional: seeds per variant (--repeat N overrides); the report
                                       #   gives mean ± std over them
    reference_source = "..."           # optional: where the variants' `reference` numbers come from

    [base]                             # a complete config: [base.data], [base.model], [base.train]
    ...

    [quick]                            # merged onto every variant's config by --quick: a slice of the
    data = { limit_train = 5000 }      #   data, fewer epochs
    train = { epochs = 5 }

    [[variants]]
    name = "bn"                        # letters, digits, - and _: the variant's run folder
    description = "..."
    set = { model = { layers = [ ... ] }, train = { optimizer = { learning_rate = 1e-3 } } }
    mc_dropout = 100                   # optional: after training, MC-dropout predictions with this many samples
    quick = { train = { epochs = 3 } } # optional: merged after [quick], for this variant only
    unset = ["train.early_stopping"]   # optional: dotted keys removed from this variant's config after all
                                       #   merging (a table cannot be removed by merging)
    compare_to = "baseline"            # optional: the variant the report compares this one with
                                       #   (default: the first variant; the first compares with none)
    question = "Does BN converge faster?"   # optional: the question that comparison answers in the report
    reference = { val_accuracy = 0.54, seconds_per_epoch = 12 }   # optional: published numbers to compare
                                       #   with (val_accuracy, mc_accuracy, best_epoch, epochs_run,
                                       #   seconds_per_epoch)

    [[analyses]]                       # optional: a study step beyond plain variants
    name = "q6-sparse"                 # its folder: experiments/<name>/<analysis>/, sub-runs inside it
    kind = "sparsity"                  # which study (trainwell.experiments.studies.STUDIES)
    description = "..."
    question = "..."                   # optional: the question its report section answers
    set = { model = { ... } }          # optional: merged onto [base], as a variant's set (also quick,
                                       #   unset); the result is the study's base config
    params = { sparsities = [0.5, 0.9] }    # the study's own parameters (each kind documents its own)
    quick_params = { sparsities = [0.9] }   # optional: merged onto params by --quick

An experiment has at least one variant or one analysis. Analyses run after the variants, each into its own
folder; a study trains its sub-runs there as the runner trains variants (finished ones skipped, unfinished
ones resumed), measures, writes ``study.json`` (its records) and adds its section to the report
(:mod:`trainwell.experiments.studies`). ``--only`` names variants or analyses.

A variant's config is ``merge(base, set)`` with :func:`trainwell.config.merge` (tables merge key by key,
lists such as ``model.layers`` are replaced whole, a table whose ``name`` changes is replaced); with
``--quick``, then ``merge(·, quick)`` and ``merge(·, variant.quick)``; last, the ``unset`` keys are removed. Its ``name`` becomes
``<experiment>-<variant>``. With ``repeat = N`` the variant runs with seeds ``train.seed + 0 … N−1`` (in
folders ``<variant>-seed<K>``); with one seed, in the folder ``<variant>``.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from trainwell.config import Config, config_to_dict, format_validation_error, merge, validate_config
from trainwell.errors import ConfigError
from trainwell.registry import unknown_name_message
from trainwell.spec import Spec

# Folder names: what every file system accepts, and what reads well in a path.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ReferenceSpec(Spec):
    """Published numbers for a variant (e.g. the exercise's solution), shown beside the measured ones."""

    val_accuracy: float | None = Field(default=None, ge=0, le=1)
    mc_accuracy: float | None = Field(default=None, ge=0, le=1)
    best_epoch: int | None = Field(default=None, ge=1)
    epochs_run: int | None = Field(default=None, ge=1)
    seconds_per_epoch: float | None = Field(default=None, gt=0)


class VariantSpec(Spec):
    """One ``[[variants]]`` entry."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    set: dict[str, Any] = Field(default_factory=dict)
    mc_dropout: int | None = Field(default=None, ge=1)
    quick: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)
    compare_to: str | None = None
    question: str | None = None
    reference: ReferenceSpec | None = None


class AnalysisSpec(Spec):
    """One ``[[analyses]]`` entry: a study step of a registered ``kind`` with its own ``params``."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: str
    description: str = ""
    question: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    quick: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    quick_params: dict[str, Any] = Field(default_factory=dict)

    def resolved_params(self, quick: bool) -> dict[str, Any]:
        """``params``, with ``quick_params`` merged on for the quick study."""
        return merge(copy.deepcopy(self.params), self.quick_params) if quick else copy.deepcopy(self.params)


class ExperimentSpec(Spec):
    """A whole experiment file (see the module's docstring)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    repeat: int = Field(default=1, ge=1)
    reference_source: str = ""
    base: dict[str, Any]
    quick: dict[str, Any] = Field(default_factory=dict)
    variants: list[VariantSpec] = Field(default_factory=list)
    analyses: list[AnalysisSpec] = Field(default_factory=list)

    @field_validator("base")
    @classmethod
    def _base_is_a_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in ("data", "model") if k not in value]
        if missing:
            raise ValueError(f"[base] must be a complete config; it has no [base.{missing[0]}] table")
        return value

    @model_validator(mode="after")
    def _names(self) -> ExperimentSpec:
        if not self.variants and not self.analyses:
            raise ValueError("an experiment needs at least one [[variants]] or [[analyses]] entry")
        names = [v.name for v in self.variants]
        steps = names + [a.name for a in self.analyses]  # one folder each in the experiment folder
        dupes = sorted({n for n in steps if steps.count(n) > 1})
        if dupes:
            raise ValueError(
                f"variants: the name {dupes[0]!r} is used twice; every variant and analysis needs its own name"
            )
        if self.analyses:  # each kind checks its own params (imported here: the studies import this module)
            from trainwell.experiments.studies import check_analysis

            for analysis in self.analyses:
                check_analysis(analysis)
        for v in self.variants:
            if v.compare_to is not None and (v.compare_to not in names or v.compare_to == v.name):
                others = [n for n in names if n != v.name]
                raise ValueError(
                    f"variants ({v.name}).compare_to: "
                    + unknown_name_message("variant", v.compare_to, others)
                )
        return self

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(unknown_name_message("variant", name, [v.name for v in self.variants]))

    def check_step(self, name: str) -> None:
        """Raise a :class:`ConfigError` unless ``name`` is a variant or an analysis (for ``--only``)."""
        if name not in {a.name for a in self.analyses}:
            if self.analyses:
                valid = [v.name for v in self.variants] + [a.name for a in self.analyses]
                raise ConfigError(unknown_name_message("variant or analysis", name, valid))
            self.variant(name)

    def baseline_of(self, variant: VariantSpec) -> str | None:
        """The variant ``variant`` is compared with: its ``compare_to``, else the first variant."""
        if variant.compare_to is not None:
            return variant.compare_to
        first = self.variants[0].name
        return None if variant.name == first else first


@dataclass
class Experiment:
    """A loaded experiment: the validated spec, where it came from and its text (copied into the folder)."""

    spec: ExperimentSpec
    source: str  # the file's path, or "preset NAME"
    text: str


@dataclass
class PlannedRun:
    """One training run of an experiment: a variant with one seed, its folder name and its config."""

    variant: VariantSpec
    seed: int
    folder: str
    config: Config
    data: dict[str, Any] = field(repr=False)  # the resolved config as plain data, as recorded


def presets_dir() -> Path:
    return Path(str(resources.files("trainwell.experiments").joinpath("presets")))


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def parse_experiment(text: str, source: str) -> Experiment:
    """Validate the TOML ``text`` of an experiment file; errors name ``source`` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as e:
        lines = format_validation_error(e, data=data)
        raise ConfigError(
            f"{source} is not a valid experiment file:\n"
            + "\n".join("  " + line for line in lines.splitlines())
        ) from None
    return Experiment(spec=spec, source=source, text=text)


def load_experiment(source: str | Path) -> Experiment:
    """The experiment in file ``source``, or the built-in preset of that name."""
    path = Path(source)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the experiment file: {e}") from None
        return parse_experiment(text, str(path))
    name = str(source)
    if name in preset_names():
        return parse_experiment(
            (presets_dir() / f"{name}.toml").read_text(encoding="utf-8"), f"preset {name}"
        )
    if path.suffix == ".toml" or "/" in name:
        raise ConfigError(f"{path}: no such experiment file (built-in presets: {', '.join(preset_names())})")
    raise ConfigError(
        unknown_name_message("preset", name, preset_names()) + "; or give the path of an experiment file"
    )


def variant_data(spec: ExperimentSpec, variant: VariantSpec | AnalysisSpec, quick: bool) -> dict[str, Any]:
    """The config of ``variant`` (or the base config of an analysis) as plain data: base, its ``set``, and
    with ``quick`` the quick tables."""
    data = merge(copy.deepcopy(spec.base), variant.set)
    if quick:
        data = merge(merge(data, spec.quick), variant.quick)
    for key in variant.unset:
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(
                f"{'analyses' if isinstance(variant, AnalysisSpec) else 'variants'} ({variant.name}).unset: "
                f"{key!r} is not a key of the variant's config; "
                'give a dotted path such as "train.early_stopping"'
            )
        del node[parts[-1]]
    data["name"] = f"{spec.name}-{variant.name}"
    return data


def plan_runs(
    experiment: Experiment,
    *,
    quick: bool = False,
    only: list[str] | tuple[str, ...] = (),
    repeat: int | None = None,
) -> list[PlannedRun]:
    """Every run of the experiment (the ``only`` variants, in file order), each config validated first, so
    that a mistake in the last variant is found before the first one trains."""
    spec = experiment.spec
    for name in only:
        spec.check_step(name)  # unknown names are errors that list the valid ones
    if repeat is not None and repeat < 1:
        raise ConfigError(f"--repeat: expected a number of seeds >= 1, got {repeat}")
    seeds_per_variant = repeat if repeat is not None else spec.repeat
    runs: list[PlannedRun] = []
    for variant in spec.variants:
        if only and variant.name not in only:
            continue
        data = variant_data(spec, variant, quick)
        where = f"{experiment.source}: variant {variant.name!r} ([base] with its set{' and [quick]' if quick else ''})"
        first = validate_config(data, source=where)
        for k in range(seeds_per_variant):
            seed = first.train.seed + k
            seeded = merge(data, {"train": {"seed": seed}})
            config = validate_config(seeded, source=where) if k else first
            folder = variant.name if seeds_per_variant == 1 else f"{variant.name}-seed{seed}"
            runs.append(
                PlannedRun(
                    variant=variant, seed=seed, folder=folder, config=config, data=config_to_dict(config)
                )
            )
    return runs


@dataclass
class PlannedAnalysis:
    """One analysis of an experiment: its entry, its base config (validated) and its params (quick merged)."""

    analysis: AnalysisSpec
    config: Config
    data: dict[str, Any] = field(repr=False)  # the resolved base config as plain data
    params: dict[str, Any] = field(default_factory=dict)


def plan_analyses(
    experiment: Experiment, *, quick: bool = False, only: list[str] | tuple[str, ...] = ()
) -> list[PlannedAnalysis]:
    """The experiment's analyses (the ``only`` ones, in file order), each base config validated first."""
    spec = experiment.spec
    planned = []
    for analysis in spec.analyses:
        if only and analysis.name not in only:
            continue
        data = variant_data(spec, analysis, quick)
        where = f"{experiment.source}: analysis {analysis.name!r} ([base] with its set{' and [quick]' if quick else ''})"
        config = validate_config(data, source=where)
        planned.append(
            PlannedAnalysis(analysis, config, config_to_dict(config), analysis.resolved_params(quick))
        )
    return planned
