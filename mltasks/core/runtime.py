"""Process-level runtime helpers: device choice, seeding, a per-process backbone cache.

``device_get`` is the only code in the project that asks about CUDA. It is called inside a task, never at import
time: touching CUDA in a Celery parent that later forks its pool children breaks CUDA in the children
(PyTorch #68861).
"""

from __future__ import annotations

import functools
import os
import random
from typing import TYPE_CHECKING

import numpy as np
import torch

from mltasks.core.errors import DeviceUnavailableError

if TYPE_CHECKING:
    from mltasks.core.types import BackboneSpec

DEVICE_PREFERENCES = ("auto", "cpu", "cuda")


def device_get(preference: str = "auto") -> str:
    """Return ``"cuda"`` or ``"cpu"`` for a preference ``auto|cpu|cuda`` (``ML_DEVICE``).

    Raises ``DeviceUnavailableError`` when CUDA is asked for explicitly and absent, and ``ValueError`` for an
    unknown preference. ``cuda:N`` is accepted as a CUDA preference and returned unchanged.
    """
    pref = preference.strip().lower()
    if pref == "cpu":
        return "cpu"
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device {preference!r} requested but CUDA is not available")
        return pref
    raise ValueError(f"unknown device preference {preference!r}; expected one of {DEVICE_PREFERENCES}")


def cuda_available() -> bool:
    """Whether CUDA can be used (lazy: call it inside a task, not at import)."""
    return torch.cuda.is_available()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's legacy and torch's global generators.

    The core itself never reads global RNG state (every function takes a seed or a ``np.random.Generator``);
    this is for third-party code running in the same process, e.g. timm layers initialised at construction.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global state is the point here
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def threads_set(n: int | None = None) -> int:
    """Cap torch's intra-op threads (default: the CPUs this process may use) and return the value."""
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


@functools.lru_cache(maxsize=2)
def backbone_cached(
    name: str, weights_path: str | None = None, allow_hub: bool = False
) -> tuple[torch.nn.Module, BackboneSpec]:
    """``load_backbone`` memoised per process, so a worker child keeps its backbone warm between tasks.

    The module is in eval mode on the CPU; callers move it to their device. Do not mutate it.
    """
    from mltasks.core.backbones import load_backbone

    return load_backbone(name, weights_path=weights_path, allow_hub=allow_hub)
