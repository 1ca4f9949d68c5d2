"""A Celery worker SIGKILLed in the middle of embedding and of training.

Real worker processes on a private redis-server and the test PostgreSQL. Two ways to die:

- the whole worker (main process and pool child, ``killpg``): the message stays unacked in
  Redis and would only come back after the broker's visibility timeout (hours). Recovery is
  ``ml_jobs_reconcile`` (beat, every 60 s): a RUNNING job whose heartbeat is older than
  ``ML_JOB_STALE_AFTER_S`` goes back to PENDING and is enqueued again; a new worker claims
  it (attempt 2) and finishes what is missing.
- only the pool child: the main process sees WorkerLostError, and ``reject_on_worker_lost``
  puts the message back at once. Its redelivery finds the job RUNNING with a fresh
  heartbeat and drops it (it cannot tell a dead run from a slow one); once the heartbeat is
  stale the reconcile requeues it and the same worker's new child finishes it.

Either way: the job finishes, no item has two embeddings, no half-trained model version is
published or made active, and exactly one version exists afterwards.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.db.models import Count, Q

from labeling.models import Embedding, Item, MLJob, ModelVersion, Project
from labeling.selectors.ml import EMBEDDING_DTYPE, project_backbone
from labeling.services.ml_jobs import embedding_request, ml_jobs_reconcile, training_request
from labeling.services.queue import annotation_submit, lease_next
from tests.conftest import WorkerProcess
from tests.factories import ItemFactory, project_with_members
from tests.faults.conftest import wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.celery_worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

STALE_S = 6  # ML_JOB_STALE_AFTER_S here: a dead run is noticed after 6 s, not 10 min (above a cold backbone load)
N_ITEMS = 40


@pytest.fixture
def worker_factory(private_redis, settings, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """Start real workers on the private Redis; every one started is stopped at the end."""
    from tests.faults.conftest import celery_app_on

    settings.ML_JOB_STALE_AFTER_S = STALE_S
    monkeypatch.setenv("TEST_REDIS_URL", private_redis.url)
    env = {
        "CELERY_BROKER_URL": private_redis.url,
        "ML_JOB_STALE_AFTER_S": str(STALE_S),
        "ML_BATCH_SIZE": "2",
        "ML_TORCH_THREADS": "1",
        "ML_AUTO_EMBED": "false",
    }
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        worker = WorkerProcess(tmp_path / f"{name}.log", extra_env=env)
        worker.start()
        started.append(worker)
        return worker

    with celery_app_on(private_redis.url, settings):
        yield start
        for worker in started:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.stop()
            else:
                worker._log.close()


def _pool_child(worker: WorkerProcess) -> int:
    assert worker.proc is not None
    pid = worker.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, f"expected one pool child (-c 1), found {children}"
    return int(children[0])


def _kill_when(check, worker: WorkerProcess, *, child_only: bool, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    """Poll ``check`` every 20 ms and SIGKILL the worker (or its pool child) as soon as it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            if child_only:
                os.kill(_pool_child(worker), signal.SIGKILL)
            else:
                worker.kill(signal.SIGKILL)
            return
        time.sleep(0.02)
    pytest.fail(f"the moment to kill never came\n{worker.log()[-4000:]}")


