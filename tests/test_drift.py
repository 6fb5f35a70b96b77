"""Drift (issue 17): the training distribution saved with a model, PSI in batch inference, /drift on the server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import Project, make_project, printed_run_id
from mmp.evaluation import drift

DATA = Path(__file__).resolve().parents[1] / "data"
TITANIC_KINDS = {"pclass": "categorical", "sex": "categorical", **dict.fromkeys(("age", "sibsp", "parch"), "numeric")}


@pytest.fixture(scope="module")
def titanic() -> pl.DataFrame:
    return pl.read_csv(DATA / "titanic.csv")


@pytest.fixture(scope="module")
def reference(titanic: pl.DataFrame) -> dict:
    scores = np.random.default_rng(0).random(titanic.height)
    return drift.fit_reference(titanic, TITANIC_KINDS, ("numeric", scores))


# --------------------------------------------------------------------------- pure


def test_reference_buckets(reference: dict) -> None:
    age = reference["features"]["age"]
    assert age["kind"] == "numeric" and len(age["edges"]) == 9  # 10 quantile bins, open-ended
    assert len(age["expected"]) == drift.n_buckets(age) == len(drift.bucket_labels(age)) == 11
    assert drift.bucket_labels(age)[0].startswith("(-inf, ") and drift.bucket_labels(age)[-2].endswith(", inf)")
    assert age["expected"][-1] > 0.15  # titanic's missing ages have a bucket of their own
    sex = reference["features"]["sex"]
    assert sex["categories"] == ["female", "male"] and drift.bucket_labels(sex)[-2:] == [drift.OTHER, drift.MISSING]
    for spec in [*reference["features"].values(), reference["prediction"]]:
        assert sum(spec["expected"]) == pytest.approx(1.0)


def test_psi() -> None:
    assert drift.psi([0.5, 0.5], [10, 10]) == pytest.approx(0.0)
    assert drift.psi([0.5, 0.5], [0, 0]) is None
    assert drift.psi([0.5, 0.5], [19, 1]) > drift.psi([0.5, 0.5], [12, 8]) > 0
    assert np.isfinite(drift.psi([1.0, 0.0], [0, 5]))  # empty buckets: floored, never infinite


def test_row_buckets_match_the_vectorised_ones(titanic: pl.DataFrame, reference: dict) -> None:
    """The server counts a request's rows one value at a time; batch inference by column: same buckets."""
    for name, spec in reference["features"].items():
        by_value = [drift.value_bucket(spec, value) for value in titanic[name].to_list()]
        by_column = drift.bucket_counts(spec, drift.column_values(titanic[name], spec["kind"]))
        assert np.array_equal(np.bincount(by_value, minlength=drift.n_buckets(spec)), by_column), name
    assert drift.value_bucket(reference["features"]["sex"], "unknown") == 2  # other
    assert drift.value_bucket(reference["features"]["age"], None) == 10  # missing
    assert drift.value_bucket(reference["features"]["age"], float("nan")) == 10


def test_window_counts_the_last_rows_and_publishes_them(titanic: pl.DataFrame, reference: dict) -> None:
    """Requests of 1 to 40 rows into a 50-row window: its counts and the published gauge values are those of
    the last 50 rows, recounted from scratch, after every request (small ones are netted in Python)."""
    from prometheus_client import CollectorRegistry, Gauge

    from mmp.inference.http.metrics import DRIFT_ROWS, DriftWindow

    registry = CollectorRegistry()
    window = DriftWindow(reference, 50, Gauge(DRIFT_ROWS, "rows", ["column", "bucket"], registry=registry))
    rows = titanic.drop("survived").to_dicts()
    scores = np.random.default_rng(1).random(len(rows))
    seen: list[int] = []
    start = 0
    for size in [1, 1, 3, 40, 1, 16, 17, 2, 60, 1, 1, 5] * 3:
        window.add(rows[start : start + size], scores[start : start + size])
        seen.extend(range(start, start + size))
        start += size
        last = seen[-50:]
        published = {
            (s.labels["column"], s.labels["bucket"]): s.value
            for family in registry.collect()
            for s in family.samples
            if family.name == DRIFT_ROWS
        }
        for j, (name, spec) in enumerate(zip(window.names, window.specs, strict=True)):
            values = scores[last] if j == len(window.names) - 1 else [rows[i].get(name) for i in last]
            expected = np.bincount([drift.value_bucket(spec, v) for v in values], minlength=drift.n_buckets(spec))
            assert window.counts[j].tolist() == expected.tolist(), (name, size)
            labels = drift.bucket_labels(spec)
            assert [published.get((name, label), 0) for label in labels] == expected.tolist(), (name, size)


