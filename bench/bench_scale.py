"""Data larger than memory (issue 18): the streaming prepare vs an eager Polars read, at 1M, 5M and 10M rows.

    .venv/bin/python bench/bench_scale.py                    # 1M, 5M, 10M rows (bench/make_data.py CSVs)
    .venv/bin/python bench/bench_scale.py --rows 100000 500000

Each side runs in its own process, measured by GNU time (peak RSS of the process) and the wall clock:

- ``read_csv``: ``polars.read_csv`` of the file, eager (the RSS baseline);
- ``read+split``: the same read, then mmp's split of the whole frame (the wall-time baseline: what the
  prepare stage did before it streamed, without its checks and writes);
- ``read+split+write``: the same, then each split written as prepare writes it (uncompressed Parquet): the
  eager prepare's data work like for like, reported beside the target (the streaming stage must write
  what the wall-time baseline does not);
- ``prepare``: the prepare stage's data work as it runs (``read_inputs`` and ``write_prepared``): a pass that
  reads the target column (the task, the split) while a thread hashes the file, one pass that parses the
  whole file and writes the three splits (``sink_parquet`` partitioned by a split code), the feature checks
  and the preprocessing fitted over the written Parquet. MLflow's logging is left out (its cost does not
  depend on the rows).

Targets at the largest size: prepare's peak RSS <= 0.5x read_csv's, its wall time <= 1.2x read+split's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import make_data
from common import PYTHON, ROOT, check, clean_env, copy_project, markdown_table, run_measured, save_result, say
from common import scratch_dir as scratch_folder

SIZES = (1_000_000, 5_000_000, 10_000_000)
RSS_TARGET = 0.5
BASE_ROWS = 1_000_000
WALL_TARGET = 1.2

_EAGER = textwrap.dedent(
    """
    import sys
    import polars as pl
    frame = pl.read_csv(sys.argv[1], infer_schema_length=10_000)
    if sys.argv[2] == "split":
        from mmp.config import SplitConfig
        from mmp.data import split
        parts = split(frame, "target", "binary", SplitConfig(), 42)
    if sys.argv[2] == "write":
        from mmp.config import SplitConfig
        from mmp.data import split
        for name, part in split(frame, "target", "binary", SplitConfig(), 42).items():
            part.write_parquet(f"{sys.argv[3]}/{name}.parquet", compression="uncompressed")
    """
)

_PREPARE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mmp.config import load_config
    from mmp.model.registry import check_model_name
    from mmp.pipeline.prepare import read_inputs, write_prepared

    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(["data=scale"], root=root)
    spec = check_model_name(config.recipe.model.name)
    out.mkdir(parents=True, exist_ok=True)
    inputs, digest = read_inputs(config, spec)  # as the stage runs them, without MLflow
    write_prepared(config, spec, inputs, out)
    print(inputs.rows, digest)
    """
)


def data_file(rows: int) -> Path:
    """The synthetic CSV of ``rows`` rows.

    make_data writes about 1 MB/s on the shared 2-core machine, so a size above 1M rows is made of its
    1M-row file's rows repeated (``synthetic_<rows>_s12345_repeated.csv``): the same columns, types, value
    distributions and missing cells; the ``id`` column repeats, which prepare does not read.
    """
    if rows <= BASE_ROWS:
        return make_data.ensure(make_data.Options(rows=rows))
    copies, rest = divmod(rows, BASE_ROWS)
    if rest:
        raise SystemExit(f"--rows above {BASE_ROWS:,} must be a multiple of it, got {rows:,}")
    path = make_data.DATA_DIR / f"synthetic_{rows}_s12345_repeated.csv"
    if not path.is_file():
        base = data_file(BASE_ROWS)
        scratch = path.with_name(f".{path.name}.tmp")
        with base.open("rb") as source, scratch.open("wb") as out:
            out.write(source.readline())  # the header
            body = source.read()
            for _ in range(copies):
                out.write(body)
        scratch.replace(path)
    return path


