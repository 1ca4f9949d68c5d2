"""The whole learning loop through a real Celery worker, real Redis and real PostgreSQL.

Animal-MNIST silhouettes (3 classes x 20, written as PNG) are imported through the import
service; the worker embeds them with the real default backbone (EfficientNet-Lite0, weights
from its pip package), cold-start scoring orders the queue, an annotator labels ~20 training
items through the queue service, a manager asks for a retrain, the worker publishes a model
version with evaluation metrics and rescores the pool; the queue then follows the margin
score of the stored predictions.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeling.models import Item, MLJob, ModelVersion, Project
from labeling.services.items import items_import_folder
from labeling.services.ml_jobs import embedding_request, training_request
from labeling.services.queue import annotation_submit, lease_next
from mltasks.core import acquisition
from mltasks.datasets import ANIMAL_CLASSES, load_animal_mnist
from tests.factories import project_with_members

pytestmark = [
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.celery_worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

CLASSES = ("bird", "elephant", "zebra")
PER_CLASS = 20
TRAIN_LABELS = 20


def _wait_for(what: str, check: Callable[[], bool], worker, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    jobs = list(MLJob.objects.values_list("id", "kind", "status", "progress", "message", "error"))
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what}\njobs: {jobs}\nworker log:\n{worker.log()[-4000:]}"
    )


def _job_done(project: Project, kind: str, **filters: object) -> Callable[[], bool]:
    def check() -> bool:
        jobs = MLJob.objects.filter(project=project, kind=kind, **filters)
        failed = jobs.filter(status=MLJob.Status.FAILED).first()
        if failed is not None:
            pytest.fail(f"{kind} job {failed.pk} failed: [{failed.error_code}] {failed.error}")
        return jobs.filter(status=MLJob.Status.SUCCEEDED).exists()

    return check


def _write_images(folder: Path) -> dict[str, str]:
    """PNG files of the chosen classes; returns {sha256: class name}."""
    data = load_animal_mnist()
    truth: dict[str, str] = {}
    folder.mkdir()
    for name in CLASSES:
        index = ANIMAL_CLASSES.index(name)
        for k, i in enumerate(np.flatnonzero(data.labels == index)[:PER_CLASS]):
            buf = io.BytesIO()
            Image.fromarray(data.images[i]).save(buf, format="PNG")
            (folder / f"{name}_{k:03d}.png").write_bytes(buf.getvalue())
            truth[hashlib.sha256(buf.getvalue()).hexdigest()] = name
    return truth


def test_learning_loop_end_to_end(celery_worker_process, tmp_path: Path, api_client) -> None:  # type: ignore[no-untyped-def]
    worker = celery_worker_process
    started = time.monotonic()
    project, manager, [annotator] = project_with_members(classes=list(CLASSES))
    Project.objects.filter(pk=project.pk).update(
        eval_fraction=0.2, eval_rate=0.5, strategy=Project.Strategy.MARGIN, retrain_every=TRAIN_LABELS
    )
    project.refresh_from_db()
    class_id = {c.name: c.pk for c in project.classes.all()}

    # 1. import real images
    truth = _write_images(tmp_path / "images")
    report = items_import_folder(project=project, directory=tmp_path / "images")
    assert report.imported == len(CLASSES) * PER_CLASS
    label_of = {item.pk: class_id[truth[item.sha256]] for item in Item.objects.filter(project=project)}
    eval_priority = dict(
        Item.objects.filter(project=project, split=Item.Split.EVALUATION).values_list("id", "priority")
    )
    assert eval_priority, "the evaluation split must not be empty"

    # 2. embed in the worker; cold-start scoring follows on its own
    embed = embedding_request(project=project, actor=manager)
    _wait_for("embedding", _job_done(project, MLJob.Kind.EMBED), worker, timeout=300)
    _wait_for("cold-start scoring", _job_done(project, MLJob.Kind.SCORE), worker, timeout=120)
    embed.refresh_from_db()
    assert embed.result["embedded"] == len(label_of) and embed.result["spec"]["name"] == "efficientnet_lite0"
    cold = Item.objects.filter(project=project, split=Item.Split.TRAIN, priority__gt=1.0).count()
    assert cold == min(TRAIN_LABELS, Item.objects.filter(project=project, split=Item.Split.TRAIN).count())
    t_embed = time.monotonic() - started

    # 3. label through the queue, as an annotator would
    labeled_train = 0
    while labeled_train < TRAIN_LABELS:
        lease = lease_next(project=project, user=annotator)
        assert lease is not None, "the queue ran dry"
        annotation_submit(
            user=annotator,
            lease_id=lease.pk,
            label_id=label_of[lease.item_id],
            client_id=uuid.uuid4(),
            duration_ms=2000,
        )
        labeled_train += Item.objects.get(pk=lease.item_id).split == Item.Split.TRAIN

    # 4. a manager asks for a retrain; the worker publishes a model version with metrics
    train = training_request(project=project, actor=manager)
    _wait_for("a model version", _job_done(project, MLJob.Kind.TRAIN), worker, timeout=180)
    version = ModelVersion.objects.get(project=project)
    project.refresh_from_db()
    assert project.active_model_id == version.pk
    assert version.n_train == labeled_train  # evaluation labels are never trained on
    assert version.metrics["n"] >= 1 and version.metrics["accuracy"] is not None
    assert version.class_ids == [class_id[name] for name in CLASSES]
    train.refresh_from_db()
    assert train.result["model_version_id"] == version.pk and train.progress == 1.0

    # 5. scoring with the new model rewrites the train queue by margin
    _wait_for("scoring", _job_done(project, MLJob.Kind.SCORE, result__model_version_id=version.pk), worker, timeout=120)
    pool = list(
        Item.objects.filter(project=project, split=Item.Split.TRAIN, status=Item.Status.OPEN)
        .select_related("prediction")
        .order_by("-priority", "id")
    )
    assert pool and all(item.prediction.model_version_id == version.pk for item in pool)
    margins = acquisition.margin(np.array([item.prediction.probs for item in pool]))  # higher = less sure
    assert np.all(np.diff(margins) <= 1e-6), "the queue must serve the smallest top-2 margin first"
    assert sum(item.priority > 1.0 for item in pool) == min(TRAIN_LABELS, len(pool))
    # evaluation items are never prioritised by uncertainty
    assert dict(Item.objects.filter(pk__in=eval_priority).values_list("id", "priority")) == eval_priority

    # 6. the learning curve is visible through the API
    api_client.force_authenticate(manager)
    models = api_client.get(f"/api/v1/projects/{project.pk}/models/").json()
    assert models["count"] == 1 and models["results"][0]["metrics"]["accuracy"] == version.metrics["accuracy"]
    print(
        f"\nlearning loop: embed+cold start {t_embed:.1f} s, total {time.monotonic() - started:.1f} s, "
        f"accuracy {version.metrics['accuracy']:.2f} on {version.metrics['n']} evaluation items"
    )
