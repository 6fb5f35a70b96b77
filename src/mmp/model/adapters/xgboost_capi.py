"""XGBoost predictions for small batches, straight through XGBoost's C API.

``Booster.inplace_predict`` spends 100-150 us of Python on every call (argument JSON, array checks,
output wrapping) around a C++ prediction that takes tens of microseconds for one row. A server that
scores one row per request pays that on every request. :func:`dense_predictor` builds the arguments
once and makes the same C call (``XGBoosterPredictFromDense``, what ``inplace_predict`` calls for a
NumPy array). It checks itself against ``inplace_predict`` when it is built and falls back to it if the
two disagree, so a future XGBoost that changes the call degrades to the slower path, not to wrong
answers.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DensePredict = Callable[[np.ndarray], np.ndarray]


def dense_predictor(booster: Any, iteration_range: tuple[int, int]) -> DensePredict:
    """``predict(x)``: ``booster.inplace_predict(x, iteration_range=...)`` for float32 matrices, faster."""

    def reference(x: np.ndarray) -> np.ndarray:
        return booster.inplace_predict(x, iteration_range=iteration_range)

    try:
        fast = _CApiPredictor(booster, iteration_range)
        probe = np.random.default_rng(0).normal(size=(8, booster.num_features())).astype(np.float32)
        probe[::3, 0] = np.nan  # the missing-value branch too
        if np.array_equal(fast(probe), reference(probe), equal_nan=True):
            return fast
        log.warning("XGBoost's C API answered differently from inplace_predict; using inplace_predict")
    except Exception:  # not the C library this was written for
        log.debug("XGBoost C API prediction unavailable", exc_info=True)
    return reference


class _CApiPredictor:
    def __init__(self, booster: Any, iteration_range: tuple[int, int]) -> None:
        from xgboost.core import _LIB, _check_call, c_bst_ulong

        self._booster = booster  # keeps the handle alive
        self._predict = _LIB.XGBoosterPredictFromDense
        self._check, self._ulong = _check_call, c_bst_ulong
        self._features = booster.num_features()
        # The arguments inplace_predict sends for a plain prediction (type 0: transformed, not margin).
        arguments = {
            "type": 0,
            "training": False,
            "iteration_begin": int(iteration_range[0]),
            "iteration_end": int(iteration_range[1]),
            "missing": float("nan"),
            "strict_shape": False,
            "cache_id": 0,
        }
        self._arguments = json.dumps(arguments).encode()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._features:
            raise ValueError(f"Feature shape mismatch, expected: {self._features}, got {x.shape}")
        interface = b'{"data": [%d, true], "shape": [%d, %d], "typestr": "<f4", "version": 3}' % (
            x.ctypes.data,
            x.shape[0],
            x.shape[1],
        )
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        predictions = ctypes.POINTER(ctypes.c_float)()
        self._check(
            self._predict(
                self._booster.handle,
                interface,
                self._arguments,
                ctypes.c_void_p(),
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(predictions),
            )
        )
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        size = math.prod(out_shape)
        # Copied: the buffer belongs to the booster and the next prediction overwrites it.
        return np.ctypeslib.as_array(predictions, shape=(size,)).copy().reshape(out_shape)
