"""Celery tasks of the learning loop: thin interfaces over ``labeling.services.ml_runs``.

Nothing heavy at module level: this module is imported by the web process (to enqueue) and
by every worker's parent process, so it imports only Celery, the standard library and
``labeling.errors``. torch, the ORM and the services load lazily inside the task bodies
(HackSoft's trick; it also keeps CUDA out of the forking parent, PyTorch #68861).

Each task receives an MLJob id only; the service's claim step makes a duplicate delivery
harmless, so the tasks are late-acked and redelivered when a worker dies.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task

from labeling.errors import TransientJobError

logger = logging.getLogger(__name__)

# Routed to the "gpu" queue by settings.CELERY_TASK_ROUTES; they run on CPU where there is no GPU.
GPU_JOB = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (TransientJobError,),
    "retry_backoff": 30,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 3,
    "soft_time_limit": 55 * 60,
    "time_limit": 60 * 60,
}


def _log_done(task: object, kind: str, job_id: int, started: float) -> None:
    request = getattr(task, "request", None)
    logger.info(
        "%s job %s done: task_id=%s retries=%s in %.1f s",
        kind,
        job_id,
        getattr(request, "id", None),
        getattr(request, "retries", None),
        time.monotonic() - started,
    )


@shared_task(name="mltasks.embed_items", **GPU_JOB)
def embed_items(self, job_id: int) -> None:  # type: ignore[no-untyped-def]
    """Embed the project's items that lack an embedding for its backbone (resumable)."""
    from labeling.services.ml_runs import ml_run_embed

    started = time.monotonic()
    ml_run_embed(job_id=job_id)
    _log_done(self, "embed", job_id, started)


@shared_task(name="mltasks.train_model", **GPU_JOB)
def train_model(self, job_id: int) -> None:  # type: ignore[no-untyped-def]
    """Train a head on cached embeddings, evaluate it, publish a ModelVersion atomically."""
    from labeling.services.ml_runs import ml_run_train

    started = time.monotonic()
    ml_run_train(job_id=job_id)
    _log_done(self, "train", job_id, started)


@shared_task(name="mltasks.score_pool", **GPU_JOB)
def score_pool(self, job_id: int) -> None:  # type: ignore[no-untyped-def]
    """Predict the open items with the active model and rewrite the queue priorities."""
    from labeling.services.ml_runs import ml_run_score

    started = time.monotonic()
    ml_run_score(job_id=job_id)
    _log_done(self, "score", job_id, started)


@shared_task(name="mltasks.consensus_refresh", **{**GPU_JOB, "soft_time_limit": 10 * 60, "time_limit": 12 * 60})
def consensus_refresh(self, job_id: int) -> None:  # type: ignore[no-untyped-def]
    """Recompute the project's consensus with Dawid–Skene; store reliabilities and agreement."""
    from labeling.services.ml_runs import ml_run_consensus

    started = time.monotonic()
    ml_run_consensus(job_id=job_id)
    _log_done(self, "consensus", job_id, started)


@shared_task(
    name="mltasks.reconcile_jobs",
    acks_late=True,
    autoretry_for=(TransientJobError,),
    max_retries=0,
    soft_time_limit=5 * 60,
    time_limit=6 * 60,
    ignore_result=True,
)
def reconcile_jobs() -> dict[str, int]:
    """Periodic (beat): enqueue jobs the broker never took, requeue jobs whose worker died."""
    from django.db import OperationalError

    from labeling.services.ml_jobs import ml_jobs_reconcile

    try:
        return ml_jobs_reconcile()
    except OperationalError as exc:  # the database is down: the next beat tick tries again
        logger.warning("reconcile_jobs: database unavailable: %s", exc)
        return {}
