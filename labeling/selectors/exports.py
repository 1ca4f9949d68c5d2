"""Streamed dataset export: JSON, JSON Lines and CSV, in flat memory.

Items are read in id order with keyset pagination (``id > last_id ORDER BY id LIMIT n``),
``EXPORT_CHUNK_SIZE`` at a time; the live annotations of a chunk (``retracted_at IS
NULL``) come in one more ordered query. So an export costs two queries per chunk, never
one per item, and holds one chunk in memory whatever the project size: a million
annotations stream as well as a hundred. Keyset rather than OFFSET, because OFFSET
re-reads every skipped row and gets slower with each page.

Each record carries the item (id, file name, sha256, split, status, size, metadata), its
live annotations (annotator username, class name, active time, submit time, whether the
model's suggestion was taken) and its consensus: the stored ``ConsensusLabel`` when the
consensus job has computed one, else a majority vote over the live annotations computed
here (ties go to the class with the lowest ``order``, then the lowest id; confidence is
the winner's vote share; method ``majority``). Items without annotations or consensus
have ``consensus: null``.

The chunks are not one snapshot: rows written during a long export may or may not be in
it (each chunk is consistent in itself, and no item appears twice or is skipped).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from labeling.models import Annotation, ConsensusLabel, Item, LabelClass, Project

EXPORT_CHUNK_SIZE = 2000
FORMATS = ("json", "jsonl", "csv")
CONTENT_TYPES = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
}
CSV_COLUMNS = [
    "item_id",
    "file_name",
    "sha256",
    "split",
    "status",
    "width",
    "height",
    "metadata",
    "annotator",
    "label",
    "duration_ms",
    "submitted_at",
    "suggestion_accepted",
    "consensus_label",
    "consensus_confidence",
    "consensus_method",
]
# Cells starting with these are formulas to a spreadsheet ("CSV injection"); file names
# and usernames are user input, so such cells get a leading apostrophe in CSV only.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_ITEM_FIELDS = (
    "id",
    "original_name",
    "sha256",
    "split",
    "status",
    "width",
    "height",
    "metadata",
    "consensus__label_id",
    "consensus__confidence",
    "consensus__method",
)
_ANNOTATION_FIELDS = (
    "item_id",
    "annotator__username",
    "label_id",
    "duration_ms",
    "submitted_at",
    "suggestion_accepted",
)


@dataclass(frozen=True)
class ExportFilters:
    split: str | None = None
    statuses: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "status": list(self.statuses)}


@dataclass(frozen=True)
class _ClassTable:
    names: dict[int, str]
    rank: dict[int, tuple[int, int]]  # class id -> (order, id): the tie-break key

    @classmethod
    def of(cls, classes: Sequence[LabelClass]) -> _ClassTable:
        return cls(names={c.pk: c.name for c in classes}, rank={c.pk: (c.order, c.pk) for c in classes})


def export_label_classes(*, project: Project) -> list[LabelClass]:
    return list(LabelClass.objects.filter(project=project).order_by("order", "id"))


def majority_vote(label_ids: Sequence[int], *, rank: dict[int, tuple[int, int]]) -> tuple[int, float] | None:
    """(winning class id, its vote share), or None without votes.

    Ties go to the class with the lowest (order, id), so the result never depends on the
    order the annotations arrived in.
    """
    if not label_ids:
        return None
    counts = Counter(label_ids)
    winner = min(counts, key=lambda label_id: (-counts[label_id], rank.get(label_id, (2**31, label_id))))
    return winner, counts[winner] / len(label_ids)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_record_chunks(
    *, project: Project, filters: ExportFilters, chunk_size: int = EXPORT_CHUNK_SIZE
) -> Iterator[list[dict[str, Any]]]:
    """The export records of ``project``, a chunk (list) at a time, in item id order."""
    table = _ClassTable.of(export_label_classes(project=project))
    items = Item.objects.filter(project=project)
    if filters.split:
        items = items.filter(split=filters.split)
    if filters.statuses:
        items = items.filter(status__in=filters.statuses)
    last_id = 0
    while True:
        rows = list(items.filter(id__gt=last_id).order_by("id").values_list(*_ITEM_FIELDS)[:chunk_size])
        if not rows:
            return
        ids = [row[0] for row in rows]
        last_id = ids[-1]
        by_item: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        annotations = (
            Annotation.objects.filter(item_id__in=ids, retracted_at__isnull=True)
            .order_by("item_id", "submitted_at", "id")
            .values_list(*_ANNOTATION_FIELDS)
        )
        for annotation in annotations:
            by_item[annotation[0]].append(annotation)
        yield [_record(row, by_item.get(row[0], []), table) for row in rows]
        if len(rows) < chunk_size:
            return


def _record(row: tuple[Any, ...], annotations: list[tuple[Any, ...]], table: _ClassTable) -> dict[str, Any]:
    item_id, name, sha256, split, status, width, height, metadata, c_label, c_confidence, c_method = row
    if c_label is not None:
        consensus: dict[str, Any] | None = {
            "label": table.names.get(c_label),
            "confidence": c_confidence,
            "method": c_method,
        }
    else:
        vote = majority_vote([a[2] for a in annotations], rank=table.rank)
        consensus = (
            None
            if vote is None
            else {"label": table.names.get(vote[0]), "confidence": vote[1], "method": ConsensusLabel.Method.MAJORITY}
        )
    return {
        "id": item_id,
        "file_name": name,
        "sha256": sha256,
        "split": split,
        "status": status,
        "width": width,
        "height": height,
        "metadata": metadata,
        "annotations": [
            {
                "annotator": username,
                "label": table.names.get(label_id),
                "duration_ms": duration_ms,
                "submitted_at": _iso(submitted_at),
                "suggestion_accepted": accepted,
            }
            for _, username, label_id, duration_ms, submitted_at, accepted in annotations
        ],
        "consensus": consensus,
    }


# --- encoders: records in, bytes out ---------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _encode_json(
    chunks: Iterable[list[dict[str, Any]]], *, header: dict[str, Any], classes: list[dict[str, Any]]
) -> Iterator[bytes]:
    """One valid JSON document, written piecewise: {"project":…, "classes":[…], "items":[…]}."""
    yield ('{"project":' + _dumps(header) + ',"classes":' + _dumps(classes) + ',"items":[').encode()
    first = True
    for chunk in chunks:
        body = ",\n".join(_dumps(record) for record in chunk)
        yield (("\n" if first else ",\n") + body).encode()
        first = False
    yield b"\n]}\n"


def _encode_jsonl(chunks: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    for chunk in chunks:
        yield "".join(_dumps(record) + "\n" for record in chunk).encode()


def _csv_safe(value: str | None) -> str:
    if value and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value or ""


def _encode_csv(chunks: Iterable[list[dict[str, Any]]]) -> Iterator[bytes]:
    """One row per live annotation; an item without any gets one row with empty annotation cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for chunk in chunks:
        for record in chunk:
            consensus = record["consensus"] or {}
            item_cells = [
                record["id"],
                _csv_safe(record["file_name"]),
                record["sha256"],
                record["split"],
                record["status"],
                record["width"],
                record["height"],
                _dumps(record["metadata"]),
            ]
            consensus_cells = [
                _csv_safe(consensus.get("label")),
                "" if consensus.get("confidence") is None else consensus["confidence"],
                consensus.get("method", ""),
            ]
            for annotation in record["annotations"] or [None]:
                if annotation is None:
                    annotation_cells: list[Any] = ["", "", "", "", ""]
                else:
                    annotation_cells = [
                        _csv_safe(annotation["annotator"]),
                        _csv_safe(annotation["label"]),
                        annotation["duration_ms"],
                        annotation["submitted_at"],
                        "true" if annotation["suggestion_accepted"] else "false",
                    ]
                writer.writerow(item_cells + annotation_cells + consensus_cells)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # only the header: an export without items
        yield buffer.getvalue().encode()


def export_stream(
    *, project: Project, fmt: str, filters: ExportFilters, chunk_size: int | None = None
) -> Iterator[bytes]:
    """The export of ``project`` in ``fmt`` (json | jsonl | csv) as an iterator of byte blocks.

    Items are queried lazily, chunk by chunk, as blocks are asked for, so the caller can
    hand the iterator to a StreamingHttpResponse. Raises ValueError for an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}")
    chunks = export_record_chunks(project=project, filters=filters, chunk_size=chunk_size or EXPORT_CHUNK_SIZE)
    if fmt == "jsonl":
        return _encode_jsonl(chunks)
    if fmt == "csv":
        return _encode_csv(chunks)
    classes = [
        {"id": c.pk, "name": c.name, "shortcut": c.shortcut, "color": c.color, "order": c.order}
        for c in export_label_classes(project=project)
    ]
    header = {
        "id": project.pk,
        "name": project.name,
        "task_type": project.task_type,
        "exported_at": timezone.now().isoformat(),
        "filters": filters.as_dict(),
    }
    return _encode_json(chunks, header=header, classes=classes)