def measure(rows: int, project: Path) -> dict[str, Any]:
    path = data_file(rows)
    (project / "conf" / "data" / "scale.yaml").write_text(
        f"name: scale\npath: {path}\ntarget: target\nid_columns: [id]\n", encoding="utf-8"
    )
    env = clean_env(MLFLOW_DISABLE_TELEMETRY="true")
    sides = {
        "read_csv": [PYTHON, "-c", _EAGER, str(path), "read"],
        "read+split": [PYTHON, "-c", _EAGER, str(path), "split"],
        "read+split+write": [PYTHON, "-c", _EAGER, str(path), "write", str(project / "prepared")],
        "prepare": [PYTHON, "-c", _PREPARE, str(project), str(project / "prepared")],
    }
    result: dict[str, Any] = {"rows": rows, "file_mb": round(path.stat().st_size / 1e6, 1)}
    (project / "prepared").mkdir(exist_ok=True)
    for name, cmd in sides.items():
        say(f"scale: {rows:,} rows, {name}")
        log_path = project / f"{name}.log"
        with log_path.open("w") as log:
            measured = check(run_measured(cmd, cwd=ROOT, env=env, log=log), name, log_path)
        result[name] = {
            "wall_s": round(measured.seconds, 2),
            "peak_rss_mb": round(measured.peak_rss_mb, 1),
            "cpu_s": round(measured.cpu_seconds, 2),
            # The cores other processes kept busy meanwhile, on average: the shared machine's noise.
            "others_cores": round(measured.background_cpu_seconds / measured.seconds, 2),
        }
        shutil.rmtree(project / "prepared", ignore_errors=True)
        (project / "prepared").mkdir()
    result["rss_ratio"] = round(result["prepare"]["peak_rss_mb"] / result["read_csv"]["peak_rss_mb"], 3)
    result["wall_ratio"] = round(result["prepare"]["wall_s"] / result["read+split"]["wall_s"], 3)
    result["wall_ratio_with_writes"] = round(result["prepare"]["wall_s"] / result["read+split+write"]["wall_s"], 3)
    return result


def run(sizes: Sequence[int] = SIZES) -> dict[str, Any]:
    with scratch_folder("mmp-bench-scale-") as scratch:
        project = copy_project(scratch / "project")
        curve = [measure(rows, project) for rows in sizes]
    largest = curve[-1]
    return {
        "curve": curve,
        "rss_target": RSS_TARGET,
        "wall_target": WALL_TARGET,
        "rss_pass": largest["rss_ratio"] <= RSS_TARGET,
        "wall_pass": largest["wall_ratio"] <= WALL_TARGET,
    }


def table(result: dict[str, Any]) -> list[list[str]]:
    """Rows for the summary table: the two targets at the largest size."""
    largest = result["curve"][-1]
    rows = f"{largest['rows']:,} rows"
    return [
        [
            f"prepare peak RSS ({rows})",
            f"{largest['prepare']['peak_rss_mb']:.0f} MB",
            f"eager read_csv {largest['read_csv']['peak_rss_mb']:.0f} MB",
            f"{largest['rss_ratio']:.2f}x",
            f"<= {RSS_TARGET}x",
            "PASS" if result["rss_pass"] else "FAIL",
        ],
        [
            f"prepare wall ({rows})",
            f"{largest['prepare']['wall_s']:.1f} s",
            f"eager read+split {largest['read+split']['wall_s']:.1f} s",
            f"{largest['wall_ratio']:.2f}x",
            f"<= {WALL_TARGET}x",
            "PASS" if result["wall_pass"] else "FAIL",
        ],
    ]


def details(result: dict[str, Any]) -> str:
    """The curve: RSS and wall time of each side against the row count."""
    sides = ("read_csv", "read+split", "read+split+write", "prepare")
    header = ["rows", "CSV MB", *(f"{side} RSS / wall / CPU (others)" for side in sides)]
    header.append("RSS ratio, wall ratio (vs read+split; vs read+split+write)")
    lines = []
    for point in result["curve"]:
        cells = [
            f"{point[s]['peak_rss_mb']:.0f} MB / {point[s]['wall_s']:.1f} s / {point[s]['cpu_s']:.1f} s "
            f"({point[s]['others_cores']:.1f})"
            for s in sides
        ]
        ratios = f"{point['rss_ratio']:.2f}x, {point['wall_ratio']:.2f}x; {point['wall_ratio_with_writes']:.2f}x"
        lines.append([f"{point['rows']:,}", f"{point['file_mb']:.0f}", *cells, ratios])
    return markdown_table(lines, header)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)
    result = run(sorted(args.rows))
    path = save_result("scale", result)
    print(markdown_table(table(result)))
    print()
    print(details(result))
    say(f"wrote {path}")
    print(json.dumps({"rss_pass": result["rss_pass"], "wall_pass": result["wall_pass"]}), file=sys.stderr)
    return 0 if result["rss_pass"] and result["wall_pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