def test_report_flags_a_scaled_column_only(titanic: pl.DataFrame, reference: dict) -> None:
    scores = np.random.default_rng(1).random(titanic.height)
    same = drift.DriftCounts(reference)
    same.add_frame(titanic, scores)
    assert same.report()["drifted"] == []
    shifted = drift.DriftCounts(reference)
    shifted.add_frame(titanic.with_columns(pl.col("age") * 3), scores)
    report = shifted.report(0.2)
    assert report["drifted"] == ["age"] and report["columns"]["age"]["psi"] > 0.2
    assert report["rows"] == titanic.height


# --------------------------------------------------------------------------- batch inference, end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, str]:
    project = make_project(tmp_path_factory.mktemp("drift") / "project")
    run_id = printed_run_id(project.mmp("train").stdout)
    new = pl.read_csv(project.root / "data" / "titanic.csv").drop("survived")
    new.write_csv(project.root / "data" / "same.csv")
    new.with_columns(pl.col("age") * 3).write_parquet(project.root / "data" / "shifted.parquet")
    return project, run_id


@pytest.mark.slow
def test_batch_inference_flags_the_shifted_column(trained: tuple[Project, str]) -> None:
    project, run_id = trained
    out = project.root / "out"
    result = project.mmp("batch-inference", "--run-id", run_id, "-d", "data/shifted.parquet", "-o", "out/s.parquet")
    assert "drifted: age" in result.stdout, result.stdout
    assert "drift: 'age' has PSI" in result.stderr
    report = json.loads((out / "s.drift.json").read_text())
    # Older passengers: the scores move too, so the prediction may drift with age; no other column does.
    assert [name for name in report["drifted"] if name != "prediction"] == ["age"]
    assert report["columns"]["age"]["psi"] > 0.2 and report["columns"]["sex"]["psi"] < 0.01
    assert (out / "s.drift.png").read_bytes()[:4] == b"\x89PNG"
    batch_run = project.client().get_run(result.stdout.split("batch inference run: ")[1].split()[0])
    assert batch_run.data.metrics["psi_age"] == pytest.approx(report["columns"]["age"]["psi"])
    assert {"psi_sex", "psi_pclass", "psi_prediction"} <= set(batch_run.data.metrics)
    assert batch_run.data.metrics["drifted_columns"] == len(report["drifted"])
    assert batch_run.data.params["drift_threshold"] == "0.2"
    artifacts = {a.path for a in project.client().list_artifacts(batch_run.info.run_id, "drift")}
    assert artifacts == {"drift/s.drift.json", "drift/s.drift.png"}

    # The unshifted rows: no column drifts, not even with a stricter threshold from the command line.
    result = project.mmp(
        "batch-inference", "--run-id", run_id, "-d", "data/same.csv", "-o", "out/same.csv", "--drift-threshold", "0.05"
    )
    assert "no column drifted" in result.stdout and "drift:" not in result.stderr
    report = json.loads((out / "same.drift.json").read_text())
    assert report["drifted"] == [] and report["threshold"] == 0.05
    assert max(column["psi"] for column in report["columns"].values()) < 0.05

    bad = project.mmp("batch-inference", "--run-id", run_id, "-d", "data/same.csv", "-o", "out/x.csv",
                      "--drift-threshold", "0", check=False)  # fmt: skip
    assert bad.returncode != 0 and "--drift-threshold is 0.0; use a positive PSI" in bad.stderr
    assert not (out / "x.csv").exists()


# --------------------------------------------------------------------------- the server


def _titanic_rows(titanic: pl.DataFrame, scale_age: float = 1.0) -> list[dict]:
    return titanic.drop("survived").with_columns(pl.col("age") * scale_age).to_dicts()


