"""mmp tune's search space (issue 17): other recipes a trial may run, and the first trial at the recipe's values."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from mmp.config import load_config
from mmp.errors import ConfigError
from mmp.experiments.tune import StudySettings, load_space, recipe_point, with_recipe


def test_shipped_space_offers_bagged_trees_and_starts_at_the_recipe() -> None:
    space = load_space(REPO / "recipes" / "search" / "xgb-baseline.yaml")
    assert list(space.alternatives) == ["rf-experiment"]
    assert (REPO / "recipes" / "rf-experiment.yaml").is_file()
    model = next(d for d in space.alternatives["rf-experiment"] if d.key == "recipe.model.name")
    assert model.choices == ("random_forest", "extra_trees")
    # The recipe's own values where the space reaches them; n_estimators (300, outside [1000]) is drawn.
    point = recipe_point(load_config(["recipe=xgb-baseline"], root=REPO), space)
    assert point == {
        "recipe": "xgb-baseline",
        "max_depth": 6,
        "learning_rate": 0.1,
        "min_child_weight": 1.0,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
    }
    # The second first trial: the other recipe as it stands, its values named apart from the searched one's.
    point = recipe_point(load_config(with_recipe(["recipe=xgb-baseline", "seed=1"], "rf-experiment"), root=REPO), space)
    assert point == {
        "recipe": "rf-experiment",
        "rf-experiment.recipe.model.name": "random_forest",
        "rf-experiment.max_depth": 8,
        "rf-experiment.min_samples_leaf": 2,
        "rf-experiment.max_features": "sqrt",
    }
    # Workers on other machines rebuild the same space from the study's attributes.
    settings = StudySettings("run", ["recipe=xgb-baseline"], space, "valid_roc_auc", "maximize", 20)
    assert StudySettings.from_json(settings.to_json()) == settings


def test_bad_recipes_mapping_is_one_line(tmp_path: Path) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("params:\n  max_depth: {type: int, low: 3, high: 9}\nrecipes:\n  rf-experiment: [max_depth]\n")
    with pytest.raises(ConfigError, match="'recipes' in search space .* maps recipe names to their params"):
        load_space(space)


def test_workers_on_demand_stop_at_the_budget_and_skip_a_surplus_trial() -> None:
    """Workers of a parallel search take trials until the study has its budget. Two workers that ask at the same
    moment for the last one get two trials: the one numbered past the budget is not run and not summarised."""
    import optuna

    from mmp.experiments import sweep as sweeps
    from mmp.experiments.tune import SURPLUS_ATTR, _budget_taken, _Objective, study_jobs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(REPO / "recipes" / "search" / "xgb-baseline.yaml")
    sweep = sweeps.Sweep("tune-x", "parent", REPO, "valid_roc_auc")

    def objective(limit: int) -> _Objective:
        return _Objective(REPO, [], space, sweep, "maximize", "xgb-baseline", shared=True, limit=limit)

    # After each trial, a worker stops once the study has its budget, whoever ran the trials.
    study = optuna.create_study()
    study.enqueue_trial({})  # a recipe's first point, waiting: within the budget, so it is run first
    assert not _budget_taken(study, 1)
    study.optimize(lambda trial: 0.5, n_trials=10, callbacks=[objective(3).after_trial])
    assert len(study.trials) == 3
    assert _budget_taken(study, 3)

    # The surplus trial: asked for after another worker took the last one. It is not run, and the loop stops.
    surplus = objective(3)
    study.optimize(surplus, n_trials=10)
    assert len(study.trials) == 4
    assert study.trials[3].state.name == "PRUNED"
    assert study.trials[3].user_attrs[SURPLUS_ATTR] is True
    assert surplus.trials_run == 0
    assert 3 not in [job.job for job in study_jobs(study)[0]]


def test_a_trial_whose_worker_is_gone_is_failed_and_takes_no_share_of_the_budget(tmp_path: Path) -> None:
    """A worker killed mid-trial (``kill -9``, the OOM killer) leaves its trial RUNNING in the study. Another worker
    of the same host fails it, names the gone process, and the budget is run in full without it."""
    import json
    import subprocess
    import sys

    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from mmp.experiments.tune import LOST_ATTR, WORKER_ATTR, _budget_taken, _fail_lost, _taken, study_jobs
    from mmp.tracking.orphans import owner_tags

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.journal")))
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda trial: 0.5, n_trials=2)
    tags = "import json; from mmp.tracking.orphans import owner_tags; print(json.dumps(owner_tags()))"
    gone = subprocess.run(
        [sys.executable, "-c", tags],
        capture_output=True,
        text=True,
        check=True,
    )
    lost = study.ask()  # trial 2, run by the process that has just exited
    lost.set_user_attr(WORKER_ATTR, json.loads(gone.stdout))
    alive = study.ask()  # trial 3, run by this process
    alive.set_user_attr(WORKER_ATTR, owner_tags())
    assert _budget_taken(study, 4)  # running trials count while their workers live

    assert _fail_lost(study, storage) == [2]
    assert _fail_lost(study, storage) == []  # once
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "RUNNING"]
    assert "is gone" in trials[2].user_attrs[LOST_ATTR]
    # The lost trial takes no share: the budget of 4 needs one more trial, and trial 4 is within it.
    assert not _budget_taken(study, 4)
    assert _taken(trials) == 3
    jobs, _ = study_jobs(study)
    assert 2 not in [job.job for job in jobs]  # left out of the summary, which the budget's trials fill
