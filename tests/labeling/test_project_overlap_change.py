"""Changing a project's overlap reaches the items already in the queue."""

from __future__ import annotations

import pytest

from labeling.models import ConsensusLabel, Item
from labeling.services.projects import project_update
from labeling.services.queue import lease_next
from tests.factories import project_with_members
from tests.labeling.test_queue_services import assert_counters_clean, make_items, submit

pytestmark = pytest.mark.django_db(transaction=True)


def _statuses(project) -> dict[int, tuple[int, str]]:  # type: ignore[no-untyped-def]
    return {i.pk: (i.wanted, i.status) for i in Item.objects.filter(project=project)}


def test_raising_overlap_reopens_done_items_and_keeps_adaptive_extras() -> None:
    project, manager, (a, b, c) = project_with_members(overlap=1, n_annotators=3)
    project_update(project=project, actor=manager, max_overlap=4)
    done, leased, untouched, extra = make_items(project, 4)
    submit(lease_next(user=a, project=project))  # highest priority first: `done`
    lease_next(user=b, project=project)  # `done` is full now: b leases `leased`
    Item.objects.filter(pk=extra.pk).update(wanted=2)  # adaptive overlap asked for one more

    project_update(project=project, actor=manager, overlap=2)

    after = _statuses(project)
    assert after[done.pk] == (2, Item.Status.OPEN)
    assert after[leased.pk] == (2, Item.Status.OPEN)
    assert after[untouched.pk] == (2, Item.Status.OPEN)
    assert after[extra.pk] == (3, Item.Status.OPEN)
    # The reopened item goes to a second annotator, never back to the first.
    assert lease_next(user=c, project=project).item_id == done.pk
    assert lease_next(user=a, project=project).item_id != done.pk
    assert_counters_clean(project)


def test_lowering_overlap_completes_items_and_runs_their_consensus() -> None:
    project, manager, (a, b) = project_with_members(overlap=3, n_annotators=2, classes=["cat", "dog"])
    project_update(project=project, actor=manager, consensus_threshold=0.7)
    cat, dog = project.classes.order_by("id")
    agreed, disputed, one = make_items(project, 3)
    for user in (a, b):
        submit(lease_next(user=user, project=project), label=cat)  # `agreed`
    submit(lease_next(user=a, project=project), label=cat)  # `disputed`
    submit(lease_next(user=b, project=project), label=dog)
    submit(lease_next(user=a, project=project), label=cat)  # `one`
    assert {s for _, s in _statuses(project).values()} == {Item.Status.OPEN}

    project_update(project=project, actor=manager, overlap=2)

    after = _statuses(project)
    assert after[agreed.pk] == (2, Item.Status.DONE)
    # 1:1 (confidence 0.5) is below the 0.7 threshold: adaptive overlap asks for the third reader again,
    # exactly as it does after the submit that completes an item.
    assert after[disputed.pk] == (3, Item.Status.OPEN)
    assert after[one.pk] == (2, Item.Status.OPEN)
    assert ConsensusLabel.objects.get(item=agreed).label_id == cat.pk
    assert_counters_clean(project)


def test_overlap_change_leaves_review_states_alone() -> None:
    project, manager, _ = project_with_members(overlap=2, n_annotators=1)
    (item,) = make_items(project, 1)
    Item.objects.filter(pk=item.pk).update(status=Item.Status.REVIEW)
    project_update(project=project, actor=manager, overlap=1)
    assert _statuses(project)[item.pk] == (2, Item.Status.REVIEW)
