"""Heads on frozen embeddings: determinism, calibration, class balance, tiny label sets, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from mltasks.core.errors import DeviceUnavailableError, ShapeError
from mltasks.core.heads import (
    evaluate_head,
    finetune_last_block,
    mc_dropout_proba,
    penultimate_features,
    predict_proba,
    train_head,
)
from mltasks.core.metrics import log_loss
from mltasks.core.types import TrainConfig, TrainResult

FAST = TrainConfig(max_epochs=60, patience=10)


def _data(rng: np.random.Generator, n: int = 600, d: int = 16, k: int = 4, noise: float = 2.5):  # type: ignore[no-untyped-def]
    means = rng.normal(size=(k, d)) * 1.5
    y = rng.integers(0, k, size=n)
    x = (means[y] + rng.normal(size=(n, d)) * noise).astype(np.float32)
    return x, y


def test_deterministic_for_a_seed(rng: np.random.Generator) -> None:
    x, y = _data(rng)
    a = train_head(x, y, 4, FAST, seed=3)
    b = train_head(x, y, 4, FAST, seed=3)
    np.testing.assert_array_equal(predict_proba(a, x), predict_proba(b, x))
    assert a.temperature == b.temperature and a.epochs == b.epochs
    c = train_head(x, y, 4, FAST, seed=4)
    assert not np.array_equal(predict_proba(a, x), predict_proba(c, x))


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_learns_and_outputs_probabilities(rng: np.random.Generator, head: str) -> None:
    x, y = _data(rng, noise=1.0)
    result = train_head(x[:400], y[:400], 4, TrainConfig(head=head, max_epochs=60), seed=0)  # type: ignore[arg-type]
    probs = predict_proba(result, x[400:])
    assert probs.shape == (200, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert evaluate_head(result, x[400:], y[400:])["accuracy"] > 0.8
    assert result.val_metrics["calibrated"]["n"] > 0


def test_temperature_scaling_improves_held_out_nll(rng: np.random.Generator) -> None:
    # Overlapping classes, no regularisation: the early-stopped head is mis-calibrated; T fitted on the
    # held-out labels must lower the NLL on *other* data.
    x, y = _data(rng, n=2000, d=32, noise=5.0)
    config = TrainConfig(max_epochs=80, patience=80, weight_decay=0.0, dropout=0.0, lr=0.05)
    calibrated = train_head(x[:400], y[:400], 4, config, seed=0)
    raw = train_head(x[:400], y[:400], 4, TrainConfig(**{**config.to_dict(), "calibrate": False}), seed=0)
    assert calibrated.temperature != 1.0 and raw.temperature == 1.0
    held_out = slice(400, None)
    assert log_loss(predict_proba(calibrated, x[held_out]), y[held_out]) < log_loss(
        predict_proba(raw, x[held_out]), y[held_out]
    )
    val = calibrated.val_metrics
    assert val["calibrated"]["nll"] <= val["uncalibrated"]["nll"]


def test_class_balance_lifts_the_rare_class(rng: np.random.Generator) -> None:
    x, y = _data(rng, n=4000, d=8, k=2, noise=2.0)
    keep = (y == 0) | (rng.random(y.size) < 0.05)  # class 1 is ~5% of the labels
    xt, yt = x[keep][:800], y[keep][:800]
    balanced = train_head(xt, yt, 2, FAST, seed=0)
    plain = train_head(xt, yt, 2, TrainConfig(**{**FAST.to_dict(), "class_balance": False}), seed=0)
    test = ~keep
    recall_rare = [evaluate_head(r, x[test], y[test])["per_class_recall"][1] for r in (balanced, plain)]
    assert recall_rare[0] > recall_rare[1]


def test_tiny_label_sets_keep_every_class_column(rng: np.random.Generator) -> None:
    x, y = _data(rng, n=40, k=5)
    one_each = np.array([np.flatnonzero(y == c)[0] for c in range(4)])  # class 4 has no label at all
    result = train_head(x[one_each], y[one_each], 5, FAST, seed=0)
    probs = predict_proba(result, x)
    assert probs.shape == (40, 5)
    assert result.temperature == 1.0 and result.val_metrics == {}  # too few labels for a held-out split
    assert probs[:, 4].max() < probs[:, :4].max(axis=1).min()  # the unseen class is never the favourite
    empty = train_head(np.zeros((0, 16), np.float32), np.zeros(0, int), 5, FAST, seed=0)
    np.testing.assert_allclose(predict_proba(empty, x[:3]), 0.2, atol=1e-6)


def test_sample_weight_and_bad_inputs(rng: np.random.Generator) -> None:
    x, y = _data(rng, n=60)
    train_head(x, y, 4, FAST, seed=0, sample_weight=np.ones(60))
    with pytest.raises(ShapeError):
        train_head(x, y[:-1], 4, FAST, seed=0)
    with pytest.raises(ValueError):
        train_head(x, y, 3, FAST, seed=0)  # label 3 is out of range
    with pytest.raises(ShapeError):
        train_head(x, y, 4, FAST, seed=0, sample_weight=np.ones(3))


def test_bytes_round_trip(rng: np.random.Generator) -> None:
    x, y = _data(rng)
    result = train_head(x, y, 4, TrainConfig(head="mlp", hidden=32, max_epochs=20), seed=0)
    again = TrainResult.from_bytes(result.to_bytes())
    np.testing.assert_array_equal(predict_proba(result, x), predict_proba(again, x))
    assert again.config == result.config and again.temperature == result.temperature


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_mc_dropout_and_penultimate(rng: np.random.Generator, head: str) -> None:
    x, y = _data(rng)
    result = train_head(x, y, 4, TrainConfig(head=head, hidden=32, max_epochs=20, dropout=0.3), seed=0)  # type: ignore[arg-type]
    mc = mc_dropout_proba(result, x[:50], T=8, seed=1)
    assert mc.shape == (8, 50, 4)
    np.testing.assert_allclose(mc.sum(axis=2), 1.0, atol=1e-5)
    assert not np.allclose(mc[0], mc[1])  # dropout is on
    np.testing.assert_array_equal(mc, mc_dropout_proba(result, x[:50], T=8, seed=1))
    assert penultimate_features(result, x[:5]).shape == (5, 16 if head == "linear" else 32)


def test_finetune_refuses_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: covered by the gpu test")
    with pytest.raises(DeviceUnavailableError):
        finetune_last_block(torch.nn.Linear(2, 2), lambda b, w: [], [0], 2, feature_dim=2, device="cpu")


@pytest.mark.gpu
def test_finetune_last_block_on_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("NOT TESTED: needs CUDA")
    from mltasks.core.backbones import load_backbone
    from mltasks.core.features import loader_build, normalizer

    model, spec = load_backbone("resnet18", pretrained=False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8) for _ in range(16)]
    labels = np.arange(16) % 2
    out = finetune_last_block(
        model,
        lambda b, w: loader_build(images, spec, batch_size=b, num_workers=w),
        labels,
        2,
        feature_dim=spec.dim,
        device="cuda",
        preprocess=normalizer(spec, "cuda", channels_last=True),
    )
    assert out.trainable and all(name.startswith("layer4") for name in out.trainable)
    assert len(out.losses) == 3
