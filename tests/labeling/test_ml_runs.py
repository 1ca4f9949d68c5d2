"""Worker-side ML runs, called directly (no Celery): idempotency, resume, the evaluation rule,
atomic publication, priorities, new classes. Real database, real files, real torch.

Embedding tests run the real default backbone (EfficientNet-Lite0, packaged weights) on a few
small PNGs. Training and scoring tests write Embedding rows from known Gaussian clusters
instead, so the head's job is easy and its answers predictable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from labeling.errors import TransientJobError
from labeling.models import ConsensusLabel, Embedding, Item, LabelClass, Lease, MLJob, ModelVersion, Prediction, Project
from labeling.selectors.ml import EMBEDDING_DTYPE, evaluation_labels, labeled_items, training_labels
from labeling.services.ml_jobs import embedding_request, scoring_request, training_request
from labeling.services.ml_runs import ml_run_embed, ml_run_score, ml_run_train
from mltasks.core import acquisition
from tests.factories import ItemFactory, MembershipFactory, project_with_members

pytestmark = pytest.mark.django_db

DIM = 16


@pytest.fixture(autouse=True)
def _small_batches(settings):  # type: ignore[no-untyped-def]
    settings.ML_BATCH_SIZE = 4
    settings.ML_DEVICE = "cpu"
    settings.ML_TORCH_THREADS = 1  # shared CPUs: one thread is much faster (see ml_runs._threads_apply)


# --- fixtures: items with synthetic embeddings and labels --------------------------------


def _centers(n_classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_classes, DIM)).astype(np.float32) * 4.0


def _embed_item(item: Item, vector: np.ndarray, backbone: str = "efficientnet_lite0") -> None:
    Embedding.objects.create(
        item=item, backbone=backbone, dim=vector.size, vector=np.asarray(vector, dtype=EMBEDDING_DTYPE).tobytes()
    )


def _label(item: Item, label: LabelClass) -> None:
    ConsensusLabel.objects.create(item=item, label=label, confidence=1.0, method=ConsensusLabel.Method.MAJORITY)
    Item.objects.filter(pk=item.pk).update(status=Item.Status.DONE, annotation_count=1)


def _clustered_project(
    *, n_train_labeled: int = 30, n_eval_labeled: int = 9, n_open: int = 30, classes: tuple[str, ...] = ("a", "b", "c")
) -> tuple[Project, dict[str, object]]:
    """Items whose embeddings sit around one center per class (class i of item k = k mod C)."""
    project, manager, _ = project_with_members(classes=list(classes))
    project.retrain_every = 10
    project.save(update_fields=["retrain_every"])
    labels = list(project.classes.order_by("order", "id"))
    centers = _centers(len(labels))
    rng = np.random.default_rng(1)
    made: dict[str, list[Item]] = {"train": [], "eval": [], "open": [], "open_eval": []}

    def new(kind: str, k: int, split: str) -> Item:
        item = ItemFactory(project=project, split=split)
        _embed_item(item, centers[k % len(labels)] + rng.normal(size=DIM).astype(np.float32))
        made[kind].append(item)
        return item

    for k in range(n_train_labeled):
        _label(new("train", k, Item.Split.TRAIN), labels[k % len(labels)])
    for k in range(n_eval_labeled):
        _label(new("eval", k, Item.Split.EVALUATION), labels[k % len(labels)])
    for k in range(n_open):
        new("open", k, Item.Split.TRAIN)
    for k in range(3):
        it = new("open_eval", k, Item.Split.EVALUATION)
        Item.objects.filter(pk=it.pk).update(priority=0.123)
    return project, {"manager": manager, "labels": labels, **made}


def _job_run_train(project: Project, manager) -> MLJob:  # type: ignore[no-untyped-def]
    job = training_request(project=project, actor=manager)
    ml_run_train(job_id=job.pk)
    job.refresh_from_db()
    return job


# --- embed -------------------------------------------------------------------------------


def _snapshot(project: Project) -> list[tuple[int, int, str, bytes]]:
    return [
        (e.pk, e.item_id, e.backbone, bytes(e.vector))
        for e in Embedding.objects.filter(item__project=project).order_by("item_id")
    ]


def test_embed_twice_gives_the_same_rows_and_queues_cold_start() -> None:
    project, _, _ = project_with_members()
    items = [ItemFactory(project=project) for _ in range(6)]
    job = embedding_request(project=project)

    ml_run_embed(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == MLJob.Status.SUCCEEDED, job.error
    assert job.progress == 1.0 and job.attempt == 1
    assert job.result["embedded"] == 6 and job.result["spec"]["dim"] == 1280
    first = _snapshot(project)
    assert [row[1] for row in first] == [i.pk for i in items]
    assert {len(row[3]) for row in first} == {1280 * 4}

    ml_run_embed(job_id=job.pk)  # duplicate delivery: the claim drops it
    job.refresh_from_db()
    assert job.attempt == 1
    assert _snapshot(project) == first

    # A fresh equal request has nothing left to embed.
    again = embedding_request(project=project)
    ml_run_embed(job_id=again.pk)
    assert _snapshot(project) == first
    # The first successful embed queued cold-start scoring (no model yet).
    assert MLJob.objects.filter(project=project, kind=MLJob.Kind.SCORE, status=MLJob.Status.PENDING).exists()


def test_embed_resumes_after_a_corrupt_file_and_never_embeds_twice() -> None:
    project, _, _ = project_with_members()
    items = [ItemFactory(project=project) for _ in range(10)]
    bad = items[5]  # in the second batch of 4
    good_png = default_storage.open(bad.file.name).read()
    with default_storage.open(bad.file.name, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n this is not an image")

    job = embedding_request(project=project)
    ml_run_embed(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == MLJob.Status.FAILED
    assert job.error_code == "item_unreadable" and str(bad.pk) in job.error
    partial = _snapshot(project)
    assert [row[1] for row in partial] == [i.pk for i in items[:4]]  # the first batch was kept
    assert not MLJob.objects.filter(project=project, kind=MLJob.Kind.SCORE).exists()

    with default_storage.open(bad.file.name, "wb") as fh:  # the file is repaired
        fh.write(good_png)
    retry = embedding_request(project=project)
    ml_run_embed(job_id=retry.pk)
    retry.refresh_from_db()
    assert retry.status == MLJob.Status.SUCCEEDED, retry.error
    assert retry.result["embedded"] == 6
    full = _snapshot(project)
    assert len(full) == 10
    assert full[:4] == partial  # untouched: same primary keys, same bytes

    # Lose some rows (e.g. a backbone migration): only those are recomputed, identically.
    lost = [row for row in full if row[1] in {items[2].pk, items[7].pk}]
    Embedding.objects.filter(pk__in=[row[0] for row in lost]).delete()
    third = embedding_request(project=project)
    ml_run_embed(job_id=third.pk)
    third.refresh_from_db()
    assert third.result["embedded"] == 2
    rebuilt = {row[1]: row[3] for row in _snapshot(project)}
    for _, item_id, _, vector in lost:
        np.testing.assert_allclose(
            np.frombuffer(rebuilt[item_id], dtype=EMBEDDING_DTYPE),
            np.frombuffer(vector, dtype=EMBEDDING_DTYPE),
            atol=1e-5,
        )
    assert Embedding.objects.filter(item__project=project).count() == 10


# --- train -------------------------------------------------------------------------------


def test_train_uses_only_the_training_split_and_is_idempotent(settings) -> None:  # type: ignore[no-untyped-def]
    project, made = _clustered_project()
    job = _job_run_train(project, made["manager"])
    assert job.status == MLJob.Status.SUCCEEDED, job.error

    version = ModelVersion.objects.get(project=project)
    project.refresh_from_db()
    assert project.active_model_id == version.pk
    assert version.number == 1
    assert version.n_train == 30  # the 9 labeled evaluation items are not in it
    train_ids = set(training_labels(project_id=project.pk).item_ids.tolist())
    eval_ids = {i.pk for i in made["eval"]}
    assert train_ids == {i.pk for i in made["train"]} and not train_ids & eval_ids
    assert set(evaluation_labels(project_id=project.pk).item_ids.tolist()) == eval_ids
    assert version.metrics["n"] == 9
    assert version.metrics["accuracy"] >= 0.85
    assert len(version.metrics["per_class_recall"]) == 3 and len(version.metrics["confusion"]) == 3
    assert {"macro_f1", "ece"} <= set(version.metrics)
    assert version.class_ids == [c.pk for c in made["labels"]]

    artifact = Path(settings.ML_ARTIFACT_ROOT) / version.artifact
    assert artifact.is_file() and version.artifact == f"{project.pk}/{job.pk}/head.pt"
    assert [p.name for p in artifact.parent.iterdir()] == ["head.pt"]  # no temp file left behind
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()

    ml_run_train(job_id=job.pk)  # again: nothing new
    assert ModelVersion.objects.filter(project=project).count() == 1
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == digest
    # Publishing queued scoring with the new model.
    score = MLJob.objects.get(project=project, kind=MLJob.Kind.SCORE)
    assert score.result["model_version_id"] == version.pk


def test_failed_training_publishes_nothing(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project, made = _clustered_project()
    first = _job_run_train(project, made["manager"])
    assert first.status == MLJob.Status.SUCCEEDED
    v1 = ModelVersion.objects.get(project=project)

    # Storage failure while saving the artifact (the root is a file): transient, nothing published.
    extra = ItemFactory(project=project)
    _embed_item(extra, _centers(3)[0])
    _label(extra, made["labels"][0])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    settings.ML_ARTIFACT_ROOT = blocker
    job = training_request(project=project, actor=made["manager"])
    with pytest.raises(TransientJobError):
        ml_run_train(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == MLJob.Status.PENDING and "storage" in job.message
    assert list(ModelVersion.objects.filter(project=project)) == [v1]
    project.refresh_from_db()
    assert project.active_model_id == v1.pk

    # A permanent failure: only one class left among the labels.
    other, made2 = _clustered_project(classes=("x", "y"))
    ConsensusLabel.objects.filter(item__project=other).update(label=made2["labels"][0])
    bad = training_request(project=other, actor=made2["manager"])
    ml_run_train(job_id=bad.pk)
    bad.refresh_from_db()
    assert bad.status == MLJob.Status.FAILED and bad.error_code == "not_enough_labels"
    assert not ModelVersion.objects.filter(project=other).exists()
    other.refresh_from_db()
    assert other.active_model_id is None
    assert not MLJob.objects.filter(project=other, kind=MLJob.Kind.SCORE).exists()


def test_new_class_after_a_model_exists_is_learned_by_the_retrain() -> None:
    project, made = _clustered_project(classes=("a", "b"))
    assert _job_run_train(project, made["manager"]).status == MLJob.Status.SUCCEEDED
    v1 = project.model_versions.get()
    assert len(v1.class_ids) == 2

    new_class = LabelClass.objects.create(project=project, name="c", shortcut="9", order=5)
    center = np.full(DIM, -6.0, dtype=np.float32)
    rng = np.random.default_rng(7)
    for _ in range(6):
        item = ItemFactory(project=project)
        _embed_item(item, center + rng.normal(size=DIM).astype(np.float32))
        _label(item, new_class)
    probe = ItemFactory(project=project)
    _embed_item(probe, center)

    job = _job_run_train(project, made["manager"])
    assert job.status == MLJob.Status.SUCCEEDED, job.error
    v2 = project.model_versions.get(number=2)
    assert v2.class_ids == [*v1.class_ids, new_class.pk]
    assert v2.n_train == v1.n_train + 6  # old labels still count

    score = MLJob.objects.get(project=project, kind=MLJob.Kind.SCORE, result__model_version_id=v2.pk)
    ml_run_score(job_id=score.pk)
    prediction = Prediction.objects.get(item=probe)
    assert prediction.model_version_id == v2.pk and len(prediction.probs) == 3
    assert prediction.label_id == new_class.pk


# --- score -------------------------------------------------------------------------------


def test_score_orders_the_train_queue_by_uncertainty_and_leaves_evaluation_items_alone() -> None:
    project, made = _clustered_project(n_open=40)
    project.strategy = Project.Strategy.MARGIN  # the pure score order is what is checked here (default: hybrid)
    project.save(update_fields=["strategy"])
    assert _job_run_train(project, made["manager"]).status == MLJob.Status.SUCCEEDED
    # A few ambiguous items between two clusters: the most uncertain ones.
    centers = _centers(3)
    ambiguous = []
    for w in (0.5, 0.45, 0.55):
        item = ItemFactory(project=project)
        _embed_item(item, w * centers[0] + (1 - w) * centers[1])
        ambiguous.append(item.pk)
    score = scoring_request(project=project)
    ml_run_score(job_id=score.pk)
    score.refresh_from_db()
    assert score.status == MLJob.Status.SUCCEEDED, score.error
    assert score.result["strategy"] == "margin" and score.result["prioritised"] == 43

    not_done = Item.objects.filter(project=project).exclude(status=Item.Status.DONE)
    assert Prediction.objects.filter(item__in=not_done).count() == not_done.count()
    assert not Prediction.objects.filter(item__status=Item.Status.DONE, item__project=project).exists()

    pool = list(
        Item.objects.filter(project=project, split=Item.Split.TRAIN, status=Item.Status.OPEN).select_related(
            "prediction"
        )
    )
    by_priority = sorted(pool, key=lambda i: -i.priority)
    margins = acquisition.margin(np.array([i.prediction.probs for i in by_priority]))
    assert np.all(np.diff(margins) <= 1e-6), "priority order must follow the margin score"
    assert {i.pk for i in by_priority[:3]} == set(ambiguous)
    top = [i for i in pool if i.priority > 1.0]
    assert len(top) == project.retrain_every  # the batch
    # Evaluation items keep their priority; labeled items are not in the pool.
    assert set(Item.objects.filter(pk__in=[i.pk for i in made["open_eval"]]).values_list("priority", flat=True)) == {
        0.123
    }

    before = dict(Item.objects.filter(project=project).values_list("id", "priority"))
    preds = list(Prediction.objects.filter(item__project=project).order_by("item_id").values_list("item_id", "probs"))
    ml_run_score(job_id=score.pk)  # duplicate delivery
    assert dict(Item.objects.filter(project=project).values_list("id", "priority")) == before
    assert (
        list(Prediction.objects.filter(item__project=project).order_by("item_id").values_list("item_id", "probs"))
        == preds
    )


def test_cold_start_scoring_uses_typiclust_on_the_train_pool() -> None:
    project, made = _clustered_project(n_train_labeled=0, n_eval_labeled=0, n_open=30)
    project.retrain_every = 6
    project.save(update_fields=["retrain_every"])
    job = scoring_request(project=project)
    ml_run_score(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == MLJob.Status.SUCCEEDED, job.error
    assert job.result["strategy"] == "typiclust" and job.result["model_version_id"] is None
    priorities = dict(Item.objects.filter(project=project, split=Item.Split.TRAIN).values_list("id", "priority"))
    batch = [i for i, p in priorities.items() if p > 1.0]
    assert len(batch) == 6
    assert sorted(p for p in priorities.values() if p <= 1.0) == [0.0] * 24
    assert not Prediction.objects.filter(item__project=project).exists()
    assert set(Item.objects.filter(pk__in=[i.pk for i in made["open_eval"]]).values_list("priority", flat=True)) == {
        0.123
    }


# --- selector: labels without a consensus row ---------------------------------------------


def test_training_labels_fall_back_to_the_majority_of_live_annotations() -> None:
    project, _, annotators = project_with_members(n_annotators=3, classes=["a", "b"])
    a, b = project.classes.order_by("order")
    users = annotators + [MembershipFactory(project=project).user]
    item_ab, item_tie, item_retracted = (ItemFactory(project=project) for _ in range(3))

    def vote(item: Item, user, label: LabelClass, retracted: bool = False) -> None:  # type: ignore[no-untyped-def]
        lease = Lease.objects.create(item=item, annotator=user, project=project, expires_at=timezone.now())
        item.annotations.create(
            annotator=user,
            lease=lease,
            label=label,
            started_at=timezone.now(),
            retracted_at=timezone.now() if retracted else None,
        )

    vote(item_ab, users[0], b)
    vote(item_ab, users[1], b)
    vote(item_ab, users[2], a)
    vote(item_tie, users[0], b)  # tie: goes to the first class in class order
    vote(item_tie, users[1], a)
    vote(item_retracted, users[0], a, retracted=True)  # no live annotation: unlabeled
    with_consensus = ItemFactory(project=project)
    vote(with_consensus, users[0], a)
    ConsensusLabel.objects.create(
        item=with_consensus, label=b, confidence=0.9, method=ConsensusLabel.Method.DAWID_SKENE
    )

    labels = labeled_items(project_id=project.pk, split=Item.Split.TRAIN)
    assert dict(zip(labels.item_ids.tolist(), labels.class_ids.tolist(), strict=True)) == {
        item_ab.pk: b.pk,
        item_tie.pk: a.pk,
        with_consensus.pk: b.pk,
    }
    assert labels.n_consensus == 1


def test_every_project_strategy_scores_the_pool() -> None:
    project, made = _clustered_project(n_open=25)
    assert _job_run_train(project, made["manager"]).status == MLJob.Status.SUCCEEDED
    pool_ids = set(
        Item.objects.filter(project=project, split=Item.Split.TRAIN, status=Item.Status.OPEN).values_list(
            "id", flat=True
        )
    )
    for strategy in Project.Strategy.values:
        Project.objects.filter(pk=project.pk).update(strategy=strategy)
        project.refresh_from_db()
        job = scoring_request(project=project)
        ml_run_score(job_id=job.pk)
        job.refresh_from_db()
        assert job.status == MLJob.Status.SUCCEEDED, (strategy, job.error)
        assert job.result["strategy"] == strategy
        priorities = dict(Item.objects.filter(pk__in=pool_ids).values_list("id", "priority"))
        batch = sorted((p for p in priorities.values() if p > 1.0), reverse=True)
        assert len(batch) == project.retrain_every, strategy
        assert all(0.0 <= p < 1.0 for p in priorities.values() if p <= 1.0), strategy
