"""Real labeled images that ship inside pip packages (no download at run time).

Animal-MNIST (``pip install --no-deps animal-mnist==0.4``, MIT): 10,000 grayscale 28x28
animal silhouettes, 10 classes of 1,000. Its own loader imports TensorFlow, so the bundled
gzip pickles are read directly. The data has 284 exact duplicate images; ``dedupe=True``
drops the later copies so a train/test split cannot leak.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from mltasks.core.answers import AnswerTable

ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")


class DatasetNotInstalledError(RuntimeError):
    pass


@dataclass(frozen=True)
class ImageDataset:
    images: NDArray[np.uint8]  # (n, h, w) grayscale or (n, h, w, 3)
    labels: NDArray[np.int64]  # (n,)
    class_names: tuple[str, ...]


def _animal_dir() -> Path:
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotInstalledError("Animal-MNIST is not installed: pip install --no-deps animal-mnist==0.4")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"


def load_animal_mnist(*, dedupe: bool = True) -> ImageDataset:
    folder = _animal_dir()
    with gzip.open(folder / "animal_data_version_3.gz", "rb") as f:
        images = np.asarray(pickle.load(f), dtype=np.uint8)  # noqa: S301 - a file shipped in a pinned package
    with gzip.open(folder / "animal_label_version_3.gz", "rb") as f:
        labels = np.asarray(pickle.load(f), dtype=np.int64)  # noqa: S301
    if dedupe:
        seen: set[bytes] = set()
        keep = np.ones(len(images), dtype=bool)
        for i, img in enumerate(images):
            digest = hashlib.sha1(img.tobytes()).digest()  # noqa: S324 - identity, not security
            if digest in seen:
                keep[i] = False
            seen.add(digest)
        images, labels = images[keep], labels[keep]
    return ImageDataset(images=images, labels=labels, class_names=ANIMAL_CLASSES)


# --- real crowd labels with ground truth (../shared/data/crowd) ----------------------------


def crowd_root() -> Path:
    """Where the crowd data sets live: $ANNOTATE_CROWD_DATA, else ``shared/data/crowd`` beside the checkout."""
    import os

    override = os.environ.get("ANNOTATE_CROWD_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd"


def load_crowd(name: str) -> tuple[AnswerTable, NDArray[np.int64], NDArray[np.int64]] | None:
    """A crowd data set (``answer.csv`` + ``truth.csv``): (answers, item indices with truth, their true classes).

    None when the folder or either file is missing.
    """
    import csv

    from mltasks.core.answers import AnswerTable

    folder = crowd_root() / name
    if not (folder / "answer.csv").is_file() or not (folder / "truth.csv").is_file():
        return None
    with open(folder / "answer.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table, maps = AnswerTable.from_ids(
        [r["question"] for r in rows], [r["worker"] for r in rows], [int(r["answer"]) for r in rows]
    )
    with open(folder / "truth.csv", newline="") as f:
        truth = {r["question"]: int(r["truth"]) for r in csv.DictReader(f)}
    known = [q for q in truth if q in maps.item_index]
    items = np.array([maps.item_index[q] for q in known], dtype=np.int64)
    classes = np.array([maps.class_index[truth[q]] for q in known], dtype=np.int64)
    return table, items, classes
