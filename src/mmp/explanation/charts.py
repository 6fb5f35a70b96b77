"""SHAP charts as PNG, drawn with matplotlib alone: summary (beeswarm), mean |SHAP| bar, and dependence plots.

The values come from each library's exact explainer (:mod:`mmp.explanation.shap`), so drawing them needs
no ``shap`` import (2-3 s). The charts follow shap's own: a row of dots per feature, coloured from low
(blue) to high (red) feature value between its 5th and 95th percentiles, grey where a row has no single
value (missing, or a one-hot group the caller could not decode). Categorical features are drawn with the
user's labels, not their codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmp.evaluation.plots import save_png, short_label
from mmp.explanation.shap import Explanation
from mmp.files import safe_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BLUE, RED, GREY = "#1E88E5", "#FF0D57", "#777777"  # shap's colours
MISSING_LABEL = "(missing or other)"
DPI = 100
_DOT = 12  # marker area in points^2
_ROW_HEIGHT = 0.4  # half the vertical room of a beeswarm row
_SWARM_BINS = 100


def write_shap_plots(
    out_dir: Path,
    explanation: Explanation,
    data: np.ndarray,
    *,
    top_k: int = 5,
    max_display: int = 15,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> list[Path]:
    """Write the charts into ``out_dir``; return their paths.

    ``data`` holds one column per explained feature (the colour of a dot, the x of a dependence plot; NaN
    where there is none). ``categories`` gives, for a categorical feature, the label of each code in
    ``data`` (code ``i`` is ``categories[name][i]``; other codes are drawn as missing).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    categories = categories or {}
    importance = explanation.mean_abs()
    top = list(importance)[:max_display]
    index = {name: i for i, name in enumerate(explanation.feature_names)}
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        save_png(fig, out_dir / name)
        written.append(out_dir / name)

    outputs: list[str | None] = list(explanation.output_names or [None])
    for position, output in enumerate(outputs):
        values = explanation.values if output is None else explanation.values[:, position, :]
        suffix = "" if output is None else f"_{safe_name(output)}"
        of_class = "" if output is None else f" (class {output})"
        fig = summary_chart(values, data, top, index, f"SHAP summary{of_class}, {explanation.output_space}")
        save(fig, f"shap_summary{suffix}.png")
        if position == 0:
            for feature in list(importance)[:top_k]:
                column = index[feature]
                fig = dependence_chart(
                    values[:, column],
                    data[:, column],
                    categories.get(feature),
                    feature,
                    f"SHAP dependence: {feature}{of_class}",
                    explanation.output_space,
                )
                save(fig, f"shap_dependence_{safe_name(feature)}.png")
    save(bar_chart(importance, max_display, explanation.output_space), "shap_bar.png")
    return written


def swarm_offsets(values: np.ndarray, bins: int = _SWARM_BINS) -> np.ndarray:
    """Vertical offsets in [-1, 1] that stack dots with close values (shap's beeswarm layout):
    values fall into ``bins`` bins; within a bin, dots alternate above and below the row's centre."""
    n = len(values)
    if n == 0:
        return np.zeros(0)
    span = float(values.max() - values.min())
    binned = np.zeros(n, dtype=int) if span == 0 else np.round((values - values.min()) / span * bins).astype(int)
    order = np.lexsort((np.random.default_rng(0).random(n), binned))  # seeded: the same PNG each time
    in_order = binned[order]
    layer = np.arange(n) - np.searchsorted(in_order, in_order, side="left")
    offsets = np.empty(n)
    offsets[order] = np.ceil(layer / 2) * np.where(layer % 2 == 1, 1.0, -1.0)
    peak = np.abs(offsets).max()
    return offsets / peak if peak > 0 else offsets


def colour_scale(column: np.ndarray) -> np.ndarray:
    """Feature values scaled to [0, 1] between their 5th and 95th percentiles (NaN stays NaN)."""
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return np.full(len(column), np.nan)
    low, high = np.percentile(finite, [5, 95])
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.where(np.isfinite(column), 0.5, np.nan)
    return np.clip((column - low) / (high - low), 0.0, 1.0)


def _colour_map():  # type: ignore[no-untyped-def]
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("shap_red_blue", [BLUE, "#7C4DFF", RED])


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    return fig, fig.add_subplot()


def summary_chart(values: np.ndarray, data: np.ndarray, top: list[str], index: dict[str, int], title: str) -> Figure:
    """The beeswarm: one row per feature, most important at the top."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cmap = _colour_map()
    fig, ax = _figure(7.0, max(2.5, 0.4 * len(top) + 1.5))
    for row, feature in enumerate(reversed(top)):
        shap_values = values[:, index[feature]]
        colour = colour_scale(data[:, index[feature]])
        y = row + _ROW_HEIGHT * swarm_offsets(shap_values)
        known = np.isfinite(colour)
        ax.scatter(shap_values[~known], y[~known], s=_DOT, color=GREY, alpha=0.8, linewidths=0)
        ax.scatter(shap_values[known], y[known], s=_DOT, c=colour[known], cmap=cmap, vmin=0, vmax=1, linewidths=0)
    ax.axvline(0, color="#999999", linewidth=0.8, zorder=-1)
    ax.set_yticks(range(len(top)), [short_label(name) for name in reversed(top)])
    ax.set_ylim(-0.6, len(top) - 0.4)
    ax.set_xlabel("SHAP value (impact on model output)")
    ax.set_title(title, fontsize=10)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, ticks=[0, 1], aspect=40, pad=0.02)
    bar.ax.set_yticklabels(["Low", "High"])
    bar.set_label("Feature value")
    bar.outline.set_visible(False)
    return fig


def dependence_chart(
    shap_values: np.ndarray,
    column: np.ndarray,
    labels: Sequence[str] | None,
    feature: str,
    title: str,
    space: str,
) -> Figure:
    """SHAP value against the feature's value; a categorical feature's codes are ticked with its labels."""
    fig, ax = _figure(6.0, 4.5)
    if labels is not None:
        codes = np.asarray(column, dtype=float)
        known = np.isfinite(codes) & (codes >= 0) & (codes < len(labels))
        positions = np.where(known, codes, len(labels))  # missing and unseen levels: one slot at the end
        ticks = [short_label(str(label), 20) for label in labels] + ([MISSING_LABEL] if not known.all() else [])
        jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(positions))
        ax.scatter(positions + jitter, shap_values, s=_DOT, color=BLUE, alpha=0.7, linewidths=0)
        ax.set_xticks(range(len(ticks)), ticks, rotation=90 if len(ticks) > 6 else 0, fontsize=8)
    else:
        known = np.isfinite(column)
        ax.scatter(column[known], shap_values[known], s=_DOT, color=BLUE, alpha=0.7, linewidths=0)
        if not known.all():
            feature = f"{feature} ({int((~known).sum())} rows without a value not shown)"
    ax.axhline(0, color="#999999", linewidth=0.8, zorder=-1)
    ax.set_xlabel(feature)
    ax.set_ylabel(f"SHAP value ({space})")
    ax.set_title(title, fontsize=10)
    return fig


def bar_chart(importance: dict[str, float], max_display: int, space: str) -> Figure:
    names = list(importance)[:max_display][::-1]
    fig, ax = _figure(6.0, max(2.5, 0.35 * len(names) + 1))
    ax.barh(range(len(names)), [importance[name] for name in names], color=BLUE)
    ax.set_yticks(range(len(names)), [short_label(name) for name in names])
    ax.set_xlabel(f"mean |SHAP| ({space})")
    ax.set_title("Feature importance (SHAP)", fontsize=10)
    return fig
