"""One composition path: -c, -r, -d and $MMP_CONFIG go through Hydra like the overrides do (issue 13, item 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from mmp.config import compose, hydra_overrides, load_config, parse_yaml
from mmp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
YAML11_BOOLEANS = ["yes", "no", "on", "off", "Yes", "NO", "On", "OFF", "y", "n"]


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMP_CONFIG", raising=False)
    monkeypatch.delenv("MMP_PROJECT_ROOT", raising=False)


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "my.csv"
    path.write_text("island,bill,species\nTorgersen,39.1,Adelie\nBiscoe,46.5,Gentoo\n")
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- -d FILE


def test_data_file_starts_from_a_neutral_data_set(csv: Path) -> None:
    data = load_config(["data.target=species"], data_path=csv, root=REPO).data
    assert data.name == "my"  # not "titanic"
    assert data.path == str(csv)
    assert data.target == "species"
    assert data.positive_class is None  # titanic's "survived" is not carried over
    assert data.id_columns == data.drop_columns == data.categorical_columns == []
    assert data.query is None


def test_data_file_has_no_columns_of_another_data_set(tmp_path: Path) -> None:
    """penguins drops `year`; a file given with -d (and no data=penguins) must not."""
    path = _write(tmp_path / "birds.csv", "year,species\n2007,Adelie\n")
    data = load_config(["data.target=species"], data_path=path, root=REPO).data
    assert data.drop_columns == []


def test_a_target_column_is_the_default_target(tmp_path: Path) -> None:
    path = _write(tmp_path / "scores.csv", "x,target\n1,a\n")
    data = load_config([], data_path=path, root=REPO).data
    assert (data.name, data.target) == ("scores", "target")


def test_a_parquet_header_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    pl.DataFrame({"x": [1, 2], "target": ["a", "b"]}).write_parquet(path)
    assert load_config([], data_path=path, root=REPO).data.target == "target"


def test_data_file_without_target_says_how_to_name_it(csv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(csv.parent)
    with pytest.raises(ConfigError) as error:
        load_config([], data_path="my.csv", root=REPO)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("-d my.csv needs its target column: add data.target=<column>")
    assert "no column named 'target'" in message
    assert "species" in message  # the columns it could be


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.csv does not exist; set data\.path"):
        load_config([], data_path=tmp_path / "missing.csv", root=REPO)


def test_unreadable_data_file_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "corrupt.parquet", "this is not parquet\n")
    with pytest.raises(ConfigError, match=r"corrupt\.parquet cannot be read"):
        load_config([], data_path=path, root=REPO)


def test_explicit_data_overrides_win_over_the_data_file(csv: Path, tmp_path: Path) -> None:
    other = _write(tmp_path / "other.csv", "species\nAdelie\n")
    data = load_config(
        [
            "data.target=species",
            "data.name=birds",
            "data.positive_class=Adelie",
            "data.drop_columns=[bill]",
            "data.categorical_columns=[island]",
            "data.query='bill > 40'",
            f"data.path={other}",
        ],
        data_path=csv,
        root=REPO,
    ).data
    assert data.name == "birds"
    assert data.positive_class == "Adelie"
    assert data.drop_columns == ["bill"]
    assert data.categorical_columns == ["island"]
    assert data.query == "bill > 40"
    assert data.path == str(other)


def test_plus_data_target_is_accepted_with_a_data_file(csv: Path) -> None:
    assert load_config(["+data.target=species"], data_path=csv, root=REPO).data.target == "species"


def test_an_environment_config_may_name_the_target_of_a_data_file(csv: Path, tmp_path: Path) -> None:
    env = _write(tmp_path / "env.yaml", "data:\n  target: species\n  path: elsewhere.csv\n")
    data = load_config(config_file=env, data_path=csv, root=REPO).data
    assert data.target == "species"
    assert data.path == str(csv)  # -d wins over the environment config's path


def test_data_file_with_a_chosen_data_set_keeps_its_columns(csv: Path) -> None:
    """`data=penguins -d sample.csv`: the penguins settings, read from another file."""
    data = load_config(["data=penguins"], data_path=csv, root=REPO).data
    assert (data.name, data.target, data.drop_columns) == ("penguins", "species", ["year"])
    assert data.path == str(csv)


# --------------------------------------------------------------------------- yes / no class names


@pytest.mark.parametrize("word", YAML11_BOOLEANS)
def test_yes_no_class_names_stay_strings_in_overrides(word: str, tmp_path: Path) -> None:
    assert load_config([f"data.positive_class={word}"], root=REPO).data.positive_class == word
    # The same override next to a -c file (the route that used to re-parse overrides with PyYAML).
    env = _write(tmp_path / "env.yaml", "seed: 3\n")
    assert load_config([f"data.positive_class={word}"], config_file=env, root=REPO).data.positive_class == word


@pytest.mark.parametrize("word", YAML11_BOOLEANS)
def test_yes_no_class_names_stay_strings_in_config_files(word: str, tmp_path: Path) -> None:
    env = _write(tmp_path / "env.yaml", f"data:\n  positive_class: {word}\n")
    assert load_config(config_file=env, root=REPO).data.positive_class == word


def test_true_false_are_still_booleans_in_files(tmp_path: Path) -> None:
    env = _write(tmp_path / "env.yaml", "split:\n  stratify: false\ndata:\n  positive_class: true\n")
    config = load_config(config_file=env, root=REPO)
    assert config.split.stratify is False
    assert config.data.positive_class == "true"  # a boolean column's class, as Polars spells it


def test_config_files_read_numbers_as_conf_does() -> None:
    assert parse_yaml("a: 1e-3\nb: 2\nc: 0.5\nd: 2024-01-01\ne: off\n") == {
        "a": 0.001,
        "b": 2,
        "c": 0.5,
        "d": "2024-01-01",
        "e": "off",
    }


def test_recipe_files_read_on_and_1e_2_as_conf_does(tmp_path: Path) -> None:
    text = (REPO / "recipes" / "xgb-baseline.yaml").read_text().replace("learning_rate: 0.1", "learning_rate: 1e-2")
    text = text.replace("max_depth: 6", "max_depth: 6\n    grow_policy: on")
    path = _write(tmp_path / "quick.yaml", text)
    params = load_config(recipe_file=path, root=REPO).recipe.model.params
    assert params["learning_rate"] == 0.01
    assert params["grow_policy"] == "on"


# --------------------------------------------------------------------------- hyperparameter keys


@pytest.mark.parametrize("prefix", ["", "+", "++"])
def test_an_unknown_hyperparameter_is_left_to_the_model_registry(prefix: str) -> None:
    """Without `+` too: the registry, which knows the library, then suggests 'max_depth'."""
    params = load_config([f"{prefix}recipe.model.params.max_dept=3"], root=REPO).recipe.model.params
    assert params["max_dept"] == 3
    assert params["max_depth"] == 6


def test_a_known_hyperparameter_may_be_written_with_plus() -> None:
    assert load_config(["+recipe.model.params.max_depth=3"], root=REPO).recipe.model.params["max_depth"] == 3


def test_an_unknown_hyperparameter_with_a_recipe_file() -> None:
    config = load_config(
        ["recipe.model.params.max_dept=3"], recipe_file=REPO / "recipes" / "xgb-baseline.yaml", root=REPO
    )
    assert config.recipe.model.params["max_dept"] == 3


def test_other_unknown_keys_still_need_plus() -> None:
    with pytest.raises(ConfigError, match=r"Unknown config key 'recipe\.model\.nme'"):
        load_config(["recipe.model.nme=x"], root=REPO)


def test_hydra_overrides() -> None:
    assert hydra_overrides(
        [
            "recipe.model.params.max_dept=3",
            "+recipe.model.params.a=1",
            "++recipe.model.params.b=2",
            "~recipe.model.params.c",
            "recipe.model.params={}",
            "recipe=lgbm-tuned",
            "seed=1",
        ]
    ) == [
        "++recipe.model.params.max_dept=3",
        "++recipe.model.params.a=1",
        "++recipe.model.params.b=2",
        "~recipe.model.params.c",
        "recipe.model.params={}",
        "recipe=lgbm-tuned",
        "seed=1",
    ]


def test_compose_takes_the_same_overrides() -> None:
    assert compose(REPO, ["recipe.model.params.max_dept=3"])["recipe"]["model"]["params"]["max_dept"] == 3


# --------------------------------------------------------------------------- -c, -r and $MMP_CONFIG


def test_recipe_file_without_a_name_is_named_after_the_file(tmp_path: Path) -> None:
    text = (REPO / "recipes" / "lgbm-tuned.yaml").read_text().replace("name: lgbm-tuned\n", "")
    path = _write(tmp_path / "my-recipe.yaml", text)
    assert load_config(recipe_file=path, root=REPO).recipe.name == "my-recipe"


def test_recipe_file_and_recipe_choice_conflict() -> None:
    with pytest.raises(ConfigError, match="Both -r FILE and recipe=<name>"):
        load_config(["recipe=lgbm-tuned"], recipe_file=REPO / "recipes" / "xgb-baseline.yaml", root=REPO)


def test_environment_config_is_merged_on_top_and_validated(tmp_path: Path) -> None:
    env = _write(
        tmp_path / "env.yaml", "mlflow:\n  experiment_name: team\nrecipe:\n  model:\n    params:\n      n_jobs: 1\n"
    )
    config = load_config(["recipe=lgbm-tuned"], config_file=env, root=REPO)
    assert config.mlflow.experiment_name == "team"
    assert config.mlflow.tracking_uri == "sqlite:///mlflow.db"  # the rest of mlflow=local stays
    assert config.recipe.name == "lgbm-tuned"
    assert config.recipe.model.params["n_jobs"] == 1
    assert config.recipe.model.params["num_leaves"] == 31

    bad = _write(tmp_path / "bad.yaml", "data:\n  targt: survived\n")
    with pytest.raises(ConfigError, match="Unknown config key 'data.targt'; did you mean 'target'"):
        load_config(config_file=bad, root=REPO)


def test_bad_config_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Config file .*nope\.yaml does not exist"):
        load_config(config_file=tmp_path / "nope.yaml", root=REPO)
    broken = _write(tmp_path / "broken.yaml", "seed: [1\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML"):
        load_config(config_file=broken, root=REPO)
    twice = _write(tmp_path / "twice.yaml", "seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'seed'"):
        load_config(config_file=twice, root=REPO)


def test_file_paths_are_relative_to_the_working_directory(
    csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "configs" / "dev.yaml", "paths:\n  model_dir: out/models\n")
    shutil.copy(REPO / "recipes" / "rf-experiment.yaml", tmp_path / "mine.yaml")
    monkeypatch.chdir(tmp_path)
    config = load_config(
        ["data.target=species"], config_file="configs/dev.yaml", recipe_file="mine.yaml", data_path="my.csv", root=REPO
    )
    assert config.recipe.name == "rf-experiment"
    assert config.data.path == str(csv)
    assert config.paths.model_dir == "out/models"  # a value inside a file stays relative to the project root
    assert config.resolve(config.paths.model_dir) == REPO / "out" / "models"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project root with conf/, recipes/ and a params.yaml."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(REPO / "conf", root / "conf", symlinks=True)
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


def test_mmp_config_is_merged_on_top_of_params_yaml(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `MMP_CONFIG=configs/prod.yaml dvc repro` runs: params.yaml, then the environment config."""
    _write(project / "configs" / "prod.yaml", "mlflow:\n  experiment_name: prod\nseed: 5\n")
    text = (project / "params.yaml").read_text().replace("seed: 42", "seed: 9").replace("max_depth: 6", "max_depth: 4")
    (project / "params.yaml").write_text(text)
    monkeypatch.setenv("MMP_CONFIG", "configs/prod.yaml")
    monkeypatch.chdir(project / "recipes")  # relative to the project root, not the working directory
    config = load_config(from_params=True, root=project)
    assert config.mlflow.experiment_name == "prod"
    assert config.seed == 5  # the environment config wins over params.yaml
    assert config.recipe.model.params["max_depth"] == 4  # params.yaml, not conf/
    assert config.mlflow.tracking_uri == "sqlite:///mlflow.db"

    # -c replaces $MMP_CONFIG; overrides win over both files.
    other = _write(project / "configs" / "dev.yaml", "mlflow:\n  experiment_name: dev\n")
    config = load_config(["seed=1"], config_file=other, from_params=True, root=project)
    assert (config.mlflow.experiment_name, config.seed) == ("dev", 1)


