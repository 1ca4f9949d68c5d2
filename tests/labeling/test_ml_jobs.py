"""Web side of the learning loop: MLJob creation, enqueue after commit, idempotency, cadence,
reconcile, and the HTTP contract of the ML API. No torch runs here.

Enqueue tests that look at the broker use the real test Redis (``@pytest.mark.redis``); a
"Redis is down" case points the app at a closed port, a real connection failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import ConsensusLabel, Item, MLJob, ModelVersion, Project
from labeling.services.ml_jobs import (
    embedding_request,
    ml_job_enqueue,
    ml_jobs_reconcile,
    training_maybe_schedule,
    training_request,
)
from tests.factories import ItemFactory, MembershipFactory, UserFactory, project_with_members

pytestmark = pytest.mark.django_db


def _label_n(project: Project, n: int, split: str = Item.Split.TRAIN) -> list[Item]:
    label = project.classes.first()
    items = []
    for _ in range(n):
        item = ItemFactory(project=project, split=split, status=Item.Status.DONE, annotation_count=1)
        ConsensusLabel.objects.create(item=item, label=label, confidence=1.0, method=ConsensusLabel.Method.MAJORITY)
        items.append(item)
    return items


def _point_app_at(url: str, *, eager: bool) -> tuple[str, bool]:
    """Switch this process's Celery app to another broker; returns the old (url, eager).

    kombu keeps connection pools in a process-wide registry keyed by connection, so they are
    reset too: a pool closed by an earlier test must not be handed out again.
    """
    from kombu import pools

    from annotate.celery import app

    old = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.broker_url = url
    app.conf.task_always_eager = eager
    pools.reset()
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    return old


@pytest.fixture
def broker(settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """This process's Celery app on the real test Redis (not eager), with empty queues."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("NOT TESTED: needs Redis (TEST_REDIS_URL)")
    import redis

    old = _point_app_at(url, eager=False)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    client = redis.Redis.from_url(url)
    client.delete("gpu", "cpu")
    try:
        yield client
    finally:
        client.delete("gpu", "cpu")
        _point_app_at(old[0], eager=old[1])


