"""A logged model is self-contained: it loads and predicts raw rows in a fresh virtual environment built only
from its own requirements.txt, with mmp not installed (as `mlflow models serve --env-manager virtualenv`,
`mlflow models build-docker` and hosted platforms build it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import Project, make_project

pytestmark = pytest.mark.slow

PREDICT = """
import json, sys
import pandas as pd
try:
    import mmp  # noqa: F401
    installed = True
except ImportError:
    installed = False
import mlflow.pyfunc

model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_json(sys.argv[2], orient="records")
print(json.dumps({"mmp_installed": installed, "labels": [str(v) for v in model.predict(rows)]}))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return make_project(tmp_path_factory.mktemp("portable") / "project")


@pytest.mark.parametrize("recipe", ["xgb-baseline", "linear-baseline"])
def test_model_loads_where_mmp_is_not_installed(project: Project, recipe: str, tmp_path: Path) -> None:
    import mlflow

    # XGBoost: with a calibrator and a chosen threshold too, which must load and apply without mmp (issue 17).
    calibrated = ["recipe.calibration=isotonic", "recipe.calibration_force=true", "recipe.threshold=auto"]
    project.mmp("train", f"recipe={recipe}", *(calibrated if recipe == "xgb-baseline" else []))
    run = project.runs("train")[0]
    mlflow.set_tracking_uri(project.tracking_uri)
    model_dir = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path)))
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert not any(line.split("==")[0] == "mmp" for line in requirements)  # the name on the index is not ours
    assert (model_dir / "code" / "mmp" / "model" / "predictor.py").is_file()  # the prediction code travels along

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(model_dir / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    rows = pd.read_csv(project.root / "data" / "titanic.csv").drop(columns=["survived"]).head(25)
    rows_file = tmp_path / "rows.json"
    rows.to_json(rows_file, orient="records")
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PREDICT, str(model_dir), str(rows_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the project: nothing of mmp's source is importable from here
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["mmp_installed"] is False
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(rows)
    assert answer["labels"] == [str(v) for v in expected]
