"""Worker side of the learning loop: embed, train, score. The ONLY importer of torch code.

Every run follows the same four steps (STYLE B7), so a duplicate delivery, a retry or a
crash converges on the same rows:

1. *claim* (short transaction, the MLJob row locked): SUCCEEDED/FAILED or RUNNING with a
   fresh heartbeat -> return; otherwise RUNNING, ``attempt + 1``.
2. *compute* outside any transaction, only what is missing, heartbeat + progress per batch.
3. *write* upserts in short batches keyed by the unique constraints (an item is never
   embedded twice; a prediction row per item), artifacts to a temp file then ``os.replace``.
4. *finish*: SUCCEEDED with a summary, or FAILED with ``error_code``; transient failures
   (database, storage) release the claim and raise TransientJobError so Celery retries.

Every write of a run is guarded by its ``attempt``: if the job was taken over by another
worker (our heartbeat went stale and reconcile requeued it), the old run stops at its next
heartbeat instead of racing the new one.

torch, timm and the torch parts of ``mltasks.core`` are imported inside the functions, so
that importing this module (e.g. by the task module's lazy import) stays cheap.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import InterfaceError, connection, transaction
from django.db import OperationalError as DatabaseOperationalError
from django.db.models import Max
from django.utils import timezone
from numpy.typing import NDArray

from labeling.errors import MLJobFailedError, TransientJobError
from labeling.models import Embedding, Item, MLJob, ModelVersion, Prediction, Project
from labeling.selectors.ml import (
    EMBEDDING_DTYPE,
    embedding_count,
    embedding_matrix,
    evaluation_labels,
    item_list_missing_embeddings,
    project_backbone,
    project_class_ids,
    project_cost_so_far,
    training_labels,
)
from mltasks.core.errors import CoreError

if TYPE_CHECKING:
    from PIL import Image

    from mltasks.core.types import TrainResult

logger = logging.getLogger(__name__)

Kind = MLJob.Kind
Status = MLJob.Status

WRITE_BATCH = 1000  # rows per upsert statement: short transactions, bounded statement size
MIN_TRAIN_LABELS = 2


class _JobLost(Exception):
    """Our claim on the job was taken over (another attempt runs it now): stop quietly."""


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _stale_after() -> timedelta:
    return timedelta(seconds=_setting("ML_JOB_STALE_AFTER_S", 600))


# --- claim / heartbeat / finish ----------------------------------------------------------


def _job_claim(*, job_id: int, kind: str) -> MLJob | None:
    """Step 1. Returns the job, now RUNNING under a new attempt, or None when there is nothing to do."""
    now = timezone.now()
    with transaction.atomic():
        # No select_related: FOR UPDATE would lock the joined project row too.
        job = MLJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            logger.warning("ml job %s: no such job (deleted?)", job_id)
            return None
        if job.kind != kind:
            logger.error("ml job %s is a %s job, not %s: ignored", job_id, job.kind, kind)
            return None
        if job.status in (Status.SUCCEEDED, Status.FAILED):
            logger.info("ml job %s already %s: duplicate delivery ignored", job_id, job.status)
            return None
        if job.status == Status.RUNNING and job.heartbeat_at and job.heartbeat_at > now - _stale_after():
            logger.info("ml job %s is running elsewhere (attempt %s): duplicate delivery ignored", job_id, job.attempt)
            return None
        max_attempts = int(_setting("ML_JOB_MAX_ATTEMPTS", 5))
        if job.attempt >= max_attempts:
            _job_fail_row(job, code="too_many_attempts", message=f"Gave up after {job.attempt} attempts.")
            return None
        job.status = Status.RUNNING
        job.attempt += 1
        job.heartbeat_at = now
        job.message = f"Running (attempt {job.attempt})."
        job.save(update_fields=["status", "attempt", "heartbeat_at", "message"])
    return job


def _job_heartbeat(job: MLJob, *, progress: float | None = None, message: str | None = None) -> None:
    """Bump heartbeat (and progress/message) if the job is still ours; raise _JobLost otherwise."""
    fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
    if progress is not None:
        fields["progress"] = max(0.0, min(1.0, float(progress)))
    if message is not None:
        fields["message"] = message[:300]
    updated = MLJob.objects.filter(pk=job.pk, attempt=job.attempt, status=Status.RUNNING).update(**fields)
    if not updated:
        raise _JobLost(f"ml job {job.pk}: attempt {job.attempt} was superseded")


def _job_lock_own(job: MLJob) -> MLJob:
    """Inside a transaction: lock the job row and check it is still our attempt."""
    row = MLJob.objects.select_for_update().filter(pk=job.pk, attempt=job.attempt, status=Status.RUNNING).first()
    if row is None:
        raise _JobLost(f"ml job {job.pk}: attempt {job.attempt} was superseded")
    return row


def _job_finish(job: MLJob, *, result: dict[str, Any], message: str) -> None:
    """Step 4 (success). Call inside the transaction that publishes the job's output."""
    row = _job_lock_own(job)
    row.status = Status.SUCCEEDED
    row.progress = 1.0
    row.message = message[:300]
    row.result = {**(row.result or {}), **result}
    row.finished_at = row.heartbeat_at = timezone.now()
    row.error_code = row.error = ""
    row.save(
        update_fields=["status", "progress", "message", "result", "finished_at", "heartbeat_at", "error_code", "error"]
    )


