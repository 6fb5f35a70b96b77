"""End to end: real DVC in a temporary git repository, a real MLflow store, the bundled data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import BIN, Project, printed_run_id

pytestmark = pytest.mark.slow


def test_repro_trains_titanic_above_floor(repro_project: Project) -> None:
    metrics = repro_project.metrics()
    assert set(metrics) == {"train", "valid", "test"}
    assert metrics["test"]["roc_auc"] >= 0.80
    for name in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "roc_auc"):
        assert name in metrics["valid"]
    prepared = repro_project.root / "data" / "prepared"
    for name in ("train.parquet", "valid.parquet", "test.parquet", "preprocessing.json", "manifest.json"):
        assert (prepared / name).is_file()
    state = json.loads((prepared / "preprocessing.json").read_text())
    assert state["classes"] == ["died", "survived"]
    assert {c["name"] for c in state["columns"]} == {"pclass", "sex", "age", "sibsp", "parch"}
    assert (repro_project.root / "models" / "model.ubj").is_file()


def test_runs_are_mirrored_to_mlflow(repro_project: Project) -> None:
    prepare_runs = repro_project.runs("prepare")
    train_runs = repro_project.runs("train")
    assert len(prepare_runs) == 1 and len(train_runs) == 1
    prepare, train = prepare_runs[0], train_runs[0]
    assert prepare.info.status == train.info.status == "FINISHED"

    tags = train.data.tags
    assert tags["mmp.stage"] == "train"
    assert tags["mmp.task"] == "binary"
    assert tags["mmp.model_class"] == "xgboost.XGBClassifier"
    assert tags["mmp.recipe"] == "xgb-baseline"
    assert tags["mmp.prepare_run_id"] == prepare.info.run_id  # lineage: which prepare fed this train
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags["mmp.git.dirty"] in ("true", "false")
    assert tags["mmp.version.xgboost"] and tags["mmp.python"].startswith("3.")
    assert "mmp.overrides" in tags

    params = train.data.params
    assert params["recipe.model.params.max_depth"] == "6"
    assert params["data.target"] == "survived"
    assert params["recipe.preprocessing.categorical_encoding"] == "auto"

    metrics = train.data.metrics
    assert metrics["test_roc_auc"] >= 0.80
    assert {"train_accuracy", "valid_log_loss", "test_f1_macro"} <= set(metrics)
    # The run is created after the fit but starts when the stage did: its span covers the fit.
    assert train.info.end_time - train.info.start_time >= metrics["fit_seconds"] * 1000
    assert train.data.tags["mlflow.user"] and train.data.tags["mlflow.source.type"]
    history = repro_project.client().get_metric_history(train.info.run_id, "valid_curve_logloss")
    assert len(history) > 5 and history[0].step == 0  # learning curve as step metrics

    artifacts = {a.path for a in repro_project.client().list_artifacts(train.info.run_id)}
    assert {"preprocessing.json", "metrics.json", "config.yaml"} <= artifacts
    inputs = train.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "titanic" and inputs[0].dataset.digest
    assert "titanic.csv" in inputs[0].dataset.source


def test_logged_model_predicts_raw_rows(repro_project: Project) -> None:
    import mlflow

    train = repro_project.runs("train")[0]
    mlflow.set_tracking_uri(repro_project.tracking_uri)
    models = mlflow.search_logged_models(
        experiment_ids=[train.info.experiment_id],
        filter_string=f"source_run_id = '{train.info.run_id}'",
        output_format="list",
    )
    assert len(models) == 1
    model = mlflow.pyfunc.load_model(models[0].model_uri)
    assert model.metadata.signature is not None
    assert model.metadata.signature.inputs.input_names() == ["pclass", "sex", "age", "sibsp", "parch"]
    rows = pd.DataFrame(
        {
            "pclass": ["1st", "3rd", "9th"],
            "sex": ["female", "male", "unknown"],
            "age": [29.0, 40.0, None],
            "sibsp": [0, 1, 0],
            "parch": [0, 0, 0],
        }
    )
    labels = model.predict(rows)
    assert list(labels[:2]) == ["survived", "died"]  # first-class woman, third-class man
    assert labels[2] in ("survived", "died")  # unseen categories do not crash
    proba = model.predict(rows, params={"predict_method": "predict_proba"})
    assert list(proba.columns) == ["died", "survived"]
    assert proba.to_numpy().sum(axis=1) == pytest.approx([1.0, 1.0, 1.0])
    # One null policy: a missing integer (pandas makes the column float) is scored, as the server scores it.
    nulls = rows.assign(sibsp=[0.0, None, 0.0])
    assert list(model.predict(nulls)[:1]) == ["survived"]
    assert model.predict(nulls, params={"predict_method": "predict_proba"}).to_numpy().sum() == pytest.approx(3.0)
    with pytest.raises(Exception, match="sibsp"):  # text where a number belongs is named, not guessed
        model.predict(rows.assign(sibsp=["x", "1", "0"]))


def test_second_repro_is_a_noop(repro_project: Project) -> None:
    before = len(repro_project.runs())
    result = repro_project.dvc("repro")
    assert "didn't change, skipping" in result.stdout
    assert "Running stage" not in result.stdout
    assert len(repro_project.runs()) == before


def test_exp_run_switches_recipe(repro_project: Project) -> None:
    repro_project.dvc("exp", "run", "-S", "recipe=lgbm-tuned", "-n", "lgbm")
    info = json.loads((repro_project.root / "models" / "model_info.json").read_text())
    assert info["class"] == "lightgbm.LGBMClassifier"
    assert repro_project.metrics()["test"]["roc_auc"] >= 0.80
    train = repro_project.runs("train")[0]
    assert train.data.tags["mmp.recipe"] == "lgbm-tuned"
    assert train.data.tags["mmp.dvc.exp_name"] == "lgbm"
    assert train.data.tags["mmp.overrides"] == "recipe=lgbm-tuned"
    shown = repro_project.dvc("exp", "show", "--json").stdout
    assert "lgbm" in shown


def test_exp_run_sets_a_hyperparameter(repro_project: Project) -> None:
    repro_project.dvc("exp", "run", "-S", "recipe=xgb-baseline", "-S", "recipe.model.params.max_depth=3")
    train = repro_project.runs("train")[0]
    assert train.data.params["recipe.model.params.max_depth"] == "3"
    assert train.data.tags["mmp.model_class"] == "xgboost.XGBClassifier"


@pytest.mark.parametrize(
    ("dataset", "task", "metric", "floor"),
    [("penguins", "multiclass", "accuracy", 0.95), ("diamonds", "regression", "r2", 0.95)],
)
def test_multiclass_and_regression(project: Project, dataset: str, task: str, metric: str, floor: float) -> None:
    project.dvc("exp", "run", "-S", f"data={dataset}")
    metrics = project.metrics()
    assert metrics["test"][metric] >= floor
    train = project.runs("train")[0]
    assert train.data.tags["mmp.task"] == task
    if task == "multiclass":
        assert "test_roc_auc" in train.data.metrics  # one-vs-rest
        state = json.loads((project.root / "data" / "prepared" / "preprocessing.json").read_text())
        assert state["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    else:
        assert {"test_rmse", "test_mae", "test_r2", "test_mape"} <= set(train.data.metrics)
        assert _is_png(project.root / "plots" / "predicted_vs_actual.png")
        assert _is_png(project.root / "plots" / "residuals.png")
    assert (project.root / "explain" / "shap_importance.json").is_file()


def test_predecessor_train_command(project: Project) -> None:
    project.mmp("get-config", "--env-name", "dev")
    config = (project.root / "configs" / "dev.yaml").read_text()
    assert "sqlite:///mlflow.db" in config
    result = project.mmp("train", "-c", "configs/dev.yaml", "-r", "recipes/xgb-baseline.yaml", "-d", "data/train.csv")
    run_id = printed_run_id(result.stdout)
    run = project.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_roc_auc"] >= 0.80
    assert run.data.tags["mmp.recipe"] == "xgb-baseline"


def test_train_metrics_on_a_seeded_sample_of_the_train_split(project: Project) -> None:
    """Above recipe.metrics.train_sample_rows train rows, the train metrics are taken on a seeded sample of that
    many (train_scored_rows says so); valid and test stay exact, and the same seed gives the same figures."""
    sampled = [project.mmp("train", "recipe.metrics.train_sample_rows=300") for _ in range(2)]
    exact = project.mmp("train", "recipe.metrics.train_sample_rows=null")
    first, second, whole = (
        project.client().get_run(printed_run_id(result.stdout)).data.metrics for result in (*sampled, exact)
    )
    assert first["train_scored_rows"] == 300 and "train_scored_rows" not in whole
    assert first["train_roc_auc"] == second["train_roc_auc"] != whole["train_roc_auc"]
    assert first["test_roc_auc"] == whole["test_roc_auc"] >= 0.80
    assert first["valid_roc_auc"] == whole["valid_roc_auc"]
    bad = project.mmp("train", "recipe.metrics.train_sample_rows=0", check=False)
    assert bad.returncode == 2 and "recipe.metrics.train_sample_rows must be a positive number" in bad.stderr


def test_linear_and_forest_recipes(project: Project) -> None:
    for recipe, model_class in [
        ("linear-baseline", "sklearn.linear_model.LogisticRegression"),
        ("rf-experiment", "sklearn.ensemble.RandomForestClassifier"),
    ]:
        project.mmp("train", f"recipe={recipe}")  # outputs in a run folder of its own, not in DVC's outs
        run = project.runs("train")[0]
        assert run.data.tags["mmp.model_class"] == model_class
        assert run.data.metrics["test_roc_auc"] >= 0.80


def _is_png(path) -> bool:
    from PIL import Image

    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 2000:
        return False
    with Image.open(path) as image:
        return image.size[0] > 100 and image.size[1] > 100


def test_explain_outputs_and_logging(repro_project: Project) -> None:
    explain_dir = repro_project.root / "explain"
    importance = json.loads((explain_dir / "shap_importance.json").read_text())
    assert list(importance["mean_abs_shap"])[:2].count("sex") == 1  # sex is among the top two
    assert [row["feature"] for row in importance["ranking"]] == list(importance["mean_abs_shap"])
    values = pd.read_parquet(explain_dir / "shap_values.parquet")
    assert len(values) == 196 and {"sex", "pclass", "age", "base_value"} <= set(values.columns)
    pngs = sorted((explain_dir / "plots").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"shap_summary.png", "shap_bar.png", "shap_dependence_sex.png"} <= names
    assert all(_is_png(p) for p in pngs)

    train = repro_project.runs("train")[-1]  # the first repro's train run
    explain_run = repro_project.runs("explain")[-1]
    assert explain_run.data.tags["mmp.train_run_id"] == train.info.run_id
    assert explain_run.data.tags["mmp.explainer"] == "xgboost.pred_contribs"
    train = repro_project.client().get_run(train.info.run_id)
    assert train.data.tags["mmp.explain_run_id"] == explain_run.info.run_id
    assert train.data.metrics["shap_sex"] > 0
    logged = {a.path for a in repro_project.client().list_artifacts(train.info.run_id, "explain")}
    assert {"explain/shap_importance.json", "explain/shap_values.parquet", "explain/plots"} <= logged


def test_evaluation_plots(repro_project: Project) -> None:
    plots = repro_project.root / "plots"
    expected = {"confusion_matrix", "roc_curve", "precision_recall", "feature_importance", "learning_curve"}
    for name in expected:
        assert _is_png(plots / f"{name}.png"), name
    confusion = pd.read_csv(plots / "confusion_matrix.csv")
    assert len(confusion) == 196 and set(confusion["actual"]) == {"died", "survived"}
    roc = json.loads((plots / "roc_curve.json").read_text())["roc"]
    assert (roc[0]["fpr"], roc[0]["tpr"]) == (0.0, 0.0) and (roc[-1]["fpr"], roc[-1]["tpr"]) == (1.0, 1.0)
    curve = pd.read_csv(plots / "learning_curve.csv")
    assert {"step", "train", "valid"} <= set(curve.columns) and len(curve) > 5
    train = repro_project.runs("train")[-1]
    logged = {a.path for a in repro_project.client().list_artifacts(train.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/roc_curve.png", "plots/learning_curve.png"} <= logged


def test_dvc_plots_show_writes_html(repro_project: Project) -> None:
    result = repro_project.dvc("plots", "show")
    html = repro_project.root / "dvc_plots" / "index.html"
    assert html.is_file() and "index.html" in result.stdout
    text = html.read_text()
    assert "shap_summary.png" in text or "shap_summary" in text
    assert "mean_abs_shap" in text


def test_unsupported_explainer_fails_clearly(project: Project) -> None:
    recipe = project.root / "recipes" / "knn.yaml"
    recipe.write_text("name: knn\nmodel:\n  name: k_neighbors\n  params: {n_neighbors: 15}\n")
    result = project.mmp("train", "-r", "recipes/knn.yaml")
    assert "explain skipped: No exact SHAP explainer" in result.stderr
    for stage in ("prepare", "train"):  # the stages fill DVC's outputs; `mmp train` keeps its own
        project.run("python", f"stages/{stage}.py", "recipe=knn", timeout=300)
    result = project.run("python", "stages/explain.py", "recipe=knn", check=False, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("mmp: error:")]
    assert errors and "No exact SHAP explainer for sklearn.neighbors.KNeighborsClassifier" in errors[0]
    assert "Traceback" not in result.stderr
    assert all(run.info.status != "RUNNING" for run in project.runs())


def test_mlflow_ui_from_the_project_root_shows_the_runs(repro_project: Project) -> None:
    """`mlflow ui` started in the project root with no flags finds the store."""
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=repro_project.root,
        env=repro_project.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=mmp"
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    body = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert body is not None, "mlflow ui did not answer"
        experiment_id = body["experiment"]["experiment_id"]
        search = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(search, timeout=10) as response:
            runs = json.loads(response.read())["runs"]
        stages = {tag["value"] for run in runs for tag in run["data"]["tags"] if tag["key"] == "mmp.stage"}
        assert {"prepare", "train", "explain"} <= stages
    finally:
        process.terminate()
        process.wait(timeout=20)
