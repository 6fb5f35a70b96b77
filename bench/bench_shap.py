"""SHAP speed: mmp's explain() against each library's own exact SHAP on the same rows.

10,000 rows x 30 features. Baselines, measured in the same run:
- XGBoost (100 trees): ``booster.predict(DMatrix, pred_contribs=True)``;
- LightGBM (100 trees): ``booster.predict(X, pred_contrib=True)``;
- random forest (100 trees): ``shap.TreeExplainer(model).shap_values(X)``.
Also shown for reference: shap's TreeExplainer on the XGBoost model. Target: mmp within 1.2x of the baseline.

Run: .venv/bin/python bench/bench_shap.py [--rows 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def timed(action: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def make_data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    logit = x[:, 0] + 0.8 * x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + 0.3 * np.sin(x[:, 4])
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--forest-repeats", type=int, default=1, help="TreeExplainer on a forest is slow")
    args = parser.parse_args()

    import lightgbm
    import shap
    import xgboost
    from sklearn.ensemble import RandomForestClassifier

    from mmp.explanation.shap import explain
    from mmp.model.registry import MODELS
    from mmp.model.trained import TrainedModel

    x, y = make_data(args.rows, args.features)
    groups = [f"f{i}" for i in range(args.features)]
    xgb = xgboost.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=2, tree_method="hist").fit(x, y)
    lgb = lightgbm.LGBMClassifier(n_estimators=100, num_leaves=31, n_jobs=2, verbose=-1).fit(x, y)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, n_jobs=2, random_state=0).fit(x, y)
    models = {
        "xgboost": TrainedModel(MODELS["xgboost"], "binary", xgb, ["0", "1"]),
        "lightgbm": TrainedModel(MODELS["lightgbm"], "binary", lgb, ["0", "1"]),
        "random_forest": TrainedModel(MODELS["random_forest"], "binary", forest, ["0", "1"]),
    }
    baselines: dict[str, tuple[str, Callable[[], object]]] = {
        "xgboost": (
            "xgboost pred_contribs",
            lambda: xgb.get_booster().predict(xgboost.DMatrix(x, nthread=2), pred_contribs=True),
        ),
        "lightgbm": ("lightgbm pred_contrib", lambda: lgb.booster_.predict(x, pred_contrib=True)),
        "random_forest": ("shap.TreeExplainer", lambda: shap.TreeExplainer(forest).shap_values(x)),
    }
    rows = []
    for name, model in models.items():
        label, baseline = baselines[name]
        repeats = args.forest_repeats if name == "random_forest" else args.repeats
        base_seconds = timed(baseline, repeats)
        # A fresh TrainedModel each call: no explainer cached from an earlier repeat.
        mmp_seconds = timed(
            lambda m=model: explain(TrainedModel(m.spec, m.task, m.estimator, m.classes), x, groups), repeats
        )
        rows.append(
            {
                "model": name,
                "baseline": label,
                "baseline_s": base_seconds,
                "mmp_s": mmp_seconds,
                "ratio": mmp_seconds / base_seconds,
                "target": 1.2,
            }
        )
    reference = timed(lambda: shap.TreeExplainer(xgb).shap_values(x), args.repeats)
    rows.append(
        {
            "model": "xgboost",
            "baseline": "(reference) shap.TreeExplainer",
            "baseline_s": reference,
            "mmp_s": rows[0]["mmp_s"],
            "ratio": rows[0]["mmp_s"] / reference,
            "target": None,
        }
    )

    print(
        f"SHAP, {args.rows:,} rows x {args.features} features, median of {args.repeats} (forest: {args.forest_repeats})"
    )
    print("| model | baseline | baseline s | mmp s | mmp / baseline | target |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        target = f"<= {row['target']}x" if row["target"] else "-"
        print(
            f"| {row['model']} | {row['baseline']} | {row['baseline_s']:.3f} | {row['mmp_s']:.3f} | "
            f"{row['ratio']:.2f}x | {target} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shap.json").write_text(
        json.dumps({"rows": args.rows, "features": args.features, "results": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
