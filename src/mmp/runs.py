"""``mmp runs``: a terminal table of the experiment's runs, the quick view when the UI is closed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mmp.config import Config
from mmp.metrics import LOWER_IS_BETTER
from mmp.tracking import TAG_PREFIX, setup


@dataclass(frozen=True)
class RunQuery:
    stage: str | None = "train"
    recipe: str | None = None
    sort: str | None = None  # a metric name, e.g. test_roc_auc
    limit: int = 20


def find_runs(config: Config, query: RunQuery) -> list[Any]:
    import mlflow

    experiment_id = setup(config)
    filters = []
    if query.stage:
        filters.append(f"tags.`{TAG_PREFIX}stage` = '{query.stage}'")
    if query.recipe:
        filters.append(f"tags.`{TAG_PREFIX}recipe` = '{query.recipe}'")
    order = ["attributes.start_time DESC"]
    if query.sort:
        direction = "ASC" if query.sort.split("_", 1)[-1] in LOWER_IS_BETTER else "DESC"
        order = [f"metrics.`{query.sort}` {direction}", *order]
    return mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=" and ".join(filters),
        order_by=order,
        max_results=query.limit,
        output_format="list",
    )


def format_table(runs: list[Any], metric_names: list[str]) -> str:
    header = ["run_id", "started", "stage", "data", "recipe", "status", *metric_names]
    rows = []
    for run in runs:
        started = datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
        tags = run.data.tags
        metrics = [f"{run.data.metrics[name]:.4f}" if name in run.data.metrics else "-" for name in metric_names]
        rows.append(
            [
                run.info.run_id,
                started,
                tags.get(f"{TAG_PREFIX}stage", "-"),
                tags.get(f"{TAG_PREFIX}data", "-"),
                tags.get(f"{TAG_PREFIX}recipe", "-"),
                run.info.status,
                *metrics,
            ]
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    return "\n".join(lines)


def default_metrics(runs: list[Any]) -> list[str]:
    """The test metrics the runs have, the headline ones first."""
    preferred = ["test_roc_auc", "test_accuracy", "test_log_loss", "test_rmse", "test_r2"]
    present = {name for run in runs for name in run.data.metrics}
    return [name for name in preferred if name in present][:4]
