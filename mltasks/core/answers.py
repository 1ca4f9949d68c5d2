"""Long-format answer tables: the input contract of every aggregator and agreement statistic.

One row per answer, crowd-kit style (task, worker, label), but already integer-coded so the maths
can run vectorized over a whole project with ``np.bincount``:

    item      (n,) int64   0 <= item < n_items
    annotator (n,) int64   0 <= annotator < n_annotators
    label     (n,) int64   0 <= label < n_classes
    weight    (n,) float64 >= 0, or None (every answer weighs 1)

``AnswerTable.from_ids`` builds one from arbitrary hashable ids (database primary keys, worker
names, class names) and hands back the id maps needed to translate the results.

Pure NumPy: no Django, no Celery (an import-linter contract enforces it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["AnswerTable", "AnswerTableError", "IdMaps"]


class AnswerTableError(ValueError):
    """The answers do not form a valid table (shapes, ranges, unknown class, negative weight)."""


def _as_index_array(values: ArrayLike, name: str) -> NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise AnswerTableError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iub":
        raise AnswerTableError(f"{name} must hold integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_range(arr: NDArray[np.int64], upper: int, name: str, size_name: str) -> None:
    if upper < 0:
        raise AnswerTableError(f"{size_name} must be >= 0, got {upper}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= upper):
        raise AnswerTableError(f"{name} values must lie in [0, {size_name}={upper}), got [{arr.min()}, {arr.max()}]")


@dataclass(frozen=True, eq=False)
class AnswerTable:
    """Integer-coded answers in long format (one row per answer).

    Shapes: ``item``, ``annotator``, ``label`` and (optional) ``weight`` are all ``(n,)``.
    ``n_items`` / ``n_annotators`` / ``n_classes`` may exceed what the rows use: an item with no
    answer still gets a (flagged) result from the aggregators.

    ``weight`` down-weights individual answers, e.g. the model's suggestions taken as a weak extra
    annotator with weight 0.3. Aggregators multiply each answer's log-likelihood and its sufficient
    statistics by it; agreement statistics ignore it (pass human answers only there).

    An annotator may answer the same item more than once; aggregators count every answer,
    agreement statistics keep the last one in row order.
    """

    item: NDArray[np.int64]
    annotator: NDArray[np.int64]
    label: NDArray[np.int64]
    n_items: int
    n_annotators: int
    n_classes: int
    weight: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        item = _as_index_array(self.item, "item")
        annotator = _as_index_array(self.annotator, "annotator")
        label = _as_index_array(self.label, "label")
        if not (item.shape == annotator.shape == label.shape):
            raise AnswerTableError(
                f"item, annotator and label must have the same length, got {item.size}, {annotator.size}, {label.size}"
            )
        _check_range(item, int(self.n_items), "item", "n_items")
        _check_range(annotator, int(self.n_annotators), "annotator", "n_annotators")
        _check_range(label, int(self.n_classes), "label", "n_classes")
        if self.n_classes == 0 and self.n_items > 0:
            raise AnswerTableError("n_classes must be >= 1 when there are items")
        weight: NDArray[np.float64] | None = None
        if self.weight is not None:
            weight = np.ascontiguousarray(np.asarray(self.weight, dtype=np.float64))
            if weight.shape != item.shape:
                raise AnswerTableError(f"weight must have shape {item.shape}, got {weight.shape}")
            if weight.size and (not np.all(np.isfinite(weight)) or float(weight.min()) < 0.0):
                raise AnswerTableError("weight must be finite and >= 0")
        # frozen dataclass: normalised arrays are written once, here.
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "annotator", annotator)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "n_items", int(self.n_items))
        object.__setattr__(self, "n_annotators", int(self.n_annotators))
        object.__setattr__(self, "n_classes", int(self.n_classes))

    @property
    def n_answers(self) -> int:
        return int(self.item.size)

    def weights(self) -> NDArray[np.float64]:
        """Per-answer weights, ones when the table has none. Shape (n,)."""
        if self.weight is None:
            return np.ones(self.n_answers, dtype=np.float64)
        return self.weight

    @classmethod
    def from_arrays(
        cls,
        item: ArrayLike,
        annotator: ArrayLike,
        label: ArrayLike,
        *,
        n_items: int | None = None,
        n_annotators: int | None = None,
        n_classes: int | None = None,
        weight: ArrayLike | None = None,
    ) -> AnswerTable:
        """Build from integer codes; a size left as None is ``max + 1`` of its column (0 if empty)."""
        it = _as_index_array(item, "item")
        an = _as_index_array(annotator, "annotator")
        lb = _as_index_array(label, "label")

        def size(arr: NDArray[np.int64], given: int | None) -> int:
            if given is not None:
                return int(given)
            return int(arr.max()) + 1 if arr.size else 0

        return cls(
            item=it,
            annotator=an,
            label=lb,
            n_items=size(it, n_items),
            n_annotators=size(an, n_annotators),
            n_classes=size(lb, n_classes),
            weight=None if weight is None else np.asarray(weight, dtype=np.float64),
        )

    @classmethod
    def from_ids(
        cls,
        items: Iterable[Hashable],
        annotators: Iterable[Hashable],
        labels: Iterable[Hashable],
        *,
        classes: Sequence[Hashable] | None = None,
        weights: ArrayLike | None = None,
        all_items: Iterable[Hashable] | None = None,
        all_annotators: Iterable[Hashable] | None = None,
    ) -> tuple[AnswerTable, IdMaps]:
        """Integer-code answers given by arbitrary hashable ids; returns the table and the id maps.

        Index order: items and annotators first in the order of ``all_items`` / ``all_annotators``
        (use them to include items nobody answered yet), then in order of first appearance.
        Classes: the order of ``classes`` when given (a label outside it raises
        ``AnswerTableError``), else sorted when the labels are mutually comparable, else first
        appearance. Class order matters: majority vote breaks exact ties towards lower indices.
        """
        item_list = list(items)
        annotator_list = list(annotators)
        label_list = list(labels)
        if not (len(item_list) == len(annotator_list) == len(label_list)):
            raise AnswerTableError(
                f"items, annotators and labels must have the same length, "
                f"got {len(item_list)}, {len(annotator_list)}, {len(label_list)}"
            )
        item_codes, item_ids = _factorize(item_list, all_items)
        annotator_codes, annotator_ids = _factorize(annotator_list, all_annotators)
        if classes is not None:
            class_ids = tuple(dict.fromkeys(classes))
            class_index = {c: i for i, c in enumerate(class_ids)}
            try:
                label_codes = np.fromiter((class_index[x] for x in label_list), dtype=np.int64, count=len(label_list))
            except KeyError as exc:
                raise AnswerTableError(f"label {exc.args[0]!r} is not one of the project's classes") from None
        else:
            unique: list[Any] = list(dict.fromkeys(label_list))
            with contextlib.suppress(TypeError):  # mixed, unorderable ids: keep first appearance
                unique = sorted(unique)
            class_ids = tuple(unique)
            class_index = {c: i for i, c in enumerate(class_ids)}
            label_codes = np.fromiter((class_index[x] for x in label_list), dtype=np.int64, count=len(label_list))
        table = cls(
            item=item_codes,
            annotator=annotator_codes,
            label=label_codes,
            n_items=len(item_ids),
            n_annotators=len(annotator_ids),
            n_classes=len(class_ids),
            weight=None if weights is None else np.asarray(weights, dtype=np.float64),
        )
        return table, IdMaps(items=item_ids, annotators=annotator_ids, classes=class_ids)


def _factorize(
    values: list[Hashable], known: Iterable[Hashable] | None
) -> tuple[NDArray[np.int64], tuple[Hashable, ...]]:
    index: dict[Hashable, int] = {}
    if known is not None:
        for v in known:
            index.setdefault(v, len(index))
    # One dict lookup per row: ~0.1 s per million rows, and works for any hashable id.
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, tuple(index)


@dataclass(frozen=True, eq=False)
class IdMaps:
    """Index -> id for items, annotators and classes (``items[i]`` is the id of item index i)."""

    items: tuple[Hashable, ...]
    annotators: tuple[Hashable, ...]
    classes: tuple[Hashable, ...]
    _item_index: dict[Hashable, int] = field(init=False, repr=False)
    _annotator_index: dict[Hashable, int] = field(init=False, repr=False)
    _class_index: dict[Hashable, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_item_index", {v: i for i, v in enumerate(self.items)})
        object.__setattr__(self, "_annotator_index", {v: i for i, v in enumerate(self.annotators)})
        object.__setattr__(self, "_class_index", {v: i for i, v in enumerate(self.classes)})

    @property
    def item_index(self) -> Mapping[Hashable, int]:
        return self._item_index

    @property
    def annotator_index(self) -> Mapping[Hashable, int]:
        return self._annotator_index

    @property
    def class_index(self) -> Mapping[Hashable, int]:
        return self._class_index

    def gold_indices(self, gold: Mapping[Hashable, Hashable]) -> dict[int, int]:
        """Translate ``{item_id: class_id}`` gold answers to ``{item_index: class_index}``.

        Gold items that have no answers and are not in the table are skipped (they cannot inform
        the fit); an unknown class raises ``AnswerTableError``.
        """
        out: dict[int, int] = {}
        for item_id, class_id in gold.items():
            i = self._item_index.get(item_id)
            if i is None:
                continue
            c = self._class_index.get(class_id)
            if c is None:
                raise AnswerTableError(f"gold class {class_id!r} of item {item_id!r} is not one of the classes")
            out[i] = c
        return out

    def to_jsonable(self) -> dict[str, Any]:
        return {"items": list(self.items), "annotators": list(self.annotators), "classes": list(self.classes)}