def test_drift_route_in_process(titanic: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/drift answers PSI per column over the rows scored by /predict and /invocations; /metrics has it too."""
    from test_http_app import TOKEN, write_model_folder

    from mmp.inference.http.app import TOKEN_ENV, create_app
    from mmp.inference.http.settings import ServeSettings

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    client = create_app(write_model_folder(tmp_path / "titanic", "titanic"), ServeSettings()).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/drift").status_code == 401
    empty = client.get("/drift", headers=auth).get_json()
    assert empty["monitored"] and empty["rows"] == 0 and empty["columns"]["age"]["psi"] is None

    rows = _titanic_rows(titanic, 3.0)
    for start in range(0, 600, 200):  # 600 shifted rows: one at a time, a list, and a dataframe_split
        if start == 0:
            for row in rows[:20]:
                assert client.post("/predict", json=row, headers=auth).status_code == 200
            chunk = rows[20:200]
            assert client.post("/predict", json=chunk, headers=auth).status_code == 200
        else:
            chunk = rows[start : start + 200]
            columns = list(chunk[0])
            split = {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in chunk]}}
            assert client.post("/invocations", json=split, headers=auth).status_code == 200
    body = client.get("/drift", headers=auth).get_json()
    assert body["rows"] == 600 and body["window"] == {"rows_per_worker": 1000, "workers": 1}
    assert "age" in body["drifted"] and body["columns"]["age"]["psi"] > 0.2
    assert body["columns"]["sex"]["psi"] < 0.05 and not body["columns"]["sex"]["drifted"]
    psi_line = next(line for line in client.get("/metrics", headers=auth).get_data(as_text=True).splitlines()
                    if line.startswith('mmp_drift_psi{column="age"}'))  # fmt: skip
    assert float(psi_line.split()[-1]) == pytest.approx(body["columns"]["age"]["psi"], abs=1e-5)

    # The window slides: 1,000 unshifted rows push the shifted ones out.
    same = _titanic_rows(titanic)
    for start in range(0, 1000, 250):
        assert client.post("/predict", json=same[start : start + 250], headers=auth).status_code == 200
    body = client.get("/drift", headers=auth).get_json()
    assert body["rows"] == 1000 and body["drifted"] == []


@pytest.mark.slow
def test_drift_sums_the_workers_windows(trained: tuple[Project, str], titanic: pl.DataFrame) -> None:
    """A real gunicorn server with two workers: /drift and /metrics sum both workers' windows."""
    from conftest import start_server

    project, run_id = trained
    server = start_server(project, ["--run-id", run_id, "--workers", "2"])
    try:
        rows = _titanic_rows(titanic, 3.0)
        server.ready_workers(2)  # a busy machine may still be loading the second worker's model
        # Which worker accepts a connection is the kernel's choice, and one idle worker may take them all.
        # Concurrent rounds of new connections until both workers answered some (each window keeps 1,000).
        sent, body = 0, {}
        with ThreadPoolExecutor(4) as pool:
            while sent < 800:
                chunks = [rows[start : start + 20] for start in range(sent, sent + 80, 20)]
                answers = pool.map(lambda chunk: server.request("/predict", chunk), chunks)
                assert [status for status, _, _ in answers] == [200] * 4
                sent += 80
                if len(server.served_by("/predict")) == 2:
                    break
        assert len(server.served_by("/predict")) == 2, "one worker answered every request"
        status, _, body = server.request("/drift")
        assert status == 200 and body["rows"] == sent and body["window"]["workers"] == 2, body
        assert "age" in body["drifted"]
        status, _, text = server.request("/metrics")
        assert 'mmp_drift_psi{column="age"}' in text and f"mmp_drift_window_rows {float(sent)}" in text
        assert "mmp_drift_bucket_rows" not in text  # the per-worker transport stays internal
    finally:
        server.stop()


def test_tune_timeout_must_be_positive() -> None:
    """`mmp tune --timeout` (the quality benchmark's budget) refuses a budget that is not positive, before any run."""
    import subprocess

    from conftest import BIN, REPO, clean_env

    result = subprocess.run(
        [str(BIN / "mmp"), "tune", "recipe=xgb-baseline", "--timeout", "0"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("--timeout must be a positive number of seconds, got 0.0")
