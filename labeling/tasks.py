"""Celery tasks of the labeling app: thin interfaces that take an id and call one service.

Nothing heavy at module level; the service is imported inside the task body.
"""

from __future__ import annotations

from celery import shared_task

from labeling.errors import TransientJobError

IMPORT_JOB = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (TransientJobError,),
    "retry_backoff": 30,
    "retry_jitter": True,
    "max_retries": 3,
    "soft_time_limit": 55 * 60,
    "time_limit": 60 * 60,
}


@shared_task(name="labeling.import_items", **IMPORT_JOB)
def import_items(self, job_id: int) -> None:  # type: ignore[no-untyped-def]
    """Run an ImportJob (zip, staged uploads or server references)."""
    from labeling.services.items import import_job_run

    import_job_run(job_id=job_id)
