"""Redis stops while annotators work (a private redis-server: the broker and the cache).

The queue lives in PostgreSQL, so next and submit keep working; the cache degrades to a
no-op (labeling.cache.FailSoftRedisCache); ML jobs and import jobs that could not be
enqueued stay in the database, and the periodic reconcile sends them once Redis is back.
A real worker then runs each exactly once; a duplicate message is ignored by the claim.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import Annotation, ImportJob, Item, MLJob, Project
from labeling.services.consensus import consensus_refresh_request
from labeling.services.ml_jobs import ml_jobs_reconcile
from tests.conftest import WorkerProcess, png_bytes
from tests.factories import project_with_members
from tests.faults.conftest import celery_app_on, wait_for
from tests.labeling.test_queue_services import label_of, make_items

pytestmark = [pytest.mark.postgres, pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

REFRESH_EVERY = 4


def _client(user) -> APIClient:  # type: ignore[no-untyped-def]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _label_one(client: APIClient, project: Project, label_id: int) -> tuple[int, float]:
    """next + submit; returns (item id, seconds taken). Both must succeed."""
    t0 = time.monotonic()
    res = client.get(f"/api/v1/projects/{project.pk}/next/")
    assert res.status_code == 200, res.content
    body = res.json()
    sub = client.post(
        "/api/v1/annotations/",
        {"lease": body["lease"]["id"], "label": label_id, "client_id": str(uuid.uuid4()), "duration_ms": 700},
        format="json",
    )
    assert sub.status_code == 201, sub.content
    return body["item"]["id"], time.monotonic() - t0


def test_annotators_keep_working_while_redis_is_down_and_jobs_are_sent_after(
    private_redis, settings, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    settings.CACHES = {"default": {"BACKEND": "labeling.cache.FailSoftRedisCache", "LOCATION": private_redis.url}}
    settings.CONSENSUS_REFRESH_EVERY = REFRESH_EVERY
    settings.CADENCE_DEBOUNCE_SECONDS = 1
    settings.IMPORT_SYNC_MAX_FILES = 1  # two files: a background import job
    settings.ML_AUTO_EMBED = False
    from django.core.cache import cache

    project, manager, annotators = project_with_members(n_annotators=2)
    Project.objects.filter(pk=project.pk).update(retrain_every=10_000)  # no training: consensus jobs only
    make_items(project, 30)
    label = label_of(project)
    clients = [_client(a) for a in annotators]

    with celery_app_on(private_redis.url, settings):
        cache.set("probe", 1)
        assert cache.get("probe") == 1, "the test must really use the private Redis as its cache"
        for client in clients:  # Redis up: nothing special
            _label_one(client, project, label.pk)
        assert not MLJob.objects.exists()
        # A job sent while Redis is up but no worker runs: its message dies with Redis.
        lost = consensus_refresh_request(project=project)
        lost.refresh_from_db()
        assert lost.enqueued_at is not None

        private_redis.stop()
        assert cache.get("probe") is None  # a miss, not an error
        latencies = [_label_one(clients[i % 2], project, label.pk)[1] for i in range(14)]
        upload = _client(manager).post(
            f"/api/v1/projects/{project.pk}/items/",
            {"files": [SimpleUploadedFile(f"new{i}.png", png_bytes((i, 9, 9)), "image/png") for i in range(2)]},
            format="multipart",
        )
        assert upload.status_code == 202, upload.content
        dashboard = _client(manager).get(f"/api/v1/projects/{project.pk}/dashboard/")
        assert dashboard.status_code < 500
        print(
            f"\nRedis down: 14 next+submit pairs, max {max(latencies) * 1000:.0f} ms, "
            f"mean {sum(latencies) / len(latencies) * 1000:.0f} ms"
        )

        # Every answer is in PostgreSQL; the consensus jobs due meanwhile exist, never sent.
        assert Annotation.objects.filter(item__project=project).count() == 16
        jobs = MLJob.objects.filter(project=project, kind=MLJob.Kind.CONSENSUS).exclude(pk=lost.pk)
        assert sorted(jobs.values_list("input_fingerprint", flat=True)) == ["auto:1", "auto:2", "auto:3", "auto:4"]
        assert set(jobs.values_list("status", flat=True)) == {MLJob.Status.PENDING}
        assert not jobs.filter(enqueued_at__isnull=False).exists()
        import_job = ImportJob.objects.get(project=project)
        assert import_job.status == ImportJob.Status.PENDING and import_job.error

        later = timezone.now() + timedelta(seconds=settings.ML_JOB_ENQUEUE_GRACE_S + 1)
        still_down = ml_jobs_reconcile(now=later)  # the beat keeps trying while Redis is down
        assert still_down["enqueued"] == 0 and still_down["imports_enqueued"] == 0
        assert not jobs.filter(enqueued_at__isnull=False).exists()

        private_redis.start()
        back = ml_jobs_reconcile(now=later)
        # The 4 consensus jobs, and the embed job the reconcile asked for while Redis was down
        # (these items have no embedding; they have no file either, so it will fail: not our point).
        assert back["enqueued"] == MLJob.objects.filter(project=project).exclude(pk=lost.pk).count() == 5
        assert back["imports_enqueued"] == 1
        assert not MLJob.objects.filter(enqueued_at__isnull=True).exists()
        assert ml_jobs_reconcile(now=later)["enqueued"] == 0  # sent once, not on every tick

        monkeypatch.setenv("TEST_REDIS_URL", private_redis.url)
        worker = WorkerProcess(tmp_path / "worker.log", extra_env={"CELERY_BROKER_URL": private_redis.url})
        worker.start()
        try:
            wait_for(
                "the consensus and import jobs",
                lambda: (
                    not jobs.exclude(status=MLJob.Status.SUCCEEDED).exists()
                    and ImportJob.objects.get(pk=import_job.pk).status == ImportJob.Status.SUCCEEDED
                ),
                timeout=90,
                log=worker.log,
            )
            assert list(jobs.values_list("attempt", flat=True)) == [1, 1, 1, 1]
            assert Item.objects.filter(project=project).count() == 32

            # The message sent before the outage was lost with Redis's memory: the job waits,
            # PENDING, until the reconcile's lost-message window has passed, then runs once.
            lost.refresh_from_db()
            assert lost.status == MLJob.Status.PENDING and lost.attempt == 0
            requeue_at = timezone.now() + timedelta(seconds=settings.ML_JOB_REQUEUE_AFTER_S + 1)
            assert ml_jobs_reconcile(now=requeue_at)["requeued_lost"] == 1
            wait_for(
                "the lost job",
                lambda: MLJob.objects.get(pk=lost.pk).status == MLJob.Status.SUCCEEDED,
                timeout=60,
                log=worker.log,
            )
            assert MLJob.objects.get(pk=lost.pk).attempt == 1

            # A duplicate message (e.g. the lost-message requeue) runs nothing again.
            from mltasks.tasks import consensus_refresh

            done = {j.pk: (j.finished_at, j.result) for j in jobs}
            for job_id in done:
                consensus_refresh.delay(job_id)
            wait_for(
                "the duplicates to be dropped",
                lambda: worker.log().count("duplicate delivery ignored") >= len(done),
                timeout=60,
                log=worker.log,
            )
            assert {j.pk: (j.finished_at, j.result) for j in jobs} == done
            assert list(jobs.values_list("attempt", flat=True)) == [1, 1, 1, 1]
        finally:
            worker.stop()
    assert Annotation.objects.filter(item__project=project).count() == 16
