"""Serving speed: `mmp serve-api` against `mlflow models serve` (baseline) and a bare Flask app (ceiling).

    .venv/bin/python bench/bench_serving.py [--duration 10] [--warmup 2] [--no-pyfunc] [--quick]

Setup: a temporary copy of the project (git init) trains one titanic XGBoost model with 200 trees
(`mmp train recipe.model.params.n_estimators=200 recipe.model.early_stopping_rounds=null`); the same
fitted XGBClassifier is also logged with ``mlflow.xgboost.log_model`` for the baseline.

Servers, one at a time, each on its own free 127.0.0.1 port, started as subprocesses and stopped by PID:

- baseline: ``mlflow models serve -m models:/<xgboost flavour> --env-manager local`` (uvicorn, MLflow's
  default of one worker), one numeric-encoded row as ``dataframe_split``;
- mlflow-pyfunc (informational): ``mlflow models serve`` of mmp's own pyfunc model, one raw row;
- ceiling: gunicorn, 2 sync workers, bench/ceiling_app.py (JSON row -> float array -> booster);
- mmp: ``mmp serve-api --run-id <id>`` (gunicorn, one threaded worker per core), ``POST /invocations`` with
  ``{"dataframe_records": [row]}`` and ``POST /predict`` with the raw row.

Load: wrk, one row per request, concurrency 4 and 8 (``-t 2 -c 4`` / ``-t 2 -c 8``), a warm-up run, then
a fixed-duration run with ``--latency`` (bench/wrk_post.lua POSTs the body and counts non-2xx answers).
The baselines run one after the other; the ceiling and mmp run side by side, both servers up and their wrk
runs alternated (3 pairs per route and concurrency): mmp's ratio to the ceiling is the median of the pairs'
ratios, its p99 the median of its runs'.
Targets (issue 14): mmp single-row req/s >= 10x the baseline's and >= 0.9x the ceiling's, both measured in
the same run, p99 <= 5 ms at concurrency 4.

Large request: 10,000 rows as ``dataframe_split`` to mmp's ``/invocations`` (median of 10) against the
same work in-process (``orjson.loads`` of the same body + mmp's Predictor on a Polars frame). Target:
<= 1.5x.

Prints markdown tables, writes bench/results/serving.json; exit code 1 if a target is missed. The
machine is shared: the load average and the CPU share other processes used during each wrk run are
recorded next to the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    VENV_BIN,
    busy_cpu_seconds,
    children_cpu_seconds,
    clean_env,
    copy_project,
    markdown_table,
    save_result,
    say,
    temp_dir,
    wait_for_quiet,
)

WRK_SCRIPT = BENCH_DIR / "wrk_post.lua"
CONCURRENCIES = (4, 8)
WRK_THREADS = 2
BIG_ROWS = 10_000
BIG_REQUESTS = 10
TREES = 200
ROW = {"pclass": "1st", "sex": "female", "age": 29.0, "sibsp": 0, "parch": 0}

TARGET_VS_BASELINE = 10.0  # mmp req/s >= 10x the baseline's
TARGET_VS_CEILING = 0.9  # mmp req/s >= 0.9x the ceiling's (issue 14)
TARGET_P99_MS = 5.0  # at concurrency 4
TARGET_BIG_RATIO = 1.5  # 10,000-row request over the in-process parse + predict
PAIRS = 3  # ceiling and mmp runs alternated, per route and concurrency
DISTURBED_SHARE = 0.25  # others used more than this share of the CPUs during a run: measure it again


# --------------------------------------------------------------------------- setup


@dataclass
class Trained:
    """The model under test: the temp project that trained it, and where each server finds it."""

    project: Path
    env: dict[str, str]
    run_id: str
    mmp_uri: str  # mmp's pyfunc model, models:/<id>
    baseline_uri: str  # the same XGBClassifier, mlflow.xgboost flavour
    model_dir: Path  # mmp's model, downloaded
    feature_names: list[str]
    encoded_row: list[float]


def train(workdir: Path) -> Trained:
    """Train the titanic model with ``mmp train`` in a fresh project copy, then log the baseline model."""
    project = copy_project(workdir / "project", extra=("data/titanic.csv",))
    env = clean_env(
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONWARNINGS="ignore",
        GIT_AUTHOR_NAME="mmp bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="mmp bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
    )
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *args], cwd=project, env=env, check=True, capture_output=True)
    started = time.perf_counter()
    result = subprocess.run(
        [
            str(VENV_BIN / "mmp"),
            "train",
            f"recipe.model.params.n_estimators={TREES}",
            "recipe.model.early_stopping_rounds=null",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mmp train failed ({result.returncode}):\n{result.stderr[-3000:]}")
    match = re.search(r"MLflow run id: (\w+)", result.stdout + result.stderr)
    if not match:
        raise RuntimeError(f"no run id in the output of mmp train:\n{result.stdout[-2000:]}")
    run_id = match.group(1)
    say(f"trained run {run_id} in {time.perf_counter() - started:.0f} s")

    os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    import mlflow
    import pandas as pd

    from mmp.inference.source import resolve_model_uri

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    mmp_uri = resolve_model_uri(run_id)
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=mmp_uri, dst_path=str(workdir / "model")))
    predictor = load_predictor(model_dir)
    # The package's XGBClassifier (mmp itself predicts through libxgboost: NativeBooster.estimator loads it).
    estimator = getattr(predictor.model.estimator, "estimator", predictor.model.estimator)
    booster_trees = estimator.get_booster().num_boosted_rounds()
    if booster_trees != TREES:
        raise RuntimeError(f"the model has {booster_trees} trees, not {TREES}")
    names = predictor.preprocessor.feature_names
    encoded = [float(v) for v in predictor.preprocessor.encode_rows([ROW])[0]]
    mlflow.set_experiment("bench-baseline")
    with mlflow.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = mlflow.xgboost.log_model(estimator, name="model", input_example=pd.DataFrame([encoded], columns=names))
    return Trained(project, env, run_id, mmp_uri, info.model_uri, model_dir, names, encoded)


def load_predictor(model_dir: Path) -> Any:
    """mmp's Predictor from a downloaded model folder (what each server worker loads)."""
    from mmp.inference.source import _artifact_paths
    from mmp.model.predictor import Predictor

    paths = _artifact_paths(model_dir)
    return Predictor.load(model_dir / paths["preprocessing"], model_dir / paths["model"])


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post(port: int, path: str, body: bytes, timeout: float = 60.0) -> tuple[int, bytes]:
    """One POST of a JSON body on a fresh connection: (status, response body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Server:
    """A server subprocess in its own session; stopped by the PIDs of its process tree."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its live children (workers)."""
        import psutil

        total = 0.0
        try:
            root = psutil.Process(self.process.pid)
            for proc in (root, *root.children(recursive=True)):
                try:
                    times = proc.cpu_times()
                    total += times.user + times.system
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        return total

    def wait_ready(self, path: str, body: bytes, timeout: float = 120.0) -> bytes:
        """Poll with the benchmark's own request until it answers 200; return the answer."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, answer = post(self.port, path, body, timeout=10)
                if status == 200:
                    return answer
                last = f"HTTP {status}: {answer[:300]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {path} ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the server and its children by PID, then SIGKILL what is left."""
        import psutil

        try:
            tree = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.Error:
            tree = []
        for proc in tree:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                continue
        _, alive = psutil.wait_procs(tree, timeout=15)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                continue
        self.process.wait()


