"""Shared helpers of the benchmarks: thread/allocator setup, cached embeddings, timing."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def cpu_setup(threads: int = 2) -> None:
    """Cap threads (shared 2-core box) before torch spins up its pools."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def embed_cached(
    key: str,
    sources: Sequence[Any],
    *,
    backbone: str = "efficientnet_lite0",
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed ``sources`` with the product pipeline once; later calls read bench/out/emb-<key>-<hash>.npy."""
    from mltasks.core.backbones import load_backbone
    from mltasks.core.features import extract_features

    OUT.mkdir(parents=True, exist_ok=True)
    model, spec = load_backbone(backbone)
    tag = hashlib.sha1(json.dumps([key, spec.to_dict(), len(sources)]).encode()).hexdigest()[:10]  # noqa: S324
    path = OUT / f"emb-{key}-{tag}.npy"
    if path.exists():
        return np.load(path), {"cached": True, "path": str(path), "spec": spec.to_dict()}
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 15 or done == total:
            last[0] = time.perf_counter()
            rate = done / (time.perf_counter() - started)
            print(f"  embedded {done}/{total} ({rate:.1f} img/s)", flush=True)

    feats = extract_features(sources, model, spec, batch_size=batch_size, num_workers=num_workers, progress=progress)
    seconds = time.perf_counter() - started
    np.save(path, feats)
    return feats, {"cached": False, "path": str(path), "seconds": seconds, "spec": spec.to_dict()}
