"""XGBoost through its C library: small-batch predictions, and saved models loaded without the Python package.

``Booster.inplace_predict`` spends 100-150 us of Python on every call (argument JSON, array checks,
output wrapping) around a C++ prediction that takes tens of microseconds for one row. A server that
scores one row per request pays that on every request. :func:`dense_predictor` builds the arguments
once and makes the same C call (``XGBoosterPredictFromDense``, what ``inplace_predict`` calls for a
NumPy array). It checks itself against ``inplace_predict`` when it is built and falls back to it if the
two disagree, so a future XGBoost that changes the call degrades to the slower path, not to wrong
answers.

:class:`NativeBooster` loads a saved model with the C library alone: ``import xgboost`` imports
scikit-learn (``xgboost/compat.py``), about 1.4 s of an explain stage whose target is 2 s. It answers
what the explain stage and serving ask of a loaded model (probabilities, values, margins, exact SHAP
contributions through ``pred_contribs``, threads) with the calls the package makes for them; anything else
loads the package's estimator once and asks it. It is used only with the XGBoost major version it was
checked against (``tests/test_xgboost_capi.py`` compares every answer with the package's).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DensePredict = Callable[[np.ndarray], np.ndarray]
NATIVE_MAJOR = 3  # the XGBoost major version whose C calls NativeBooster makes (checked by the tests)
_LIBRARY_FILES = {"linux": "libxgboost.so", "darwin": "libxgboost.dylib", "win32": "xgboost.dll"}
# Prediction types of the C API (XGBoost's PredictionType): what inplace_predict and predict send.
VALUE, MARGIN, CONTRIBUTIONS = 0, 1, 2


def dense_predictor(booster: Any, iteration_range: tuple[int, int]) -> DensePredict:
    """``predict(x)``: ``booster.inplace_predict(x, iteration_range=...)`` for float32 matrices, faster."""

    def reference(x: np.ndarray) -> np.ndarray:
        return booster.inplace_predict(x, iteration_range=iteration_range)

    try:
        fast = _CApiPredictor(library(), booster, booster.num_features(), VALUE, iteration_range)
        probe = np.random.default_rng(0).normal(size=(8, booster.num_features())).astype(np.float32)
        probe[::3, 0] = np.nan  # the missing-value branch too
        if np.array_equal(fast(probe), reference(probe), equal_nan=True):
            return fast
        log.warning("XGBoost's C API answered differently from inplace_predict; using inplace_predict")
    except Exception:  # not the C library this was written for
        log.debug("XGBoost C API prediction unavailable", exc_info=True)
    return reference


@functools.cache
def library() -> ctypes.CDLL:
    """libxgboost, found in the installed package's folder without importing the package."""
    # Another thread may be importing the package: its module exists before its _LIB does.
    if (loaded := getattr(sys.modules.get("xgboost.core"), "_LIB", None)) is not None:
        return loaded  # type: ignore[no-any-return]
    spec = importlib.util.find_spec("xgboost")
    folders = list(spec.submodule_search_locations or []) if spec else []
    name = _LIBRARY_FILES.get(sys.platform, _LIBRARY_FILES["linux"])
    paths = [Path(folder) / "lib" / name for folder in folders]
    found = next((path for path in paths if path.is_file()), None)
    if found is None:
        raise OSError(f"{name} not found in the xgboost package ({folders})")
    lib = ctypes.cdll.LoadLibrary(str(found))
    lib.XGBGetLastError.restype = ctypes.c_char_p
    return lib


def version(lib: ctypes.CDLL) -> tuple[int, int, int]:
    parts = [ctypes.c_int() for _ in range(3)]
    lib.XGBoostVersion(*(ctypes.byref(part) for part in parts))
    return parts[0].value, parts[1].value, parts[2].value


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise RuntimeError(f"XGBoost: {lib.XGBGetLastError().decode(errors='replace')}")


def _array_interface(x: np.ndarray) -> bytes:
    return b'{"data": [%d, true], "shape": [%d, %d], "typestr": "<f4", "version": 3}' % (
        x.ctypes.data,
        x.shape[0],
        x.shape[1],
    )


