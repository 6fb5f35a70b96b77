"""No-op `dvc repro` of the mmp pipeline against DVC's own floor.

    .venv/bin/python bench/bench_dvc.py [--reps 10]

Two throwaway git repositories under /tmp:
  project  a copy of the project (conf/, recipes/, stages/, src/mmp/ as stage deps, dvc.yaml, params.yaml,
           .dvc/config, data/titanic.csv), committed, then one full `dvc repro` (timed once, for reference);
  floor    `dvc init` plus a one-stage dvc.yaml (one small dep, one out, one param), repro'd once.
Then, interleaved, `dvc repro` (nothing changed) in each, plus `dvc status` in the project and
`dvc --version` (DVC's start-up alone). Target (issue): the project's no-op repro is near DVC's floor (~0.8 s).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    VENV_BIN,
    clean_env,
    copy_project,
    markdown_table,
    median,
    run_logged,
    save_result,
    say,
    scratch_dir,
)

DVC = str(VENV_BIN / "dvc")
# Close to the floor: at most this much over a one-stage repro.
TARGET_RATIO = 1.25
TARGET_SECONDS = 0.8

FLOOR_DVC_YAML = """\
stages:
  touch:
    cmd: python -c "open('out.txt', 'w').write(open('in.txt').read())"
    deps:
      - in.txt
    params:
      - seed
    outs:
      - out.txt
"""

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def make_project(dest: Path, env: dict[str, str]) -> float:
    """Copy the project into a new git repo and run the whole pipeline once; the full repro's seconds."""
    copy_project(dest, extra=(".dvc/.gitignore", ".gitignore", "src/mmp", "data/titanic.csv", "data/.gitignore"))
    run_logged(["git", "init", "-q"], dest, env, "git init")
    run_logged(["git", "add", "-A"], dest, env, "git add")
    run_logged(["git", "commit", "-qm", "copy"], dest, env, "git commit")
    seconds = run_logged([DVC, "repro"], dest, env, "full dvc repro of the project copy").seconds
    run_logged(["git", "add", "-A"], dest, env, "git add")
    run_logged(["git", "commit", "-qm", "repro"], dest, env, "git commit")
    return seconds


def make_floor(dest: Path, env: dict[str, str]) -> None:
    """A minimal DVC project with one stage, repro'd once."""
    dest.mkdir(parents=True)
    run_logged(["git", "init", "-q"], dest, env, "git init")
    run_logged([DVC, "init", "-q"], dest, env, "dvc init")
    shutil.copy2(ROOT / ".dvc" / "config", dest / ".dvc" / "config")  # same settings (analytics off)
    (dest / "in.txt").write_text("hello\n")
    (dest / "params.yaml").write_text("seed: 42\n")
    (dest / "dvc.yaml").write_text(FLOOR_DVC_YAML)
    run_logged([DVC, "repro"], dest, env, "dvc repro of the floor project")
    run_logged(["git", "add", "-A"], dest, env, "git add")
    run_logged(["git", "commit", "-qm", "floor"], dest, env, "git commit")


def run(reps: int = 10, keep: bool = False) -> dict[str, Any]:
    """Build both repositories, then time the no-op commands ``reps`` times each, interleaved."""
    env = clean_env(**GIT_ENV)
    with scratch_dir("mmp-bench-dvc-", keep) as scratch:
        project, floor = scratch / "project", scratch / "floor"
        say("dvc: full repro of a project copy (titanic)")
        full_repro = make_project(project, env)
        setup_log_size = (scratch / "project.log").stat().st_size
        make_floor(floor, env)
        commands = {
            "project: dvc repro": ([DVC, "repro"], project),
            "floor: dvc repro": ([DVC, "repro"], floor),
            "project: dvc status": ([DVC, "status"], project),
            "dvc --version": ([DVC, "--version"], floor),
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for name, (cmd, cwd) in commands.items():  # warm-up
            run_logged(cmd, cwd, env, name)
        say(f"dvc: {reps} interleaved runs of {', '.join(commands)}")
        for _ in range(reps):
            for name, (cmd, cwd) in commands.items():
                measured = run_logged(cmd, cwd, env, name)
                samples[name].append(measured.seconds)
                cpu[name].append(measured.cpu_seconds)
        timed_log = (scratch / "project.log").read_text()[setup_log_size:]
        if "Running stage" in timed_log or "modified" in timed_log:
            raise RuntimeError(f"the timed `dvc repro` of the project was not a no-op:\n{timed_log[-2000:]}")
    medians = {name: median(values) for name, values in samples.items()}
    ratio = medians["project: dvc repro"] / medians["floor: dvc repro"]
    return {
        "benchmark": "dvc",
        "reps": reps,
        "full_repro_s": full_repro,
        "samples_s": samples,
        "median_s": medians,
        # user+sys CPU seconds: steadier than wall time on a shared machine
        "cpu_median_s": {name: median(values) for name, values in cpu.items()},
        "ratio": ratio,
        "overhead_s": medians["project: dvc repro"] - medians["floor: dvc repro"],
        "target_ratio": TARGET_RATIO,
        "pass": ratio <= TARGET_RATIO,
    }


def table(result: dict[str, Any]) -> list[list[str]]:
    """Rows for the summary table."""
    med = result["median_s"]
    return [
        [
            "no-op `dvc repro` (titanic)",
            f"{med['project: dvc repro']:.2f} s",
            f"one-stage `dvc repro` {med['floor: dvc repro']:.2f} s",
            f"{result['ratio']:.2f}x (+{result['overhead_s']:.2f} s)",
            f"<= {TARGET_RATIO}x floor (~{TARGET_SECONDS} s)",
            "PASS" if result["pass"] else "FAIL",
        ]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    args = parser.parse_args(argv)
    result = run(args.reps, args.keep)
    path = save_result("dvc", result)
    print(markdown_table(table(result)))
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