def start(name: str, cmd: Sequence[str], cwd: Path, env: dict[str, str], port: int, logs: Path) -> Server:
    log_path = logs / f"{name}.log"
    process = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Server(name, process, port, log_path)


@dataclass
class Target:
    """One server and route under load: how to start it and what to send."""

    server: str
    command: Callable[[int], list[str]]  # port -> argv
    cwd: Path
    env: dict[str, str]
    routes: list[tuple[str, str, bytes]] = field(default_factory=list)  # (endpoint label, path, body)


# --------------------------------------------------------------------------- load


def run_wrk(port: int, path: str, body_file: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run: req/s and p99 from wrk's report, status counts from bench/wrk_post.lua."""
    cmd = [
        "wrk",
        "-t",
        str(min(WRK_THREADS, connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}{path}",
    ]
    result = subprocess.run(
        cmd, env={**os.environ, "WRK_BODY_FILE": str(body_file)}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr.strip() or result.stdout[-500:]}")
    return parse_wrk(result.stdout)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_wrk(text: str) -> dict[str, Any]:
    """req/s, p50/p90/p99 (ms), non-2xx and socket errors from wrk's ``--latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rps:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{text}")
    percentiles = {
        int(p): float(value) * _UNITS[unit]
        for p, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\b", text, re.M)
    }
    summary_line = re.search(r"^WRK_SUMMARY (\{.*\})$", text, re.M)
    summary = json.loads(summary_line.group(1)) if summary_line else {}
    non2xx_line = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": percentiles.get(50),
        "p90_ms": percentiles.get(90),
        "p99_ms": percentiles.get(99),
        "requests": summary.get("requests"),
        "non_2xx": max(summary.get("non_2xx", 0), int(non2xx_line.group(1)) if non2xx_line else 0),
        "socket_errors": [int(v) for v in socket_errors.groups()] if socket_errors else [0, 0, 0, 0],
        "lua_summary": summary,
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def measure(
    server: Server, path: str, body_file: Path, connections: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """Warm up, then one measured wrk run; with the CPU share other processes used meanwhile."""
    quiet_before = wait_for_quiet(max_share=0.5, sample=0.5, timeout=3.0)
    if warmup > 0:
        run_wrk(server.port, path, body_file, connections, warmup)
    busy0, wrk0, server0 = busy_cpu_seconds(), children_cpu_seconds(), server.cpu_seconds()
    load_before = loadavg()
    result = run_wrk(server.port, path, body_file, connections, seconds)
    busy, wrk_cpu, server_cpu = (
        busy_cpu_seconds() - busy0,
        children_cpu_seconds() - wrk0,
        server.cpu_seconds() - server0,
    )
    cpus = os.cpu_count() or 1
    others = max(busy - wrk_cpu - server_cpu, 0.0) / (seconds * cpus)
    result.update(
        connections=connections,
        seconds=seconds,
        loadavg_before=load_before,
        loadavg_after=loadavg(),
        others_cpu_share=others,
        others_share_before=quiet_before,
        server_cpu_share=server_cpu / (seconds * cpus),
        wrk_cpu_share=wrk_cpu / (seconds * cpus),
        # CPU the server spent per request: steadier than req/s when other processes compete for the CPUs
        server_cpu_us_per_request=server_cpu / max(result["requests"] or result["rps"] * seconds, 1) * 1e6,
    )
    return result


@dataclass
class Budget:
    """Re-measure a disturbed run only while the whole benchmark still fits in its time budget."""

    ends: float  # time.time() by which everything should be done
    run_s: float  # one measurement: quiet wait, warm-up and the run
    runs_left: int
    servers_left: int
    server_s: float = 12.0  # start and stop of a server
    tail_s: float = 25.0  # the 10,000-row request

    def allows_retry(self) -> bool:
        rest = self.run_s * (self.runs_left + 1) + self.server_s * self.servers_left + self.tail_s
        return time.time() + rest < self.ends


def load_test(
    target: Target, port: int, logs: Path, seconds: float, warmup: float, retries: int, budget: Budget
) -> list[dict[str, Any]]:
    """Start the server, run every route at every concurrency, stop it."""
    budget.servers_left -= 1
    server = start(re.sub(r"\W+", "_", target.server), target.command(port), target.cwd, target.env, port, logs)
    rows = []
    try:
        say(f"{target.server}: starting on port {port}")
        for label, path, body in target.routes:
            answer = server.wait_ready(path, body)
            say(f"{target.server} {path}: {answer[:160].decode(errors='replace')}")
            body_file = logs / re.sub(r"\W+", "_", f"{target.server}-{path}.json")
            body_file.write_bytes(body)
            for connections in CONCURRENCIES:
                budget.runs_left -= 1
                result = measure(server, path, body_file, connections, seconds, warmup)
                attempt = 0
                while result["others_cpu_share"] > DISTURBED_SHARE and attempt < retries and budget.allows_retry():
                    attempt += 1
                    say(
                        f"  c={connections}: {result['rps']:.0f} req/s with others using "
                        f"{result['others_cpu_share']:.0%} of the CPUs; measuring again"
                    )
                    again = measure(server, path, body_file, connections, seconds, warmup)
                    again["discarded"] = [*result.get("discarded", []), _short(result)]
                    result = again if again["others_cpu_share"] <= result["others_cpu_share"] else result
                result.update(server=target.server, endpoint=label, path=path)
                say(
                    f"  c={connections}: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.2f} ms, "
                    f"non-2xx {result['non_2xx']}, others' CPU {result['others_cpu_share']:.0%}, "
                    f"load {result['loadavg_before']} -> {result['loadavg_after']}"
                )
                if result["non_2xx"] or any(result["socket_errors"][1:]):
                    say(f"  WARNING: {result['non_2xx']} non-2xx, socket errors {result['socket_errors']}")
                rows.append(result)
    finally:
        server.stop()
    return rows


def _short(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("rps", "p99_ms", "others_cpu_share")}


def load_pairs(
    ceiling: Target, mmp: Target, logs: Path, seconds: float, warmup: float, budget: Budget
) -> list[dict[str, Any]]:
    """The ceiling and mmp side by side: both servers up, their wrk runs alternated pair by pair, so that a
    drift of the machine's speed (on a shared 2-core VM, 20 % within minutes) hits both sides alike. mmp's
    ratio to the ceiling is the median of the pairs' ratios; its p99 the median of its runs' p99."""
    servers: dict[str, Server] = {}
    rows: list[dict[str, Any]] = []
    try:
        for target in (ceiling, mmp):
            budget.servers_left -= 1
            port = free_port()
            servers[target.server] = start(target.server, target.command(port), target.cwd, target.env, port, logs)
        (_, ceiling_path, ceiling_body) = ceiling.routes[0]
        say(f"ceiling {ceiling_path}: {servers['ceiling'].wait_ready(ceiling_path, ceiling_body)[:160].decode()}")
        ceiling_file = logs / "ceiling.json"
        ceiling_file.write_bytes(ceiling_body)
        for label, path, body in mmp.routes:
            say(f"mmp {path}: {servers['mmp'].wait_ready(path, body)[:160].decode(errors='replace')}")
            body_file = logs / re.sub(r"\W+", "_", f"mmp-{path}.json")
            body_file.write_bytes(body)
            for connections in CONCURRENCIES:
                pairs = []
                for _ in range(PAIRS):
                    budget.runs_left -= 1
                    bare = measure(servers["ceiling"], ceiling_path, ceiling_file, connections, seconds, warmup)
                    ours = measure(servers["mmp"], path, body_file, connections, seconds, warmup)
                    pairs.append((bare, ours))
                    say(
                        f"  {path} c={connections}: mmp {ours['rps']:.0f} req/s (p99 {ours['p99_ms']:.2f} ms), "
                        f"ceiling {bare['rps']:.0f} req/s (p99 {bare['p99_ms']:.2f} ms): "
                        f"{ours['rps'] / bare['rps']:.2f}x; others' CPU {ours['others_cpu_share']:.0%}"
                    )
                ceiling_row = _median_row([bare for bare, _ in pairs], "ceiling", ceiling.routes[0][0], ceiling_path)
                ceiling_row["paired_with"] = path
                mmp_row = _median_row([ours for _, ours in pairs], "mmp", label, path)
                mmp_row["pair_ratios"] = [ours["rps"] / bare["rps"] for bare, ours in pairs]
                mmp_row["vs_ceiling_paired"] = statistics.median(mmp_row["pair_ratios"])
                rows += [ceiling_row, mmp_row]
    finally:
        for server in servers.values():
            server.stop()
    return rows


def _median_row(runs: list[dict[str, Any]], server: str, endpoint: str, path: str) -> dict[str, Any]:
    """The run with the median req/s, with the median p99 of all runs and each run's short figures."""
    middle = sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]
    return {
        **middle,
        "p99_ms": statistics.median(run["p99_ms"] for run in runs),
        "runs": [_short(run) for run in runs],
        "server": server,
        "endpoint": endpoint,
        "path": path,
    }


# --------------------------------------------------------------------------- the 10,000-row request


def big_request(trained: Trained, logs: Path, requests: int) -> dict[str, Any]:
    """Median latency of a 10,000-row ``dataframe_split`` to mmp against parse + predict in-process.

    The server runs (idle) while the in-process side is timed, and the two alternate request by request,
    so that both see the same background load.
    """
    import orjson
    import polars as pl

    from mmp.inference.http import protocol
    from mmp.inference.http.protocol import Limits

    frame = pl.read_csv(trained.project / "data" / "titanic.csv").drop("survived")
    frame = frame.sample(BIG_ROWS, with_replacement=True, seed=0)
    body = orjson.dumps({"dataframe_split": {"columns": frame.columns, "data": [list(r) for r in frame.iter_rows()]}})
    predictor = load_predictor(trained.model_dir)
    predictor.model.limit_threads(1)  # as in each server worker: one worker per core, one model thread each

    def in_process() -> list[str]:
        split = orjson.loads(body)["dataframe_split"]
        rows = pl.DataFrame(split["data"], schema=split["columns"], orient="row", infer_schema_length=None)
        return predictor.predict(rows).tolist()

    def serving_path() -> bytes:  # mmp's own request path without HTTP, to split the gap
        rows, params = protocol.rows_from_mlflow(orjson.loads(body))
        protocol.validate(rows, predictor, Limits())
        return orjson.dumps(protocol.predict_mlflow(predictor, rows, params))

    def http() -> None:
        status, _ = post(port, "/invocations", body)
        if status != 200:
            raise RuntimeError(f"10,000-row request answered {status}")

    expected = in_process()
    samples: dict[str, list[float]] = {"mmp": [], "in-process": [], "serving path in-process": []}
    port = free_port()
    command = [str(VENV_BIN / "mmp"), "serve-api", "--run-id", trained.run_id, "--port", str(port)]
    server = start("mmp_big", command, trained.project, trained.env, port, logs)
    try:
        answer = server.wait_ready("/invocations", body)
        if orjson.loads(answer)["predictions"] != expected:
            raise RuntimeError("mmp's /invocations and the in-process Predictor disagree on the 10,000 rows")
        http()  # both workers warm
        serving_path()
        load_before = loadavg()
        busy0, own0, server0 = busy_cpu_seconds(), time.process_time(), server.cpu_seconds()
        started = time.perf_counter()
        for _ in range(requests):
            samples["in-process"].append(_seconds(in_process))
            samples["serving path in-process"].append(_seconds(serving_path))
            samples["mmp"].append(_seconds(http))
        elapsed = time.perf_counter() - started
        used = time.process_time() - own0 + server.cpu_seconds() - server0
        others = max(busy_cpu_seconds() - busy0 - used, 0.0) / (elapsed * (os.cpu_count() or 1))
    finally:
        server.stop()
    medians = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    ratio = medians["mmp"] / medians["in-process"]
    return {
        "rows": BIG_ROWS,
        "body_mb": len(body) / 2**20,
        "requests": requests,
        "http_ms": medians["mmp"],
        "inprocess_ms": medians["in-process"],
        "serving_path_inprocess_ms": medians["serving path in-process"],
        "samples_ms": {name: [v * 1000 for v in values] for name, values in samples.items()},
        "ratio": ratio,
        "target": TARGET_BIG_RATIO,
        "pass": ratio <= TARGET_BIG_RATIO,
        "others_cpu_share": others,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


def _seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the run


def mlflow_serve(uri: str) -> Callable[[int], list[str]]:
    """``mlflow models serve`` of ``uri`` from the local environment, MLflow's default of one worker."""
    serve = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local"]
    return lambda port: [*serve, "-h", "127.0.0.1", "-p", str(port)]


def ceiling_command(port: int) -> list[str]:
    """gunicorn, 2 sync workers, bench/ceiling_app.py."""
    gunicorn = [str(VENV_BIN / "gunicorn"), "-w", "2", "-k", "sync", "--log-level", "warning"]
    return [*gunicorn, "-b", f"127.0.0.1:{port}", "--chdir", str(BENCH_DIR), "ceiling_app:create_app()"]


def targets(trained: Trained, pyfunc: bool) -> list[Target]:
    """The servers, in the order they are measured."""
    mlflow_env = {**trained.env, "MLFLOW_TRACKING_URI": f"sqlite:///{trained.project / 'mlflow.db'}"}
    raw_row = json.dumps(ROW).encode()
    records = json.dumps({"dataframe_records": [ROW]}).encode()
    encoded = json.dumps(
        {"dataframe_split": {"columns": trained.feature_names, "data": [trained.encoded_row]}}
    ).encode()

    found = [
        Target(
            "baseline",
            mlflow_serve(trained.baseline_uri),
            trained.project,
            mlflow_env,
            [("/invocations (split, encoded)", "/invocations", encoded)],
        )
    ]
    if pyfunc:
        found.append(
            Target(
                "mlflow-pyfunc",
                mlflow_serve(trained.mmp_uri),
                trained.project,
                mlflow_env,
                [("/invocations (records)", "/invocations", records)],
            )
        )
    found.append(
        Target(
            "ceiling",
            ceiling_command,
            trained.project,
            {**trained.env, "CEILING_MODEL_DIR": str(trained.model_dir)},
            [("/predict (row)", "/predict", raw_row)],
        )
    )
    found.append(
        Target(
            "mmp",
            lambda port: [str(VENV_BIN / "mmp"), "serve-api", "--run-id", trained.run_id, "--port", str(port)],
            trained.project,
            trained.env,
            [("/invocations (records)", "/invocations", records), ("/predict (row)", "/predict", raw_row)],
        )
    )
    return found


def run(
    seconds: float = 10.0,
    warmup: float = 2.0,
    pyfunc: bool = True,
    retries: int = 1,
    budget_s: float = 330.0,
) -> dict[str, Any]:
    """Train, load-test every server, time the 10,000-row request; the result for serving.json."""
    if shutil.which("wrk") is None:
        raise SystemExit(
            "bench_serving: wrk is not installed. Install it (Debian/Ubuntu, as root: "
            "`apt-get update && apt-get install -y wrk`) and run again."
        )
    started = time.time()
    workdir = temp_dir("mmp-bench-serving-")
    logs = workdir / "logs"
    logs.mkdir()
    load_start = loadavg()
    try:
        trained = train(workdir)
        servers = targets(trained, pyfunc)
        runs = sum(len(target.routes) for target in servers) * len(CONCURRENCIES) * PAIRS
        budget = Budget(started + budget_s, seconds + warmup + 4.0, runs, len(servers))
        rows: list[dict[str, Any]] = []
        by_name = {target.server: target for target in servers}
        for target in servers:
            if target.server not in ("ceiling", "mmp"):
                rows += load_test(target, free_port(), logs, seconds, warmup, retries, budget)
        rows += load_pairs(by_name["ceiling"], by_name["mmp"], logs, seconds, warmup, budget)
        say(f"10,000-row request: {BIG_REQUESTS} requests")
        big = big_request(trained, logs, BIG_REQUESTS)
    except BaseException:
        say(f"logs kept in {logs}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    _add_ratios(rows)
    return {
        "benchmark": "serving",
        "trees": TREES,
        "wrk": {"threads": WRK_THREADS, "seconds": seconds, "warmup_s": warmup, "concurrencies": list(CONCURRENCIES)},
        "servers": {
            "baseline": "mlflow models serve (uvicorn, 1 worker), xgboost flavour, dataframe_split of the encoded row",
            "mlflow-pyfunc": "mlflow models serve (uvicorn, 1 worker), mmp's pyfunc model, dataframe_records",
            "ceiling": "gunicorn 2 sync workers + bench/ceiling_app.py (booster.inplace_predict, nthread 1)",
            "mmp": f"mmp serve-api (gunicorn, {os.cpu_count()} threaded workers, /metrics on)",
        },
        "single_row": rows,
        "big_request": big,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "wall_s": time.time() - started,
        "pass": all(row.get("pass", True) for row in rows) and big["pass"],
    }


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Ratios to the baseline and ceiling at the same concurrency, and the targets for mmp's rows."""
    by = {(row["server"], row["connections"]): row for row in rows}
    for row in rows:
        c = row["connections"]
        baseline, ceiling = by.get(("baseline", c)), by.get(("ceiling", c))
        row["vs_baseline"] = row["rps"] / baseline["rps"] if baseline else None
        row["vs_ceiling"] = row.get("vs_ceiling_paired") or (row["rps"] / ceiling["rps"] if ceiling else None)
        if row["server"] != "mmp":
            continue
        missed = []
        if row["vs_baseline"] is None or row["vs_baseline"] < TARGET_VS_BASELINE:
            missed.append(f"< {TARGET_VS_BASELINE:g}x baseline")
        if row["vs_ceiling"] is None or row["vs_ceiling"] < TARGET_VS_CEILING:
            missed.append(f"< {TARGET_VS_CEILING:g}x ceiling")
        if c == 4 and (row["p99_ms"] is None or row["p99_ms"] > TARGET_P99_MS):
            missed.append(f"p99 > {TARGET_P99_MS:g} ms")
        if row["non_2xx"] or any(row["socket_errors"][1:]):
            missed.append("errors")
        row["missed"] = missed
        row["pass"] = not missed


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def details(result: dict[str, Any]) -> str:
    """The full markdown tables: every server and route, then the 10,000-row request."""
    header = [
        "server",
        "endpoint",
        "concurrency",
        "req/s",
        "p99 ms",
        "vs baseline",
        "vs ceiling",
        "target met?",
        "server CPU/request",
        "others' CPU",
    ]
    lines = []
    for row in result["single_row"]:
        verdict = "-"
        if "pass" in row:
            verdict = "PASS" if row["pass"] else "FAIL (" + ", ".join(row["missed"]) + ")"
        lines.append(
            [
                row["server"],
                f"`{row['endpoint']}`",
                str(row["connections"]),
                f"{row['rps']:,.0f}",
                f"{row['p99_ms']:.2f}",
                _ratio(row["vs_baseline"]),
                _ratio(row["vs_ceiling"]),
                verdict,
                f"{row['server_cpu_us_per_request']:,.0f} us",
                f"{row['others_cpu_share']:.0%}",
            ]
        )
    big = result["big_request"]
    big_table = markdown_table(
        [
            [
                f"{big['rows']:,} rows, dataframe_split ({big['body_mb']:.2f} MB)",
                f"{big['http_ms']:.1f} ms",
                f"{big['inprocess_ms']:.1f} ms",
                f"{big['ratio']:.2f}x",
                f"<= {big['target']:g}x",
                "PASS" if big["pass"] else "FAIL",
                f"{big['serving_path_inprocess_ms']:.1f} ms",
                f"{big['others_cpu_share']:.0%}",
            ]
        ],
        header=[
            "request",
            "mmp /invocations (median)",
            "in-process orjson.loads + Predictor",
            "ratio",
            "target",
            "result",
            "mmp protocol in-process (no HTTP)",
            "others' CPU",
        ],
    )
    return (
        f"{markdown_table(lines, header)}\n\n{big_table}\n\n"
        f"Load average (1/5/15 min) at start {result['loadavg_start']}, at end {result['loadavg_end']}; "
        f'"others\' CPU" is the share of the {os.cpu_count()} CPUs that processes other than the servers, wrk and '
        "this script used during the measured runs."
    )


def table(result: dict[str, Any]) -> list[list[str]]:
    """Rows for run_all's summary table (mmp's rows and the 10,000-row request)."""
    rows = []
    for row in result["single_row"]:
        if row["server"] != "mmp":
            continue
        c = row["connections"]
        p99 = f", p99 {row['p99_ms']:.1f} ms" if c == 4 else ""
        rows.append(
            [
                f"serving `{row['endpoint']}` c={c} req/s",
                f"{row['rps']:,.0f}{p99}",
                f"mlflow serve {row['rps'] / row['vs_baseline']:,.0f}; ceiling {row['rps'] / row['vs_ceiling']:,.0f}",
                f"{row['vs_baseline']:.1f}x / {row['vs_ceiling']:.2f}x",
                f">= {TARGET_VS_BASELINE:g}x / >= {TARGET_VS_CEILING:g}x"
                + (f", p99 <= {TARGET_P99_MS:g} ms" if c == 4 else ""),
                "PASS" if row["pass"] else "FAIL",
            ]
        )
    big = result["big_request"]
    rows.append(
        [
            f"serving {big['rows']:,}-row /invocations",
            f"{big['http_ms']:.0f} ms",
            f"in-process parse + predict {big['inprocess_ms']:.0f} ms",
            f"{big['ratio']:.2f}x",
            f"<= {big['target']:g}x",
            "PASS" if big["pass"] else "FAIL",
        ]
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of the wrk warm-up before each (default 2)")
    parser.add_argument("--no-pyfunc", dest="pyfunc", action="store_false", help="skip mlflow serving mmp's pyfunc")
    parser.add_argument("--retries", type=int, default=1, help="re-measure a run disturbed by other processes")
    parser.add_argument("--quick", action="store_true", help="5 s runs, 1 s warm-up, no pyfunc server, no retries")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.pyfunc, args.retries = 5.0, 1.0, False, 0
    result = run(args.duration, args.warmup, args.pyfunc, args.retries)
    path = save_result("serving", result)
    print(details(result))
    say(f"wrote {path} ({result['wall_s']:.0f} s)")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
