"""`mmp list`, `mmp validate` and `mmp get-recipe` (issue 16): the catalog read from the code and the project,
the prepare stage's checks without training (same one-line errors as `mmp train`), and a recipe built from
flags or through a real pseudo-terminal (questionary driven by pexpect), checked as `mmp train -r` checks it.
"""

from __future__ import annotations

import os

import pytest

from conftest import BIN, Project
from mmp.cli import main
from mmp.config import load_config, read_yaml
from mmp.evaluation.metrics import PRIMARY
from mmp.model.registry import MODELS


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def in_project(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(project.root)
    for name in ("MMP_PROJECT_ROOT", "MMP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return project


# --------------------------------------------------------------------------- mmp list


def test_list_models_names_classes_and_tuned_params(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list", "models")
    assert code == 0
    for name in MODELS:
        assert any(line.split()[0] == name for line in out.splitlines()[1:] if line.strip()), name
    xgb = next(line for line in out.splitlines() if line.startswith("xgboost "))
    assert "xgboost.XGBClassifier" in xgb and "xgboost.XGBRegressor" in xgb and "max_depth" in xgb


def test_list_one_model_prints_its_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list", "models", "random_forest")
    assert code == 0 and "RandomForestClassifier" in out and "RandomForestRegressor" in out
    assert any(line.split()[:2] == ["n_estimators", "100"] for line in out.splitlines())
    code, _, err = run_cli(capsys, "list", "models", "xgbost")
    assert code != 0 and "did you mean 'xgboost'" in err and len(err.strip().splitlines()) == 1


def test_list_recipes_data_and_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list", "recipes")
    assert code == 0
    for recipe in ("xgb-baseline", "lgbm-tuned", "rf-experiment", "linear-baseline", "catboost-baseline"):
        assert recipe in out
    code, out, _ = run_cli(capsys, "list", "data")
    assert code == 0 and "titanic" in out and "data/penguins.csv" in out
    code, out, _ = run_cli(capsys, "list", "metrics")
    assert code == 0
    for task, metric in PRIMARY.items():
        assert any(line.split()[:2] == [task, metric] and "primary" in line for line in out.splitlines())
    assert any(line.split()[:3] == ["regression", "rmse", "lower"] for line in out.splitlines())


def test_list_unknown_topic_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["list", "pipelines"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------- mmp validate


def test_validate_good_inputs(in_project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "validate")
    assert code == 0, err
    assert out.startswith("OK:") and "titanic" in out and "binary" in out and "train " in out
    code, out, err = run_cli(capsys, "validate", "data=penguins", "recipe=rf-experiment")
    assert code == 0, err
    assert "multiclass" in out and "RandomForestClassifier" in out
    assert not (in_project.root / "data" / "prepared").exists()  # nothing written
    assert not (in_project.root / "mlflow.db").exists()  # nothing tracked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recipe.model.params.max_dept=3"], "Unknown hyperparameter 'max_dept'"),
        (["data.target=nope"], "Target column 'nope' is not in"),
        (["recipe=nope"], "Unknown recipe 'nope'"),
        (["-d", "missing.csv", "data.target=y"], "does not exist"),
        (["recipe.model.name=xgbost"], "did you mean 'xgboost'"),
    ],
)
def test_validate_bad_inputs_answer_one_line(
    in_project: Project, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "validate", *args)
    assert code != 0 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_validate_and_train_answer_the_same_error(in_project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, validate_err = run_cli(capsys, "validate", "data.target=nope")
    _, _, train_err = run_cli(capsys, "train", "data.target=nope")
    assert validate_err == train_err


# --------------------------------------------------------------------------- mmp get-recipe


def test_get_recipe_from_flags(in_project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys,
        "get-recipe",
        "--no-input",
        "--name", "rf-small",
        "--model", "random_forest",
        "--param", "n_estimators=50",
        "--param", "max_depth=4",
        "--primary", "f1_macro",
    )  # fmt: skip
    assert code == 0, err
    path = in_project.root / "recipes" / "rf-small.yaml"
    assert f"wrote {path}" in out
    recipe = read_yaml(path, "recipe")
    assert recipe["model"]["name"] == "random_forest" and recipe["model"]["params"]["n_estimators"] == 50
    config = load_config(["recipe=rf-small"], root=in_project.root)  # a recipe of the group, as train loads it
    assert config.recipe.model.params["max_depth"] == 4 and config.recipe.metrics.primary == "f1_macro"
    code, _, err = run_cli(capsys, "get-recipe", "--no-input", "--name", "rf-small", "--model", "random_forest")
    assert code != 0 and "exists; pass --force" in err


def test_get_recipe_refuses_a_bad_parameter(in_project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("get-recipe", "--no-input", "--name", "bad", "--model", "xgboost", "--param", "max_dept=3")
    code, out, err = run_cli(capsys, *args)
    assert code != 0 and "Unknown hyperparameter 'max_dept'" in err and "did you mean 'max_depth'" in err
    assert len(err.strip().splitlines()) == 1
    assert not (in_project.root / "recipes" / "bad.yaml").exists()


@pytest.mark.slow
def test_get_recipe_in_a_pseudo_terminal(in_project: Project) -> None:
    """questionary in a real pseudo-terminal: arrow keys, defaults, an edited and an added parameter."""
    pexpect = pytest.importorskip("pexpect")
    env = {**in_project.env, "TERM": "xterm", "COLUMNS": "120", "LINES": "40", "PROMPT_TOOLKIT_NO_CPR": "1"}
    child = pexpect.spawn(
        str(BIN / "mmp"), ["get-recipe"], cwd=str(in_project.root), env=env, encoding="utf-8", timeout=60
    )
    child.logfile_read = open(in_project.root / "pty.log", "w")  # noqa: SIM115  (closed with the child)
    try:
        child.expect("Model")
        child.send("\x1b[B")  # down: the second model (lightgbm)
        child.send("\r")
        child.expect("Task")
        child.send("\r")  # auto
        child.expect("Recipe name")
        child.send("\r")  # the default: lightgbm-custom
        params = read_yaml(in_project.root / "recipes" / "lgbm-tuned.yaml", "recipe")["model"]["params"]
        for key, value in params.items():
            child.expect(key)
            if key == "num_leaves":
                child.send("\x7f" * len(str(value)) + "15\r")
            else:
                child.send("\r")
        child.expect("Another hyperparameter")
        child.send("max_bin=63\r")
        child.expect("Another hyperparameter")
        child.send("\r")
        child.expect("Categorical encoding")
        child.send("\r")
        child.expect("Primary metric")
        child.send("\r")
        child.expect("wrote ")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, (in_project.root / "pty.log").read_text()[-2000:]
    recipe = read_yaml(in_project.root / "recipes" / "lightgbm-custom.yaml", "recipe")
    assert recipe["model"]["name"] == "lightgbm"
    assert recipe["model"]["params"]["num_leaves"] == 15 and recipe["model"]["params"]["max_bin"] == 63
    assert recipe["model"]["params"]["learning_rate"] == params["learning_rate"]
    config = load_config(["recipe=lightgbm-custom"], root=in_project.root)
    assert config.recipe.model.name == "lightgbm"


@pytest.mark.slow
def test_get_recipe_without_a_terminal_asks_nothing(in_project: Project) -> None:
    """Piped input (no terminal): flags and defaults only, no prompt waiting for an answer."""
    import subprocess

    result = subprocess.run(
        [str(BIN / "mmp"), "get-recipe", "--model", "linear", "--name", "lin"],
        cwd=in_project.root,
        env={**os.environ, **in_project.env},
        input="lightgbm\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert read_yaml(in_project.root / "recipes" / "lin.yaml", "recipe")["model"]["name"] == "linear"
