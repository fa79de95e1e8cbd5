"""Input scalers for data sets, scikit-learn style: :class:`ZScore` (StandardScaler)
and :class:`MinMax` (MinMaxScaler).

Arrays are ``(n_samples, n_features)`` (features on the last axis), numpy or CPU torch,
float32/float16 (bfloat16 via torch). ``fit`` starts afresh and ``partial_fit``
accumulates, so a data set larger than memory is fit chunk by chunk: each chunk's
per-feature statistics come from a kernel, and chunks merge in float64 (count, mean,
M2 by Chan's formula; min and max), independent of the chunking. ``transform`` and
``inverse_transform`` are kernels returning the input's container, dtype and shape.
The variance is the population one (ddof = 0); a constant feature gets scale 1, so
z-scoring maps it to 0 and min-max to the range's low end (scikit-learn's rule).
"""
from __future__ import annotations

import numpy as np

from . import _normgen
from ._arrays import empty_like, spec

__all__ = ["ZScore", "MinMax"]


class _Scaler:
    _impl = None

    def partial_fit(self, X):
        self._impl.partial_fit(spec(X, "X"))
        return self

    def fit(self, X):
        self._impl.fit(spec(X, "X"))
        return self

    def transform(self, X):
        self._fitted()
        Y = empty_like(X)
        self._impl.transform(spec(X, "X"), spec(Y, "Y"))
        return Y

    def inverse_transform(self, X):
        self._fitted()
        Y = empty_like(X)
        self._impl.inverse_transform(spec(X, "X"), spec(Y, "Y"))
        return Y

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    @property
    def n_samples_seen_(self):
        return int(self._impl.n_samples_seen)

    @property
    def n_features_in_(self):
        return int(self._impl.n_features)

    def _fitted(self):
        if self._impl.n_samples_seen == 0:
            raise ValueError(f"This {type(self).__name__} is not fitted yet: call fit or partial_fit first")

    @staticmethod
    def _array(values):
        return np.asarray(values, dtype=np.float64)


class ZScore(_Scaler):
    """Standardize features: ``(x - mean_) / scale_``."""

    def __init__(self):
        self._impl = _normgen.ZScore()

    @property
    def mean_(self):
        self._fitted()
        return self._array(self._impl.mean)

    @property
    def var_(self):
        self._fitted()
        return self._array(self._impl.var)

    @property
    def scale_(self):
        self._fitted()
        return self._array(self._impl.scale)


class MinMax(_Scaler):
    """Scale features to ``feature_range``: ``x * scale_ + min_`` (not clipped)."""

    def __init__(self, feature_range=(0, 1)):
        lo, hi = feature_range
        if not float(lo) < float(hi):
            raise ValueError(f"Minimum of desired feature_range must be smaller than maximum, got {feature_range}")
        self.feature_range = (lo, hi)
        self._impl = _normgen.MinMax(float(lo), float(hi))

    @property
    def data_min_(self):
        self._fitted()
        return self._array(self._impl.data_min)

    @property
    def data_max_(self):
        self._fitted()
        return self._array(self._impl.data_max)

    @property
    def data_range_(self):
        self._fitted()
        return self._array(self._impl.data_range)

    @property
    def scale_(self):
        self._fitted()
        return self._array(self._impl.scale)

    @property
    def min_(self):
        self._fitted()
        return self._array(self._impl.min)
