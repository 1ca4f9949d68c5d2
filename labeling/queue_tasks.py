"""Celery task of the queue: the periodic reclaim of expired leases.

A separate module from labeling/tasks.py (owned by the import work); labeling.apps imports
it in ready() so the worker registers it (Celery's autodiscovery only looks for ``tasks``).
"""

from __future__ import annotations

from celery import shared_task


@shared_task(
    name="labeling.reclaim_expired_leases", acks_late=True, ignore_result=True, soft_time_limit=50, time_limit=60
)
def reclaim_expired_leases() -> int:
    """Expire overdue leases in every project and give their slots back (beat: every 60 s).

    Safe to run twice or concurrently: the service locks with SKIP LOCKED and re-checks
    each lease's state, so a second run finds nothing left to do.
    """
    from labeling.services.queue import leases_reclaim_expired

    return leases_reclaim_expired()


@shared_task(name="labeling.cadence_check", acks_late=True, ignore_result=True, soft_time_limit=50, time_limit=60)
def cadence_check() -> int:
    """Run the consensus-refresh and retrain cadence for recently active projects (beat: 60 s).

    The submit path checks the cadence at most every few seconds per project; this catches
    the last labels of a burst. Idempotent: equal jobs are never queued twice.
    """
    from labeling.services.consensus import cadence_check_recent

    return cadence_check_recent()
