"""Typed errors of the ML core.

The core never falls back silently: a caller that asks for more items than the pool holds, or passes arrays of the
wrong shape, gets one of these. They are translated into domain errors in exactly one place, the service that calls
the core (``labeling.services.ml_runs``); the ``code`` attribute is stable and machine-readable.
"""

from __future__ import annotations


class CoreError(Exception):
    """Base class of every error raised on purpose by ``mltasks.core``."""

    code = "core_error"


class EmptyPoolError(CoreError):
    """The unlabeled pool holds no item, so nothing can be selected."""

    code = "empty_pool"


class PoolTooSmallError(CoreError):
    """More items were requested than the unlabeled pool holds."""

    code = "pool_too_small"


class ShapeError(CoreError, ValueError):
    """An array has the wrong number of dimensions or mismatching lengths."""

    code = "shape_error"


class NotFittedError(CoreError):
    """A fitted-only attribute or method was used before ``fit``."""

    code = "not_fitted"


class MissingInputError(CoreError, ValueError):
    """A strategy needs an input (probabilities, embeddings, MC samples) that was not given."""

    code = "missing_input"


class UnknownNameError(CoreError, KeyError):
    """An unknown strategy or backbone name."""

    code = "unknown_name"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(CoreError):
    """Backbone weights are neither in a local file nor allowed to be downloaded."""

    code = "weights_unavailable"


class DeviceUnavailableError(CoreError):
    """The requested device (e.g. CUDA) is not present on this machine."""

    code = "device_unavailable"
