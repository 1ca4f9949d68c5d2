"""Consensus: turn the live annotations of an item into one label with a confidence.

Two paths share one aggregation core (``mltasks.core.consensus``):

* the fast path, ``consensus_update_items``, runs after every submit or undo for the
  touched items only: majority vote over the item's live annotations, or the Dawid–Skene
  posterior when the last full run left per-annotator confusion matrices (so a reader the
  model of reliabilities trusts counts for more even between full runs);
* the full path, ``consensus_recompute``, runs in a Celery task for the whole project:
  Dawid–Skene EM over every live annotation, gold answers clamped, reviewed items fixed.
  It stores the per-annotator reliabilities and the agreement report on its MLJob row,
  which the dashboard reads.

Both then apply adaptive overlap: a fully annotated item whose confidence is below the
project's threshold wants one more reader, up to ``max_overlap``, then goes to review.
Reviews and gold answers are final: the consensus of such an item is that answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from labeling.errors import ConflictError, InvalidLabelError, NotFoundError
from labeling.models import Annotation, ConsensusLabel, Item, LabelClass, MLJob, Project, Review
from mltasks.core.agreement import agreement_report
from mltasks.core.answers import AnswerTable
from mltasks.core.consensus import DawidSkene, MajorityVote

logger = logging.getLogger(__name__)

Status = Item.Status
Method = ConsensusLabel.Method
# Statuses the queue owns; consensus moves an item out of them only into REVIEW.
_QUEUE_STATUSES = (Status.OPEN, Status.FULL, Status.DONE)
# Dawid–Skene needs overlap to learn anything about a reader: below this many items with two
# or more answers the full run falls back to majority vote.
MIN_OVERLAP_ITEMS = 20


def _refresh_every() -> int:
    return int(getattr(settings, "CONSENSUS_REFRESH_EVERY", 200))


def _class_ids(project_id: int) -> list[int]:
    return list(LabelClass.objects.filter(project_id=project_id).order_by("order", "id").values_list("id", flat=True))


def _latest_reliabilities(project_id: int) -> dict[str, Any] | None:
    job = (
        MLJob.objects.filter(project_id=project_id, kind=MLJob.Kind.CONSENSUS, status=MLJob.Status.SUCCEEDED)
        .order_by("-finished_at")
        .only("result")
        .first()
    )
    if job is None or "confusion" not in job.result:
        return None
    return job.result


def _posteriors_with_confusions(
    table: AnswerTable, annotator_ids: Sequence[int], reliab: dict[str, Any], class_ids: list[int]
) -> np.ndarray | None:
    """One E-step with stored confusions and priors: the DS posterior without refitting.

    Returns None when the stored model does not match the project's current classes.
    """
    if reliab.get("class_ids") != class_ids:
        return None
    k = len(class_ids)
    stored = {int(a): np.asarray(m, dtype=np.float64) for a, m in reliab["confusion"].items()}
    uniform = np.full((k, k), 1.0 / k)
    # (n_annotators, k, k) confusions; a reader the full run never saw counts as uninformative.
    conf = np.stack([stored.get(int(a), uniform) for a in annotator_ids]) if annotator_ids else np.zeros((0, k, k))
    log_conf = np.log(np.clip(conf, 1e-9, None))
    log_post = np.tile(np.log(np.clip(np.asarray(reliab["priors"], dtype=np.float64), 1e-9, None)), (table.n_items, 1))
    # log p(true = c | answers) += log conf[annotator, c, label] for every answer
    np.add.at(log_post, table.item, log_conf[table.annotator, :, table.label])
    log_post -= log_post.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    return post / post.sum(axis=1, keepdims=True)


def _adaptive_overlap(item: Item, project: Project, confidence: float) -> None:
    """Ask for one more reader, or a reviewer, when a fully annotated item stays uncertain.

    The caller holds the item's row lock.
    """
    if item.status != Status.DONE or item.gold_label_id is not None:
        return
    if confidence >= project.consensus_threshold:
        return
    if item.wanted < project.max_overlap:
        item.wanted += 1
        item.status = Status.FULL if item.annotation_count + item.lease_count >= item.wanted else Status.OPEN
    else:
        item.status = Status.REVIEW
    Item.objects.filter(pk=item.pk).update(wanted=item.wanted, status=item.status)


def _upsert(rows: list[ConsensusLabel]) -> None:
    ConsensusLabel.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["item"],
        update_fields=["label", "confidence", "method", "posterior", "n_annotations", "updated_at"],
        batch_size=2000,
    )


def consensus_update_items(*, item_ids: Sequence[int]) -> int:
    """Recompute the consensus of the given items (fast path, after submit or undo).

    Writes ConsensusLabel rows (deletes them for items left with no live annotation),
    applies adaptive overlap, then lets the training cadence look at the new count.
    Returns the number of consensus rows written.
    """
    item_ids = sorted(set(item_ids))
    if not item_ids:
        return 0
    project_ids = set(Item.objects.filter(pk__in=item_ids).values_list("project_id", flat=True))
    written = 0
    for project_id in project_ids:
        written += _update_project_items(project_id, item_ids)
    return written


def _update_project_items(project_id: int, item_ids: list[int]) -> int:
    project = Project.objects.get(pk=project_id)
    class_ids = _class_ids(project_id)
    with transaction.atomic():
        # Lock in id order, as the queue does, so the two never deadlock.
        items = list(
            Item.objects.select_for_update()
            .filter(project_id=project_id, pk__in=item_ids)
            .order_by("pk")
            .only("id", "status", "wanted", "annotation_count", "lease_count", "gold_label_id")
        )
        rows = list(
            Annotation.objects.filter(item__in=items, retracted_at__isnull=True).values_list(
                "item_id", "annotator_id", "label_id"
            )
        )
        reviewed = dict(
            Review.objects.filter(item__in=items).order_by("item_id", "created_at").values_list("item_id", "label_id")
        )
        by_item = {item.pk: item for item in items}
        answered = sorted({r[0] for r in rows})
        ConsensusLabel.objects.filter(item__in=items).exclude(item_id__in=answered).delete()
        if not answered:
            return 0
        table, maps = AnswerTable.from_ids(
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], classes=class_ids, all_items=answered
        )
        reliab = _latest_reliabilities(project_id)
        probas = None
        method = Method.MAJORITY
        if reliab is not None:
            probas = _posteriors_with_confusions(table, list(maps.annotators), reliab, class_ids)
            method = Method.DAWID_SKENE
        if probas is None:
            vote = MajorityVote().fit(table)
            probas, labels, method = vote.probas_, vote.labels_, Method.MAJORITY
        else:
            labels = probas.argmax(axis=1)
        counts = np.bincount(table.item, minlength=table.n_items)
        out = []
        for i, item_id in enumerate(maps.items):
            item = by_item[item_id]
            fixed = reviewed.get(item_id) or item.gold_label_id
            if fixed is not None:
                label_id, confidence = fixed, 1.0
                row_method = Method.REVIEW if item_id in reviewed else Method.GOLD
                posterior = {str(fixed): 1.0}
            else:
                label_id, confidence, row_method = class_ids[int(labels[i])], float(probas[i].max()), method
                posterior = {str(c): round(float(p), 6) for c, p in zip(class_ids, probas[i], strict=True) if p > 0}
                _adaptive_overlap(item, project, confidence)
            out.append(
                ConsensusLabel(
                    item_id=item_id,
                    label_id=label_id,
                    confidence=confidence,
                    method=row_method,
                    posterior=posterior,
                    n_annotations=int(counts[i]),
                    updated_at=timezone.now(),
                )
            )
        _upsert(out)
        transaction.on_commit(lambda: _after_consensus(project))
    return len(out)


def _after_consensus(project: Project) -> None:
    """Cadence hooks: the full Dawid–Skene refresh and retraining, each queued at most once.

    Their checks count over the whole project, too much for every submit of a busy project:
    they run at most once per ``CADENCE_DEBOUNCE_SECONDS`` per project (a cache key), and
    the periodic ``labeling.cadence_check`` catches the last labels of a burst.
    """
    if not cache.add(f"annotate:cadence:{project.pk}", 1, timeout=_debounce_seconds()):
        return
    cadence_check(project=project)


def _debounce_seconds() -> int:
    return int(getattr(settings, "CADENCE_DEBOUNCE_SECONDS", 10))


def cadence_check(*, project: Project) -> None:
    """Queue a full consensus refresh every CONSENSUS_REFRESH_EVERY annotations, and let the
    training cadence decide about a retrain. Idempotent: job fingerprints make repeats no-ops."""
    from labeling.services.ml_jobs import ml_job_create, training_maybe_schedule

    n_live = Annotation.objects.filter(item__project_id=project.pk, retracted_at__isnull=True).count()
    bucket = n_live // _refresh_every()
    if bucket > 0:
        ml_job_create(
            project=project, kind=MLJob.Kind.CONSENSUS, input_fingerprint=f"auto:{bucket}", retry_failed=False
        )
    training_maybe_schedule(project=project)


def cadence_check_recent(*, within_seconds: int = 180) -> int:
    """Periodic: run the cadence check for every project with annotations in the last minutes."""
    since = timezone.now() - timedelta(seconds=within_seconds)
    project_ids = set(
        Annotation.objects.filter(submitted_at__gte=since).values_list("item__project_id", flat=True).distinct()
    )
    for project in Project.objects.filter(pk__in=project_ids):
        cadence_check(project=project)
    return len(project_ids)


def consensus_refresh_request(*, project: Project) -> MLJob:
    """A manager asks for a full recompute now: one job per distinct set of annotations."""
    from labeling.services.ml_jobs import ml_job_create

    agg = Annotation.objects.filter(item__project_id=project.pk).aggregate(
        n=Count("id"), retracted=Count("id", filter=Q(retracted_at__isnull=False))
    )
    reviews = Review.objects.filter(item__project_id=project.pk).count()
    fingerprint = f"manual:{agg['n']}:{agg['retracted']}:{reviews}"
    job, _ = ml_job_create(project=project, kind=MLJob.Kind.CONSENSUS, input_fingerprint=fingerprint)
    return job


def consensus_recompute(*, project_id: int, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """Full recompute for a project: Dawid–Skene (or majority with too little overlap).

    Returns a JSON-serialisable summary (per-annotator accuracy and confusion, priors,
    estimated panel error, agreement report) that the caller stores on the MLJob.
    """
    project = Project.objects.get(pk=project_id)
    class_ids = _class_ids(project_id)
    rows = list(
        Annotation.objects.filter(item__project_id=project_id, retracted_at__isnull=True)
        .order_by("id")
        .values_list("item_id", "annotator_id", "label_id")
    )
    if not rows or len(class_ids) < 2:
        return {"method": "none", "n_answers": 0, "class_ids": class_ids}
    table, maps = AnswerTable.from_ids(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], classes=class_ids
    )
    item_index = {item_id: i for i, item_id in enumerate(maps.items)}
    class_index = {c: i for i, c in enumerate(class_ids)}
    gold_items = dict(
        Item.objects.filter(project_id=project_id, gold_label__isnull=False).values_list("id", "gold_label_id")
    )
    reviewed = dict(
        Review.objects.filter(item__project_id=project_id)
        .order_by("item_id", "created_at")
        .values_list("item_id", "label_id")
    )
    clamp = {
        item_index[i]: class_index[c]
        for i, c in {**gold_items, **reviewed}.items()
        if i in item_index and c in class_index
    }
    per_item = np.bincount(table.item, minlength=table.n_items)
    use_ds = int((per_item >= 2).sum()) >= MIN_OVERLAP_ITEMS
    model = DawidSkene() if use_ds else MajorityVote()
    model.fit(table, gold=clamp)
    method = Method.DAWID_SKENE if use_ds else Method.MAJORITY
    probas, labels = model.probas_, model.labels_

    now = timezone.now()
    out = []
    for i, item_id in enumerate(maps.items):
        fixed = reviewed.get(item_id) or gold_items.get(item_id)
        if fixed is not None:
            out.append(
                ConsensusLabel(
                    item_id=item_id,
                    label_id=fixed,
                    confidence=1.0,
                    method=Method.REVIEW if item_id in reviewed else Method.GOLD,
                    posterior={str(fixed): 1.0},
                    n_annotations=int(per_item[i]),
                    updated_at=now,
                )
            )
            continue
        out.append(
            ConsensusLabel(
                item_id=item_id,
                label_id=class_ids[int(labels[i])],
                confidence=float(probas[i].max()),
                method=method,
                posterior={str(c): round(float(p), 6) for c, p in zip(class_ids, probas[i], strict=True) if p > 0},
                n_annotations=int(per_item[i]),
                updated_at=now,
            )
        )
    with transaction.atomic():
        _upsert(out)
        confident = {c.item_id: c.confidence for c in out if c.method in (Method.MAJORITY, Method.DAWID_SKENE)}
        for item in (
            Item.objects.select_for_update()
            .filter(pk__in=list(confident), status=Status.DONE)
            .order_by("pk")
            .only("id", "status", "wanted", "annotation_count", "lease_count", "gold_label_id")
        ):
            _adaptive_overlap(item, project, confident[item.pk])

    confusion = model.confusion_  # (n_annotators, k, k), rows = true class
    accuracy = model.accuracy_
    answers_per_annotator = np.bincount(table.annotator, minlength=table.n_annotators)
    human = [
        {
            "annotator_id": int(a),
            "n": int(answers_per_annotator[j]),
            "accuracy": float(accuracy[j]),
        }
        for j, a in enumerate(maps.annotators)
    ]
    report = agreement_report(table, n_boot=n_boot, rng=np.random.default_rng(seed))
    panel_vs_gold = _panel_vs_gold(
        table,
        use_ds=use_ds,
        gold={item_index[i]: class_index[c] for i, c in gold_items.items() if i in item_index},
        reviewed={item_index[i]: class_index[c] for i, c in reviewed.items() if i in item_index and c in class_index},
    )
    # The core speaks in indices; the dashboard needs annotator and class ids.
    for pair in report["pairwise"]:
        pair["a"], pair["b"] = int(maps.annotators[pair["a"]]), int(maps.annotators[pair["b"]])
    for row in report["per_class"]:
        row["class"] = int(class_ids[row["class"]])
    return {
        "method": method,
        "n_answers": table.n_answers,
        "n_items": table.n_items,
        "class_ids": class_ids,
        "priors": [float(p) for p in model.priors_],
        "confusion": {str(a): confusion[j].round(6).tolist() for j, a in enumerate(maps.annotators)} if use_ds else {},
        "annotators": human,
        # The expected share of consensus labels that are wrong, by the model's own posteriors.
        "panel_error": float(1.0 - probas.max(axis=1).mean()),
        # The readers' own consensus on gold items against the gold answers (gold held out).
        "panel_vs_gold": panel_vs_gold,
        "agreement": report,
    }


def _panel_vs_gold(
    table: AnswerTable, *, use_ds: bool, gold: dict[int, int], reviewed: dict[int, int]
) -> dict[str, int]:
    """How often the panel's consensus, made without the gold answers, matches them.

    The stored consensus of a gold item *is* its gold answer (clamped), so comparing the two
    would measure nothing. This fits the same aggregator again with only reviews clamped (gold
    held out, so the readers' reliabilities are not learned from the answers being checked)
    and counts agreement on the gold items the readers answered. Reviewed gold items are left
    out: their consensus is the reviewer's, not the panel's.
    """
    held_out = {i: c for i, c in gold.items() if i not in reviewed}
    if not held_out:
        return {"n": 0, "ok": 0}
    model = DawidSkene() if use_ds else MajorityVote()
    labels = model.fit(table, gold=reviewed).labels_
    idx = np.fromiter(held_out, dtype=np.int64, count=len(held_out))
    truth = np.fromiter(held_out.values(), dtype=np.int64, count=len(held_out))
    return {"n": int(idx.size), "ok": int((labels[idx] == truth).sum())}


def review_submit(*, item_id: int, reviewer: AbstractBaseUser, label_id: int, note: str = "") -> Review:
    """Record a reviewer's final decision; annotations stay as they are.

    The item must be in the project's review queue (status review, or any item a manager
    decides to settle). Raises NotFoundError, InvalidLabelError, ConflictError.
    """
    with transaction.atomic():
        item = Item.objects.select_for_update().filter(pk=item_id).first()
        if item is None:
            raise NotFoundError("Item not found.")
        if not LabelClass.objects.filter(pk=label_id, project_id=item.project_id).exists():
            raise InvalidLabelError("That label is not one of this project's classes.", extra={"label": label_id})
        if item.status == Status.REVIEWED:
            raise ConflictError("This item has already been reviewed.", code="already_reviewed")
        review = Review.objects.create(item=item, reviewer=reviewer, label_id=label_id, note=note)
        Item.objects.filter(pk=item.pk).update(status=Status.REVIEWED)
        n = Annotation.objects.filter(item=item, retracted_at__isnull=True).count()
        _upsert(
            [
                ConsensusLabel(
                    item_id=item.pk,
                    label_id=label_id,
                    confidence=1.0,
                    method=Method.REVIEW,
                    posterior={str(label_id): 1.0},
                    n_annotations=n,
                    updated_at=timezone.now(),
                )
            ]
        )
    return review


def item_set_gold(*, item: Item, label_id: int | None) -> Item:
    """Mark an item as gold with its known answer (or unmark it with None)."""
    if label_id is not None and not LabelClass.objects.filter(pk=label_id, project_id=item.project_id).exists():
        raise InvalidLabelError("That label is not one of this project's classes.", extra={"label": label_id})
    Item.objects.filter(pk=item.pk).update(gold_label_id=label_id)
    item.gold_label_id = label_id
    consensus_update_items(item_ids=[item.pk])
    return item
