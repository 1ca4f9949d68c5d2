"""Heads on frozen embeddings: train, calibrate, predict, MC-dropout; optional GPU fine-tuning of the last block.

Model: standardised features z = (x - mean) / scale, then either
  linear:  logits = W dropout(z) + b                  (multinomial logistic regression)
  mlp:     logits = W2 dropout(relu(W1 z + b1)) + b2
trained with class-weighted cross-entropy (weights n / (n_present * n_c)), Adam with L2, early stopping on a
stratified held-out split of the labels, then refit on all labels for the chosen number of epochs; probabilities
are softmax(logits / T) with T fitted on the held-out split (temperature scaling, Guo et al. 2017,
https://arxiv.org/abs/1706.04599).

Shapes: X (n, d) float32, y (n,) int in [0, n_classes); probabilities (n, n_classes) even when a class has no
label (its logit is pushed down, never dropped). Training is deterministic for a seed on a given machine: every
random draw goes through a seeded ``torch.Generator`` / ``np.random.Generator``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from mltasks.core.errors import DeviceUnavailableError, ShapeError
from mltasks.core.metrics import evaluate
from mltasks.core.types import TrainConfig, TrainResult

__all__ = [
    "LinearHead",
    "MLPHead",
    "TrainConfig",
    "TrainResult",
    "evaluate_head",
    "finetune_last_block",
    "head_build",
    "mc_dropout_proba",
    "penultimate_features",
    "predict_proba",
    "train_head",
]


class _Standardize(nn.Module):
    """(x - mean) / scale with a per-feature mean and one global scale (stable with a handful of labels)."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(()))

    def fit(self, x: torch.Tensor, enabled: bool) -> None:
        if not enabled or x.shape[0] == 0:
            return
        mean = x.mean(dim=0)
        scale = (x - mean).pow(2).sum(dim=1).mean().sqrt() / math.sqrt(x.shape[1])
        self.mean.copy_(mean)
        self.scale.copy_(torch.clamp(scale, min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class SeededDropout(nn.Module):
    """Inverted dropout whose masks come from ``self.generator`` (a seeded ``torch.Generator``), not the global RNG.

    With ``generator=None`` it falls back to the global generator, like ``nn.Dropout``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.p
        return x * keep / (1.0 - self.p)


class LinearHead(nn.Module):
    def __init__(self, n_features: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.standardize = _Standardize(n_features)
        self.dropout = SeededDropout(dropout)
        self.fc = nn.Linear(n_features, n_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardize(x)  # type: ignore[no-any-return]

    def logits_from_penultimate(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(h))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_penultimate(self.penultimate(x))


class MLPHead(nn.Module):
    def __init__(self, n_features: int, n_classes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.standardize = _Standardize(n_features)
        self.hidden = nn.Linear(n_features, hidden)
        self.dropout = SeededDropout(dropout)
        self.fc = nn.Linear(hidden, n_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(self.standardize(x)))

    def logits_from_penultimate(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(h))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_penultimate(self.penultimate(x))


Head = LinearHead | MLPHead


def head_build(
    config: TrainConfig, n_features: int, n_classes: int, *, generator: torch.Generator | None = None
) -> Head:
    """A fresh head. Weights are drawn from ``generator`` (nn.Linear's default init, minus the global RNG)."""
    model: Head
    if config.head == "linear":
        model = LinearHead(n_features, n_classes, config.dropout)
    elif config.head == "mlp":
        model = MLPHead(n_features, n_classes, config.hidden, config.dropout)
    else:
        raise ValueError(f"unknown head {config.head!r}; expected 'linear' or 'mlp'")
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return model


def _as_xy(X: ArrayLike, y: ArrayLike, n_classes: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    x = np.ascontiguousarray(X, dtype=np.float32)
    t = np.asarray(y).astype(np.int64, copy=False)
    if x.ndim != 2:
        raise ShapeError(f"X must be (n, d), got shape {x.shape}")
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ShapeError(f"y must be (n,) with n = {x.shape[0]}, got shape {t.shape}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    if not np.isfinite(x).all():
        raise ValueError("X holds NaN or infinite values")
    return x, t


def _split(y: NDArray[np.int64], config: TrainConfig, rng: np.random.Generator) -> NDArray[np.bool_] | None:
    """A stratified held-out mask, or None when there are too few labels to spare any."""
    counts = np.bincount(y)
    present = counts[counts > 0]
    if (
        config.val_fraction <= 0
        or y.size < config.min_val_size
        or present.size == 0
        or present.min() < config.min_per_class_for_val
    ):
        return None
    val = np.zeros(y.size, dtype=bool)
    for c in np.flatnonzero(counts):
        members = np.flatnonzero(y == c)
        n_val = min(members.size - 1, max(1, int(round(config.val_fraction * members.size))))
        val[rng.choice(members, size=n_val, replace=False)] = True
    return val


def _class_weights(y: NDArray[np.int64], n_classes: int, balance: bool) -> NDArray[np.float32]:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if not balance:
        return np.ones(n_classes, dtype=np.float32)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = y.size / (present.sum() * counts[present])
    return w.astype(np.float32)


def train_one_epoch(
    model: Head,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """One pass over (x, y) with per-sample weights w; returns the mean weighted loss."""
    model.train()
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if n > batch_size else torch.arange(n)
    total, weight_sum = 0.0, 0.0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        wb = w[idx]
        loss_each = nn.functional.cross_entropy(model(x[idx]), y[idx], reduction="none")
        loss = (loss_each * wb).sum() / wb.sum().clamp_min(1e-12)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        total += float(loss.detach()) * float(wb.sum())
        weight_sum += float(wb.sum())
    return total / max(weight_sum, 1e-12)


@torch.inference_mode()
def _logits(model: Head, x: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    model.eval()
    return (
        torch.cat([model(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)])
        if x.shape[0]
        else (torch.zeros(0, model.fc.out_features))
    )


def _weighted_nll(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    loss = nn.functional.cross_entropy(logits, y, reduction="none")
    return float((loss * w).sum() / w.sum().clamp_min(1e-12))


def fit_temperature(logits: NDArray[np.float32], y: NDArray[np.int64]) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) on held-out labels (golden-section on log T).

    NLL(T) is convex in 1/T, so a 1-D bracketed search over log T in [1/20, 20] is exact enough and deterministic.
    """
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    t = torch.from_numpy(y)

    def nll(log_t: float) -> float:
        return float(nn.functional.cross_entropy(z / math.exp(log_t), t))

    lo, hi = math.log(0.05), math.log(20.0)
    inv_phi = (math.sqrt(5) - 1) / 2
    a, b = lo + (1 - inv_phi) * (hi - lo), lo + inv_phi * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - inv_phi) * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + inv_phi * (hi - lo)
            fb = nll(b)
    best = (lo + hi) / 2
    return math.exp(best) if nll(best) <= nll(0.0) else 1.0


def _fit(
    config: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    n_classes: int,
    seed: int,
    *,
    epochs: int,
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
) -> tuple[Head, int, list[float]]:
    """Train from a seeded init; with ``val``, stop early and return the best epoch's weights."""
    torch_gen = torch.Generator().manual_seed(seed)
    model = head_build(config, x.shape[1], n_classes, generator=torch_gen)
    model.dropout.generator = torch_gen
    model.standardize.fit(x, config.standardize)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[float] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    for epoch in range(1, epochs + 1):
        train_one_epoch(model, optimizer, x, y, w, config.batch_size, torch_gen)
        if val is None:
            continue
        loss = _weighted_nll(_logits(model, val[0]), val[1], val[2])
        history.append(loss)
        if loss < best_loss - 1e-6:
            best_loss, best_epoch = loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    model.dropout.generator = None  # a Generator is not part of the state and must not leak into callers
    if val is not None and best_state is not None:
        model.load_state_dict(best_state)
        return model, best_epoch, history
    return model, epochs, history


def train_head(
    X: ArrayLike,
    y: ArrayLike,
    n_classes: int,
    config: TrainConfig | None = None,
    *,
    seed: int = 0,
    sample_weight: ArrayLike | None = None,
) -> TrainResult:
    """Fit a head on frozen embeddings X (n, d) with labels y (n,); returns weights, temperature, held-out metrics.

    sample_weight (n,) multiplies the class-balance weights (e.g. consensus confidence). With fewer labels than
    the held-out split needs (see ``TrainConfig``) it trains ``max_epochs`` on everything with T = 1. With no
    label at all it returns a zero head (uniform probabilities). Writes no files; see ``TrainResult.to_bytes``.
    """
    config = config or TrainConfig()
    x_np, y_np = _as_xy(X, y, n_classes)
    n, d = x_np.shape
    sw = np.ones(n, dtype=np.float32) if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)
    if sw.shape != (n,) or (sw < 0).any():
        raise ShapeError(f"sample_weight must be (n,) = ({n},) and >= 0, got shape {sw.shape}")
    classes_seen = tuple(int(c) for c in np.unique(y_np))
    if n == 0:
        model = head_build(config, d, n_classes)
        for p in model.parameters():
            nn.init.zeros_(p)
        return TrainResult(config, d, n_classes, _cpu_state(model), 1.0, 0, seed, {}, [], classes_seen)

    rng = np.random.default_rng(seed)
    val_mask = _split(y_np, config, rng)
    weights = _class_weights(y_np, n_classes, config.class_balance)[y_np] * sw  # (n,)
    x_all, y_all, w_all = torch.from_numpy(x_np), torch.from_numpy(y_np), torch.from_numpy(weights)

    if val_mask is None:
        model, epochs, history = _fit(config, x_all, y_all, w_all, n_classes, seed, epochs=config.max_epochs, val=None)
        return TrainResult(config, d, n_classes, _cpu_state(model), 1.0, epochs, seed, {}, history, classes_seen)

    tr = torch.from_numpy(~val_mask)
    va = torch.from_numpy(val_mask)
    # The held-out split gets the class weights of the training labels, so its loss measures the same objective.
    w_tr = torch.from_numpy(_class_weights(y_np[~val_mask], n_classes, config.class_balance)[y_np] * sw)
    val = (x_all[va], y_all[va], w_tr[va])
    model, best_epoch, history = _fit(
        config, x_all[tr], y_all[tr], w_tr[tr], n_classes, seed, epochs=config.max_epochs, val=val
    )
    val_logits = _logits(model, val[0]).numpy()
    y_val = y_np[val_mask]
    temperature = fit_temperature(val_logits, y_val) if config.calibrate else 1.0
    val_metrics = {
        "uncalibrated": evaluate(_softmax(val_logits, 1.0), y_val, n_classes),
        "calibrated": evaluate(_softmax(val_logits, temperature), y_val, n_classes),
    }
    if config.refit_full:
        model, _, _ = _fit(config, x_all, y_all, w_all, n_classes, seed, epochs=max(best_epoch, 1), val=None)
    return TrainResult(
        config, d, n_classes, _cpu_state(model), temperature, best_epoch, seed, val_metrics, history, classes_seen
    )


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _softmax(logits: NDArray[np.float32], temperature: float) -> NDArray[np.float32]:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: NDArray[np.float32] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def head_load(result: TrainResult) -> Head:
    """Rebuild the trained module (eval mode, CPU) from a TrainResult."""
    model = head_build(result.config, result.n_features, result.n_classes)
    model.load_state_dict(result.state_dict, strict=True)
    return model.eval()


def _input(result: TrainResult, X: ArrayLike) -> torch.Tensor:
    x = np.ascontiguousarray(X, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != result.n_features:
        raise ShapeError(f"X must be (n, {result.n_features}), got shape {x.shape}")
    return torch.from_numpy(x)


def predict_proba(result: TrainResult, X: ArrayLike, *, batch_size: int = 65536) -> NDArray[np.float32]:
    """Calibrated probabilities softmax(logits / T); X (n, d) -> (n, n_classes) float32."""
    model = head_load(result)
    x = _input(result, X)
    out = np.empty((x.shape[0], result.n_classes), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            out[s : s + batch_size] = torch.softmax(model(x[s : s + batch_size]) / result.temperature, dim=1).numpy()
    return out


def penultimate_features(result: TrainResult, X: ArrayLike, *, batch_size: int = 65536) -> NDArray[np.float32]:
    """The input of the head's last layer (n, d') — BADGE's gradient embeddings are built on it."""
    model = head_load(result)
    x = _input(result, X)
    with torch.inference_mode():
        parts = [model.penultimate(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)]
    if not parts:
        return np.zeros((0, model.fc.in_features), dtype=np.float32)
    return torch.cat(parts).numpy()


def mc_dropout_proba(
    result: TrainResult, X: ArrayLike, T: int = 20, *, seed: int = 0, batch_size: int = 65536
) -> NDArray[np.float32]:
    """T stochastic passes with dropout on: (T, n, n_classes) float32, for BALD (Gal & Ghahramani 2016).

    Only the dropout and the last layer are re-run per sample: the penultimate features are computed once.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    model = head_load(result)
    x = _input(result, X)
    out = np.empty((T, x.shape[0], result.n_classes), dtype=np.float32)
    model.dropout.train()
    model.dropout.generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            h = model.penultimate(x[s : s + batch_size])
            for t in range(T):
                logits = model.logits_from_penultimate(h) / result.temperature
                out[t, s : s + batch_size] = torch.softmax(logits, dim=1).numpy()
    return out


def evaluate_head(result: TrainResult, X: ArrayLike, y: ArrayLike) -> dict[str, Any]:
    """``metrics.evaluate`` of the head's calibrated probabilities on a labeled set (kept apart from training)."""
    return evaluate(predict_proba(result, X), np.asarray(y), result.n_classes)


# ----------------------------------------------------------------------------------------------------------------
# Optional: fine-tune the last backbone block (GPU only)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    num_workers: int = 4


@dataclass(frozen=True)
class FinetuneResult:
    backbone: nn.Module  # the fine-tuned backbone, eval mode, on the training device
    trainable: tuple[str, ...]  # names of the parameters that were trained
    losses: tuple[float, ...]  # mean training loss per epoch
    seconds: float


def last_block_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters of the backbone's last stage and everything after it.

    timm EfficientNet/MobileNet: ``blocks.<last>`` + ``conv_head``/``bn2``; torchvision/timm ResNet: ``layer4``;
    otherwise the last top-level child that has parameters.
    """
    names = [name for name, _ in model.named_parameters()]
    children = [name for name, child in model.named_children() if any(True for _ in child.parameters())]
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks):
        start = f"blocks.{len(blocks) - 1}."
        after = children[children.index("blocks") + 1 :]
        return [n for n in names if n.startswith(start) or n.split(".")[0] in after]
    if "layer4" in children:
        after = children[children.index("layer4") :]
        return [n for n in names if n.split(".")[0] in after]
    return [n for n in names if n.split(".")[0] == children[-1]] if children else []


def finetune_last_block(
    backbone: nn.Module,
    loader_factory: Callable[[int, int], Any],
    labels: Sequence[int] | NDArray[np.int64],
    n_classes: int,
    *,
    feature_dim: int,
    device: str,
    config: FinetuneConfig | None = None,
    seed: int = 0,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FinetuneResult:
    """Fine-tune the last block of a backbone together with a fresh linear classifier. CUDA only.

    loader_factory(batch_size, num_workers) must yield (uint8 images (B, H, W, 3), index (B,)) batches, e.g.
    ``features.loader_build``; labels[index] gives the targets. ``preprocess`` maps the uint8 batch on the device
    to the normalised float input (``features.normalizer``). The rest of the backbone stays frozen and in eval mode
    (frozen BatchNorm statistics). Raises DeviceUnavailableError off CUDA: on a CPU the re-embedding that has to
    follow would take hours at 100k items, so we refuse rather than silently crawl.
    """
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise DeviceUnavailableError("fine-tuning the last backbone block needs a CUDA device")
    config = config or FinetuneConfig()
    started = time.perf_counter()
    torch.manual_seed(seed)
    trainable = set(last_block_parameters(backbone))
    for name, p in backbone.named_parameters():
        p.requires_grad_(name in trainable)
    backbone.to(device).eval()
    classifier = nn.Linear(feature_dim, n_classes).to(device)
    params = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": params, "lr": config.lr}, {"params": classifier.parameters(), "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    targets = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    counts = torch.bincount(targets, minlength=n_classes).float()
    class_w = torch.where(counts > 0, targets.numel() / (counts.clamp_min(1) * (counts > 0).sum()), 0.0).to(device)
    losses: list[float] = []
    for _ in range(config.epochs):
        total, batches = 0.0, 0
        for images, index in loader_factory(config.batch_size, config.num_workers):
            x = images.to(device, non_blocking=True)
            x = preprocess(x) if preprocess is not None else x.permute(0, 3, 1, 2).float().div(255)
            yb = targets[index].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(classifier(backbone(x)).float(), yb, weight=class_w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss)
            batches += 1
        losses.append(total / max(batches, 1))
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return FinetuneResult(backbone, tuple(sorted(trainable)), tuple(losses), time.perf_counter() - started)


def config_with(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of a frozen config with some fields changed (``dataclasses.replace``, typed)."""
    return replace(config, **changes)
