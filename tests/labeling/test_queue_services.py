"""The queue services: lease_next, annotation_submit, skip, release, undo, expiry.

Runs on PostgreSQL in CI (the SKIP LOCKED path) and on SQLite on a laptop (the portable
path); tests that depend on PostgreSQL semantics are marked ``postgres``.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from labeling.errors import (
    ClientIdConflictError,
    InvalidLabelError,
    LeaseExpiredError,
    LeaseNotOpenError,
    NotFoundError,
    NotLatestAnnotationError,
    TooManyLeasesError,
    UndoWindowPassedError,
)
from labeling.models import Annotation, Item, LabelClass, Lease, Membership, ModelVersion, Prediction, Project
from labeling.services import queue
from labeling.services.queue import (
    annotation_submit,
    annotation_undo,
    lease_next,
    lease_release,
    lease_skip,
    leases_reclaim_expired,
    queue_counters_check,
)
from tests.factories import project_with_members

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:  # type: ignore[no-untyped-def]
    # The user factory hashes a password per user; PBKDF2 would dominate these tests.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- helpers (imported by the other queue test modules) -----------------------------------


def make_items(
    project: Project,
    n: int,
    *,
    split: str = Item.Split.TRAIN,
    priority: float | None = None,
    gold: LabelClass | None = None,
    wanted: int | None = None,
) -> list[Item]:
    """``n`` items without real files (the queue never opens them), priorities descending."""
    start = Item.objects.filter(project=project).count()
    items = [
        Item(
            project=project,
            file="items/shared.png",
            original_name=f"img{start + i:06d}.png",
            sha256=uuid.uuid4().hex + uuid.uuid4().hex,
            width=32,
            height=24,
            split=split,
            priority=priority if priority is not None else float(n - i),
            wanted=wanted if wanted is not None else project.overlap,
            gold_label=gold,
        )
        for i in range(n)
    ]
    return Item.objects.bulk_create(items)


def label_of(project: Project) -> LabelClass:
    return LabelClass.objects.filter(project=project).order_by("id").first()  # type: ignore[return-value]


def submit(lease: Lease, *, label: LabelClass | None = None, client_id: uuid.UUID | None = None):  # type: ignore[no-untyped-def]
    project = Project.objects.get(pk=lease.project_id)
    return annotation_submit(
        user=lease.annotator,
        lease_id=lease.pk,
        label_id=(label or label_of(project)).pk,
        client_id=client_id or uuid.uuid4(),
        duration_ms=1500,
    )


def assert_counters_clean(project: Project) -> None:
    assert queue_counters_check(project=project) == []


# --- lease_next ----------------------------------------------------------------------------


def test_next_serves_highest_priority_first_then_resumes() -> None:
    project, _, (ann,) = project_with_members()
    low, high = make_items(project, 1, priority=1.0)[0], make_items(project, 1, priority=5.0)[0]

    lease = lease_next(project=project, user=ann)

    assert lease is not None and lease.item_id == high.pk
    assert lease.state == Lease.State.ACTIVE
    assert lease.expires_at > timezone.now() + timedelta(minutes=project.lease_minutes - 1)
    # A page reload: the same lease again, nothing new leased.
    again = lease_next(project=project, user=ann)
    assert again is not None and again.pk == lease.pk
    assert Lease.objects.filter(annotator=ann).count() == 1
    # Prefetch: excluding the shown lease leases the next item.
    prefetched = lease_next(project=project, user=ann, exclude_lease_ids=[lease.pk])
    assert prefetched is not None and prefetched.item_id == low.pk
    assert_counters_clean(project)


def test_ties_in_priority_break_by_id() -> None:
    project, _, (ann,) = project_with_members()
    items = make_items(project, 3, priority=1.0)
    lease = lease_next(project=project, user=ann)
    assert lease is not None and lease.item_id == min(i.pk for i in items)


def test_hoarding_guard_caps_active_leases(settings) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    make_items(project, 5)
    first = lease_next(project=project, user=ann)
    second = lease_next(project=project, user=ann, exclude_lease_ids=[first.pk])  # type: ignore[union-attr]
    with pytest.raises(TooManyLeasesError) as err:
        lease_next(project=project, user=ann, exclude_lease_ids=[first.pk, second.pk])  # type: ignore[union-attr]
    assert set(err.value.extra["active_lease_ids"]) == {first.pk, second.pk}  # type: ignore[union-attr]
    settings.QUEUE_MAX_ACTIVE_LEASES = 3
    assert lease_next(project=project, user=ann, exclude_lease_ids=[first.pk, second.pk]) is not None  # type: ignore[union-attr]


def test_none_when_nothing_is_left() -> None:
    project, _, (ann,) = project_with_members()
    assert lease_next(project=project, user=ann) is None
    (item,) = make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    submit(lease)  # type: ignore[arg-type]
    assert lease_next(project=project, user=ann) is None
    item.refresh_from_db()
    assert item.status == Item.Status.DONE


def test_overlap_fills_slots_then_item_is_full() -> None:
    project, _, anns = project_with_members(overlap=2, n_annotators=3)
    a, b = make_items(project, 2)

    la = lease_next(project=project, user=anns[0])
    lb = lease_next(project=project, user=anns[1])
    lc = lease_next(project=project, user=anns[2])

    assert la.item_id == a.pk and lb.item_id == a.pk  # type: ignore[union-attr]
    assert lc.item_id == b.pk  # type: ignore[union-attr]  # a has no free slot
    a.refresh_from_db()
    assert (a.status, a.lease_count, a.annotation_count) == (Item.Status.FULL, 2, 0)
    submit(la)  # type: ignore[arg-type]
    a.refresh_from_db()
    assert (a.status, a.lease_count, a.annotation_count) == (Item.Status.FULL, 1, 1)
    submit(lb)  # type: ignore[arg-type]
    a.refresh_from_db()
    assert (a.status, a.lease_count, a.annotation_count) == (Item.Status.DONE, 0, 2)
    assert_counters_clean(project)


def test_annotator_never_gets_an_item_twice() -> None:
    project, _, (ann, other) = project_with_members(overlap=3, n_annotators=2)
    items = make_items(project, 3)
    seen = []
    while (lease := lease_next(project=project, user=ann)) is not None:
        seen.append(lease.item_id)
        submit(lease)
    assert sorted(seen) == sorted(i.pk for i in items)
    # Still wanted by others, never again by ann.
    assert lease_next(project=project, user=other) is not None


def test_skipped_item_is_never_served_again_but_goes_to_others() -> None:
    project, _, (ann, other) = project_with_members(n_annotators=2)
    (item,) = make_items(project, 1)
    lease = lease_next(project=project, user=ann)

    skipped = lease_skip(user=ann, lease_id=lease.pk)  # type: ignore[union-attr]

    assert skipped.state == Lease.State.SKIPPED and skipped.closed_at is not None
    item.refresh_from_db()
    assert (item.status, item.lease_count) == (Item.Status.OPEN, 0)
    assert lease_next(project=project, user=ann) is None
    assert lease_next(project=project, user=other).item_id == item.pk  # type: ignore[union-attr]
    # A retried skip is a no-op; skipping a closed lease otherwise is a conflict.
    assert lease_skip(user=ann, lease_id=lease.pk).state == Lease.State.SKIPPED  # type: ignore[union-attr]
    with pytest.raises(LeaseNotOpenError):
        lease_release(user=ann, lease_id=lease.pk)  # type: ignore[union-attr]
    assert_counters_clean(project)


def test_release_frees_the_slot() -> None:
    project, _, (ann, other) = project_with_members(n_annotators=2)
    (item,) = make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    assert lease_next(project=project, user=other) is None  # the only slot is taken

    released = lease_release(user=ann, lease_id=lease.pk)  # type: ignore[union-attr]

    assert released.state == Lease.State.RELEASED
    assert lease_next(project=project, user=other).item_id == item.pk  # type: ignore[union-attr]
    with pytest.raises(LeaseNotOpenError):
        submit(lease)  # type: ignore[arg-type]
    assert_counters_clean(project)


def test_skip_and_release_of_someone_elses_lease_is_not_found() -> None:
    project, _, (ann, other) = project_with_members(n_annotators=2)
    make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    with pytest.raises(NotFoundError):
        lease_skip(user=other, lease_id=lease.pk)  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        lease_release(user=other, lease_id=lease.pk)  # type: ignore[union-attr]


# --- evaluation set and gold interleaving ----------------------------------------------------


def _split_shares(project: Project, user, pulls: int, seed: int = 0) -> Counter[str]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    splits: Counter[str] = Counter()
    for _ in range(pulls):
        lease = lease_next(project=project, user=user, rng=rng)
        assert lease is not None
        splits[Item.objects.get(pk=lease.item_id).split] += 1
        lease_skip(user=user, lease_id=lease.pk)
    return splits


def test_evaluation_items_are_interleaved_at_eval_rate() -> None:
    project, _, (ann,) = project_with_members()
    Project.objects.filter(pk=project.pk).update(eval_rate=0.25)
    project.refresh_from_db()
    make_items(project, 300, split=Item.Split.TRAIN)
    make_items(project, 300, split=Item.Split.EVALUATION)

    shares = _split_shares(project, ann, 240)

    # Binomial(240, 0.25): mean 60, sd 6.7; the seed makes it deterministic anyway.
    assert 40 <= shares[Item.Split.EVALUATION] <= 80


def test_an_empty_split_falls_back_to_the_other() -> None:
    project, _, (ann,) = project_with_members()
    Project.objects.filter(pk=project.pk).update(eval_rate=1.0)
    project.refresh_from_db()
    make_items(project, 2, split=Item.Split.TRAIN)
    assert _split_shares(project, ann, 2) == Counter({Item.Split.TRAIN: 2})


def test_gold_items_are_interleaved_at_gold_rate() -> None:
    project, _, (ann,) = project_with_members()
    gold = label_of(project)
    make_items(project, 20, priority=10.0)
    make_items(project, 20, priority=1.0, gold=gold)  # lower priority: served only by the gold pulls
    Project.objects.filter(pk=project.pk).update(gold_rate=0.5)
    project.refresh_from_db()
    rng = random.Random(1)
    golds = 0
    for _ in range(20):
        lease = lease_next(project=project, user=ann, rng=rng)
        golds += Item.objects.get(pk=lease.item_id).gold_label_id is not None  # type: ignore[union-attr]
        lease_skip(user=ann, lease_id=lease.pk)  # type: ignore[union-attr]
    assert 4 <= golds <= 16


# --- submit ---------------------------------------------------------------------------------


def test_submit_is_idempotent_on_client_id(django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    project, _, (ann,) = project_with_members()
    (item,) = make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    cid = uuid.uuid4()

    with django_capture_on_commit_callbacks() as callbacks:
        first, created = submit(lease, client_id=cid)  # type: ignore[arg-type]
    again, created_again = submit(lease, client_id=cid)  # type: ignore[arg-type]

    assert created and not created_again and again.pk == first.pk
    assert len(callbacks) == 1  # the consensus hook, after commit
    assert Annotation.objects.filter(annotator=ann).count() == 1
    lease.refresh_from_db()  # type: ignore[union-attr]
    assert lease.state == Lease.State.SUBMITTED and lease.closed_at is not None  # type: ignore[union-attr]
    item.refresh_from_db()
    assert (item.annotation_count, item.lease_count, item.status) == (1, 0, Item.Status.DONE)
    # The same client id with a different answer is a conflict, not a silent overwrite.
    other_label = LabelClass.objects.filter(project=project).exclude(pk=first.label_id).first()
    with pytest.raises(ClientIdConflictError):
        submit(lease, label=other_label, client_id=cid)  # type: ignore[arg-type]
    assert_counters_clean(project)


def test_submit_refuses_a_label_of_another_project() -> None:
    project, _, (ann,) = project_with_members()
    other_project, _, _ = project_with_members()
    make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    with pytest.raises(InvalidLabelError):
        submit(lease, label=label_of(other_project))  # type: ignore[arg-type]


def test_submit_for_someone_elses_lease_is_not_found() -> None:
    project, _, (ann, other) = project_with_members(n_annotators=2)
    make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    with pytest.raises(NotFoundError):
        annotation_submit(
            user=other,
            lease_id=lease.pk,
            label_id=label_of(project).pk,
            client_id=uuid.uuid4(),
            duration_ms=1,  # type: ignore[union-attr]
        )


def test_submit_after_losing_membership_is_not_found() -> None:
    project, _, (ann,) = project_with_members()
    make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    Membership.objects.filter(project=project, user=ann).delete()
    with pytest.raises(NotFoundError):
        submit(lease)  # type: ignore[arg-type]


def test_submit_records_the_suggestion_shown() -> None:
    project, _, (ann,) = project_with_members()
    (item,) = make_items(project, 1)
    (eval_item,) = make_items(project, 1, split=Item.Split.EVALUATION, priority=-1.0)
    label = label_of(project)
    version = ModelVersion.objects.create(project=project, number=1, backbone="b", class_ids=[label.pk], artifact="x")
    for it in (item, eval_item):
        Prediction.objects.create(item=it, model_version=version, label=label, confidence=0.9)
    lease = lease_next(project=project, user=ann)
    annotation, _ = annotation_submit(
        user=ann,
        lease_id=lease.pk,  # type: ignore[union-attr]
        label_id=label.pk,
        client_id=uuid.uuid4(),
        duration_ms=10,
        suggestion_accepted=True,
    )
    assert annotation.suggested_label_id == label.pk and annotation.model_version_id == version.pk
    assert annotation.suggestion_accepted
    # Evaluation items never show the model's guess, so none is recorded.
    lease = lease_next(project=project, user=ann)
    assert lease.item_id == eval_item.pk  # type: ignore[union-attr]
    annotation, _ = annotation_submit(
        user=ann,
        lease_id=lease.pk,
        label_id=label.pk,
        client_id=uuid.uuid4(),
        duration_ms=10,
        suggestion_accepted=True,  # type: ignore[union-attr]
    )
    assert annotation.suggested_label_id is None and not annotation.suggestion_accepted


# --- expiry ---------------------------------------------------------------------------------


def _expire(lease: Lease) -> None:
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def test_expired_lease_returns_the_item_and_its_late_submit_is_refused() -> None:
    project, _, (ann, other) = project_with_members(n_annotators=2)
    (item,) = make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    _expire(lease)  # type: ignore[arg-type]

    assert leases_reclaim_expired(project=project) == 1

    lease.refresh_from_db()  # type: ignore[union-attr]
    assert lease.state == Lease.State.EXPIRED  # type: ignore[union-attr]
    item.refresh_from_db()
    assert (item.status, item.lease_count) == (Item.Status.OPEN, 0)
    taken = lease_next(project=project, user=other)
    assert taken is not None and taken.item_id == item.pk
    with pytest.raises(LeaseExpiredError):
        submit(lease)  # type: ignore[arg-type]
    assert leases_reclaim_expired(project=project) == 0  # nothing left: a re-run converges
    assert_counters_clean(project)


def test_lease_next_reclaims_inline() -> None:
    project, _, (ann, other) = project_with_members(n_annotators=2)
    (item,) = make_items(project, 1)
    _expire(lease_next(project=project, user=ann))  # type: ignore[arg-type]
    taken = lease_next(project=project, user=other)
    assert taken is not None and taken.item_id == item.pk
    assert_counters_clean(project)


def test_late_submit_is_accepted_while_the_slot_is_free() -> None:
    project, _, (ann, bob) = project_with_members(n_annotators=2)
    a, b = make_items(project, 2)
    late = lease_next(project=project, user=ann)
    _expire(late)  # type: ignore[arg-type]
    # Not reclaimed yet: the slot is still this lease's.
    annotation, created = submit(late)  # type: ignore[arg-type]
    assert created and annotation.item_id == a.pk
    # Reclaimed, and nobody took the item meanwhile: the answer is still welcome.
    reclaimed = lease_next(project=project, user=bob)
    _expire(reclaimed)  # type: ignore[arg-type]
    leases_reclaim_expired(project=project)
    annotation, created = submit(reclaimed)  # type: ignore[arg-type]
    assert created
    a.refresh_from_db()
    assert (a.annotation_count, a.lease_count, a.status) == (1, 0, Item.Status.DONE)
    assert_counters_clean(project)


def test_reclaim_expired_leases_task_covers_all_projects() -> None:
    from labeling.queue_tasks import reclaim_expired_leases

    leases = []
    for _ in range(2):
        project, _, (ann,) = project_with_members()
        make_items(project, 1)
        leases.append(lease_next(project=project, user=ann))
    for lease in leases:
        _expire(lease)
    assert reclaim_expired_leases.apply().get() == 2
    assert not Lease.objects.filter(state=Lease.State.ACTIVE).exists()


def test_reclaim_in_batches(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    project, _, anns = project_with_members(n_annotators=5)
    make_items(project, 5)
    leases = [lease_next(project=project, user=ann) for ann in anns]
    for lease in leases:
        _expire(lease)  # type: ignore[arg-type]
    assert leases_reclaim_expired(project=project, batch_size=2) == 5
    assert_counters_clean(project)


# --- undo -----------------------------------------------------------------------------------


def test_undo_reopens_the_lease_and_gives_the_slot_back() -> None:
    project, _, (ann, other) = project_with_members(n_annotators=2)
    (item,) = make_items(project, 1)
    lease = lease_next(project=project, user=ann)
    annotation, _ = submit(lease)  # type: ignore[arg-type]

    reopened = annotation_undo(user=ann, annotation_id=annotation.pk)

    assert reopened.pk == lease.pk and reopened.state == Lease.State.ACTIVE  # type: ignore[union-attr]
    assert reopened.closed_at is None and reopened.expires_at > timezone.now()
    annotation.refresh_from_db()
    assert annotation.retracted_at is not None
    item.refresh_from_db()
    assert (item.annotation_count, item.lease_count, item.status) == (0, 1, Item.Status.FULL)
    assert lease_next(project=project, user=other) is None  # the slot went back to ann, not to the pool
    # A retried undo returns the same lease.
    assert annotation_undo(user=ann, annotation_id=annotation.pk).pk == lease.pk  # type: ignore[union-attr]
    # And the item can be answered again on the same lease.
    again, created = submit(reopened)
    assert created and again.pk != annotation.pk
    assert_counters_clean(project)


def test_undo_only_the_latest_within_the_window() -> None:
    project, _, (ann, other) = project_with_members(n_annotators=2)
    make_items(project, 3)
    first, _ = submit(lease_next(project=project, user=ann))  # type: ignore[arg-type]
    second, _ = submit(lease_next(project=project, user=ann))  # type: ignore[arg-type]

    with pytest.raises(NotLatestAnnotationError):
        annotation_undo(user=ann, annotation_id=first.pk)
    with pytest.raises(NotFoundError):
        annotation_undo(user=other, annotation_id=second.pk)
    Annotation.objects.filter(pk=first.pk).update(submitted_at=timezone.now() - timedelta(seconds=130))
    Annotation.objects.filter(pk=second.pk).update(submitted_at=timezone.now() - timedelta(seconds=121))
    with pytest.raises(UndoWindowPassedError):
        annotation_undo(user=ann, annotation_id=second.pk)
    assert annotation_undo(user=ann, annotation_id=second.pk, window_seconds=600).state == Lease.State.ACTIVE


# --- the portable path and the plan ---------------------------------------------------------


def test_portable_path_works_on_any_database(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The SQLite code path, run on whatever database the suite uses."""
    monkeypatch.setattr(queue, "_use_skip_locked", lambda: False)
    project, _, anns = project_with_members(overlap=2, n_annotators=3)
    make_items(project, 4)
    for _round in range(3):
        for ann in anns:
            lease = lease_next(project=project, user=ann)
            if lease is not None:
                submit(lease)
    assert_counters_clean(project)
    assert not Item.objects.filter(project=project).exclude(status=Item.Status.DONE).exists()


@pytest.mark.postgres
def test_pick_uses_the_partial_queue_index() -> None:
    project, _, (ann,) = project_with_members()
    make_items(project, 50)
    sql = queue.pick_sql()
    params = {
        "project_id": project.pk,
        "split": "train",
        "user_id": ann.pk,
        "now": timezone.now(),
        "expires_at": timezone.now(),
    }
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "item_queue_open" in plan, plan
    assert "Sort" not in plan.split("CTE bumped")[0], plan  # index order, no sort of the open items
