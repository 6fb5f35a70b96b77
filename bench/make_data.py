"""Deterministic generator of a large mixed-type CSV for a binary classification task.

Adapted from the team's shared ``make_synthetic.py`` (numpy only, same columns, same rows for the
same options). Used by the benchmarks; output goes under ``bench/data/`` (git-ignored)::

    .venv/bin/python bench/make_data.py --rows 1000000          # bench/data/synthetic_1000000_s12345.csv

Columns
  id                      int, 0..rows-1 (never missing)
  age                     int 18..90
  income                  float, log-normal
  score                   float, N(0,1)
  ratio                   float, U(0,1)
  n_orders                int, Poisson
  balance                 float, heavy-tailed (can be negative)
  noise_1..noise_K        float, pure noise (K = --n-noise)
  segment                 str, 5 levels  (A..E)
  device                  str, 3 levels
  plan                    str, 4 levels
  region                  str, 50 levels, Zipf-like frequencies
  merchant                str, --merchant-levels levels (high cardinality)
  target                  0/1 (never missing)

Every feature cell (not id, not target) is blanked with probability --missing-rate (MCAR); a blank
field is a missing value. The target comes from a logistic model on the complete features, so a model
can learn it (ROC AUC about 0.82) but not perfectly.

Determinism: rows are generated in blocks of BLOCK rows; block b uses ``default_rng([seed, b])``.
The output depends only on the options, and the first N rows are the same whatever --rows is.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCK = 100_000
DATA_DIR = Path(__file__).resolve().parent / "data"

SEGMENTS = np.array(["A", "B", "C", "D", "E"])
DEVICES = np.array(["mobile", "desktop", "tablet"])
PLANS = np.array(["free", "basic", "pro", "enterprise"])


@dataclass(frozen=True)
class Options:
    """What the output depends on."""

    rows: int = 1_000_000
    seed: int = 12345
    n_noise: int = 4
    missing_rate: float = 0.05
    merchant_levels: int = 1000


def level_effects(seed: int, n: int, scale: float) -> np.ndarray:
    """Fixed per-level effects on the logit, drawn from their own stream."""
    return np.random.default_rng([seed, 10**9, n]).normal(0.0, scale, n)


def make_block(
    seed: int, b: int, n_keep: int, opts: Options, fx: dict[str, np.ndarray]
) -> tuple[list[str], list[list[str]], int, int]:
    """Block ``b``: header, columns as lists of strings, number of blanked cells, number of positives."""
    # Always draw a full BLOCK and keep the first n_keep rows, so that a block's rows
    # do not depend on how many rows were requested (prefix stability).
    n = BLOCK
    rng = np.random.default_rng([seed, b])
    age = rng.integers(18, 91, n)
    income = np.round(rng.lognormal(10.5, 0.6, n), 2)
    score = rng.normal(0.0, 1.0, n)
    ratio = rng.random(n)
    n_orders = rng.poisson(3.0, n)
    balance = np.round(rng.standard_t(3, n) * 1000.0, 2)
    noise = rng.normal(0.0, 1.0, (opts.n_noise, n))

    seg = rng.choice(5, n, p=[0.35, 0.25, 0.2, 0.15, 0.05])
    dev = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    plan = rng.choice(4, n, p=[0.5, 0.25, 0.2, 0.05])
    zipf_p = 1.0 / np.arange(1, 51) ** 1.1
    reg = rng.choice(50, n, p=zipf_p / zipf_p.sum())
    merch = rng.integers(0, opts.merchant_levels, n)

    # logit: linear + threshold + interaction + categorical effects
    z = (
        -1.2
        + 0.9 * score
        + 0.8 * (np.log(income) - 10.5)
        - 0.025 * (age - 50)
        + 1.1 * (ratio > 0.7)
        + 0.35 * np.minimum(n_orders, 8) / 2.0
        + 0.6 * score * (dev == 0)
        + 0.15 * np.tanh(balance / 1500.0)
        + fx["seg"][seg]
        + fx["dev"][dev]
        + fx["plan"][plan]
        + fx["reg"][reg]
        + fx["merch"][merch]
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int8)

    # string columns ('' = missing)
    cols: dict[str, np.ndarray] = {
        "age": age.astype("U3"),
        "income": income.astype("U16"),
        "score": np.round(score, 5).astype("U12"),
        "ratio": np.round(ratio, 5).astype("U12"),
        "n_orders": n_orders.astype("U4"),
        "balance": balance.astype("U16"),
    }
    for k in range(opts.n_noise):
        cols[f"noise_{k + 1}"] = np.round(noise[k], 5).astype("U12")
    cols["segment"] = SEGMENTS[seg]
    cols["device"] = DEVICES[dev]
    cols["plan"] = PLANS[plan]
    cols["region"] = np.char.add("region_", reg.astype("U2"))
    cols["merchant"] = np.char.add("m", merch.astype("U7"))

    miss = rng.random((len(cols), n)) < opts.missing_rate
    for i, name in enumerate(cols):
        a = cols[name][:n_keep].astype(object)
        a[miss[i, :n_keep]] = ""
        cols[name] = a
    miss, y = miss[:, :n_keep], y[:n_keep]

    start = b * BLOCK
    ids = np.arange(start, start + n_keep).astype("U10")
    header = ["id", *cols, "target"]
    values = [ids.tolist(), *(c.tolist() for c in cols.values()), y.astype("U1").tolist()]
    return header, values, int(miss.sum()), int(y.sum())


def write(opts: Options, out: Path) -> str:
    """Write the CSV (atomically: a partial file never has the final name); return a summary line."""
    fx = {
        "seg": level_effects(opts.seed, 5, 0.5),
        "dev": level_effects(opts.seed, 3, 0.3),
        "plan": level_effects(opts.seed, 4, 0.6),
        "reg": level_effects(opts.seed, 50, 0.4),
        "merch": level_effects(opts.seed, opts.merchant_levels, 0.3),
    }
    started = time.perf_counter()
    n_missing = n_pos = n_feat_cells = 0
    header: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f".{out.name}.tmp")
    with scratch.open("w", newline="") as handle:
        for b in range((opts.rows + BLOCK - 1) // BLOCK):
            n = min(BLOCK, opts.rows - b * BLOCK)
            header, cols, missing, positives = make_block(opts.seed, b, n, opts, fx)
            if b == 0:
                handle.write(",".join(header) + "\n")
            handle.write("\n".join(map(",".join, zip(*cols, strict=True))) + "\n")
            n_missing += missing
            n_pos += positives
            n_feat_cells += n * (len(header) - 2)
    os.replace(scratch, out)
    seconds = time.perf_counter() - started
    return (
        f"wrote {out}: {opts.rows} rows, {len(header)} cols, {out.stat().st_size / 1e6:.1f} MB, "
        f"missing {n_missing / max(n_feat_cells, 1):.2%} of feature cells, "
        f"positive rate {n_pos / max(opts.rows, 1):.3f}, {seconds:.1f}s"
    )


def default_path(opts: Options) -> Path:
    """bench/data/synthetic_<rows>_s<seed>.csv (other options are added to the name when not default)."""
    extra = ""
    if (opts.n_noise, opts.missing_rate, opts.merchant_levels) != (4, 0.05, 1000):
        extra = f"_n{opts.n_noise}_m{opts.missing_rate}_l{opts.merchant_levels}"
    return DATA_DIR / f"synthetic_{opts.rows}_s{opts.seed}{extra}.csv"


def ensure(opts: Options, out: Path | None = None) -> Path:
    """The data file for ``opts``, generated only if it does not exist yet."""
    path = out or default_path(opts)
    if not path.is_file():
        print(write(opts, path), file=sys.stderr)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", type=Path, help="output CSV (default: bench/data/synthetic_<rows>_s<seed>.csv)")
    parser.add_argument("--n-noise", type=int, default=4)
    parser.add_argument("--missing-rate", type=float, default=0.05)
    parser.add_argument("--merchant-levels", type=int, default=1000)
    parser.add_argument("--force", action="store_true", help="regenerate even if the file exists")
    args = parser.parse_args(argv)
    opts = Options(args.rows, args.seed, args.n_noise, args.missing_rate, args.merchant_levels)
    out = args.out or default_path(opts)
    if args.force or not out.is_file():
        print(write(opts, out), file=sys.stderr)
    else:
        print(f"{out} exists (pass --force to regenerate)", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
