"""``model.from = "@variant"``: in an experiment, a variant starts from another variant's run.

Variants train in file order, so a variant can name only an earlier one. ``trainwell run`` replaces
``"@name"`` by that variant's run folder in the experiment folder before anything trains — the run with the
same seed index (a variant's k-th seed starts from the k-th seed of ``name``; when ``name`` has fewer seeds,
from its last) — so the run's ``config.toml`` records the folder it really started from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainwell.errors import ConfigError

PREFIX = "@"


def resolve_variant_sources(
    experiment: Any, plans: list[Any], experiment_dir: Path, *, quick: bool = False, repeat: int | None = None
) -> list[Any]:
    """``plans`` (:class:`~trainwell.experiments.spec.PlannedRun`) with every ``model.from = "@variant"``
    replaced by that variant's run folder under ``experiment_dir`` (see the module docstring)."""
    from trainwell.config import merge, validate_config
    from trainwell.experiments.spec import PlannedRun, plan_runs
    from trainwell.registry import unknown_name_message

    names = [v.name for v in experiment.spec.variants]
    resolved = []
    for plan in plans:
        source = plan.config.model.from_
        if source is None or not source.startswith(PREFIX):
            resolved.append(plan)
            continue
        name, own = source[len(PREFIX) :], plan.variant.name
        earlier = names[: names.index(own)]
        where = f"{experiment.source}: variant {own!r}: model.from"
        if name not in earlier:
            if name in names:
                raise ConfigError(
                    f"{where}: {source!r} is not an earlier variant; variants train in file order, so "
                    f"model.from can name only one above {own!r} ({', '.join(earlier) or 'none'})"
                )
            raise ConfigError(f"{where}: " + unknown_name_message("variant", name, earlier))
        sources = plan_runs(experiment, quick=quick, only=[name], repeat=repeat)
        k = [p.folder for p in plans if p.variant.name == own].index(plan.folder)
        folder = experiment_dir / sources[min(k, len(sources) - 1)].folder
        data = merge(plan.data, {"model": {"from": str(folder)}})
        config = validate_config(data, source=f"{experiment.source}: variant {own!r}")
        resolved.append(
            PlannedRun(variant=plan.variant, seed=plan.seed, folder=plan.folder, config=config, data=data)
        )
    return resolved
