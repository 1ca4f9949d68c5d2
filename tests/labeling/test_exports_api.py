"""GET /api/v1/projects/{id}/export/: formats, filters, consensus, access, streaming."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from labeling.models import Annotation, ConsensusLabel, Item, Lease, Membership
from labeling.selectors.exports import CSV_COLUMNS, majority_vote
from tests.factories import ItemFactory, MembershipFactory, UserFactory, project_with_members

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

T0 = timezone.now().replace(microsecond=0)


def annotate(item, user, label, *, minutes=0, retracted=False, accepted=False):  # type: ignore[no-untyped-def]
    lease = Lease.objects.create(
        item=item, annotator=user, project=item.project, expires_at=T0, state=Lease.State.SUBMITTED
    )
    annotation = Annotation.objects.create(
        item=item,
        annotator=user,
        lease=lease,
        label=label,
        started_at=T0,
        duration_ms=1000 + minutes,
        suggestion_accepted=accepted,
        retracted_at=T0 if retracted else None,
    )
    Annotation.objects.filter(pk=annotation.pk).update(submitted_at=T0 + timedelta(minutes=minutes))
    return annotation


@pytest.fixture
def dataset(settings):  # type: ignore[no-untyped-def]
    """Five items covering every consensus case; classes cat/dog/bird with cat ordered last."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    project, manager, (a1, a2, a3) = project_with_members(n_annotators=3, classes=["cat", "dog", "bird"])
    project.name = 'Chest "X-ray"\r\n/../2024'
    project.save()
    cat, dog, bird = (project.classes.get(name=n) for n in ("cat", "dog", "bird"))
    # cat has the lowest id but the highest order: a tie between cat and dog goes to dog.
    cat.order = 9
    cat.save()
    i1 = ItemFactory(project=project, status=Item.Status.DONE, metadata={"patient": "p1"})
    annotate(i1, a1, cat, minutes=1, accepted=True)
    annotate(i1, a2, cat, minutes=2)
    annotate(i1, a3, dog, minutes=3)
    i2 = ItemFactory(project=project, status=Item.Status.REVIEW)
    annotate(i2, a1, cat, minutes=1)
    annotate(i2, a2, dog, minutes=2)
    i3 = ItemFactory(project=project, status=Item.Status.DONE, split=Item.Split.EVALUATION)
    annotate(i3, a1, cat)
    ConsensusLabel.objects.create(item=i3, label=bird, confidence=0.9, method="dawid_skene", n_annotations=1)
    i4 = ItemFactory(project=project, original_name="=HYPERLINK(evil).png")
    i5 = ItemFactory(project=project)
    annotate(i5, a1, bird, retracted=True)
    other, other_manager, (other_annotator,) = project_with_members()
    annotate(ItemFactory(project=other), other_annotator, other.classes.first())
    return {
        "project": project,
        "manager": manager,
        "annotator": a1,
        "items": [i1, i2, i3, i4, i5],
        "other": other,
        "other_manager": other_manager,
    }


def _get(client, project, query=""):  # type: ignore[no-untyped-def]
    return client.get(f"/api/v1/projects/{project.pk}/export/{query}")


