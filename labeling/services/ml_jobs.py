"""Web side of the learning loop: create MLJob rows and hand them to Celery after commit.

A job is a database row; the task receives only its id (STYLE B1, B7). Everything here is
cheap and torch-free: it runs inside web requests and the queue's submit path. The heavy
work lives in ``labeling.services.ml_runs`` (worker side).

Idempotency: ``(project, kind, input_fingerprint)`` is unique. Asking for a job whose
inputs equal those of a pending, running or succeeded job returns that job; asking again
for a failed one resets it to PENDING and enqueues it once more (a manual retry).

Losing Redis must not lose a job: the row is committed first, the enqueue happens in
``on_commit``; if the broker refuses, ``enqueued_at`` stays NULL and ``ml_jobs_reconcile``
(periodic, see docs/learning-loop.md) enqueues it later.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from labeling.errors import NotEnoughLabelsError
from labeling.models import Embedding, Item, MLJob, ModelVersion, Project
from labeling.selectors.ml import (
    embedding_count,
    project_backbone,
    training_input_fingerprint,
)

logger = logging.getLogger(__name__)

Kind = MLJob.Kind
Status = MLJob.Status
ACTIVE = (Status.PENDING, Status.RUNNING)

# Task names, not task objects: resolved lazily so importing this module never imports Celery tasks.
_TASK_FOR_KIND = {
    Kind.EMBED: "embed_items",
    Kind.TRAIN: "train_model",
    Kind.SCORE: "score_pool",
    Kind.CONSENSUS: "consensus_refresh",
}

# Namespace of the PostgreSQL advisory locks taken here (the second key is the project id).
_LOCK_NAMESPACE = 0x4D4C  # "ML"


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def _project_lock(project_id: int) -> None:
    """Serialise job scheduling per project until the end of the current transaction.

    An advisory lock rather than ``SELECT ... FOR UPDATE`` on the project row: the submit
    path may call ``training_maybe_schedule`` while holding item locks, and the worker
    updates ``project.active_model``; a row lock here would couple those in lock-order
    puzzles. The advisory lock touches nothing else. SQLite serialises writers anyway.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, project_id])


# --- create and enqueue ------------------------------------------------------------------


def ml_job_enqueue(*, job_id: int) -> bool:
    """Send the job's task to the broker; set ``enqueued_at`` on success.

    Never raises for a broker outage: logs it and leaves ``enqueued_at`` NULL (or as it was)
    for ``ml_jobs_reconcile`` to retry. Returns whether the broker took the message.
    """
    from kombu.exceptions import OperationalError as BrokerError

    from mltasks import tasks

    job = MLJob.objects.filter(pk=job_id).only("id", "kind", "status").first()
    if job is None or job.status not in ACTIVE:
        return False
    task = getattr(tasks, _TASK_FOR_KIND[Kind(job.kind)])
    try:
        # A short publish retry: the caller is a web request's on_commit hook, it must not hang.
        task.apply_async(
            args=[job.pk],
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        )
    except (BrokerError, ConnectionError, TimeoutError) as exc:
        logger.warning("ml job %s (%s): enqueue failed, left for reconcile: %s", job.pk, job.kind, exc)
        return False
    MLJob.objects.filter(pk=job.pk).update(enqueued_at=timezone.now())
    return True


