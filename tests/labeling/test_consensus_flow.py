"""Adaptive overlap and expert review, end to end through the queue, on the real database."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from labeling.models import ConsensusLabel, Item, Membership, MLJob
from labeling.services.consensus import consensus_recompute, consensus_update_items, item_set_gold
from labeling.services.queue import annotation_submit, lease_next
from tests.factories import ItemFactory, MembershipFactory, project_with_members


def _label(project, name: str) -> int:
    return project.classes.get(name=name).pk


def _annotate(project, user, label_id: int, capture) -> Item:  # type: ignore[no-untyped-def]
    lease = lease_next(project=project, user=user)
    assert lease is not None
    with capture(execute=True):
        annotation_submit(user=user, lease_id=lease.pk, label_id=label_id, client_id=uuid.uuid4(), duration_ms=1000)
    return Item.objects.get(pk=lease.item_id)


@pytest.fixture
def disputed(db):  # type: ignore[no-untyped-def]
    project, manager, annotators = project_with_members(overlap=3, n_annotators=4, classes=["cat", "dog"])
    project.max_overlap = 4
    project.consensus_threshold = 0.7
    project.save()
    item = ItemFactory(project=project, wanted=3)
    reviewer = MembershipFactory(project=project, role=Membership.Role.REVIEWER).user
    return project, manager, annotators, reviewer, item


def test_disagreement_asks_one_more_reader_then_review(disputed, django_capture_on_commit_callbacks, api_client):  # type: ignore[no-untyped-def]
    project, manager, (a1, a2, a3, a4), reviewer, item = disputed
    cat, dog = _label(project, "cat"), _label(project, "dog")
    _annotate(project, a1, cat, django_capture_on_commit_callbacks)
    _annotate(project, a2, cat, django_capture_on_commit_callbacks)
    item.refresh_from_db()
    assert item.status == Item.Status.OPEN and item.wanted == 3
    _annotate(project, a3, dog, django_capture_on_commit_callbacks)

    item.refresh_from_db()
    consensus = ConsensusLabel.objects.get(item=item)
    assert consensus.label_id == cat and consensus.confidence == pytest.approx(2 / 3)
    # 2-1 is below the 0.7 threshold: one more reader wanted, the item is back in the queue.
    assert (item.wanted, item.status) == (4, Item.Status.OPEN)

    _annotate(project, a4, dog, django_capture_on_commit_callbacks)
    item.refresh_from_db()
    # 2-2 at max_overlap: to the reviewer, and nobody else is served it.
    assert item.status == Item.Status.REVIEW
    assert lease_next(project=project, user=manager) is None

    api_client.force_authenticate(reviewer)
    nxt = api_client.get(reverse("review-next", kwargs={"project_id": project.pk}))
    assert nxt.status_code == 200 and nxt.data["item_id"] == item.pk
    assert sorted(a["label_id"] for a in nxt.data["annotations"]) == sorted([cat, cat, dog, dog])

    resp = api_client.post(
        reverse("review-create", kwargs={"project_id": project.pk}), {"item": item.pk, "label": dog}, format="json"
    )
    assert resp.status_code == 201
    item.refresh_from_db()
    consensus.refresh_from_db()
    assert item.status == Item.Status.REVIEWED
    assert (consensus.label_id, consensus.method, consensus.confidence) == (dog, "review", 1.0)
    assert item.annotations.filter(retracted_at__isnull=True).count() == 4  # never overwritten
    assert api_client.get(reverse("review-next", kwargs={"project_id": project.pk})).status_code == 204

    # The review is final, also for a full recompute.
    consensus_recompute(project_id=project.pk, n_boot=10)
    consensus.refresh_from_db()
    assert (consensus.label_id, consensus.method) == (dog, "review")


def test_agreement_leaves_the_item_done(disputed, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    project, _, (a1, a2, a3, _a4), _, item = disputed
    cat = _label(project, "cat")
    for user in (a1, a2, a3):
        _annotate(project, user, cat, django_capture_on_commit_callbacks)
    item.refresh_from_db()
    assert (item.status, item.wanted) == (Item.Status.DONE, 3)
    assert ConsensusLabel.objects.get(item=item).confidence == 1.0


def test_review_permissions(disputed, api_client):  # type: ignore[no-untyped-def]
    project, _, (a1, *_), _, item = disputed
    api_client.force_authenticate(a1)
    url = reverse("review-next", kwargs={"project_id": project.pk})
    assert api_client.get(url).status_code == 403
    outsider = MembershipFactory(role=Membership.Role.MANAGER).user  # manager of another project
    api_client.force_authenticate(outsider)
    assert api_client.get(url).status_code == 404
    resp = api_client.put(
        reverse("item-gold", kwargs={"project_id": project.pk, "item_id": item.pk}), {"label": None}, format="json"
    )
    assert resp.status_code == 404


def test_gold_answer_is_the_consensus_and_scores_annotators(disputed, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    project, manager, (a1, a2, a3, _a4), _, item = disputed
    cat, dog = _label(project, "cat"), _label(project, "dog")
    item_set_gold(item=item, label_id=dog)
    for user, label in ((a1, cat), (a2, cat), (a3, dog)):
        _annotate(project, user, label, django_capture_on_commit_callbacks)
    consensus = ConsensusLabel.objects.get(item=item)
    assert (consensus.label_id, consensus.method) == (dog, "gold")
    from labeling.selectors.consensus import quality_summary

    summary = quality_summary(project=project)
    by_user = {a["annotator_id"]: a for a in summary.annotators}
    assert by_user[a1.pk]["accuracy_vs_gold"] == 0.0 and by_user[a3.pk]["accuracy_vs_gold"] == 1.0


def test_full_recompute_uses_dawid_skene_with_enough_overlap(db):  # type: ignore[no-untyped-def]
    """Two readers who over-call 'cat' outvote a reliable one; Dawid–Skene learns whom to trust."""
    import random

    project, _, (good, over1, over2) = project_with_members(overlap=3, n_annotators=3, classes=["cat", "dog"])
    cat, dog = _label(project, "cat"), _label(project, "dog")
    rnd = random.Random(0)
    truth = [cat if i % 2 else dog for i in range(60)]
    items = [ItemFactory(project=project, wanted=3) for _ in truth]
    by_item = dict(zip((i.pk for i in items), truth, strict=True))
    for _ in truth:
        for user in (good, over1, over2):
            lease = lease_next(project=project, user=user)
            assert lease is not None
            true_label = by_item[lease.item_id]
            # The over-callers say cat for every cat and for 70% of the dogs.
            label = true_label if user == good or true_label == cat or rnd.random() > 0.7 else cat
            annotation_submit(user=user, lease_id=lease.pk, label_id=label, client_id=uuid.uuid4(), duration_ms=500)
    consensus_update_items(item_ids=list(by_item))

    def n_right() -> int:
        return sum(ConsensusLabel.objects.get(item_id=i).label_id == t for i, t in by_item.items())

    majority_right = n_right()
    assert majority_right < 50  # the over-callers win many dogs

    result = consensus_recompute(project_id=project.pk, n_boot=20)
    assert result["method"] == "dawid_skene"
    assert n_right() >= 58
    assert result["panel_error"] < 0.1
    assert MLJob.objects.filter(project=project, kind=MLJob.Kind.CONSENSUS).count() == 0  # below the auto cadence


def test_dashboard_quality_uses_dawid_skene_estimates_without_gold(db, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    from labeling.selectors.dashboard import project_quality
    from labeling.services.consensus import consensus_refresh_request

    project, _, readers = project_with_members(overlap=3, n_annotators=3, classes=["cat", "dog"])
    cat, dog = _label(project, "cat"), _label(project, "dog")
    truth = {ItemFactory(project=project, wanted=3).pk: (cat if i % 3 else dog) for i in range(30)}
    for _ in truth:
        for n, user in enumerate(readers):
            lease = lease_next(project=project, user=user)
            assert lease is not None
            right = truth[lease.item_id]
            label = right if n < 2 or lease.item_id % 4 else (dog if right == cat else cat)  # reader 3 errs 1 in 4
            annotation_submit(user=user, lease_id=lease.pk, label_id=label, client_id=uuid.uuid4(), duration_ms=500)
    before = project_quality(project=project, model_accuracy=None)
    assert before.human_level_error is None and not before.agreement_available
    with django_capture_on_commit_callbacks(execute=True):
        job = consensus_refresh_request(project=project)
    job.refresh_from_db()
    assert job.status == MLJob.Status.SUCCEEDED, job.error
    after = project_quality(project=project, model_accuracy=0.8)
    assert after.human_level_basis == "dawid_skene" and after.human_level_error is not None
    assert after.human_level_error < 0.1  # two readers are perfect
    assert after.panel_basis == "dawid_skene" and after.panel_error is not None and after.panel_error < 0.1
    assert after.agreement_available and after.agreement["fleiss_kappa"]["value"] > 0.5
    assert after.model_error == pytest.approx(0.2)


def test_manager_requests_a_recompute_through_the_job(disputed, django_capture_on_commit_callbacks, api_client):  # type: ignore[no-untyped-def]
    """POST consensus/refresh -> an MLJob run by the (eager, in tests) task -> quality summary."""
    project, manager, (a1, a2, a3, _a4), _, item = disputed
    cat = _label(project, "cat")
    for user in (a1, a2, a3):
        _annotate(project, user, cat, django_capture_on_commit_callbacks)
    api_client.force_authenticate(manager)
    assert api_client.get(reverse("quality", kwargs={"project_id": project.pk})).data["method"] is None
    with django_capture_on_commit_callbacks(execute=True):
        resp = api_client.post(reverse("consensus-refresh", kwargs={"project_id": project.pk}))
    assert resp.status_code == 202
    job = MLJob.objects.get(pk=resp.data["id"])
    assert job.status == MLJob.Status.SUCCEEDED, job.error
    quality = api_client.get(reverse("quality", kwargs={"project_id": project.pk})).data
    assert quality["method"] == "majority"  # one item: too little overlap for Dawid–Skene
    assert quality["panel_error"] == 0.0
    assert {a["annotator_id"] for a in quality["annotators"]} == {a1.pk, a2.pk, a3.pk}
    api_client.force_authenticate(a1)
    assert api_client.get(reverse("quality", kwargs={"project_id": project.pk})).status_code == 403


def test_cadence_is_debounced_on_submit_and_caught_by_the_periodic_check(  # type: ignore[no-untyped-def]
    disputed, django_capture_on_commit_callbacks, settings
):
    from labeling.services.consensus import cadence_check_recent

    settings.CONSENSUS_REFRESH_EVERY = 2
    settings.CELERY_TASK_ALWAYS_EAGER = False  # keep the queued job pending: we look at the row
    project, _, (a1, a2, a3, _a4), _, _item = disputed
    cat = _label(project, "cat")
    _annotate(project, a1, cat, django_capture_on_commit_callbacks)  # first check: 1 annotation, nothing due
    _annotate(project, a2, cat, django_capture_on_commit_callbacks)  # 2 due, but debounced
    jobs = MLJob.objects.filter(project=project, kind=MLJob.Kind.CONSENSUS)
    assert not jobs.exists()
    with django_capture_on_commit_callbacks(execute=False):
        assert cadence_check_recent() >= 1
    assert list(jobs.values_list("input_fingerprint", flat=True)) == ["auto:1"]


def test_panel_error_compares_the_readers_consensus_with_held_out_gold(db, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """A gold item's live consensus is its gold answer; the panel is scored on its own answers."""
    from labeling.selectors.dashboard import project_quality
    from labeling.services.consensus import consensus_refresh_request

    project, _, readers = project_with_members(overlap=3, n_annotators=3, classes=["cat", "dog"])
    cat, dog = _label(project, "cat"), _label(project, "dog")
    items = [ItemFactory(project=project, wanted=3) for _ in range(40)]
    said = {item.pk: (cat if i % 2 else dog) for i, item in enumerate(items)}
    for _ in items:
        for user in readers:  # a unanimous panel
            lease = lease_next(project=project, user=user)
            assert lease is not None
            annotation_submit(
                user=user, lease_id=lease.pk, label_id=said[lease.item_id], client_id=uuid.uuid4(), duration_ms=500
            )
    # Ten gold items; on two of them the gold answer is the other class: the panel is wrong there.
    for n, item in enumerate(items[:10]):
        wrong = dog if said[item.pk] == cat else cat
        item_set_gold(item=item, label_id=wrong if n < 2 else said[item.pk])
    assert ConsensusLabel.objects.get(item=items[0]).method == "gold"
    with django_capture_on_commit_callbacks(execute=True):
        job = consensus_refresh_request(project=project)
    job.refresh_from_db()
    assert job.status == MLJob.Status.SUCCEEDED, job.error
    assert job.result["panel_vs_gold"] == {"n": 10, "ok": 8}
    quality = project_quality(project=project, model_accuracy=None)
    assert quality.panel_basis == "gold" and quality.panel_n == 10
    assert quality.panel_error == pytest.approx(0.2)