def _reconcile_until(job: MLJob, status: str, worker: WorkerProcess, timeout: float = 180) -> None:
    """Play the beat: reconcile every second until the job reaches ``status``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == status:
            return
        if job.status == MLJob.Status.FAILED:
            pytest.fail(f"job {job.pk} failed: [{job.error_code}] {job.error}\n{worker.log()[-4000:]}")
        ml_jobs_reconcile()
        time.sleep(1)
    pytest.fail(f"job {job.pk} is {job.status} after {timeout:.0f} s\n{worker.log()[-4000:]}")


def _project_with_images() -> tuple[Project, object]:
    project, manager, _ = project_with_members()
    for _ in range(N_ITEMS):
        ItemFactory(project=project)
    return project, manager


def _embedded(project: Project) -> int:
    return Embedding.objects.filter(item__project=project).count()


def _assert_embedded_once(project: Project) -> None:
    backbone = project_backbone(project=project)
    per_item = Item.objects.filter(project=project).annotate(
        n=Count("embeddings", filter=Q(embeddings__backbone=backbone))
    )
    assert sorted({row.n for row in per_item}) == [1], "every item exactly one embedding"


@pytest.mark.parametrize("child_only", [False, True], ids=["whole-worker", "pool-child"])
def test_worker_killed_while_embedding(worker_factory, child_only: bool) -> None:  # type: ignore[no-untyped-def]
    project, manager = _project_with_images()
    worker = worker_factory("a")
    job = embedding_request(project=project, actor=manager)

    _kill_when(lambda: 0 < _embedded(project) < N_ITEMS - 4, worker, child_only=child_only)
    time.sleep(0.5)
    job.refresh_from_db()
    partial = _embedded(project)
    assert job.status == MLJob.Status.RUNNING and job.attempt == 1, (job.status, job.attempt)
    assert 0 < partial < N_ITEMS
    if child_only:
        assert worker.proc is not None and worker.proc.poll() is None, "the main process must survive"
        wait_for("the lost child to be noticed", lambda: "WorkerLostError" in worker.log(), 30, worker.log)
        survivor = worker
    else:
        survivor = worker_factory("b")

    _reconcile_until(job, MLJob.Status.SUCCEEDED, survivor)
    assert job.attempt >= 2
    assert _embedded(project) == N_ITEMS
    _assert_embedded_once(project)
    # The second attempt embedded only what the first one had not written.
    assert job.result["embedded"] == N_ITEMS - partial, (job.result, partial)
    print(f"\nembedding killed ({'pool child' if child_only else 'whole worker'}) after {partial}/{N_ITEMS} items")


def _project_ready_to_train() -> tuple[Project, object, int]:
    """Real items, stored embeddings (random but class-dependent 1280-d vectors), 30 labels."""
    project, manager = _project_with_images()
    Project.objects.filter(pk=project.pk).update(retrain_every=10_000)
    project.refresh_from_db()
    backbone = project_backbone(project=project)
    classes = list(project.classes.order_by("id"))
    rng = np.random.default_rng(0)
    items = list(Item.objects.filter(project=project).order_by("id"))
    truth = {item.pk: classes[i % len(classes)] for i, item in enumerate(items)}
    centers = rng.normal(size=(len(classes), 1280))
    Embedding.objects.bulk_create(
        Embedding(
            item=item,
            backbone=backbone,
            dim=1280,
            vector=(centers[classes.index(truth[item.pk])] + rng.normal(scale=0.5, size=1280))
            .astype(EMBEDDING_DTYPE)
            .tobytes(),
        )
        for item in items
    )
    annotator = project.memberships.filter(role="annotator").first().user
    labeled = 0
    while labeled < 30:
        lease = lease_next(project=project, user=annotator)
        assert lease is not None
        annotation_submit(
            user=annotator, lease_id=lease.pk, label_id=truth[lease.item_id].pk, client_id=uuid.uuid4(), duration_ms=1
        )
        labeled += 1
    return project, manager, labeled


@pytest.mark.parametrize("child_only", [False, True], ids=["whole-worker", "pool-child"])
def test_worker_killed_while_training(worker_factory, settings, child_only: bool) -> None:  # type: ignore[no-untyped-def]
    project, manager, labeled = _project_ready_to_train()
    worker = worker_factory("a")
    job = training_request(project=project, actor=manager)

    def running() -> bool:
        return MLJob.objects.filter(pk=job.pk, status=MLJob.Status.RUNNING).exists()

    _kill_when(running, worker, child_only=child_only)
    time.sleep(0.5)
    job.refresh_from_db()
    project.refresh_from_db()
    assert job.status == MLJob.Status.RUNNING and job.attempt == 1, "killed before it could publish"
    assert project.active_model_id is None and not ModelVersion.objects.filter(project=project).exists()
    survivor = worker if child_only else worker_factory("b")

    _reconcile_until(job, MLJob.Status.SUCCEEDED, survivor)
    assert job.attempt >= 2
    version = ModelVersion.objects.get(project=project)  # exactly one: no half-written leftovers
    project.refresh_from_db()
    assert project.active_model_id == version.pk and version.number == 1 and version.n_train == labeled
    assert job.result["model_version_id"] == version.pk
    from mltasks.core.types import TrainResult

    artifact = Path(settings.ML_ARTIFACT_ROOT) / version.artifact
    model = TrainResult.from_bytes(artifact.read_bytes())  # complete and loadable
    assert model.n_features == 1280
    # Nothing else was published by the dead attempt's late heartbeat or a redelivery.
    time.sleep(1)
    assert ModelVersion.objects.filter(project=project).count() == 1
