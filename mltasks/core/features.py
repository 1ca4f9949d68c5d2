"""Batched, streaming feature extraction: images in, one float32 row per image out.

Pipeline: a torch DataLoader (``num_workers`` processes, or inline with 0) decodes each source with Pillow, turns
any mode into 8-bit RGB and resizes it to the backbone's square input (bilinear; the whole image is kept, the
aspect ratio is not: annotation items often have their object at the border, which a center crop would cut).
Batches cross to the device as uint8 (4x less to copy than float32); normalisation, the channels-last layout and,
on CUDA only, autocast to bf16/fp16 happen there. The model runs in eval mode under ``torch.inference_mode``.

Image modes: L, RGB, RGBA/LA/PA (composited on white: transparent pixels often hold black RGB), P (through RGBA
when it has a transparency entry), 1, CMYK/YCbCr/LAB/HSV, and 16-bit/32-bit/float (I;16*, I, F): the latter are
scaled to 8-bit by their own min..max range (a 12-bit X-ray uses a fraction of the 16-bit range).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mltasks.core.errors import CoreError, ShapeError
from mltasks.core.types import BackboneSpec

Source = str | Path | NDArray[Any] | Image.Image
ProgressCallback = Callable[[int, int], None]


class ImageDecodeError(CoreError):
    """A source could not be read or decoded; ``index`` says which."""

    code = "image_decode_error"

    def __init__(self, message: str, index: int = -1) -> None:
        super().__init__(message)
        self.index = index


def _scale_to_uint8(arr: NDArray[Any]) -> NDArray[np.uint8]:
    """Map an integer/float array onto 0..255 by its own range (constant images become 0)."""
    a = arr.astype(np.float32, copy=False)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    out: NDArray[np.uint8] = np.clip((a - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)
    return out


def _flatten_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB (see the module docstring for the rules per mode)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img))).convert("RGB")
    if mode == "P":
        return _flatten_alpha(img) if "transparency" in img.info else img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _flatten_alpha(img)
    return img.convert("RGB")


def array_to_image(arr: NDArray[Any]) -> Image.Image:
    """An in-memory array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as a Pillow image.

    uint8 is taken as is; float arrays within [0, 1] are scaled by 255; other dtypes by their range.
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ShapeError(f"an image array must be (H, W), (H, W, 1|3|4), got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind == "f" and a.size and float(a.min()) >= 0.0 and float(a.max()) <= 1.0:
            a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        else:
            a = _scale_to_uint8(a)
    # uint8 (H, W) -> L, (H, W, 3) -> RGB, (H, W, 4) -> RGBA: Pillow infers the mode from shape and dtype.
    return Image.fromarray(np.ascontiguousarray(a))


def load_rgb(source: Source, size: int) -> NDArray[np.uint8]:
    """Decode one source into a (size, size, 3) uint8 array."""
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        img = array_to_image(source)
    else:
        img = Image.open(source)
        # JPEG: let the decoder downscale by a power of two in the DCT domain, much cheaper than a full decode.
        img.draft("RGB", (size, size))
        img = ImageOps.exif_transpose(img)
    img = to_rgb(img)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy refuses read-only memory


class ImageSourceDataset(Dataset[tuple[torch.Tensor, int]]):
    """(uint8 (S, S, 3) tensor, index) per source; decoding happens in the DataLoader workers."""

    def __init__(self, sources: Sequence[Source], size: int) -> None:
        self.sources = sources
        self.size = size

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            arr = load_rgb(self.sources[index], self.size)
        except CoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one typed error with the index
            raise ImageDecodeError(f"source {index} could not be decoded: {exc}", index) from exc
        return torch.from_numpy(arr), index


def loader_build(
    sources: Sequence[Source], spec: BackboneSpec, *, batch_size: int = 64, num_workers: int = 0, pin: bool = False
) -> DataLoader[tuple[torch.Tensor, int]]:
    """The DataLoader that ``extract_features`` (and fine-tuning) iterate: uint8 (B, S, S, 3) + index (B,)."""
    return DataLoader(
        ImageSourceDataset(sources, spec.input_size),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def normalizer(spec: BackboneSpec, device: str, *, channels_last: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (B, S, S, 3) on ``device`` -> normalised float (B, 3, S, S), channels-last in memory if asked.

    (x / 255 - mean) / std is folded into one multiply-add: x * (1 / (255 std)) - mean / std.
    """
    scale = torch.tensor([1.0 / (255.0 * s) for s in spec.std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(spec.mean, spec.std, strict=True)], device=device).view(1, 3, 1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def run(images: torch.Tensor) -> torch.Tensor:
        # (B, S, S, 3) uint8 viewed as (B, 3, S, S) is already channels-last in memory: no copy is made for it.
        x = images.permute(0, 3, 1, 2).float()
        return (x * scale - shift).contiguous(memory_format=fmt)

    return run


def _autocast_dtype(device: str) -> torch.dtype | None:
    if not device.startswith("cuda"):
        return None  # CPU autocast to bf16 is slower than fp32 on most CPUs and changes the features
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def extract_features(
    sources: Sequence[Source],
    model: nn.Module,
    spec: BackboneSpec,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    channels_last: bool | None = None,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Embed every source: returns float32 (n, spec.dim), row i for sources[i].

    sources: file paths, uint8/16-bit/float arrays or Pillow images, in any mix. ``progress(done, total)`` is
    called after each batch. ``out``: a preallocated (n, dim) float32 array (e.g. a ``np.memmap``) to stream
    into, so 1M embeddings need not fit in RAM. ``channels_last``: None = on (CPU and CUDA: 1.42x on this 2-core
    CPU, see docs/ml.md); note it converts ``model``'s weights in place. Raises ImageDecodeError naming the
    failing index.
    """
    n = len(sources)
    result = np.empty((n, spec.dim), dtype=np.float32) if out is None else out
    if result.shape != (n, spec.dim):
        raise ShapeError(f"out must be ({n}, {spec.dim}), got {result.shape}")
    if n == 0:
        return result
    use_cl = True if channels_last is None else channels_last
    model = model.to(device).eval()
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    prepare = normalizer(spec, device, channels_last=use_cl)
    amp = _autocast_dtype(device)
    loader = loader_build(sources, spec, batch_size=batch_size, num_workers=num_workers, pin=device.startswith("cuda"))
    done = 0
    with torch.inference_mode():
        for images, index in loader:
            x = prepare(images.to(device, non_blocking=True))
            if amp is not None:
                with torch.autocast(device_type="cuda", dtype=amp):
                    feats = model(x)
            else:
                feats = model(x)
            if feats.ndim > 2:  # a backbone that returns a feature map: pool it
                feats = feats.flatten(2).mean(dim=2)
            idx = index.numpy()
            result[idx[0] : idx[-1] + 1] = feats.float().cpu().numpy()
            done += idx.size
            if progress is not None:
                progress(done, n)
    return result
