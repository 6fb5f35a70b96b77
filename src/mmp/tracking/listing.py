"""``mmp runs``: a terminal table of the experiment's runs, the quick view when the UI is closed."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mmp.config import Config, tracking_root
from mmp.errors import ConfigError
from mmp.evaluation.metrics import LOWER_IS_BETTER, PRIMARY
from mmp.tracking import TAG_PREFIX, setup
from mmp.tracking.dvc_links import experiment_filter, link_experiment
from mmp.tracking.tags import EXPS_TAG

ALL = "all"
_PAGE = 200


@dataclass(frozen=True)
class RunQuery:
    stage: str | None = "train"  # "sweep" lists sweeps and searches (their parent runs)
    recipe: str | None = None
    data: str | None = None  # a data set's name; None: every data set
    sweep: str | None = None  # a sweep id (multirun/<id>): its jobs
    dvc_exp: str | None = None  # a DVC experiment name
    sort: str | None = None  # a metric name, e.g. test_roc_auc
    limit: int = 20
    pruned: bool = False  # also pruned search trials (hidden by default: they stopped early)


@dataclass
class Listing:
    runs: list[Any]
    sort: str | None  # the metric ranked by (the primary metric on valid for --best)
    missing: int = 0  # listed runs without that metric (ranked last)


def data_filter(config: Config, requested: str | None, ranking: bool) -> str | None:
    """The data set to list: the one asked for (``all``: every one), else, when ranking, the config's own.

    Ranking across data sets is meaningless (a penguins run's accuracy beside a titanic run's).
    """
    if requested:
        return None if requested == ALL else requested
    return config.data.name if ranking else None


def describe(query: RunQuery) -> str:
    """The filters of a query, for messages: "stage train, data titanic"."""
    parts = [("stage", query.stage), ("recipe", query.recipe), ("data", query.data)]
    parts += [("sweep", query.sweep), ("DVC experiment", query.dvc_exp)]
    return ", ".join(f"{name} {value}" for name, value in parts if value)


def best_metric(config: Config, task: str | None) -> str:
    """What ``mmp runs --best`` ranks by: the recipe's primary metric on the valid split."""
    primary = config.recipe.metrics.primary
    return f"valid_{primary if primary != 'auto' else PRIMARY.get(task or '', PRIMARY['binary'])}"


def find_runs(config: Config, query: RunQuery, *, best: bool = False) -> Listing:
    """The runs ``query`` selects, best first when it sorts. ConfigError when no selected run has the sort
    metric (a typo, or a metric of another task)."""
    experiment_id = setup(config)
    filters = []
    stage = query.stage
    if stage == "sweep":
        filters.append(f"tags.`{TAG_PREFIX}sweep_command` LIKE '%'")
        stage = None
    for tag, value in (
        ("stage", stage),
        ("recipe", query.recipe),
        ("data", query.data),
    ):
        if value:
            filters.append(f"tags.`{TAG_PREFIX}{tag}` = '{_quoted(value)}'")
    if query.dvc_exp:  # also an experiment that DVC restored from its run cache
        link_experiment(config, query.dvc_exp)
        filters.append(experiment_filter(query.dvc_exp))
    if query.sweep:
        filters.append(f"tags.`{TAG_PREFIX}sweep_id` = '{_quoted(query.sweep)}'")
    sort = query.sort
    if best:
        newest = _search(experiment_id, filters, ["attributes.start_time DESC"], 1, query.pruned)
        sort = best_metric(config, newest[0].data.tags.get(f"{TAG_PREFIX}task") if newest else None)
    order = ["attributes.start_time DESC"]
    if sort:
        direction = "ASC" if sort.split("_", 1)[-1] in LOWER_IS_BETTER else "DESC"
        order = [f"metrics.`{sort}` {direction}", *order]
    runs = _search(experiment_id, filters, order, query.limit, query.pruned)
    missing = sum(1 for run in runs if sort and sort not in run.data.metrics)
    if runs and sort and missing == len(runs):
        have = sorted({name for run in runs for name in run.data.metrics if name.startswith(("valid_", "test_"))})
        shown = ", ".join(have[:12]) + (", ..." if len(have) > 12 else "")
        raise ConfigError(f"No listed run has the metric '{sort}'; pick one they have: {shown or 'none'}")
    tag_experiment_commits(runs, tracking_root(config.root))
    return Listing(runs, sort, missing)


def _search(experiment_id: str, filters: list[str], order: list[str], limit: int, pruned: bool) -> list[Any]:
    """Up to ``limit`` runs, pruned trials left out unless asked for (a tag MLflow cannot filter on by absence)."""
    import mlflow

    client = mlflow.MlflowClient()
    found: list[Any] = []
    token = None
    while len(found) < limit:
        page = client.search_runs(
            [experiment_id], " and ".join(filters), order_by=order, max_results=_PAGE, page_token=token
        )
        found += [run for run in page if pruned or run.data.tags.get(f"{TAG_PREFIX}pruned") != "true"]
        token = page.token
        if not token:
            break
    return found[:limit]


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


def best_job_recipes(runs: list[Any]) -> dict[str, str]:
    """Sweep or search parent run id -> the recipe of its best job (the parent's own tag is the default's)."""
    import mlflow

    client = mlflow.MlflowClient()
    recipes = {}
    for run in runs:
        if best := run.data.tags.get(f"{TAG_PREFIX}best_run_id"):
            try:
                recipe = client.get_run(best).data.tags.get(f"{TAG_PREFIX}recipe")
            except mlflow.exceptions.MlflowException:
                continue  # the best job's run was deleted
            if recipe:
                recipes[run.info.run_id] = recipe
    return recipes


def format_table(runs: list[Any], metric_names: list[str], recipes: dict[str, str] | None = None) -> str:
    """The runs as aligned columns; ``recipes`` replaces the recipe shown for some runs (sweeps: the best job's)."""
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
                (recipes or {}).get(run.info.run_id) or tags.get(f"{TAG_PREFIX}recipe", "-"),
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


def default_metrics(runs: list[Any], sort: str | None = None) -> list[str]:
    """The test metrics the runs have, the headline ones first; the sort key (if any) leads."""
    preferred = ["test_roc_auc", "test_accuracy", "test_log_loss", "test_rmse", "test_r2"]
    present = {name for run in runs for name in run.data.metrics}
    shown = [name for name in preferred if name in present][:4]
    return [sort, *(name for name in shown if name != sort)] if sort else shown
