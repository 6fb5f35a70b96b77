"""``mmp runs``: a terminal table of the experiment's runs, the quick view when the UI is closed."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mmp.config import Config, tracking_root
from mmp.evaluation.metrics import LOWER_IS_BETTER
from mmp.tracking import TAG_PREFIX, setup
from mmp.tracking.dvc_links import experiment_filter, link_experiment
from mmp.tracking.tags import EXPS_TAG


@dataclass(frozen=True)
class RunQuery:
    stage: str | None = "train"
    recipe: str | None = None
    sweep: str | None = None  # a sweep id (multirun/<id>): its jobs
    dvc_exp: str | None = None  # a DVC experiment name
    sort: str | None = None  # a metric name, e.g. test_roc_auc
    limit: int = 20


def find_runs(config: Config, query: RunQuery) -> list[Any]:
    import mlflow

    experiment_id = setup(config)
    filters = []
    for tag, value in (("stage", query.stage), ("recipe", query.recipe)):
        if value:
            filters.append(f"tags.`{TAG_PREFIX}{tag}` = '{_quoted(value)}'")
    if query.dvc_exp:  # also an experiment that DVC restored from its run cache
        link_experiment(config, query.dvc_exp)
        filters.append(experiment_filter(query.dvc_exp))
    if query.sweep:
        filters.append(f"tags.`{TAG_PREFIX}sweep_id` = '{_quoted(query.sweep)}'")
    order = ["attributes.start_time DESC"]
    if query.sort:
        direction = "ASC" if query.sort.split("_", 1)[-1] in LOWER_IS_BETTER else "DESC"
        order = [f"metrics.`{query.sort}` {direction}", *order]
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=" and ".join(filters),
        order_by=order,
        max_results=query.limit,
        output_format="list",
    )
    tag_experiment_commits(runs, tracking_root(config.root))
    return runs


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def experiment_commits(root: Path) -> dict[str, str]:
    """DVC experiment name -> its commit, from the refs DVC keeps (``refs/exps/.../<name>``)."""
    try:
        result = subprocess.run(
            ["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    pairs = (line.rsplit(" ", 1) for line in result.stdout.splitlines() if " " in line)
    return {ref.rsplit("/", 1)[-1]: commit for ref, commit in pairs}


def tag_experiment_commits(runs: list[Any], root: Path) -> None:
    """Tag runs of DVC experiments with the experiment's own commit (``mmp.dvc.exp_commit``).

    DVC commits an experiment only after its stages ran, so a stage cannot tag its run with that
    commit; ``mmp runs`` adds it once the experiment exists.
    """
    pending = [r for r in runs if r.data.tags.get(f"{TAG_PREFIX}dvc.exp_name") and _COMMIT_TAG not in r.data.tags]
    if not pending:
        return
    import mlflow

    commits = experiment_commits(root)
    client = mlflow.MlflowClient()
    for run in pending:
        if commit := commits.get(run.data.tags[f"{TAG_PREFIX}dvc.exp_name"]):
            client.set_tag(run.info.run_id, _COMMIT_TAG, commit)
            run.data.tags[_COMMIT_TAG] = commit


_COMMIT_TAG = f"{TAG_PREFIX}dvc.exp_commit"


def format_table(runs: list[Any], metric_names: list[str]) -> str:
    header = ["run_id", "started", "stage", "data", "recipe", "variant", "status", *metric_names]
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
                _variant(tags),
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


def _variant(tags: dict[str, str]) -> str:
    """What sets the run apart: its sweep job's overrides or its DVC experiment."""
    if job := tags.get(f"{TAG_PREFIX}sweep_job"):
        overrides = tags.get(f"{TAG_PREFIX}sweep_overrides", "").replace("recipe.model.params.", "")
        text = f"#{job} {overrides}".strip()
    elif exp := (tags.get(EXPS_TAG) or tags.get(f"{TAG_PREFIX}dvc.exp_name", "")).split():
        text = f"exp {', '.join(exp)}"  # and the experiments that restored its outputs
    else:
        return "-"
    return text if len(text) <= 48 else text[:47] + "…"


def default_metrics(runs: list[Any]) -> list[str]:
    """The test metrics the runs have, the headline ones first."""
    preferred = ["test_roc_auc", "test_accuracy", "test_log_loss", "test_rmse", "test_r2"]
    present = {name for run in runs for name in run.data.metrics}
    return [name for name in preferred if name in present][:4]
