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
    study.optimize(lambda trial: 0.5, n_trials=10, callbacks=[objective(3).stop_at_limit])
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