@pytest.fixture
def broker_down(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Nothing listens on port 1: every publish fails with a real connection error."""
    old = _point_app_at("redis://127.0.0.1:1/0", eager=False)
    try:
        yield
    finally:
        _point_app_at(old[0], eager=old[1])


def _queued(client) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(task name, argsrepr) of every message waiting in the gpu queue."""
    out = []
    for raw in client.lrange("gpu", 0, -1):
        headers = json.loads(raw)["headers"]
        out.append((headers["task"], headers["argsrepr"]))
    return out


# --- create + enqueue ----------------------------------------------------------------------


def test_training_request_enqueues_only_after_commit(django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    project, manager, _ = project_with_members()
    _label_n(project, 3)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = training_request(project=project, actor=manager)
    assert job.kind == MLJob.Kind.TRAIN and job.status == MLJob.Status.PENDING
    assert job.enqueued_at is None  # nothing was sent before the commit
    assert len(callbacks) == 1
    assert job.result["labeled_at_request"] == 3 and job.result["requested_by"] == manager.pk


@pytest.mark.redis
def test_enqueue_on_commit_reaches_the_gpu_queue(broker, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    project, manager, _ = project_with_members()
    _label_n(project, 3)
    with django_capture_on_commit_callbacks(execute=True):
        job = training_request(project=project, actor=manager)
    job.refresh_from_db()
    assert job.enqueued_at is not None
    assert _queued(broker) == [("mltasks.train_model", f"[{job.pk}]")]


def test_enqueue_with_the_broker_down_leaves_enqueued_at_null(broker_down, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    project, _, _ = project_with_members()
    ItemFactory(project=project)
    with django_capture_on_commit_callbacks(execute=True):
        job = embedding_request(project=project)  # must not raise into the request
    job.refresh_from_db()
    assert job.status == MLJob.Status.PENDING and job.enqueued_at is None
    assert ml_job_enqueue(job_id=job.pk) is False


def test_equal_requests_return_the_same_job_and_a_failed_one_is_requeued(django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    project, manager, _ = project_with_members()
    _label_n(project, 4)
    first = training_request(project=project, actor=manager)
    assert training_request(project=project, actor=manager).pk == first.pk
    assert MLJob.objects.filter(project=project, kind=MLJob.Kind.TRAIN).count() == 1

    MLJob.objects.filter(pk=first.pk).update(status=MLJob.Status.SUCCEEDED)
    assert training_request(project=project, actor=manager).pk == first.pk  # same labels: nothing to learn

    MLJob.objects.filter(pk=first.pk).update(status=MLJob.Status.FAILED, error_code="x", error="boom")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again = training_request(project=project, actor=manager)
    assert again.pk == first.pk and again.status == MLJob.Status.PENDING and again.error_code == ""
    assert len(callbacks) == 1

    MLJob.objects.filter(pk=first.pk).update(status=MLJob.Status.SUCCEEDED)
    _label_n(project, 1)  # new labels: a new job
    assert training_request(project=project, actor=manager).pk != first.pk


def test_at_most_one_train_job_per_project_is_pending_or_running() -> None:
    project, manager, _ = project_with_members()
    _label_n(project, 3)
    job = training_request(project=project, actor=manager)
    _label_n(project, 5)  # different labels, but a train job is already queued
    assert training_request(project=project, actor=manager).pk == job.pk
    MLJob.objects.filter(pk=job.pk).update(status=MLJob.Status.RUNNING)
    assert training_request(project=project, actor=manager).pk == job.pk
    assert MLJob.objects.filter(project=project, kind=MLJob.Kind.TRAIN).count() == 1


def test_training_request_needs_two_labels() -> None:
    from labeling.errors import NotEnoughLabelsError

    project, manager, _ = project_with_members()
    _label_n(project, 1)
    _label_n(project, 5, split=Item.Split.EVALUATION)  # evaluation labels do not count
    with pytest.raises(NotEnoughLabelsError):
        training_request(project=project, actor=manager)


# --- cadence -------------------------------------------------------------------------------


def test_cadence_queues_a_retrain_every_k_new_labels() -> None:
    project, _, _ = project_with_members()
    project.retrain_every = 5
    project.save(update_fields=["retrain_every"])

    _label_n(project, 4)
    _label_n(project, 3, split=Item.Split.EVALUATION)
    assert training_maybe_schedule(project=project) is None
    _label_n(project, 1)
    job = training_maybe_schedule(project=project)
    assert job is not None and job.result["reason"] == "cadence" and job.result["labeled_at_request"] == 5
    _label_n(project, 6)
    assert training_maybe_schedule(project=project).pk == job.pk  # still one active job

    # The job finishes and publishes a model trained on 11 labels: the next retrain waits for 16.
    MLJob.objects.filter(pk=job.pk).update(status=MLJob.Status.SUCCEEDED)
    ModelVersion.objects.create(project=project, number=1, backbone="b", class_ids=[], artifact="x", n_train=11)
    _label_n(project, 4)
    assert training_maybe_schedule(project=project) is None
    _label_n(project, 1)
    second = training_maybe_schedule(project=project)
    assert second is not None and second.pk != job.pk


def test_cadence_does_not_retry_a_failed_training_on_every_submit() -> None:
    project, _, _ = project_with_members()
    project.retrain_every = 3
    project.save(update_fields=["retrain_every"])
    _label_n(project, 3)
    job = training_maybe_schedule(project=project)
    MLJob.objects.filter(pk=job.pk).update(status=MLJob.Status.FAILED, error_code="not_enough_labels")
    _label_n(project, 1)
    assert training_maybe_schedule(project=project) is None  # waits for K more labels
    _label_n(project, 2)
    assert training_maybe_schedule(project=project) is not None


# --- reconcile -----------------------------------------------------------------------------


def _old(minutes: int):  # type: ignore[no-untyped-def]
    return timezone.now() - timedelta(minutes=minutes)


@pytest.mark.redis
def test_reconcile_enqueues_a_job_the_broker_never_took(broker, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    project, _, _ = project_with_members()
    ItemFactory(project=project)
    job = MLJob.objects.create(project=project, kind=MLJob.Kind.EMBED, input_fingerprint="f")
    MLJob.objects.filter(pk=job.pk).update(created_at=_old(5))
    fresh = MLJob.objects.create(project=project, kind=MLJob.Kind.SCORE, input_fingerprint="g")  # within the grace

    with django_capture_on_commit_callbacks(execute=True):
        counts = ml_jobs_reconcile()
    assert counts["enqueued"] == 1 and counts["embed_requested"] == 0  # an embed job is already pending
    job.refresh_from_db()
    fresh.refresh_from_db()
    assert job.enqueued_at is not None and fresh.enqueued_at is None
    assert _queued(broker) == [("mltasks.embed_items", f"[{job.pk}]")]


@pytest.mark.redis
def test_reconcile_requeues_a_job_whose_worker_died(broker, settings, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    settings.ML_JOB_MAX_ATTEMPTS = 3
    project, _, _ = project_with_members()
    stale = MLJob.objects.create(
        project=project, kind=MLJob.Kind.TRAIN, input_fingerprint="a", status=MLJob.Status.RUNNING, attempt=1
    )
    alive = MLJob.objects.create(
        project=project, kind=MLJob.Kind.SCORE, input_fingerprint="b", status=MLJob.Status.RUNNING, attempt=1
    )
    hopeless = MLJob.objects.create(
        project=project, kind=MLJob.Kind.EMBED, input_fingerprint="c", status=MLJob.Status.RUNNING, attempt=3
    )
    MLJob.objects.filter(pk__in=[stale.pk, hopeless.pk]).update(heartbeat_at=_old(30), enqueued_at=_old(31))
    MLJob.objects.filter(pk=alive.pk).update(heartbeat_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        counts = ml_jobs_reconcile()
    assert counts["requeued_stale"] == 1 and counts["failed_stale"] == 1
    stale.refresh_from_db()
    alive.refresh_from_db()
    hopeless.refresh_from_db()
    assert stale.status == MLJob.Status.PENDING and stale.enqueued_at is not None
    assert alive.status == MLJob.Status.RUNNING
    assert hopeless.status == MLJob.Status.FAILED and hopeless.error_code == "too_many_attempts"
    assert _queued(broker) == [("mltasks.train_model", f"[{stale.pk}]")]


def test_reconcile_with_the_broker_still_down_keeps_the_job_pending(broker_down) -> None:  # type: ignore[no-untyped-def]
    project, _, _ = project_with_members()
    job = MLJob.objects.create(project=project, kind=MLJob.Kind.TRAIN, input_fingerprint="f")
    MLJob.objects.filter(pk=job.pk).update(created_at=_old(5))
    counts = ml_jobs_reconcile()
    assert counts["enqueued"] == 0
    job.refresh_from_db()
    assert job.status == MLJob.Status.PENDING and job.enqueued_at is None


def test_reconcile_requests_embedding_for_items_without_one(django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    project, _, _ = project_with_members()
    ItemFactory(project=project)
    with django_capture_on_commit_callbacks(execute=False):
        counts = ml_jobs_reconcile()
    assert counts["embed_requested"] == 1
    job = MLJob.objects.get(project=project, kind=MLJob.Kind.EMBED)
    # A job that failed on these items is not retried by reconcile every minute.
    MLJob.objects.filter(pk=job.pk).update(status=MLJob.Status.FAILED)
    with django_capture_on_commit_callbacks(execute=False):
        assert ml_jobs_reconcile()["embed_requested"] == 0


# --- API -----------------------------------------------------------------------------------

JOB_KEYS = {"id", "project_id", "kind", "status", "progress", "message", "attempt", "result", "error_code", "error"}


def test_api_train_and_embed_are_for_managers(api_client) -> None:  # type: ignore[no-untyped-def]
    project, manager, [annotator] = project_with_members()
    _label_n(project, 3)
    outsider = UserFactory()
    for url in (f"/api/v1/projects/{project.pk}/train/", f"/api/v1/projects/{project.pk}/embed/"):
        api_client.force_authenticate(annotator)
        response = api_client.post(url)
        assert response.status_code == 403 and response.json()["code"] == "role_required"
        api_client.force_authenticate(outsider)
        assert api_client.post(url).status_code == 404
        api_client.force_authenticate(None)
        assert api_client.post(url).status_code in (401, 403)

    api_client.force_authenticate(manager)
    response = api_client.post(f"/api/v1/projects/{project.pk}/train/")
    assert response.status_code == 202
    body = response.json()
    assert set(body) >= JOB_KEYS and body["kind"] == "train" and body["status"] == "pending"
    assert api_client.post(f"/api/v1/projects/{project.pk}/train/").json()["id"] == body["id"]  # idempotent
    response = api_client.post(f"/api/v1/projects/{project.pk}/embed/")
    assert response.status_code == 202 and response.json()["kind"] == "embed"


def test_api_train_without_labels_is_422(api_client) -> None:  # type: ignore[no-untyped-def]
    project, manager, _ = project_with_members()
    api_client.force_authenticate(manager)
    response = api_client.post(f"/api/v1/projects/{project.pk}/train/")
    assert response.status_code == 422 and response.json()["code"] == "not_enough_labels"


def test_api_jobs_and_models_show_progress_to_members_only(api_client) -> None:  # type: ignore[no-untyped-def]
    project, manager, [annotator] = project_with_members()
    job = MLJob.objects.create(
        project=project,
        kind=MLJob.Kind.TRAIN,
        input_fingerprint="x",
        status=MLJob.Status.RUNNING,
        progress=0.4,
        message="Training a linear head on 12 labels.",
    )
    version = ModelVersion.objects.create(
        project=project,
        number=1,
        backbone="efficientnet_lite0",
        class_ids=[1, 2],
        artifact="p/j/head.pt",
        n_train=12,
        metrics={"n": 4, "accuracy": 0.75, "macro_f1": 0.7},
    )
    Project.objects.filter(pk=project.pk).update(active_model=version)
    other_project_job = MLJob.objects.create(
        project=MembershipFactory().project, kind=MLJob.Kind.EMBED, input_fingerprint="y"
    )

    api_client.force_authenticate(annotator)
    listing = api_client.get(f"/api/v1/projects/{project.pk}/jobs/")
    assert listing.status_code == 200
    assert listing.json()["count"] == 1 and listing.json()["results"][0]["id"] == job.pk
    detail = api_client.get(f"/api/v1/jobs/{job.pk}/").json()
    assert detail["progress"] == 0.4 and detail["message"].startswith("Training") and detail["status"] == "running"
    models = api_client.get(f"/api/v1/projects/{project.pk}/models/").json()
    assert models["count"] == 1
    assert models["results"][0]["metrics"]["accuracy"] == 0.75 and models["results"][0]["is_active"] is True
    assert models["results"][0]["n_train"] == 12

    response = api_client.get(f"/api/v1/jobs/{other_project_job.pk}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    outsider = UserFactory()
    api_client.force_authenticate(outsider)
    assert api_client.get(f"/api/v1/projects/{project.pk}/jobs/").status_code == 404
    assert api_client.get(f"/api/v1/projects/{project.pk}/models/").status_code == 404
    assert api_client.get(f"/api/v1/jobs/{job.pk}/").status_code == 404