def _body(response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, getattr(response, "content", b"")[:500]
    assert response.streaming
    return b"".join(response.streaming_content).decode()


def test_majority_vote_tie_break() -> None:
    rank = {1: (9, 1), 2: (0, 2), 3: (0, 3)}
    assert majority_vote([], rank=rank) is None
    assert majority_vote([1, 1, 2], rank=rank) == (1, pytest.approx(2 / 3))
    assert majority_vote([1, 2], rank=rank) == (2, 0.5)  # lowest order wins
    assert majority_vote([3, 2], rank=rank) == (2, 0.5)  # same order: lowest id
    assert majority_vote([2, 3, 3, 2, 1], rank=rank) == (2, 0.4)


def test_json_document(api_client, dataset) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(dataset["manager"])
    response = _get(api_client, dataset["project"], "?format=json")
    assert response["Content-Type"] == "application/json"
    doc = json.loads(_body(response))
    assert doc["project"]["id"] == dataset["project"].pk
    assert [c["name"] for c in doc["classes"]] == ["dog", "bird", "cat"]
    i1, i2, i3, i4, i5 = dataset["items"]
    assert [r["id"] for r in doc["items"]] == [i1.pk, i2.pk, i3.pk, i4.pk, i5.pk]
    r1, r2, r3, r4, r5 = doc["items"]
    assert r1["file_name"] == i1.original_name
    assert (r1["sha256"], r1["split"], r1["status"], r1["width"], r1["height"]) == (
        i1.sha256,
        "train",
        "done",
        32,
        24,
    )
    assert r1["metadata"] == {"patient": "p1"}
    assert [a["label"] for a in r1["annotations"]] == ["cat", "cat", "dog"]
    assert r1["annotations"][0]["annotator"] == dataset["annotator"].username
    assert r1["annotations"][0]["suggestion_accepted"] is True
    assert r1["annotations"][0]["duration_ms"] == 1001
    assert r1["annotations"][0]["submitted_at"].startswith(str((T0 + timedelta(minutes=1)).date()))
    assert r1["consensus"] == {"label": "cat", "confidence": pytest.approx(2 / 3), "method": "majority"}
    assert r2["consensus"] == {"label": "dog", "confidence": 0.5, "method": "majority"}  # tie: lowest order
    assert r3["consensus"] == {"label": "bird", "confidence": 0.9, "method": "dawid_skene"}  # the stored row
    assert r4["annotations"] == [] and r4["consensus"] is None
    assert r5["annotations"] == [] and r5["consensus"] is None  # retracted annotations do not count


def test_jsonl_with_split_filter(api_client, dataset) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(dataset["manager"])
    response = _get(api_client, dataset["project"], "?format=jsonl&split=evaluation")
    assert response["Content-Type"] == "application/x-ndjson"
    lines = _body(response).splitlines()
    assert [json.loads(line)["id"] for line in lines] == [dataset["items"][2].pk]
    lines = _body(_get(api_client, dataset["project"], "?format=jsonl&split=train")).splitlines()
    assert len(lines) == 4


def test_csv_rows_per_annotation_with_status_filter(api_client, dataset) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(dataset["manager"])
    response = _get(api_client, dataset["project"], "?format=csv&status=done,review")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    i1, i2, i3, _, _ = dataset["items"]
    assert [int(r["item_id"]) for r in rows] == [i1.pk] * 3 + [i2.pk] * 2 + [i3.pk]
    assert [r["label"] for r in rows[:3]] == ["cat", "cat", "dog"]
    assert {r["consensus_label"] for r in rows[:3]} == {"cat"}
    assert rows[3]["consensus_label"] == "dog" and float(rows[3]["consensus_confidence"]) == 0.5
    assert (rows[5]["consensus_label"], rows[5]["consensus_method"]) == ("bird", "dawid_skene")
    assert rows[0]["suggestion_accepted"] == "true"
    assert json.loads(rows[0]["metadata"]) == {"patient": "p1"}
    # repeated ?status= works like a comma list
    rows = list(csv.DictReader(io.StringIO(_body(_get(api_client, dataset["project"], "?format=csv&status=review")))))
    assert {int(r["item_id"]) for r in rows} == {i2.pk}


def test_csv_item_without_annotations_gets_one_row(api_client, dataset) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(dataset["manager"])
    rows = list(csv.DictReader(io.StringIO(_body(_get(api_client, dataset["project"], "?format=csv&status=open")))))
    i4, i5 = dataset["items"][3:]
    assert [int(r["item_id"]) for r in rows] == [i4.pk, i5.pk]
    assert all(r["annotator"] == r["label"] == r["consensus_label"] == "" for r in rows)
    assert rows[0]["file_name"] == "'=HYPERLINK(evil).png"  # no formula in a spreadsheet


def test_empty_export_is_valid(api_client, dataset) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(dataset["manager"])
    doc = json.loads(_body(_get(api_client, dataset["project"], "?status=reviewed")))
    assert doc["items"] == []
    assert _body(_get(api_client, dataset["project"], "?format=jsonl&status=reviewed")) == ""
    assert _body(_get(api_client, dataset["project"], "?format=csv&status=reviewed")).splitlines() == [
        ",".join(CSV_COLUMNS)
    ]


def test_default_format_is_json_and_filename_is_safe(api_client, dataset) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(dataset["manager"])
    response = _get(api_client, dataset["project"])
    json.loads(_body(response))
    disposition = response["Content-Disposition"]
    assert disposition == f'attachment; filename="annotate-{dataset["project"].pk}-chest-x-ray-2024.json"'
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize("query", ["?format=xml", "?split=test", "?status=done,bogus"])
def test_bad_filters(api_client, dataset, query) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(dataset["manager"])
    response = _get(api_client, dataset["project"], query)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


def test_format_param_works_with_token_and_session(dataset) -> None:  # type: ignore[no-untyped-def]
    """?format=csv must not trip DRF's URL_FORMAT_OVERRIDE content negotiation (a 404)."""
    token = Token.objects.create(user=dataset["manager"])
    client = Client()
    for fmt in ("csv", "jsonl", "json"):
        response = client.get(
            f"/api/v1/projects/{dataset['project'].pk}/export/?format={fmt}", HTTP_AUTHORIZATION=f"Token {token.key}"
        )
        assert response.status_code == 200, fmt
        _body(response)
    session = Client()
    session.force_login(dataset["manager"])
    assert session.get(f"/api/v1/projects/{dataset['project'].pk}/export/?format=csv").status_code == 200
    anonymous = Client().get(f"/api/v1/projects/{dataset['project'].pk}/export/?format=csv")
    assert anonymous.status_code in (401, 403)
    assert anonymous.json()["code"] in ("not_authenticated", "authentication_failed")


def test_access(api_client, dataset) -> None:  # type: ignore[no-untyped-def]
    project = dataset["project"]
    api_client.force_authenticate(dataset["annotator"])
    response = _get(api_client, project, "?format=csv")
    assert response.status_code == 403
    assert response.json()["code"] == "role_required"
    reviewer = MembershipFactory(project=project, role=Membership.Role.REVIEWER).user
    api_client.force_authenticate(reviewer)
    assert _get(api_client, project, "?format=csv").status_code == 200
    # a manager of another project: 404, whatever the format
    api_client.force_authenticate(dataset["other_manager"])
    for fmt in ("json", "jsonl", "csv"):
        response = _get(api_client, project, f"?format={fmt}")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    api_client.force_authenticate(UserFactory())
    assert _get(api_client, project).status_code == 404


def test_other_projects_items_are_never_exported(api_client, dataset) -> None:  # type: ignore[no-untyped-def]
    api_client.force_authenticate(dataset["other_manager"])
    doc = json.loads(_body(_get(api_client, dataset["other"])))
    assert len(doc["items"]) == 1
    assert {i.pk for i in dataset["items"]}.isdisjoint({r["id"] for r in doc["items"]})