def _job_fail_row(job: MLJob, *, code: str, message: str) -> None:
    job.status = Status.FAILED
    job.error_code = code[:60]
    job.error = message
    job.message = f"Failed: {message}"[:300]
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error_code", "error", "message", "finished_at"])


def _job_fail(job: MLJob, *, code: str, message: str) -> None:
    with transaction.atomic():
        try:
            row = _job_lock_own(job)
        except _JobLost:
            return
        _job_fail_row(row, code=code, message=message)
    logger.error("ml job %s (%s) failed [%s] on attempt %s: %s", job.pk, job.kind, code, job.attempt, message)


def _job_release(job: MLJob, *, message: str) -> None:
    """A transient failure: back to PENDING so the retry (or reconcile) can claim it at once."""
    try:
        MLJob.objects.filter(pk=job.pk, attempt=job.attempt, status=Status.RUNNING).update(
            status=Status.PENDING, message=f"Retrying: {message}"[:300]
        )
    except (DatabaseOperationalError, InterfaceError):
        # The database is what failed: the heartbeat goes stale and reconcile requeues it.
        logger.warning("ml job %s: could not release the claim", job.pk)


def _run(*, job_id: int, kind: str, body: Callable[[MLJob], None]) -> None:
    """Claim, run ``body`` (which computes, writes and calls ``_job_finish``), record failures.

    Failure policy (STYLE B9): TransientJobError, database outages and storage errors release
    the claim and raise TransientJobError (Celery retries with backoff). MLJobFailedError and
    core errors fail the job permanently. Anything else is a bug: recorded and re-raised.
    """
    job = _job_claim(job_id=job_id, kind=kind)
    if job is None:
        return
    _threads_apply()
    started = time.monotonic()
    try:
        body(job)
    except _JobLost as exc:
        logger.warning("%s", exc)
    except TransientJobError as exc:
        _job_release(job, message=str(exc))
        raise
    except (DatabaseOperationalError, InterfaceError) as exc:
        _job_release(job, message=f"database: {exc}")
        raise TransientJobError(f"ml job {job.pk}: database unavailable: {exc}") from exc
    except MLJobFailedError as exc:
        _job_fail(job, code=exc.code, message=str(exc))
    except CoreError as exc:
        _job_fail(job, code=exc.code, message=str(exc))
    except OSError as exc:
        # Storage (artifact root, media): worth a retry; MAX_ATTEMPTS bounds it.
        _job_release(job, message=f"storage: {exc}")
        raise TransientJobError(f"ml job {job.pk}: storage error: {exc}") from exc
    except Exception as exc:
        _job_fail(job, code="internal_error", message=f"{type(exc).__name__}: {exc}")
        raise
    else:
        logger.info("ml job %s (%s) attempt %s done in %.1f s", job.pk, kind, job.attempt, time.monotonic() - started)


def _threads_apply() -> None:
    """``ML_TORCH_THREADS`` > 0 caps torch's intra-op threads in this worker process.

    On a machine whose cores are shared with other work, one thread is several times faster
    than torch's default (one per core) for both embedding and head training: the threads
    spin waiting for each other. 0 (default) keeps torch's own choice.
    """
    n = int(_setting("ML_TORCH_THREADS", 0) or 0)
    if n > 0:
        from mltasks.core import runtime

        runtime.threads_set(n)


