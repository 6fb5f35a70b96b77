"""Fitting on a Dask cluster (``compute.engine: dask``).

The workers read the prepared Parquet splits in interleaved row partitions and encode them with the same preprocessing
as a local fit; the library's own Dask trainer fits on those partitions (its adapter's ``fit_distributed``),
and the result is the library's local estimator, saved, logged and served like any other model.
A worker must see the prepared folder at the same path (a shared file system) and have mmp installed.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmp.config import ComputeConfig
from mmp.data.preprocessing import Preprocessor
from mmp.errors import ConfigError
from mmp.model.registry import ADAPTERS, MODELS, adapter_for
from mmp.model.spec import FitData, FitResult, ModelSpec
from mmp.redaction import redact

log = logging.getLogger(__name__)

MAX_PARTITION_ROWS = 250_000  # a worker encodes one partition at a time: its memory is bounded by this
_CONNECT_TIMEOUT = "10s"


@dataclass
class ClusterData:
    """The train and valid splits as Dask arrays, partitioned by row, plus the local fit's data."""

    x_train: Any
    y_train: Any
    x_valid: Any
    y_valid: Any
    local: FitData  # the same splits in memory (a library that picks its best round on the whole valid split)
    categorical_indices: list[int] = field(default_factory=list)
    early_stopping_rounds: int | None = None


@dataclass(frozen=True)
class ClusterInfo:
    """What the MLflow run records about the cluster a model was fitted on."""

    scheduler: str  # the address, credentials masked
    workers: int
    threads: int

    def as_tags(self, prefix: str) -> dict[str, str]:
        return {
            f"{prefix}scheduler": self.scheduler,
            f"{prefix}workers": str(self.workers),
            f"{prefix}threads": str(self.threads),
        }


def check_distributed(spec: ModelSpec) -> None:
    """One line naming the libraries that can fit on a cluster, for a model whose library cannot."""
    if adapter_for(spec).distributed:
        return
    able = sorted({name for name, spec in MODELS.items() if ADAPTERS[spec.library].distributed})
    raise ConfigError(
        f"Model '{spec.name}' has no distributed trainer, so compute.engine dask cannot fit it; use one of "
        f"{', '.join(able)}, or compute=local"
    )


@contextlib.contextmanager
def connect(compute: ComputeConfig) -> Iterator[tuple[Any, ClusterInfo]]:
    """A Dask client on ``compute.scheduler_address``, or on a local cluster started (and closed) here."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("compute.engine dask needs Dask; install it with: pip install 'mmp[dask]'") from None
    with contextlib.ExitStack() as stack:
        address = compute.scheduler_address
        if address:
            try:
                client = stack.enter_context(Client(address, timeout=_CONNECT_TIMEOUT))
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(
                    f"No Dask scheduler answers at {redact(address)} ({type(exc).__name__}); start it, or fix "
                    "compute.scheduler_address (null starts a local cluster)"
                ) from None
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=compute.n_workers,
                    threads_per_worker=compute.threads_per_worker,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
            address = cluster.scheduler_address
        workers = client.scheduler_info(n_workers=-1)["workers"]
        info = ClusterInfo(redact(str(address)), len(workers), sum(w["nthreads"] for w in workers.values()))
        log.info("fitting on a Dask cluster at %s: %d workers, %d threads", info.scheduler, info.workers, info.threads)
        yield client, info


def partitioned(
    prepared: Path, rows: dict[str, int], preprocessor: Preprocessor, workers: int, local: FitData
) -> ClusterData:
    """The train and valid splits as row-partitioned Dask arrays: at least one partition a worker."""
    if len(local.x_train) != rows["train"]:  # the workers read the whole train split
        raise ConfigError(
            "This fit holds train rows out (recipe.calibration), which a Dask fit cannot: the workers read the "
            "whole train split; set recipe.calibration=none, or compute=local"
        )
    if getattr(local, "class_weights", None) is not None:
        raise ConfigError("A Dask fit does not weight classes; set recipe.class_weight=none, or compute=local")
    arrays = {}
    for name in ("train", "valid"):
        parts = max(workers, 1, math.ceil(rows[name] / MAX_PARTITION_ROWS))
        arrays[name] = _encoded(prepared / f"{name}.parquet", rows[name], parts, preprocessor)
    return ClusterData(
        *arrays["train"],
        *arrays["valid"],
        local=local,
        categorical_indices=local.categorical_indices,
        early_stopping_rounds=local.early_stopping_rounds,
    )


def fit(client: Any, spec: ModelSpec, task: str, params: dict[str, Any], data: ClusterData) -> FitResult:
    """Fit through the library's Dask trainer; the result holds the library's local estimator."""
    check_distributed(spec)
    return adapter_for(spec).fit_distributed(client, spec, task, params, data)


def _encoded(path: Path, rows: int, parts: int, preprocessor: Preprocessor) -> tuple[Any, Any]:
    import dask
    import dask.array as da

    n_features = len(preprocessor.feature_names)
    y_dtype = np.float64 if preprocessor.task == "regression" else np.int32
    xs, ys = [], []
    for part in range(min(parts, rows)):
        length = len(range(part, rows, parts))
        pair = dask.delayed(_encode_part, nout=2, pure=True)(str(path), part, parts, preprocessor)
        xs.append(da.from_delayed(pair[0], (length, n_features), np.float32))
        ys.append(da.from_delayed(pair[1], (length,), y_dtype))
    return da.concatenate(xs), da.concatenate(ys)


def _encode_part(path: str, part: int, parts: int, preprocessor: Preprocessor) -> tuple[np.ndarray, np.ndarray]:
    """On a worker: every ``parts``-th row of a prepared split from row ``part`` on, encoded as a local fit does.

    Interleaved, not sliced: a file sorted by some column would otherwise give each worker a different
    range of it, and LightGBM finds each feature's bins from one worker's rows.
    """
    frame = pl.scan_parquet(path).gather_every(parts, offset=part).collect()
    return preprocessor.transform(frame), preprocessor.encode_target(frame[preprocessor.target])