def ml_job_create(
    *,
    project: Project,
    kind: str,
    input_fingerprint: str,
    message: str = "",
    result: dict[str, Any] | None = None,
    retry_failed: bool = True,
) -> tuple[MLJob, bool]:
    """Get or create the job for ``(project, kind, input_fingerprint)``; enqueue it after commit.

    Returns ``(job, queued)``: ``queued`` is True when this call (re)queued the job. An equal
    pending, running or succeeded job is returned untouched; an equal failed job is reset to
    PENDING and queued again when ``retry_failed`` (a person asked), else returned as it is.
    """
    with transaction.atomic():
        job = (
            MLJob.objects.select_for_update()
            .filter(project=project, kind=kind, input_fingerprint=input_fingerprint)
            .first()
        )
        if job is None:
            try:
                with transaction.atomic():
                    job = MLJob.objects.create(
                        project=project,
                        kind=kind,
                        input_fingerprint=input_fingerprint,
                        message=message or "Queued.",
                        result=result or {},
                    )
            except IntegrityError:
                # A concurrent equal request won the insert: return its job.
                job = MLJob.objects.get(project=project, kind=kind, input_fingerprint=input_fingerprint)
                return job, False
        elif job.status == Status.FAILED and retry_failed:
            job.status = Status.PENDING
            job.progress = 0.0
            job.message = message or "Queued again."
            job.error_code = ""
            job.error = ""
            job.enqueued_at = None
            job.finished_at = None
            job.heartbeat_at = None
            job.result = {**job.result, **(result or {})}
            job.save(
                update_fields=[
                    "status",
                    "progress",
                    "message",
                    "error_code",
                    "error",
                    "enqueued_at",
                    "finished_at",
                    "heartbeat_at",
                    "result",
                ]
            )
        else:
            return job, False
        transaction.on_commit(partial(ml_job_enqueue, job_id=job.pk))
    logger.info("ml job %s (%s) queued for project %s", job.pk, job.kind, project.pk)
    return job, True


def _active_job(*, project_id: int, kind: str) -> MLJob | None:
    return MLJob.objects.filter(project_id=project_id, kind=kind, status__in=ACTIVE).order_by("created_at").first()


# --- embedding ---------------------------------------------------------------------------


def embedding_request(*, project: Project, actor: AbstractBaseUser | None = None, retry_failed: bool = True) -> MLJob:
    """Queue embedding of the project's items that have no embedding for its backbone yet.

    Called after an import and by ``POST /projects/{id}/embed/``. One embed job at a time per
    project: a pending or running one is returned (it keeps picking up items until none is
    missing, so items imported meanwhile are covered). A failed equal job (e.g. an unreadable
    file, since fixed) is queued again when ``retry_failed``.
    """
    return _embedding_request(project=project, actor=actor, retry_failed=retry_failed)[0]


def _embedding_request(*, project: Project, actor: AbstractBaseUser | None, retry_failed: bool) -> tuple[MLJob, bool]:
    with transaction.atomic():
        _project_lock(project.pk)
        active = _active_job(project_id=project.pk, kind=Kind.EMBED)
        if active is not None:
            return active, False
        backbone = project_backbone(project=project)
        items = Item.objects.filter(project=project).aggregate(last=Max("id"))
        fingerprint = _fingerprint(
            "embed",
            backbone,
            Item.objects.filter(project=project).count(),
            items["last"],
            embedding_count(project_id=project.pk, backbone=backbone),
        )
        return ml_job_create(
            project=project,
            kind=Kind.EMBED,
            input_fingerprint=fingerprint,
            result={"requested_by": getattr(actor, "pk", None), "backbone": backbone},
            retry_failed=retry_failed,
        )


# --- scoring -----------------------------------------------------------------------------


def scoring_request(*, project: Project) -> MLJob:
    """Queue prediction + queue priorities with the project's active model (or cold start).

    The fingerprint covers the model version, the strategy, the embeddings and the labels, so
    scoring with equal inputs runs once; a new model or new embeddings make a new job.
    """
    project.refresh_from_db(fields=["active_model", "strategy", "backbone"])
    backbone = project_backbone(project=project)
    emb = Embedding.objects.filter(item__project=project, backbone=backbone).aggregate(last=Max("id"))
    fingerprint = _fingerprint(
        "score",
        project.active_model_id or "cold",
        project.strategy,
        backbone,
        embedding_count(project_id=project.pk, backbone=backbone),
        emb["last"],
        training_input_fingerprint(project=project),
    )
    job, _ = ml_job_create(
        project=project,
        kind=Kind.SCORE,
        input_fingerprint=fingerprint,
        result={"model_version_id": project.active_model_id, "strategy": project.strategy},
    )
    return job


# --- training ----------------------------------------------------------------------------


def labeled_train_count(*, project_id: int) -> int:
    """Labeled TRAIN-split items (a consensus row or a live annotation): what the cadence counts.

    Uses the queue's ``annotation_count`` column rather than a join on annotations, so it stays
    cheap on the submit path; it measures the same thing as a model version's ``n_train``.
    """
    return (
        Item.objects.filter(project_id=project_id, split=Item.Split.TRAIN)
        .filter(Q(consensus__isnull=False) | Q(annotation_count__gt=0))
        .count()
    )


