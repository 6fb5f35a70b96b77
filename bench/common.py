"""Helpers shared by the benchmarks: timed subprocesses with peak memory, project copies, results files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = ROOT / ".venv" / "bin"
GNU_TIME = "/usr/bin/time"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable

# What a user's project holds besides the library: enough to run the stages and `dvc repro`.
PROJECT_FILES = ("conf", "recipes", "stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore")


@dataclass
class Measurement:
    """One process (tree) run.

    ``cpu_seconds`` is user + system time of the tree; ``background_cpu_seconds`` is the CPU time that
    other processes on the machine used meanwhile (a noise gauge: the machine is shared).
    """

    seconds: float
    peak_rss_mb: float
    returncode: int
    cpu_seconds: float = float("nan")
    background_cpu_seconds: float = float("nan")


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (/proc/stat; NaN elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(max_share: float = 0.6, sample: float = 1.0, timeout: float = 10.0) -> float:
    """Wait (at most ``timeout`` s) until other processes use under ``max_share`` of the machine's CPUs.

    Returns the share seen last. The machine is shared with other work; this avoids starting a
    measurement in the middle of someone else's burst, it cannot stop one that starts later.
    """
    deadline = time.monotonic() + timeout
    cpus = os.cpu_count() or 1
    while True:
        before = busy_cpu_seconds()
        time.sleep(sample)
        share = (busy_cpu_seconds() - before) / (sample * cpus)
        if not share > max_share or time.monotonic() >= deadline:  # NaN (no /proc/stat): go ahead
            return share
        say(f"machine busy ({share:.0%} of {cpus} CPUs used by others), waiting")


def run_measured(
    cmd: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    log: TextIO | None = None,
    memory: bool = True,
) -> Measurement:
    """Run ``cmd`` to completion: wall time, CPU time and peak RSS of its process tree.

    Peak RSS is the larger of GNU time's ``%M`` (the exact peak of the largest single process:
    ``ru_maxrss``) and the largest sum over the tree's processes sampled every 50 ms (psutil), which
    counts helper processes that live beside the command, such as mmp's MLflow recorder. Reading
    ``ru_maxrss`` of our own child directly would be wrong: Linux carries the forking parent's RSS over
    exec, so a big benchmark driver would inflate every figure. ``memory=False`` skips all that (tiny
    commands, where a wrapper would distort the wall time).
    """
    stdout = log or subprocess.DEVNULL
    cpu_before, busy_before = children_cpu_seconds(), busy_cpu_seconds()
    if not memory:
        started = time.perf_counter()
        code = subprocess.run(list(cmd), cwd=cwd, env=env, stdout=stdout, stderr=subprocess.STDOUT).returncode
        seconds, peak = time.perf_counter() - started, float("nan")
    elif Path(GNU_TIME).is_file():
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [GNU_TIME, "-f", "%M", "-o", rss_file.name, *cmd],
                cwd=cwd,
                env=env,
                stdout=stdout,
                stderr=subprocess.STDOUT,
            )
            tree_peak = _poll_tree_rss(proc, include_root=False)
            code = proc.wait()
            seconds = time.perf_counter() - started
            lines = rss_file.read().split()
        peak = max(int(lines[-1]) / 1024 if lines else float("nan"), tree_peak)
    else:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=stdout, stderr=subprocess.STDOUT)
        peak = _poll_tree_rss(proc, include_root=True)
        code = proc.wait()
        seconds = time.perf_counter() - started
    cpu = children_cpu_seconds() - cpu_before
    background = busy_cpu_seconds() - busy_before - cpu
    return Measurement(seconds, peak, code, cpu, max(background, 0.0))


def _poll_tree_rss(proc: subprocess.Popen[bytes], include_root: bool, interval: float = 0.05) -> float:
    """Largest summed RSS (MB) of the processes in the tree of ``proc``, sampled until it exits."""
    import psutil

    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)] if include_root else root.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs))
        except psutil.Error:
            pass
        time.sleep(interval)
    return peak / 2**20


def check(measurement: Measurement, what: str, log_path: Path | None = None) -> Measurement:
    """Raise with the tail of the log if the command failed."""
    if measurement.returncode != 0:
        tail = ""
        if log_path and log_path.is_file():
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{what} failed with exit code {measurement.returncode}\n{tail}")
    return measurement


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for benchmarked commands: the venv first on PATH, no inherited DVC/mmp/MLflow/OpenMP settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DVC_", "MLFLOW_", "MMP_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH", "OMP_WAIT_POLICY")
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def copy_project(dest: Path, extra: Iterable[str] = ()) -> Path:
    """Copy the user-facing parts of the project (and ``extra`` paths) into ``dest``; symlinks stay symlinks."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in (*PROJECT_FILES, *extra):
        source = ROOT / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists() or source.is_symlink():
            shutil.copy2(source, target, follow_symlinks=False)
    return dest


def temp_dir(prefix: str) -> Path:
    """A fresh scratch folder (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh scratch folder, removed at the end unless ``keep`` (then its path is printed)."""
    scratch = temp_dir(prefix)
    try:
        yield scratch
    finally:
        if keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def run_logged(cmd: Sequence[str], cwd: Path, env: dict[str, str], what: str) -> Measurement:
    """Run a command that must succeed, its output appended to <cwd>.log; its wall time (no memory)."""
    log_path = cwd.parent / f"{cwd.name}.log"
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        return check(run_measured(cmd, cwd, env, log, memory=False), what, log_path)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the checkout being measured."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    # The tree is edited while benchmarks run: a digest of src/mmp tells which code was measured.
    digest = hashlib.sha256()
    package = ROOT / "src" / "mmp"
    for path in sorted(package.rglob("*.py")):  # every layer package, not only the top-level modules
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "src")),
        "src_sha256": digest.hexdigest()[:12],
    }


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "git": git_state(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2, default=_plain) + "\n", encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def say(message: str) -> None:
    """Progress on stderr, so that stdout stays the result."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


TABLE_HEADER = ["Benchmark", "mmp", "Baseline (same run)", "Ratio", "Target", "Result"]


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str] = TABLE_HEADER) -> str:
    """A GitHub-flavoured markdown table."""
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join('---' for _ in header)}|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)
