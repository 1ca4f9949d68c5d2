"""The queue under concurrency, on a real PostgreSQL: threads of annotators, one project.

Each thread has its own database connection (Django opens one per thread) and closes it
when done; the tests use committed transactions (``transaction=True``) so that the
threads really see each other's work.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from django.db import connection, connections
from django.db.models import Count, Q

from labeling.errors import ApplicationError
from labeling.models import Annotation, Item, Lease
from labeling.services.queue import (
    annotation_submit,
    annotation_undo,
    lease_next,
    lease_release,
    lease_skip,
    queue_counters_check,
)
from tests.factories import MembershipFactory, project_with_members
from tests.labeling.test_queue_services import label_of, make_items

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# Anything over `wanted` at any moment: live annotations plus active leases, counted from rows.
_OVER_ASSIGNED_SQL = """
SELECT i.id FROM labeling_item i
WHERE i.project_id = %s AND
  (SELECT count(*) FROM labeling_annotation a WHERE a.item_id = i.id AND a.retracted_at IS NULL)
  + (SELECT count(*) FROM labeling_lease l WHERE l.item_id = i.id AND l.state = 'active') > i.wanted
"""


def _run_threads(workers: list[Callable[[], None]], *, project_id: int) -> tuple[list[BaseException], int]:
    """Run the workers in threads; meanwhile watch for over-assignment. Returns (errors, watches)."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            finally:
                connections.close_all()

        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in workers]
    for t in threads:
        t.start()
    watches = 0
    while any(t.is_alive() for t in threads):
        with connection.cursor() as cursor:
            cursor.execute(_OVER_ASSIGNED_SQL, [project_id])
            over = cursor.fetchall()
        assert over == [], f"over-assigned while running: {over}"
        watches += 1
        time.sleep(0.05)
    for t in threads:
        t.join()
    return errors, watches


def _assert_final_invariants(project, overlap: int, n_items: int) -> None:  # type: ignore[no-untyped-def]
    live = Annotation.objects.filter(item__project=project, retracted_at__isnull=True)
    per_item = dict(live.values_list("item_id").annotate(n=Count("id")).values_list("item_id", "n"))
    assert len(per_item) == n_items
    assert set(per_item.values()) == {overlap}, "every item has exactly `overlap` live annotations"
    twice = live.values("item_id", "annotator_id").annotate(n=Count("id")).filter(n__gt=1)
    assert not twice.exists(), "no annotator annotated an item twice"
    assert not Lease.objects.filter(project=project, state=Lease.State.ACTIVE).exists()
    assert queue_counters_check(project=project) == []
    assert set(Item.objects.filter(project=project).values_list("status", flat=True)) == {Item.Status.DONE}


def test_32_annotators_drain_an_overlap_3_queue_without_over_assignment() -> None:
    overlap, n_items = 3, 60
    project, _, annotators = project_with_members(overlap=overlap, n_annotators=32)
    make_items(project, n_items)
    label_id = label_of(project).pk

    def annotator(user) -> Callable[[], None]:  # type: ignore[no-untyped-def]
        def work() -> None:
            # The workspace's rhythm: show one, prefetch the next, submit the shown one.
            current = lease_next(project=project, user=user)
            while current is not None:
                prefetched = lease_next(project=project, user=user, exclude_lease_ids=[current.pk])
                annotation_submit(
                    user=user, lease_id=current.pk, label_id=label_id, client_id=uuid.uuid4(), duration_ms=5
                )
                current = prefetched or lease_next(project=project, user=user)

        return work

    errors, watches = _run_threads([annotator(u) for u in annotators], project_id=project.pk)

    assert errors == []
    assert watches > 0
    _assert_final_invariants(project, overlap, n_items)
    # Everyone got work: the queue spreads items, it does not starve late threads.
    per_annotator = Annotation.objects.filter(item__project=project).values("annotator_id").distinct().count()
    assert per_annotator >= 16


def test_skips_releases_and_undos_under_load_keep_the_counters_true() -> None:
    overlap, n_items = 2, 40
    project, _, annotators = project_with_members(overlap=overlap, n_annotators=16)
    make_items(project, n_items)
    label_id = label_of(project).pk

    def annotator(user, seed: int) -> Callable[[], None]:  # type: ignore[no-untyped-def]
        rng = random.Random(seed)

        def work() -> None:
            while (lease := lease_next(project=project, user=user)) is not None:
                roll = rng.random()
                try:
                    if roll < 0.15:
                        lease_skip(user=user, lease_id=lease.pk)
                    elif roll < 0.25:
                        lease_release(user=user, lease_id=lease.pk)
                    else:
                        annotation, _ = annotation_submit(
                            user=user, lease_id=lease.pk, label_id=label_id, client_id=uuid.uuid4(), duration_ms=5
                        )
                        if roll > 0.9:  # undo, then answer again on the same lease
                            annotation_undo(user=user, annotation_id=annotation.pk)
                            annotation_submit(
                                user=user, lease_id=lease.pk, label_id=label_id, client_id=uuid.uuid4(), duration_ms=5
                            )
                except ApplicationError as exc:  # pragma: no cover - would be a bug
                    raise AssertionError(f"{exc.code}: {exc.message}") from exc

        return work

    errors, _ = _run_threads([annotator(u, i) for i, u in enumerate(annotators)], project_id=project.pk)
    assert errors == []
    assert queue_counters_check(project=project) == []

    # Skips and releases left slots that the 16 could no longer take: fresh annotators drain them.
    while Item.objects.filter(project=project).filter(~Q(status=Item.Status.DONE)).exists():
        user = MembershipFactory(project=project).user
        while (lease := lease_next(project=project, user=user)) is not None:
            annotation_submit(user=user, lease_id=lease.pk, label_id=label_id, client_id=uuid.uuid4(), duration_ms=5)
    _assert_final_invariants(project, overlap, n_items)