def _train_job_create(*, project: Project, labeled: int, reason: str, actor: AbstractBaseUser | None) -> MLJob:
    """Inside the project lock: the active train job, or a new one for the current labels."""
    active = _active_job(project_id=project.pk, kind=Kind.TRAIN)
    if active is not None:
        return active
    job, _ = ml_job_create(
        project=project,
        kind=Kind.TRAIN,
        input_fingerprint=training_input_fingerprint(project=project),
        message=f"Queued ({reason}).",
        result={"reason": reason, "labeled_at_request": labeled, "requested_by": getattr(actor, "pk", None)},
    )
    return job


def training_request(*, project: Project, actor: AbstractBaseUser | None) -> MLJob:
    """A manager asks for a retrain now. Training never runs here: this queues an MLJob.

    At most one train job is pending or running per project: if one is, it is returned.
    Equal labels as an earlier successful job: that job is returned (nothing new to learn).
    Raises NotEnoughLabelsError with fewer than 2 labeled training items.
    """
    with transaction.atomic():
        _project_lock(project.pk)
        labeled = labeled_train_count(project_id=project.pk)
        if labeled < 2:
            raise NotEnoughLabelsError(
                "Label at least 2 training items before training.", extra={"labeled": labeled, "needed": 2}
            )
        return _train_job_create(project=project, labeled=labeled, reason="requested", actor=actor)


def _cadence_baseline(*, project_id: int) -> int:
    """Labels already covered by a model or a train job (whatever its outcome).

    Counting jobs as well as model versions keeps a failing training (e.g. one class only)
    from being rescheduled on every single submit: the next try waits for K more labels.
    """
    last_model = ModelVersion.objects.filter(project_id=project_id).order_by("-number").values("n_train").first()
    baseline = last_model["n_train"] if last_model else 0
    for result in MLJob.objects.filter(project_id=project_id, kind=Kind.TRAIN).values_list("result", flat=True):
        baseline = max(baseline, int((result or {}).get("labeled_at_request") or 0))
    return baseline


def training_maybe_schedule(*, project: Project) -> MLJob | None:
    """The retrain cadence: queue a retrain after every ``project.retrain_every`` new labels.

    Cheap enough for the submit path (two counts under a per-project advisory lock). Returns
    the queued (or already active) train job, or None when the cadence is not due.
    """
    every = max(1, int(project.retrain_every or 50))
    with transaction.atomic():
        _project_lock(project.pk)
        labeled = labeled_train_count(project_id=project.pk)
        if labeled < 2 or labeled - _cadence_baseline(project_id=project.pk) < every:
            return None
        return _train_job_create(project=project, labeled=labeled, reason="cadence", actor=None)


# --- reconcile ---------------------------------------------------------------------------