def _float32(x: np.ndarray, features: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"Feature shape mismatch, expected: {features}, got {x.shape}")
    return x


def _arguments(kind: int, iteration_range: tuple[int, int], **extra: Any) -> bytes:
    """The prediction arguments the package sends (``inplace_predict``, ``Booster.predict``)."""
    arguments = {
        "type": kind,
        "training": False,
        "iteration_begin": int(iteration_range[0]),
        "iteration_end": int(iteration_range[1]),
        "strict_shape": False,
        **extra,
    }
    return json.dumps(arguments).encode()


def _result(shape: Any, dims: ctypes.c_uint64, predictions: Any) -> np.ndarray:
    out_shape = tuple(int(shape[i]) for i in range(dims.value))
    # Copied: the buffer belongs to the booster and the next prediction overwrites it.
    return np.ctypeslib.as_array(predictions, shape=(math.prod(out_shape),)).copy().reshape(out_shape)


class _CApiPredictor:
    """One prediction type of a booster (anything with a ``handle``) for dense float32 rows."""

    def __init__(
        self, lib: ctypes.CDLL, booster: Any, features: int, kind: int, iteration_range: tuple[int, int]
    ) -> None:
        self._lib, self._booster, self._features = lib, booster, features  # the booster keeps the handle alive
        self._arguments = _arguments(kind, iteration_range, missing=float("nan"), cache_id=0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _float32(x, self._features)
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        predictions = ctypes.POINTER(ctypes.c_float)()
        _check(
            self._lib,
            self._lib.XGBoosterPredictFromDense(
                self._booster.handle,
                _array_interface(x),
                self._arguments,
                ctypes.c_void_p(),
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(predictions),
            ),
        )
        return _result(shape, dims, predictions)


class NativeBooster:
    """A saved XGBoost model, loaded and run through libxgboost alone (see the module's docstring).

    ``best_iteration``, ``objective`` and ``n_features`` are read from the model file as the package's
    ``load_model`` reads them. Any other attribute is the package's estimator's, loaded on first use by
    ``load_estimator``; a pickle holds that estimator.
    """

    def __init__(self, model: Path | bytes, load_estimator: Callable[[], Any] | None = None) -> None:
        lib = library()
        if version(lib)[0] != NATIVE_MAJOR:
            raise RuntimeError(f"XGBoost {version(lib)} is not the major version {NATIVE_MAJOR} checked here")
        self._lib, self._load_estimator = lib, load_estimator
        self._estimator: Any = None
        self.handle = ctypes.c_void_p()
        _check(lib, lib.XGBoosterCreate(None, ctypes.c_uint64(0), ctypes.byref(self.handle)))
        if isinstance(model, bytes):  # a model file's contents (JSON or UBJSON)
            _check(lib, lib.XGBoosterLoadModelFromBuffer(self.handle, model, ctypes.c_uint64(len(model))))
        else:
            _check(lib, lib.XGBoosterLoadModel(self.handle, str(model).encode()))
        config = json.loads(self._string(lib.XGBoosterSaveJsonConfig))
        self.objective: str = config["learner"]["objective"]["name"]
        best = self._attribute("best_iteration")
        self.best_iteration: int | None = None if best is None else int(best)
        count = ctypes.c_uint64()
        _check(lib, lib.XGBoosterGetNumFeature(self.handle, ctypes.byref(count)))
        self.n_features = count.value
        self._feature_types = self._strings("feature_type")
        self._threads = -1
        self._predictors: dict[int, _CApiPredictor] = {}

    @property
    def iteration_range(self) -> tuple[int, int]:
        """The rounds up to the early-stopping best, as the package's estimator predicts with them."""
        return (0, self.best_iteration + 1) if self.best_iteration is not None else (0, 0)

    def predict(self, x: np.ndarray, kind: int = VALUE) -> np.ndarray:
        """``inplace_predict`` of the values (``VALUE``) or margins (``MARGIN``) of dense rows."""
        if kind not in self._predictors:
            self._predictors[kind] = _CApiPredictor(self._lib, self, self.n_features, kind, self.iteration_range)
        return self._predictors[kind](x)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """``Booster.predict(DMatrix(x), pred_contribs=True)``: (rows, features+1) or (rows, classes, features+1)."""
        lib = self._lib
        x = _float32(x, self.n_features)
        matrix = ctypes.c_void_p()
        options = json.dumps({"missing": float("nan"), "nthread": self._threads, "data_split_mode": 0}).encode()
        _check(lib, lib.XGDMatrixCreateFromDense(_array_interface(x), options, ctypes.byref(matrix)))
        try:
            if self._feature_types:  # categorical features, as the package's DMatrix declares them
                names = (ctypes.c_char_p * len(self._feature_types))(*(t.encode() for t in self._feature_types))
                size = ctypes.c_uint64(len(self._feature_types))
                _check(lib, lib.XGDMatrixSetStrFeatureInfo(matrix, b"feature_type", names, size))
            shape = ctypes.POINTER(ctypes.c_uint64)()
            dims = ctypes.c_uint64()
            predictions = ctypes.POINTER(ctypes.c_float)()
            arguments = _arguments(CONTRIBUTIONS, self.iteration_range)
            _check(
                lib,
                lib.XGBoosterPredictFromDMatrix(
                    self.handle, matrix, arguments, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(predictions)
                ),
            )
            return _result(shape, dims, predictions)
        finally:
            lib.XGDMatrixFree(matrix)

    def set_threads(self, threads: int) -> None:
        self._threads = threads
        _check(self._lib, self._lib.XGBoosterSetParam(self.handle, b"nthread", str(threads).encode()))
        if self._estimator is not None:
            self._estimator.set_params(n_jobs=threads)

    @classmethod
    def from_json(cls, model: bytes) -> NativeBooster:
        """A model built in memory (no package estimator behind it)."""
        return cls(model)

    @property
    def estimator(self) -> Any:
        """The package's estimator for the same file (imports xgboost and scikit-learn)."""
        if self._estimator is None:
            if self._load_estimator is None:
                raise AttributeError("a model built in memory has no package estimator")
            self._estimator = self._load_estimator()
            if self._threads > 0:
                self._estimator.set_params(n_jobs=self._threads)
        return self._estimator

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "handle":
            raise AttributeError(name)  # not set yet (copying, unpickling): no estimator to ask
        return getattr(self.estimator, name)

    def __reduce__(self) -> tuple[Callable[[Any], Any], tuple[Any]]:
        return _same, (self.estimator,)

    def __del__(self) -> None:
        handle = self.__dict__.get("handle")
        if handle is not None and handle.value:
            self._lib.XGBoosterFree(handle)

    def _attribute(self, key: str) -> str | None:
        value, found = ctypes.c_char_p(), ctypes.c_int()
        _check(
            self._lib, self._lib.XGBoosterGetAttr(self.handle, key.encode(), ctypes.byref(value), ctypes.byref(found))
        )
        return value.value.decode() if found.value and value.value is not None else None

    def _string(self, call: Any) -> str:
        length, text = ctypes.c_uint64(), ctypes.c_char_p()
        _check(self._lib, call(self.handle, ctypes.byref(length), ctypes.byref(text)))
        return (text.value or b"").decode()

    def _strings(self, field: str) -> list[str]:
        length, values = ctypes.c_uint64(), ctypes.POINTER(ctypes.c_char_p)()
        _check(
            self._lib,
            self._lib.XGBoosterGetStrFeatureInfo(
                self.handle, field.encode(), ctypes.byref(length), ctypes.byref(values)
            ),
        )
        return [values[i].decode() for i in range(length.value)]


def _same(value: Any) -> Any:
    return value


def open_native(path: Path, load_estimator: Callable[[], Any]) -> Any:
    """A :class:`NativeBooster` for the file, or the package's estimator where the C library is not usable."""
    try:
        return NativeBooster(path, load_estimator)
    except Exception:  # another XGBoost, or no library file where the package keeps it
        log.debug("XGBoost model %s loaded through the package", path, exc_info=True)
        return load_estimator()
