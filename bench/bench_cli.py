"""`mmp --help` start-up time against a bare interpreter (`python -c pass`) from the same venv.

    .venv/bin/python bench/bench_cli.py [--reps 10]

Target (issue): `mmp --help` answers in under 0.5 s, i.e. the CLI imports nothing heavy at start-up.
Also lists the slowest imports behind `import mmp.cli` (python -X importtime).
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Sequence
from typing import Any

from common import (
    PYTHON,
    ROOT,
    VENV_BIN,
    clean_env,
    markdown_table,
    median,
    run_measured,
    save_result,
    say,
)

TARGET_SECONDS = 0.5


def import_profile(top: int = 8) -> list[dict[str, Any]]:
    """The modules with the largest cumulative import time under ``import mmp.cli``."""
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import mmp.cli"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=True,
    )
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, self_us, cumulative_us, name = (part.strip() for part in line.replace("import time:", "|").split("|"))
        depth = (len(name) - len(name.lstrip())) // 2  # -X importtime indents nested imports
        rows.append(
            {
                "module": name.strip(),
                "depth": depth,
                "cumulative_ms": int(cumulative_us) / 1000,
                "self_ms": int(self_us) / 1000,
            }
        )
    return sorted(rows, key=lambda r: r["cumulative_ms"], reverse=True)[:top]


def run(reps: int = 10) -> dict[str, Any]:
    """Time both commands ``reps`` times, interleaved, after one warm-up each."""
    env = clean_env()
    commands = {
        "mmp --help": [str(VENV_BIN / "mmp"), "--help"],
        "python -c pass": [PYTHON, "-c", "pass"],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # warm the page cache
        run_measured(cmd, ROOT, env, memory=False)
    for _ in range(reps):
        for name, cmd in commands.items():
            measured = run_measured(cmd, ROOT, env, memory=False)
            if measured.returncode != 0:
                raise RuntimeError(f"{name} failed with exit code {measured.returncode}")
            samples[name].append(measured.seconds)
    mmp_s, base_s = median(samples["mmp --help"]), median(samples["python -c pass"])
    result = {
        "benchmark": "cli",
        "reps": reps,
        "samples_s": samples,
        "median_s": {name: median(values) for name, values in samples.items()},
        "ratio": mmp_s / base_s,
        "overhead_s": mmp_s - base_s,
        "target_s": TARGET_SECONDS,
        "pass": mmp_s < TARGET_SECONDS,
        "slowest_imports": import_profile(),
    }
    return result


def table(result: dict[str, Any]) -> list[list[str]]:
    """Rows for run_all's summary table."""
    med = result["median_s"]
    return [
        [
            "`mmp --help` wall time",
            f"{med['mmp --help']:.3f} s",
            f"`python -c pass` {med['python -c pass']:.3f} s",
            f"{result['ratio']:.1f}x (+{result['overhead_s'] * 1000:.0f} ms)",
            f"< {TARGET_SECONDS} s",
            "PASS" if result["pass"] else "FAIL",
        ]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    say(f"cli: {args.reps} interleaved runs of `mmp --help` and `python -c pass`")
    result = run(args.reps)
    path = save_result("cli", result)
    print(markdown_table(table(result)))
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
