"""Every DVC experiment is found in MLflow, also one whose stages DVC restored from its run cache.

A stage run under ``dvc exp run`` tags itself with the experiment's name (``mmp.dvc.exps``, `` name ``).
When DVC restores every stage of an experiment from its run cache, no stage runs and nothing is tagged;
the restored outputs are those of the runs that produced them, though, and ``models/model_info.json``
names its train run. :func:`link_experiment` reads that file at the experiment's commit and adds the
experiment's name to the train run, its prepare and explain runs and its pipeline run: one run per model,
found under every experiment that holds that model.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mmp.config import Config, tracking_root
from mmp.tracking.tags import EXPS_TAG, TAG_PREFIX

log = logging.getLogger(__name__)

RESTORED_TAG = f"{TAG_PREFIX}dvc.restored_exps"  # the experiments that restored this run's outputs


def experiment_filter(name: str) -> str:
    """The search filter of the runs of DVC experiment ``name``."""
    return f"tags.`{EXPS_TAG}` LIKE '% {_quoted(name)} %'"


def link_experiment(config: Config, name: str) -> None:
    """Make sure the runs of DVC experiment ``name`` carry its name (see the module's docstring).

    Runs tagged by an older mmp (only ``mmp.dvc.exp_name``) get the tag too. Never fails: a lookup.
    """
    import mlflow

    from mmp.tracking.store import setup

    try:
        experiment_id = setup(config)
        client = mlflow.MlflowClient()
        if client.search_runs([experiment_id], experiment_filter(name), max_results=1):
            return
        older = client.search_runs([experiment_id], f"tags.`{TAG_PREFIX}dvc.exp_name` = '{_quoted(name)}'")
        runs = older or _restored_runs(config, client, experiment_id, name)
        for run in runs:
            _add_name(client, run, name, restored=not older)
    except Exception:
        log.debug("linking DVC experiment %s to its runs failed", name, exc_info=True)


def _restored_runs(config: Config, client: Any, experiment_id: str, name: str) -> list[Any]:
    """The runs that produced the outputs of experiment ``name``: its train run (from the model's
    ``model_info.json`` at the experiment's commit), that run's prepare and explain runs, their parent."""
    from mmp.tracking.listing import experiment_commits

    root = tracking_root(config.root)
    commit = experiment_commits(root).get(name)
    if commit is None:
        return []
    import dvc.api

    info_path = f"{config.paths.model_dir}/model_info.json"
    train_run_id = json.loads(dvc.api.read(info_path, repo=str(root), rev=commit)).get("mlflow_run_id")
    if not train_run_id:
        return []
    train = client.get_run(train_run_id)
    tags = train.data.tags
    ids = [tags.get(f"{TAG_PREFIX}{key}_run_id") for key in ("prepare", "explain")] + [tags.get("mlflow.parentRunId")]
    runs = [train]
    for run_id in filter(None, ids):
        try:
            runs.append(client.get_run(run_id))
        except Exception:  # deleted meanwhile: the train run is what matters
            log.debug("run %s is gone", run_id)
    return runs


def _add_name(client: Any, run: Any, name: str, restored: bool) -> None:
    names = run.data.tags.get(EXPS_TAG, " ").split()
    client.set_tag(run.info.run_id, EXPS_TAG, f" {' '.join([*names, name])} ")
    if restored:
        already = run.data.tags.get(RESTORED_TAG, "").split()
        client.set_tag(run.info.run_id, RESTORED_TAG, " ".join([*already, name]))


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")