def test_mmp_config_applies_to_composed_config_too(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(project / "configs" / "prod.yaml", "mlflow:\n  experiment_name: prod\n")
    monkeypatch.setenv("MMP_CONFIG", "configs/prod.yaml")
    config = load_config(["recipe=rf-experiment", "mlflow.experiment_name=override"], root=project)
    assert config.recipe.name == "rf-experiment"
    assert config.mlflow.experiment_name == "override"


def test_params_yaml_written_by_dvc_keeps_yes_as_a_string(project: Path) -> None:
    """`dvc exp run -S data.positive_class=yes` writes `positive_class: yes` unquoted (YAML 1.2)."""
    text = (project / "params.yaml").read_text().replace("positive_class: survived", "positive_class: yes")
    (project / "params.yaml").write_text(text)
    assert load_config(from_params=True, root=project).data.positive_class == "yes"


def test_params_yaml_with_files(project: Path, csv: Path) -> None:
    """From params.yaml, -r and -d replace their sections whole, as they do on conf/."""
    config = load_config(
        ["data.target=species"],
        recipe_file=project / "recipes" / "lgbm-tuned.yaml",
        data_path=csv,
        from_params=True,
        root=project,
    )
    assert config.recipe.name == "lgbm-tuned"
    assert "min_child_weight" not in config.recipe.model.params
    assert (config.data.name, config.data.positive_class) == ("my", None)


def test_files_do_not_leak_into_the_next_composition(tmp_path: Path, csv: Path) -> None:
    env = _write(tmp_path / "env.yaml", "seed: 3\n")
    load_config(["data.target=species"], config_file=env, data_path=csv, root=REPO)
    config = load_config([], root=REPO)
    assert (config.seed, config.data.name) == (42, "titanic")
    with pytest.raises(ConfigError, match="Unknown data '_mmp_file'"):
        load_config(["data=_mmp_file"], root=REPO)
