"""The config tree: every recipe and data set composes and validates; paths resolve against the root."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmp.config import compose, flatten, load_config, project_root, tracking_root
from mmp.errors import ConfigError
from mmp.tracking import resolve_tracking_uri

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml"))


def test_ships_the_required_recipes() -> None:
    assert {"xgb-baseline", "lgbm-tuned", "rf-experiment", "linear-baseline"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_recipe_composes_with_every_dataset(recipe: str, dataset: str) -> None:
    config = load_config([f"recipe={recipe}", f"data={dataset}"], root=REPO)
    assert config.recipe.name == recipe
    assert config.data.name == dataset
    assert (REPO / config.data.path).is_file()


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_files_load_standalone(recipe: str) -> None:
    """`mmp train -r recipes/<name>.yaml` takes the same file as the Hydra group."""
    config = load_config(recipe_file=REPO / "recipes" / f"{recipe}.yaml", root=REPO)
    assert config.recipe == load_config([f"recipe={recipe}"], root=REPO).recipe


def test_params_yaml_is_the_composed_default() -> None:
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert committed == compose(REPO), "params.yaml is stale: run `make params`"


def test_overrides_win_over_files(tmp_path: Path) -> None:
    overlay = tmp_path / "env.yaml"
    overlay.write_text("mlflow:\n  experiment_name: from-file\nseed: 7\n")
    config = load_config(
        ["recipe.model.params.max_depth=3", "seed=11"],
        config_file=overlay,
        recipe_file=REPO / "recipes" / "xgb-baseline.yaml",
        root=REPO,
    )
    assert config.mlflow.experiment_name == "from-file"
    assert config.recipe.model.params["max_depth"] == 3
    assert config.seed == 11


def test_recipe_file_replaces_the_recipe_whole() -> None:
    config = load_config(recipe_file=REPO / "recipes" / "lgbm-tuned.yaml", root=REPO)
    assert "num_leaves" in config.recipe.model.params
    assert "min_child_weight" not in config.recipe.model.params  # nothing leaks from xgb-baseline


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["recipe.task=classify"], "recipe.task"),
        (["seed=abc"], "'seed' must be an integer"),
        (["recipe.preprocessing.scaling=minmax"], "choose one of"),
        (["+data.extra=1"], "Unknown config key 'data.extra'"),
        (["split.valid_size=0.5", "split.test_size=0.45"], "under 10%"),
    ],
)
def test_bad_values_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides, root=REPO)


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_project_root_is_found_from_a_subfolder() -> None:
    assert project_root(REPO / "src" / "mmp") == REPO


def test_tracking_root_of_a_dvc_temp_copy(tmp_path: Path) -> None:
    copy = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12"
    copy.mkdir(parents=True)
    assert tracking_root(copy) == tmp_path / "proj"
    assert tracking_root(tmp_path / "proj") == tmp_path / "proj"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", "sqlite:////root/proj/mlflow.db"),
        ("sqlite:////abs/store.db", "sqlite:////abs/store.db"),
        ("file:mlruns", "file:///root/proj/mlruns"),
        ("http://mlflow.company.com:5000", "http://mlflow.company.com:5000"),
        ("https://x.example.com", "https://x.example.com"),
    ],
)
def test_store_paths_resolve_against_the_project_root(uri: str, expected: str) -> None:
    assert resolve_tracking_uri(uri, Path("/root/proj")) == expected
