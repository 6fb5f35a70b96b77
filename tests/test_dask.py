"""compute=dask (issue 18): XGBoost and LightGBM fit through their own Dask interfaces on a real 2-worker
``distributed.LocalCluster`` (bound to 127.0.0.1, closed by the module), in process.

The Dask model's test metrics are within 0.005 ROC AUC of the local model's on titanic and on the 1M-row
synthetic set (bench/make_data.py; about 2 minutes here), the logged pyfunc predicts raw rows, and the run
records the cluster. A library without a Dask trainer is one ConfigError.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import REPO, free_port
from mmp.config import load_config
from mmp.errors import ConfigError

SYNTHETIC_ROWS = 1_000_000
AUC_TOLERANCE = 0.005


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local_cluster:
        yield local_cluster


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Path:
    """A minimal project: conf/, recipes/ and the titanic data, with its own MLflow store."""
    root = tmp_path_factory.mktemp("dask") / "project"
    shutil.copytree(REPO / "conf", root / "conf", symlinks=True)
    shutil.copytree(REPO / "recipes", root / "recipes")
    (root / "data").mkdir()
    shutil.copy(REPO / "data" / "titanic.csv", root / "data")
    monkeypatch_module.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch_module.setenv("MMP_RECORDER", "0")  # in process: the test reads the runs right after
    return root


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _train_both(root: Path, overrides: list[str], address: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Prepare once, train locally and on the cluster: (local test metrics, Dask test metrics, Dask run id)."""
    from mmp.pipeline.prepare import run_prepare
    from mmp.pipeline.train import run_train

    config = load_config(overrides, root=root)
    run_prepare(config)
    local = run_train(config)
    dask_config = load_config([*overrides, "compute=dask", f"compute.scheduler_address={address}"], root=root)
    on_cluster = run_train(dask_config)
    return local.metrics["test"], on_cluster.metrics["test"], on_cluster.run_id


def _check_run(root: Path, run_id: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    run = mlflow.MlflowClient().get_run(run_id)
    tags = run.data.tags
    assert tags["mmp.cluster.workers"] == "2" and tags["mmp.cluster.threads"] == "2"
    assert tags["mmp.cluster.scheduler"].startswith("tcp://127.0.0.1:")
    return mlflow.pyfunc.load_model(f"runs:/{run_id}/model")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["xgb-baseline", "lgbm-tuned"])
def test_titanic_on_the_cluster_matches_the_local_model(root: Path, cluster: Any, recipe: str) -> None:
    local, on_cluster, run_id = _train_both(root, [f"recipe={recipe}"], cluster.scheduler_address)
    assert on_cluster["roc_auc"] >= 0.80
    assert abs(on_cluster["roc_auc"] - local["roc_auc"]) <= AUC_TOLERANCE, (local, on_cluster)
    model = _check_run(root, run_id)
    rows = pd.read_csv(root / "data" / "titanic.csv").drop(columns=["survived"]).head(20)
    rows.loc[0, "age"] = None
    labels = model.predict(rows)
    assert set(labels) <= {"survived", "died"} and len(labels) == 20
    proba = model.predict(rows, params={"predict_method": "predict_proba"})
    assert list(proba.columns) == ["died", "survived"]


@pytest.mark.slow
def test_synthetic_on_the_cluster_matches_the_local_model(root: Path, cluster: Any) -> None:
    spec = importlib.util.spec_from_file_location("make_data", REPO / "bench" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = make_data  # type: ignore[union-attr]  (its dataclasses look their module up)
    spec.loader.exec_module(make_data)  # type: ignore[union-attr]
    path = root / "data" / "synthetic.csv"
    make_data.write(make_data.Options(rows=SYNTHETIC_ROWS), path)
    (root / "conf" / "data" / "synthetic.yaml").write_text(
        "name: synthetic\npath: data/synthetic.csv\ntarget: target\nid_columns: [id]\n", encoding="utf-8"
    )
    overrides = ["data=synthetic", "recipe=xgb-baseline", "recipe.model.params.n_estimators=100"]
    local, on_cluster, run_id = _train_both(root, overrides, cluster.scheduler_address)
    assert on_cluster["roc_auc"] >= 0.75
    assert abs(on_cluster["roc_auc"] - local["roc_auc"]) <= AUC_TOLERANCE, (local, on_cluster)
    model = _check_run(root, run_id)
    # Whole rows with int64 columns: the signature declares integer columns `any` (a null may come as a float).
    rows = pd.read_csv(path, nrows=200).drop(columns=["target"]).dropna().head(20)
    rows = rows.astype({"age": "int64"})
    assert set(model.predict(rows)) <= {"0", "1"}


def test_a_library_without_a_dask_trainer_is_one_error(root: Path) -> None:
    from mmp.pipeline.train import run_train

    config = load_config(["recipe=rf-experiment", "compute=dask"], root=root)
    with pytest.raises(ConfigError, match=r"no distributed trainer.*lightgbm, xgboost, or compute=local"):
        run_train(config)


@pytest.mark.slow
def test_an_unreachable_scheduler_is_one_error_without_its_password(root: Path) -> None:
    from mmp.model.distributed import connect

    config = load_config(
        ["compute=dask", f"compute.scheduler_address=tcp://alice:s3cret-pass@127.0.0.1:{free_port()}"], root=root
    )
    with pytest.raises(ConfigError) as error, connect(config.compute):
        pass
    message = str(error.value)
    assert "alice:***@127.0.0.1" in message and "s3cret-pass" not in message