def ml_jobs_reconcile(*, now: Any = None) -> dict[str, int]:
    """Converge jobs that fell through the cracks; run periodically (``mltasks.reconcile_jobs``).

    - PENDING with ``enqueued_at`` NULL (the broker was down at commit) for longer than
      ``ML_JOB_ENQUEUE_GRACE_S``: enqueue.
    - PENDING enqueued longer than ``ML_JOB_REQUEUE_AFTER_S`` ago and never claimed (the
      message was lost, e.g. Redis restarted without persistence): enqueue again. A duplicate
      message is harmless, the claim step drops it.
    - RUNNING with a heartbeat older than ``ML_JOB_STALE_AFTER_S`` (the worker died): back to
      PENDING and enqueue; after ``ML_JOB_MAX_ATTEMPTS`` claims it is FAILED instead.
    - Projects with items missing embeddings and no active embed job: ``embedding_request``.
    - PENDING import jobs the broker refused (``labeling.services.items`` notes it in
      ``error``) for longer than the grace: enqueue again.
    Returns counts per action.
    """
    now = now or timezone.now()
    grace = timedelta(seconds=_setting("ML_JOB_ENQUEUE_GRACE_S", 60))
    requeue_after = timedelta(seconds=_setting("ML_JOB_REQUEUE_AFTER_S", 3600))
    stale_after = timedelta(seconds=_setting("ML_JOB_STALE_AFTER_S", 600))
    max_attempts = int(_setting("ML_JOB_MAX_ATTEMPTS", 5))
    counts = {
        "enqueued": 0,
        "requeued_lost": 0,
        "requeued_stale": 0,
        "failed_stale": 0,
        "embed_requested": 0,
        "imports_enqueued": 0,
    }

    never_sent = MLJob.objects.filter(status=Status.PENDING, enqueued_at__isnull=True, created_at__lte=now - grace)
    for job_id in never_sent.values_list("id", flat=True):
        counts["enqueued"] += ml_job_enqueue(job_id=job_id)

    lost = MLJob.objects.filter(status=Status.PENDING, enqueued_at__lte=now - requeue_after)
    for job_id in lost.values_list("id", flat=True):
        counts["requeued_lost"] += ml_job_enqueue(job_id=job_id)

    stale = Q(heartbeat_at__lte=now - stale_after) | Q(heartbeat_at__isnull=True, created_at__lte=now - stale_after)
    for job_id in MLJob.objects.filter(stale, status=Status.RUNNING).values_list("id", flat=True):
        with transaction.atomic():
            job = MLJob.objects.select_for_update().filter(stale, pk=job_id, status=Status.RUNNING).first()
            if job is None:  # it came back to life meanwhile
                continue
            if job.attempt >= max_attempts:
                job.status = Status.FAILED
                job.error_code = "too_many_attempts"
                job.error = f"Worker lost {job.attempt} times (no heartbeat for {stale_after})."
                job.message = "Failed: the worker kept dying."
                job.finished_at = now
                job.save(update_fields=["status", "error_code", "error", "message", "finished_at"])
                counts["failed_stale"] += 1
                logger.error("ml job %s (%s) failed after %s attempts", job.pk, job.kind, job.attempt)
                continue
            job.status = Status.PENDING
            job.message = f"Requeued: no heartbeat since {job.heartbeat_at or job.created_at:%Y-%m-%d %H:%M:%S}."
            job.enqueued_at = None
            job.save(update_fields=["status", "message", "enqueued_at"])
            transaction.on_commit(partial(ml_job_enqueue, job_id=job.pk))
        counts["requeued_stale"] += 1

    for project in Project.objects.exclude(
        pk__in=MLJob.objects.filter(kind=Kind.EMBED, status__in=ACTIVE).values("project_id")
    ).only("id", "backbone"):
        backbone = project_backbone(project=project)
        if Item.objects.filter(project=project).exclude(embeddings__backbone=backbone).exists():
            # retry_failed=False: a job that failed on these very items is not retried every minute.
            _, queued = _embedding_request(project=project, actor=None, retry_failed=False)
            counts["embed_requested"] += int(queued)
    counts["imports_enqueued"] = _import_jobs_reenqueue(before=now - grace)
    if any(counts.values()):
        logger.info("ml jobs reconcile: %s", counts)
    return counts


def _import_jobs_reenqueue(*, before: Any) -> int:
    """Import jobs whose enqueue failed (the broker was down): send them again.

    ``_enqueue`` in ``labeling.services.items`` writes a note into ``error`` of a PENDING job
    when the broker refuses it; a job that was sent has an empty ``error`` until it runs.
    The note is cleared first: if the broker refuses again, ``_enqueue`` writes it back.
    Returns how many the broker took.
    A duplicate delivery is harmless (the run claims the job under a row lock, and what an
    earlier run imported is refused as a duplicate by content hash).
    """
    from labeling.models import ImportJob
    from labeling.services.items import import_job_enqueue

    n = 0
    waiting = ImportJob.objects.filter(status=ImportJob.Status.PENDING, created_at__lte=before).exclude(error="")
    for job in waiting.only("id"):
        with transaction.atomic():
            claimed = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.PENDING).exclude(error="")
            if not claimed.update(error=""):
                continue
            import_job_enqueue(job=job)
        # The enqueue ran on commit: it left the note empty when the broker took the job.
        n += ImportJob.objects.filter(pk=job.pk, error="").exists()
    return n
