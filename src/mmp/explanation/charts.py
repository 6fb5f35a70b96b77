"""SHAP charts as PNG: summary (beeswarm), mean |SHAP| bar, and dependence plots of the top features."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmp.explanation.shap import Explanation
from mmp.files import safe_name


def write_shap_plots(
    out_dir: Path, explanation: Explanation, data: np.ndarray, *, top_k: int = 5, max_display: int = 15
) -> list[Path]:
    """Write the charts into ``out_dir``; ``data`` holds one column per explained feature (for colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    importance = explanation.mean_abs()

    def save(name: str) -> None:
        path = out_dir / name
        fig = plt.gcf()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close("all")
        written.append(path)

    outputs = explanation.output_names or [None]
    with warnings.catch_warnings():
        # A one-hot group (linear models) has no single value to colour its dots by: its data column is all
        # NaN, which shap draws grey as intended, after taking its percentiles (numpy: "All-NaN slice").
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        _write_output_plots(explanation, data, outputs, importance, top_k, max_display, save)

    names = list(importance)[:max_display][::-1]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.35 * len(names) + 1)))
    ax.barh(names, [importance[name] for name in names], color="#1E88E5")
    ax.set_xlabel(f"mean |SHAP| ({explanation.output_space})")
    ax.set_title("Feature importance (SHAP)")
    save("shap_bar.png")
    del fig
    return written


def _write_output_plots(
    explanation: Explanation,
    data: np.ndarray,
    outputs: list[str | None],
    importance: dict[str, float],
    top_k: int,
    max_display: int,
    save: Callable[[str], None],
) -> None:
    """The summary (per output) and the dependence charts of the top features (first output)."""
    import matplotlib.pyplot as plt
    import shap

    for index, output in enumerate(outputs):
        values = explanation.values if output is None else explanation.values[:, index, :]
        base = explanation.base_values if output is None else explanation.base_values[index]
        shap_explanation = shap.Explanation(
            values=values,
            base_values=np.full(len(values), float(base)),
            data=data,
            feature_names=explanation.feature_names,
        )
        suffix = "" if output is None else f"_{safe_name(output)}"
        shap.plots.beeswarm(shap_explanation, max_display=max_display, show=False)
        title = "SHAP summary" + ("" if output is None else f" (class {output})")
        plt.title(f"{title}, {explanation.output_space}")
        save(f"shap_summary{suffix}.png")
        if output is None or index == 0:
            for feature in list(importance)[:top_k]:
                shap.plots.scatter(shap_explanation[:, feature], show=False)
                plt.title(f"SHAP dependence: {feature}" + ("" if output is None else f" (class {output})"))
                save(f"shap_dependence_{safe_name(feature)}.png")
