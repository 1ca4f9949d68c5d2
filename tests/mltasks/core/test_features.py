"""Feature extraction: every image mode, every source kind, order, progress, workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mltasks.core.errors import ShapeError
from mltasks.core.features import ImageDecodeError, array_to_image, extract_features, load_rgb, to_rgb
from mltasks.core.types import BackboneSpec

SPEC = BackboneSpec("tiny", "random", 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 6)


class Tiny(torch.nn.Module):
    """Per-channel mean and std of the normalised input: a transparent 'backbone'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def _modes() -> dict[str, Image.Image]:
    gradient = np.tile(np.arange(64, dtype=np.uint16) * 40, (48, 1))  # 0..2520: a 12-bit-like range
    palette = Image.new("P", (40, 30))
    palette.putpalette([255, 0, 0] * 256)
    rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))  # fully transparent black
    return {
        "L": Image.new("L", (40, 30), 128),
        "RGB": Image.new("RGB", (40, 30), (10, 200, 30)),
        "RGBA": rgba,
        "P": palette,
        "I;16": Image.fromarray(gradient),
        "I": Image.fromarray(gradient.astype(np.int32)),
        "1": Image.new("1", (40, 30), 1),
        "CMYK": Image.new("CMYK", (40, 30), (0, 0, 0, 0)),
    }


def test_to_rgb_handles_every_mode() -> None:
    assert {mode: img.mode for mode, img in _modes().items()} == {m: m for m in _modes()}
    for mode, img in _modes().items():
        rgb = np.asarray(to_rgb(img))
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, mode
    assert np.asarray(to_rgb(_modes()["RGBA"])).min() == 255  # transparency composited on white
    assert np.asarray(to_rgb(_modes()["P"]))[0, 0].tolist() == [255, 0, 0]
    sixteen = np.asarray(to_rgb(_modes()["I;16"]))[..., 0]
    assert sixteen.min() == 0 and sixteen.max() == 255  # scaled by its own range, not by 65535


def test_arrays_of_any_dtype() -> None:
    assert load_rgb(np.zeros((10, 12), np.uint8), 8).shape == (8, 8, 3)
    assert load_rgb(np.ones((10, 10, 1), np.float32), 10).max() == 255  # float in [0, 1]: times 255
    sixteen = load_rgb(np.arange(100, dtype=np.uint16).reshape(10, 10) * 300, 10)  # no resize: exact range
    assert sixteen.min() == 0 and sixteen.max() == 255
    assert load_rgb(np.zeros((10, 12, 4), np.uint8), 8).shape == (8, 8, 3)
    with pytest.raises(ShapeError):
        array_to_image(np.zeros((4, 4, 2), np.uint8))


def test_files_paths_arrays_and_images_mix(tmp_path: Path) -> None:
    sources: list[object] = []
    for i, (mode, img) in enumerate(_modes().items()):
        if mode in ("I", "1", "CMYK"):
            sources.append(img)
            continue
        path = tmp_path / f"{i}.png"
        img.save(path)
        sources.append(str(path) if i % 2 else path)
    sources.append(np.full((20, 20, 3), 77, np.uint8))
    seen: list[tuple[int, int]] = []
    feats = extract_features(sources, Tiny(), SPEC, batch_size=3, progress=lambda d, t: seen.append((d, t)))  # type: ignore[arg-type]
    assert feats.shape == (len(sources), 6) and feats.dtype == np.float32
    assert seen[-1] == (len(sources), len(sources)) and len(seen) == -(-len(sources) // 3)
    # row i belongs to source i: the RGB source is (10, 200, 30) -> channel means in [-1, 1]
    rgb_row = feats[1]
    np.testing.assert_allclose(rgb_row[:3], [10 / 127.5 - 1, 200 / 127.5 - 1, 30 / 127.5 - 1], atol=1e-5)


def test_workers_give_the_same_features() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size=(20, 24), dtype=np.uint8) for _ in range(10)]
    inline = extract_features(images, Tiny(), SPEC, batch_size=4)
    workers = extract_features(images, Tiny(), SPEC, batch_size=4, num_workers=2)
    np.testing.assert_array_equal(inline, workers)


def test_streams_into_a_memmap(tmp_path: Path) -> None:
    images = [np.full((8, 8), v, np.uint8) for v in range(5)]
    out = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=(5, 6))
    extract_features(images, Tiny(), SPEC, batch_size=2, out=out)
    out.flush()
    assert np.load(tmp_path / "e.npy")[:, 0].tolist() == pytest.approx([v / 127.5 - 1 for v in range(5)], abs=1e-5)


def test_broken_file_names_its_index(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError) as info:
        extract_features([np.zeros((4, 4), np.uint8), str(bad)], Tiny(), SPEC)
    assert info.value.index == 1


def test_empty_sources() -> None:
    assert extract_features([], Tiny(), SPEC).shape == (0, 6)


@pytest.mark.slow
def test_default_backbone_end_to_end() -> None:
    from mltasks.core.runtime import backbone_cached

    model, spec = backbone_cached("efficientnet_lite0")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, size=(28, 28), dtype=np.uint8)
    b = np.zeros((28, 28), np.uint8)
    b[:, :14] = 255
    feats = extract_features([a, b, a], model, spec, batch_size=2)
    assert feats.shape == (3, 1280)
    np.testing.assert_allclose(feats[0], feats[2], atol=1e-5)
    assert np.abs(feats[0] - feats[1]).max() > 1e-2