@contextmanager
def _heartbeat_while(job: MLJob, *, message: str) -> Iterator[None]:
    """Keep the heartbeat fresh during one long compute call with no batches (training).

    A daemon thread with its own database connection (closed when it stops); it never
    raises, the main thread notices a lost claim at its next write.
    """
    interval = max(1.0, min(30.0, _stale_after().total_seconds() / 4))
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval):
                MLJob.objects.filter(pk=job.pk, attempt=job.attempt, status=Status.RUNNING).update(
                    heartbeat_at=timezone.now(), message=message
                )
        except Exception:  # noqa: BLE001 - a missed heartbeat is not worth killing the run
            logger.warning("ml job %s: heartbeat thread stopped", job.pk, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{job.pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


# --- shared helpers ----------------------------------------------------------------------


def _device() -> str:
    """The torch device for this run: asked inside the task, never at import (PyTorch #68861)."""
    from mltasks.core import runtime

    return runtime.device_get(str(_setting("ML_DEVICE", "auto")))


def _backbone_load(name: str) -> tuple[Any, Any]:
    """The backbone, cached per worker process (``runtime.backbone_cached`` is an lru_cache).

    ``ML_BACKBONE_WEIGHTS`` (optional) maps a backbone name to a local weights file.
    """
    from mltasks.core import runtime

    weights = (_setting("ML_BACKBONE_WEIGHTS", {}) or {}).get(name)
    return runtime.backbone_cached(name, weights, bool(_setting("ML_ALLOW_HUB_DOWNLOAD", False)))


def _project(job: MLJob) -> Project:
    return Project.objects.get(pk=job.project_id)


def _item_image(item: Item) -> Image.Image:
    """The item's image, decoded. A missing or undecodable file fails the job (permanent);
    other storage errors propagate as OSError (transient)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with item.file.open("rb") as fh:
            data = fh.read()
    except FileNotFoundError as exc:
        raise MLJobFailedError(f"Item {item.pk}: file {item.file.name} is missing.", code="item_unreadable") from exc
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MLJobFailedError(
            f"Item {item.pk} ({item.original_name}): image cannot be decoded: {exc}", code="item_unreadable"
        ) from exc
    return img


def _artifact_path(relative: str) -> Path:
    return Path(settings.ML_ARTIFACT_ROOT) / relative


def _artifact_write(*, relative: str, data: bytes) -> None:
    """Write under ML_ARTIFACT_ROOT atomically: a temp file in the same folder, fsync, os.replace."""
    final = _artifact_path(relative)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def _class_index(class_ids: list[int]) -> dict[int, int]:
    return {cid: k for k, cid in enumerate(class_ids)}


# --- embed -------------------------------------------------------------------------------


def ml_run_embed(*, job_id: int) -> None:
    """Embed every item of the job's project that has no Embedding for the project's backbone.

    Resumable: each batch is upserted (``ignore_conflicts`` on (item, backbone)) and committed
    on its own, so a crash keeps what was done and a re-run embeds only what is missing; an
    item is never embedded twice. Items imported while the job runs are picked up too.
    On success: queues scoring (cold-start priorities while there is no model) and checks
    the retrain cadence. Fails with ``item_unreadable`` on a missing or corrupt file.
    """
    _run(job_id=job_id, kind=Kind.EMBED, body=_embed)


def _embed(job: MLJob) -> None:
    from mltasks.core import features

    project = _project(job)
    backbone = project_backbone(project=project)
    batch_size = max(1, int(_setting("ML_BATCH_SIZE", 64)))
    _job_heartbeat(job, message=f"Loading backbone {backbone}.")
    with _heartbeat_while(job, message=f"Loading backbone {backbone}."):  # seconds on a cold worker
        model, spec = _backbone_load(backbone)
    device = _device()
    total = Item.objects.filter(project=project).count()
    done = embedding_count(project_id=project.pk, backbone=backbone)
    embedded_now = 0
    _job_heartbeat(job, progress=done / max(total, 1), message=f"Embedding: {done}/{total} items.")
    while True:
        ids = item_list_missing_embeddings(project_id=project.pk, backbone=backbone, limit=batch_size)
        if not ids:
            break
        items = list(Item.objects.filter(pk__in=ids).only("id", "file", "original_name").order_by("id"))
        images = [_item_image(item) for item in items]
        X = features.extract_features(images, model, spec, batch_size=batch_size, device=device)  # (b, dim)
        rows = [
            Embedding(
                item_id=item.pk,
                backbone=backbone,
                dim=int(X.shape[1]),
                vector=np.ascontiguousarray(X[i], dtype=EMBEDDING_DTYPE).tobytes(),
            )
            for i, item in enumerate(items)
        ]
        # Item deleted meanwhile: the FK insert would fail; only existing items are written.
        alive = set(Item.objects.filter(pk__in=[r.item_id for r in rows]).values_list("id", flat=True))
        Embedding.objects.bulk_create([r for r in rows if r.item_id in alive], ignore_conflicts=True)
        embedded_now += len(alive)
        done = embedding_count(project_id=project.pk, backbone=backbone)
        total = max(total, Item.objects.filter(project=project).count())
        _job_heartbeat(job, progress=done / max(total, 1), message=f"Embedding: {done}/{total} items.")

    from labeling.services.ml_jobs import scoring_request, training_maybe_schedule

    with transaction.atomic():
        _job_finish(
            job,
            result={"backbone": backbone, "spec": spec.to_dict(), "embedded": embedded_now, "total": done},
            message=f"Embedded {done} items ({embedded_now} new) with {backbone}.",
        )
        # Follow-ups are queued in the same transaction: they exist iff the job succeeded.
        scoring_request(project=project)
        training_maybe_schedule(project=project)


# --- train -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LabeledSet:
    item_ids: NDArray[np.int64]  # (n,)
    X: NDArray[np.float32]  # (n, d)
    y: NDArray[np.int64]  # (n,) class indices into class_ids
    missing_embeddings: int


def _labeled_set(*, project_id: int, backbone: str, labels: Any, class_ids: list[int]) -> _LabeledSet:
    """Join labels with cached embeddings; labeled items not embedded yet are left out (and counted)."""
    ids, X = embedding_matrix(project_id=project_id, backbone=backbone, item_ids=labels.item_ids.tolist())
    keep = np.isin(labels.item_ids, ids)  # both ascending: labels.item_ids[keep] == ids
    index = _class_index(class_ids)
    y = np.fromiter((index[int(c)] for c in labels.class_ids[keep]), dtype=np.int64, count=int(keep.sum()))
    return _LabeledSet(item_ids=ids, X=X, y=y, missing_embeddings=int((~keep).sum()))


def ml_run_train(*, job_id: int) -> None:
    """Train a head on the cached embeddings of the TRAIN split's labels; publish it atomically.

    The head covers every current LabelClass (``class_ids`` on the ModelVersion), so classes
    added to a running project are learned as soon as they have labels. It is evaluated on
    the evaluation-set items that have labels (never trained on). The artifact is written to
    ``ML_ARTIFACT_ROOT/<project>/<job>/head.pt`` (temp file + os.replace); then one
    transaction creates the ModelVersion with its metrics, makes it the project's active
    model, finishes the job and queues scoring. On any failure nothing is published.
    """
    _run(job_id=job_id, kind=Kind.TRAIN, body=_train)


def _train(job: MLJob) -> None:
    from mltasks.core import heads, metrics, runtime
    from mltasks.core.types import TrainConfig

    t0 = time.monotonic()
    project = _project(job)
    backbone = project_backbone(project=project)
    class_ids = project_class_ids(project_id=project.pk)
    if len(class_ids) < 2:
        raise MLJobFailedError("The project needs at least 2 classes to train a model.", code="not_enough_classes")
    _job_heartbeat(job, progress=0.05, message="Loading labels and embeddings.")
    train = _labeled_set(
        project_id=project.pk, backbone=backbone, labels=training_labels(project_id=project.pk), class_ids=class_ids
    )
    n_train = int(train.y.size)
    if n_train < MIN_TRAIN_LABELS or np.unique(train.y).size < 2:
        raise MLJobFailedError(
            f"Training needs at least {MIN_TRAIN_LABELS} embedded labeled items of 2 different classes; "
            f"found {n_train} ({train.missing_embeddings} labeled items are not embedded yet).",
            code="not_enough_labels",
        )
    seed = int(project.pk)
    runtime.seed_everything(seed)
    config = TrainConfig()
    t_load = time.monotonic()
    message = f"Training a {config.head} head on {n_train} labels, {len(class_ids)} classes."
    _job_heartbeat(job, progress=0.1, message=message)
    with _heartbeat_while(job, message=message):
        result = heads.train_head(train.X, train.y, len(class_ids), config, seed=seed)
    t_train = time.monotonic()

    _job_heartbeat(job, progress=0.8, message="Evaluating on the evaluation set.")
    ev = _labeled_set(
        project_id=project.pk, backbone=backbone, labels=evaluation_labels(project_id=project.pk), class_ids=class_ids
    )
    # (n_eval, C); an empty evaluation set gives metrics with n = 0 and null scores.
    probs = heads.predict_proba(result, ev.X) if ev.y.size else np.zeros((0, len(class_ids)), dtype=np.float32)
    scores = metrics.evaluate(probs, ev.y, len(class_ids))
    scores["class_ids"] = class_ids
    scores["eval_missing_embeddings"] = ev.missing_embeddings
    scores["validation"] = result.val_metrics
    scores["epochs"] = result.epochs
    scores["temperature"] = result.temperature

    relative = f"{project.pk}/{job.pk}/head.pt"
    _job_heartbeat(job, progress=0.9, message="Saving the model.")
    _artifact_write(relative=relative, data=result.to_bytes())
    cost = project_cost_so_far(project_id=project.pk)

    from labeling.services.ml_jobs import scoring_request, training_maybe_schedule

    with transaction.atomic():
        _job_lock_own(job)
        # The project row is locked only for this short publish: numbers stay unique and
        # active_model always points at the newest published version.
        Project.objects.select_for_update().filter(pk=project.pk).values_list("id", flat=True).get()
        number = (ModelVersion.objects.filter(project=project).aggregate(m=Max("number"))["m"] or 0) + 1
        version = ModelVersion.objects.create(
            project=project,
            number=number,
            backbone=backbone,
            head=config.head,
            class_ids=class_ids,
            artifact=relative,
            n_train=n_train,
            cost_at_training=cost,
            metrics=scores,
        )
        Project.objects.filter(pk=project.pk).update(active_model=version)
        _job_finish(
            job,
            result={
                "model_version_id": version.pk,
                "model_version": number,
                "n_train": n_train,
                "n_eval": int(ev.y.size),
                "accuracy": scores.get("accuracy"),
                "train_missing_embeddings": train.missing_embeddings,
                "seconds": {
                    "load": round(t_load - t0, 3),
                    "train": round(t_train - t_load, 3),
                    "evaluate_publish": round(time.monotonic() - t_train, 3),
                },
            },
            message=f"Published model v{number}: trained on {n_train} labels, "
            f"accuracy {_fmt(scores.get('accuracy'))} on {int(ev.y.size)} evaluation items.",
        )
        project.active_model = version
        scoring_request(project=project)
        # Labels that arrived during training may already be due for the next round.
        training_maybe_schedule(project=project)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


# --- score -------------------------------------------------------------------------------

NOT_DONE_EXCLUDE = (Item.Status.DONE, Item.Status.REVIEWED)


def _model_load(version: ModelVersion) -> TrainResult:
    from mltasks.core.types import TrainResult

    return TrainResult.from_bytes(_artifact_path(version.artifact).read_bytes())


def ml_run_score(*, job_id: int) -> None:
    """Predict the not-done items with the active model, then rewrite the TRAIN queue's priorities.

    Predictions: one Prediction row per item (label, confidence, probs over the model's
    ``class_ids``), upserted in batches. Priorities: only open TRAIN-split, non-gold items
    are touched (evaluation items are never prioritised by uncertainty). The project's
    strategy picks a batch of ``retrain_every`` items (batch-aware strategies pick a diverse
    batch) that get priorities in (1, 2] in selection order; every other pool item gets its
    strategy score scaled into [0, 1). With no model yet (cold start), the batch comes from
    TypiClust on the embeddings and the rest get 0.
    If a newer model was published meanwhile, priorities are left to that model's scoring.
    """
    _run(job_id=job_id, kind=Kind.SCORE, body=_score)


def _score(job: MLJob) -> None:
    from mltasks.core import acquisition

    project = _project(job)
    backbone = project_backbone(project=project)
    version = project.active_model
    seed = int(job.pk)
    rng = np.random.default_rng(seed)
    _job_heartbeat(job, progress=0.05, message="Loading embeddings.")

    todo = Item.objects.filter(project=project).exclude(status__in=NOT_DONE_EXCLUDE)
    ids, X = embedding_matrix(project_id=project.pk, backbone=backbone, item_ids=todo.values_list("id", flat=True))
    result: TrainResult | None = None
    probs: NDArray[np.float32] | None = None
    n_predicted = 0
    if version is not None and ids.size:
        result = _model_load(version)
        if result.n_features != X.shape[1]:
            raise MLJobFailedError(
                f"Model v{version.number} expects {result.n_features}-d features, embeddings are {X.shape[1]}-d.",
                code="backbone_mismatch",
            )
        probs = _predict(result, X)  # (n, C)
        n_predicted = _predictions_write(job, version=version, ids=ids, probs=probs)

    # The pool: open TRAIN items, not gold, with an embedding.
    pool_ids = set(
        Item.objects.filter(
            project=project, split=Item.Split.TRAIN, status=Item.Status.OPEN, gold_label__isnull=True
        ).values_list("id", flat=True)
    )
    in_pool = np.fromiter((int(i) in pool_ids for i in ids), dtype=bool, count=ids.size)
    pool_item_ids = ids[in_pool]
    strategy = project.strategy if version is not None else acquisition.COLD_START_STRATEGY
    priorities: NDArray[np.float64] = np.zeros(0)
    if pool_item_ids.size:
        _job_heartbeat(job, progress=0.7, message=f"Choosing the next items ({strategy}).")
        priorities = _priorities(
            project=project,
            strategy=strategy,
            X_pool=X[in_pool],
            probs_pool=None if probs is None else probs[in_pool],
            result=result,
            backbone=backbone,
            rng=rng,
            class_ids=[int(c) for c in version.class_ids] if version is not None else None,
        )

    with transaction.atomic():
        _job_lock_own(job)
        current = Project.objects.filter(pk=project.pk).values_list("active_model_id", flat=True).get()
        superseded = current != (version.pk if version else None)
        if not superseded:
            objs = [Item(pk=int(i), priority=float(p)) for i, p in zip(pool_item_ids, priorities, strict=True)]
            Item.objects.bulk_update(objs, ["priority"], batch_size=WRITE_BATCH)
        _job_finish(
            job,
            result={
                "model_version_id": version.pk if version else None,
                "strategy": strategy,
                "predicted": n_predicted,
                "prioritised": 0 if superseded else int(pool_item_ids.size),
                "superseded": superseded,
                "seed": seed,
            },
            message=(
                "A newer model was published: priorities left to its scoring."
                if superseded
                else f"Scored {n_predicted} items; queue of {pool_item_ids.size} items ordered by {strategy}."
            ),
        )


def _predict(result: TrainResult, X: NDArray[np.float32]) -> NDArray[np.float32]:
    from mltasks.core import heads

    return heads.predict_proba(result, X)


def _predictions_write(job: MLJob, *, version: ModelVersion, ids: NDArray[np.int64], probs: NDArray[np.float32]) -> int:
    """Upsert one Prediction per item, in batches, with a heartbeat after each."""
    class_ids = [int(c) for c in version.class_ids]
    top = probs.argmax(axis=1)  # (n,)
    total = int(ids.size)
    for start in range(0, total, WRITE_BATCH):
        stop = min(start + WRITE_BATCH, total)
        rows = [
            Prediction(
                item_id=int(ids[i]),
                model_version=version,
                label_id=class_ids[int(top[i])],
                confidence=float(probs[i, top[i]]),
                probs=[float(p) for p in probs[i]],
            )
            for i in range(start, stop)
        ]
        Prediction.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["item"],
            update_fields=["model_version", "label", "confidence", "probs", "updated_at"],
        )
        _job_heartbeat(job, progress=0.1 + 0.6 * stop / total, message=f"Predicted {stop}/{total} items.")
    return total


def _scaled(scores: NDArray[Any]) -> NDArray[np.float64]:
    """Scores mapped monotonically into [0, 1): higher score, higher priority."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 0 or not math.isfinite(hi - lo):
        return np.zeros_like(s)
    return (s - lo) / (hi - lo) * 0.999


def _priorities(
    *,
    project: Project,
    strategy: str,
    X_pool: NDArray[np.float32],
    probs_pool: NDArray[np.float32] | None,
    result: TrainResult | None,
    backbone: str,
    rng: np.random.Generator,
    class_ids: list[int] | None = None,
) -> NDArray[np.float64]:
    """Priorities (n_pool,): the strategy's batch first in selection order, then the rest by score."""
    from mltasks.core import acquisition, heads

    n = X_pool.shape[0]
    k = min(max(1, int(project.retrain_every or 50)), n)
    kwargs: dict[str, Any] = {}
    rest: NDArray[Any]
    mc_probs: NDArray[np.float32] | None = None
    needs_model = strategy not in ("random", "kcenter", "typiclust")
    if needs_model and (result is None or probs_pool is None):
        raise MLJobFailedError(f"Strategy {strategy!r} needs a trained model.", code="model_required")
    if strategy == "random":
        kwargs["embeddings"] = X_pool  # only its length is used
    if strategy in ("kcenter", "typiclust", "hybrid"):
        labeled = training_labels(project_id=project.pk)
        _, labeled_X = embedding_matrix(project_id=project.pk, backbone=backbone, item_ids=labeled.item_ids.tolist())
        kwargs["embeddings"] = X_pool
        if labeled_X.size:
            kwargs["labeled_embeddings"] = labeled_X
        if strategy == "hybrid" and result is not None:
            # Labels per class of the model's classes (columns of probs): how weak the model still is.
            index = _class_index(class_ids or [])
            known = [index[int(c)] for c in labeled.class_ids if int(c) in index]
            kwargs["labeled_counts"] = np.bincount(np.asarray(known, dtype=np.int64), minlength=result.n_classes)
    if strategy == "cluster_margin":
        kwargs["embeddings"] = X_pool
    if strategy in ("least_confidence", "margin", "entropy", "badge", "cluster_margin", "hybrid"):
        kwargs["probs"] = probs_pool
    if strategy == "badge" and result is not None:
        kwargs["embeddings"] = heads.penultimate_features(result, X_pool)
    if strategy == "bald" and result is not None:
        mc_probs = heads.mc_dropout_proba(result, X_pool, T=20, seed=int(rng.integers(2**31)))
        kwargs["mc_probs"] = mc_probs

    selected = acquisition.select(strategy, k, rng=rng, **kwargs)  # (k,) best first

    if strategy in ("least_confidence", "margin", "entropy") and probs_pool is not None:
        rest = getattr(acquisition, strategy)(probs_pool)
    elif strategy in ("cluster_margin", "hybrid") and probs_pool is not None:
        rest = acquisition.margin(probs_pool)
    elif strategy == "badge" and probs_pool is not None:
        rest = acquisition.least_confidence(probs_pool)
    elif strategy == "bald" and mc_probs is not None:
        rest = acquisition.bald(mc_probs)
    elif strategy == "kcenter":
        centers = np.concatenate([kwargs.get("labeled_embeddings", X_pool[:0]), X_pool[selected]])
        rest, _ = acquisition.min_sq_distances(np.ascontiguousarray(X_pool), np.ascontiguousarray(centers))
    elif strategy == "random":
        rest = rng.random((n,))
    else:  # typiclust (cold start): only the batch is ordered
        rest = np.zeros(n)
    priorities = _scaled(rest)
    priorities[selected] = 2.0 - np.arange(selected.size, dtype=np.float64) / max(selected.size, 1)
    return priorities


# --- consensus -------------------------------------------------------------------------


def ml_run_consensus(*, job_id: int) -> None:
    """Full Dawid–Skene recompute for the job's project (no torch; same claim/finish shape)."""
    _run(job_id=job_id, kind=Kind.CONSENSUS, body=_consensus)


def _consensus(job: MLJob) -> None:
    from labeling.services.consensus import consensus_recompute

    _job_heartbeat(job, progress=0.1, message="Fitting Dawid-Skene.")
    summary = consensus_recompute(project_id=job.project_id)
    with transaction.atomic():
        _job_finish(
            job,
            result=summary,
            message=f"{summary.get('method')}: {summary.get('n_answers', 0)} answers",
        )
