"""A saved LightGBM model run through LightGBM's C library, without importing the Python package.

``import lightgbm`` imports scikit-learn and pandas (``lightgbm/compat.py``), 1.5 s or more of an explain
stage or a server's start that only predicts. :class:`NativeModel` makes the calls ``Booster.predict``
makes for a dense NumPy matrix (``LGBM_BoosterPredictForMat``: values, raw scores, SHAP contributions)
on a model loaded from its text; the package's ``Booster`` is loaded only when something else is asked
(feature importances). Used only with the LightGBM major version it was checked against
(``tests/test_xgboost_predict.py`` compares its answers with the package's).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

NATIVE_MAJOR = 4  # the LightGBM major version whose C calls are made here
_LIBRARY_FILES = {"linux": "lib_lightgbm.so", "darwin": "lib_lightgbm.dylib", "win32": "lib_lightgbm.dll"}
# LightGBM's c_api.h
NORMAL, RAW_SCORE, CONTRIBUTIONS = 0, 1, 3
_FLOAT32, _FLOAT64 = 0, 1
_ROW_MAJOR = 1


@functools.cache
def library() -> ctypes.CDLL:
    """lib_lightgbm, found in the installed package's folder without importing the package."""
    spec = importlib.util.find_spec("lightgbm")
    folders = list(spec.submodule_search_locations or []) if spec else []
    name = _LIBRARY_FILES.get(sys.platform, _LIBRARY_FILES["linux"])
    found = next((path for path in (Path(f) / "lib" / name for f in folders) if path.is_file()), None)
    if found is None:
        raise OSError(f"{name} not found in the lightgbm package ({folders})")
    lib = ctypes.cdll.LoadLibrary(str(found))
    lib.LGBM_GetLastError.restype = ctypes.c_char_p
    return lib


def installed_major() -> int:
    """The installed package's major version, from its metadata (no import)."""
    from importlib.metadata import version

    return int(version("lightgbm").split(".")[0])


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise RuntimeError(f"LightGBM: {lib.LGBM_GetLastError().decode(errors='replace')}")


class NativeModel:
    """A LightGBM model loaded from its text through the C library."""

    def __init__(self, text: str) -> None:
        if installed_major() != NATIVE_MAJOR:
            raise RuntimeError(f"LightGBM {installed_major()} is not the major version {NATIVE_MAJOR} checked here")
        lib = library()
        self._lib, self.text = lib, text
        self.handle = ctypes.c_void_p()
        iterations = ctypes.c_int()
        _check(
            lib, lib.LGBM_BoosterLoadModelFromString(text.encode(), ctypes.byref(iterations), ctypes.byref(self.handle))
        )
        classes, features = ctypes.c_int(), ctypes.c_int()
        _check(lib, lib.LGBM_BoosterGetNumClasses(self.handle, ctypes.byref(classes)))
        _check(lib, lib.LGBM_BoosterGetNumFeature(self.handle, ctypes.byref(features)))
        self.classes, self.features = classes.value, features.value

    def predict(self, x: np.ndarray, kind: int = NORMAL, threads: int = 0) -> np.ndarray:
        """``Booster.predict(x)`` (``raw_score=True``: RAW_SCORE, ``pred_contrib=True``: CONTRIBUTIONS), same shapes."""
        lib = self._lib
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        x = np.ascontiguousarray(x)
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"The model has {self.features} features, the data {x.shape[-1]}")
        rows = x.shape[0]
        length = ctypes.c_int64()
        _check(lib, lib.LGBM_BoosterCalcNumPredict(self.handle, rows, kind, 0, -1, ctypes.byref(length)))
        out = np.empty(length.value, dtype=np.float64)
        written = ctypes.c_int64()
        parameters = f"num_threads={threads}".encode() if threads > 0 else b""
        _check(
            lib,
            lib.LGBM_BoosterPredictForMat(
                self.handle,
                x.ctypes.data_as(ctypes.c_void_p),
                _FLOAT32 if x.dtype == np.float32 else _FLOAT64,
                ctypes.c_int32(rows),
                ctypes.c_int32(self.features),
                _ROW_MAJOR,
                kind,
                0,  # start iteration
                -1,  # every iteration in the file (a saved model stops at its best one)
                parameters,
                ctypes.byref(written),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            ),
        )
        if kind == CONTRIBUTIONS or self.classes == 1:
            return out.reshape(rows, -1) if kind == CONTRIBUTIONS else out
        return out.reshape(rows, self.classes)

    def __del__(self) -> None:
        handle = self.__dict__.get("handle")
        if handle is not None and handle.value:
            self._lib.LGBM_BoosterFree(handle)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return NativeModel, (self.text,)
