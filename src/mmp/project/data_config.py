"""``mmp init --data FILE --target COL``: ``conf/data/<name>.yaml`` written from the file's schema.

Read with the loader every stage uses (Polars, lazily); the target is checked with the stage's own task
inference. Constant columns go to ``drop_columns`` and id-like columns to ``id_columns``, each with a comment
that says why, so a wrong guess is one line to undo.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

from mmp.config import CONFIG_DIR
from mmp.data.validate import infer_task
from mmp.errors import ConfigError, DataError
from mmp.files import safe_name, scan_table, write_text_atomic

_ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key)$|^id[_\W]", re.I)
_SAMPLE_ROWS = 100_000  # enough rows to judge uniqueness and constancy without reading a huge file


@dataclass
class ColumnReport:
    name: str
    dtype: str
    nulls: int
    unique: int
    flag: str = ""  # why it is kept out: "" | id-like ... | constant ...


@dataclass
class DataProfile:
    name: str
    path: str
    target: str
    task: str
    rows: int
    classes: list[str] = field(default_factory=list)
    columns: list[ColumnReport] = field(default_factory=list)


def _flag(series: pl.Series, rows: int) -> str:
    unique = series.n_unique()
    if unique <= 1:
        return "constant: one value" + (" (or only missing)" if series.null_count() else "")
    if series.dtype.is_integer() or series.dtype == pl.String:
        if unique == rows and series.null_count() == 0:
            return "id-like: a different value in every row"
        if _ID_NAME.search(series.name) and unique > 0.9 * rows:
            return "id-like: its name, and almost every value differs"
    return ""


def profile(data_file: Path, target: str, root: Path, name: str | None = None) -> DataProfile:
    """Columns, types and flags of a data file, and the task its target implies."""
    frame = scan_table(data_file).head(_SAMPLE_ROWS).collect()
    if target not in frame.columns:
        shown = ", ".join(frame.columns[:20])
        raise DataError(f"Target column '{target}' is not in {data_file} (columns: {shown}); pass --target COLUMN")
    series = frame[target].drop_nulls()
    if series.len() == 0:
        raise DataError(f"Target column '{target}' of {data_file} is empty; pick another --target")
    task = infer_task(series, "auto", target)
    absolute = data_file.resolve()
    path = absolute.relative_to(root).as_posix() if absolute.is_relative_to(root) else str(absolute)
    result = DataProfile(name or safe_name(data_file.stem, "-_"), path, target, task, frame.height)
    if task != "regression":
        result.classes = sorted(str(v) for v in series.unique().to_list())
    for column in frame.columns:
        values = frame[column]
        report = ColumnReport(column, str(values.dtype), values.null_count(), values.n_unique())
        if column != target:
            report.flag = _flag(values, frame.height)
        result.columns.append(report)
    return result


def _scalar(text: str) -> str:
    """``text`` as a YAML string that Hydra reads back as this string (``yes``, ``1``, ``null`` get quotes)."""
    plain = text and not text.startswith((" ", "-", "[", "{", "'", '"', "&", "*", "!", "|", ">", "%", "@", "`"))
    if plain and ":" not in text and "#" not in text and "," not in text and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)


def _names(names: list[str]) -> str:
    return "[" + ", ".join(_scalar(n) for n in names) + "]"


def render(p: DataProfile) -> str:
    """The YAML text of ``conf/data/<name>.yaml``, with the columns described in comments."""
    ids = [c.name for c in p.columns if c.flag.startswith("id-like")]
    constant = [c.name for c in p.columns if c.flag.startswith("constant")]
    positive = p.classes[-1] if p.task == "binary" else None
    classes = f" (classes: {', '.join(p.classes[:10])}{', ...' if len(p.classes) > 10 else ''})" if p.classes else ""
    lines = [
        f"# Written by `mmp init --data {p.path} --target {p.target}` from the first {p.rows} rows.",
        f"# Task read off the target: {p.task}{classes}. Check the flagged columns below.",
        f"name: {_scalar(p.name)}",
        f"path: {_scalar(p.path)}",
        f"target: {_scalar(p.target)}",
        f"positive_class: {_scalar(positive) if positive is not None else 'null'}"
        + ("   # binary: the class whose probability is scored" if positive is not None else ""),
        f"id_columns: {_names(ids)}" + ("   # id-like (see below): kept out of the features" if ids else ""),
        f"drop_columns: {_names(constant)}" + ("   # constant (see below): nothing to learn" if constant else ""),
        "categorical_columns: []   # numeric columns to treat as categories (text columns always are)",
        'query: null               # optional SQL filter, e.g. "age >= 18"',
        "",
        "# Columns (type, missing values, distinct values):",
    ]
    width = max(len(c.name) for c in p.columns)
    for c in p.columns:
        note = "target" if c.name == p.target else c.flag.upper() if c.flag else ""
        lines.append(
            f"#   {c.name.ljust(width)}  {c.dtype:<10} missing {c.nulls:<6} distinct {c.unique:<7} {note}".rstrip()
        )
    return "\n".join(lines) + "\n"


def write_data_config(
    root: Path, data_file: Path, target: str, *, name: str | None = None, force: bool = False
) -> Path:
    """Write ``conf/data/<name>.yaml`` for ``data_file``; refuse to overwrite one unless ``force``."""
    result = profile(data_file, target, root, name)
    out = root / CONFIG_DIR / "data" / f"{result.name}.yaml"
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it, or --name to write another data config")
    write_text_atomic(out, render(result))
    return out
