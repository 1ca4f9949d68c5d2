"""The contract every query strategy honours (small-text style): one parametrised suite over STRATEGIES."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mltasks.core.acquisition import STRATEGIES, select
from mltasks.core.errors import EmptyPoolError, PoolTooSmallError

N_POOL, N_LABELED, D, C, T = 120, 10, 8, 4, 5


def _inputs(n: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n + N_LABELED, D)).astype(np.float32)
    mc = rng.dirichlet(np.ones(C), size=(T, n)).astype(np.float32)
    return {
        "probs": mc.mean(axis=0),
        "embeddings": embeddings[:n],
        "labeled_embeddings": embeddings[n:],
        "mc_probs": mc,
    }


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_returns_k_unique_pool_indices(strategy: str) -> None:
    picks = select(strategy, 15, **_inputs(N_POOL), rng=np.random.default_rng(0))
    assert picks.shape == (15,) and picks.dtype == np.int64
    assert np.unique(picks).size == 15
    # indices point into the unlabeled pool only: labeled items are never candidates
    assert picks.min() >= 0 and picks.max() < N_POOL


def test_whole_pool_and_zero(strategy: str) -> None:
    inputs = _inputs(N_POOL)
    assert sorted(select(strategy, N_POOL, **inputs, rng=np.random.default_rng(0)).tolist()) == list(range(N_POOL))
    assert select(strategy, 0, **inputs, rng=np.random.default_rng(0)).size == 0


def test_deterministic_under_a_fixed_seed(strategy: str) -> None:
    inputs = _inputs(N_POOL)
    a = select(strategy, 10, **inputs, rng=np.random.default_rng(42))
    b = select(strategy, 10, **inputs, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)


def test_different_seeds_can_differ(strategy: str) -> None:
    # Ties everywhere (identical items) leave the choice to the generator, for every strategy.
    inputs = _inputs(N_POOL)
    inputs["probs"] = np.full((N_POOL, C), 1.0 / C, dtype=np.float32)
    inputs["mc_probs"] = np.broadcast_to(inputs["probs"], (T, N_POOL, C)).copy()
    inputs["embeddings"] = np.ones((N_POOL, D), dtype=np.float32)
    inputs["labeled_embeddings"] = np.zeros((0, D), dtype=np.float32)
    seen = {tuple(sorted(select(strategy, 5, **inputs, rng=np.random.default_rng(s)).tolist())) for s in range(6)}
    assert len(seen) > 1


def test_empty_pool(strategy: str) -> None:
    with pytest.raises(EmptyPoolError):
        select(strategy, 1, **_inputs(0), rng=np.random.default_rng(0))


def test_pool_too_small(strategy: str) -> None:
    with pytest.raises(PoolTooSmallError):
        select(strategy, 6, **_inputs(5), rng=np.random.default_rng(0))


def test_no_global_rng(strategy: str) -> None:
    inputs = _inputs(N_POOL)
    np.random.seed(0)  # noqa: NPY002 - proving the global state is neither read nor advanced
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    select(strategy, 10, **inputs, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
