"""Seed a plausible demo project for the manager dashboard (screenshots, manual checks).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/annotate_dash_demo \\
        .venv/bin/python manage.py migrate --noinput
    DATABASE_URL=... .venv/bin/python bench/dashboard_demo.py

Creates (idempotently: it refuses if the project exists) a 3-reader radiology-style project
with four annotators paid per hour or per label, one reviewer, five days of annotations with
lognormal active times, gold labels and reviews, consensus by the app's own Dawid-Skene
recompute (with its agreement statistics), five model versions whose evaluation
accuracy follows a noisy power law, and two live jobs. Login: dash-manager / dash-manager-pw.
Item files are not written: the dashboard never opens them. Never run it against production.
"""

from __future__ import annotations

import hashlib
import os
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

# bench/queue_bench.py would shadow the standard library's queue module for a script run from bench/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from labeling.models import (  # noqa: E402
    Annotation,
    ConsensusLabel,
    ImportJob,
    Item,
    LabelClass,
    Lease,
    Membership,
    MLJob,
    ModelVersion,
    Project,
    Review,
)
from labeling.selectors.dashboard import project_cost_summary  # noqa: E402
from labeling.services.ml_runs import ml_run_consensus  # noqa: E402

PROJECT = "Chest X-ray triage (dashboard demo)"
CLASSES = ["normal", "pneumonia", "effusion", "nodule", "cardiomegaly"]
COLORS = ["#59a14f", "#e15759", "#4e79a7", "#f28e2b", "#b07aa1"]
# (username, hourly rate, price per label, seconds per label (median), accuracy)
ANNOTATORS = [
    ("dr.alvarez", "100", None, 22, 0.93),
    ("dr.chen", "80", None, 30, 0.90),
    ("dr.okafor", "60", None, 38, 0.86),
    ("r.patel", "0", "0.45", 26, 0.88),
]


def main() -> None:
    if settings.ANNOTATE_ENV == "prod":
        raise SystemExit("refusing to seed demo users in prod")
    if Project.objects.filter(name=PROJECT).exists():
        print(f"{PROJECT!r} exists: #{Project.objects.get(name=PROJECT).pk}")
        return
    rng = np.random.default_rng(7)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    User = get_user_model()

    def user(name: str) -> object:
        u, _ = User.objects.get_or_create(username=name)
        u.set_password(f"{name}-pw")
        u.save()
        return u

    with transaction.atomic():
        manager = user("dash-manager")
        project = Project.objects.create(name=PROJECT, overlap=3, max_overlap=3, eval_fraction=0.1, created_by=manager)
        classes = [
            LabelClass.objects.create(project=project, name=n, shortcut=str(i + 1), color=COLORS[i], order=i)
            for i, n in enumerate(CLASSES)
        ]
        Membership.objects.create(project=project, user=manager, role=Membership.Role.MANAGER)
        people = []
        for name, rate, per_label, secs, acc in ANNOTATORS:
            u = user(name)
            Membership.objects.create(
                project=project,
                user=u,
                role=Membership.Role.ANNOTATOR,
                hourly_rate=Decimal(rate),
                price_per_label=Decimal(per_label) if per_label else None,
            )
            people.append((u, secs, acc))
        reviewer = user("dr.senior")
        Membership.objects.create(
            project=project, user=reviewer, role=Membership.Role.REVIEWER, hourly_rate=Decimal("150")
        )

        n_items = 2400
        prior = np.array([0.5, 0.2, 0.12, 0.1, 0.08])
        truth = rng.choice(len(CLASSES), size=n_items, p=prior)
        items = Item.objects.bulk_create(
            Item(
                project=project,
                file=f"projects/{project.pk}/items/demo/{i:05d}.png",
                original_name=f"cxr_{i:05d}.png",
                sha256=hashlib.sha256(f"{project.pk}-{i}".encode()).hexdigest(),
                width=1024,
                height=1024,
                mode="L",
                split=Item.Split.EVALUATION if i % 10 == 0 else Item.Split.TRAIN,
                wanted=3,
                gold_label=classes[truth[i]] if i % 10 == 1 else None,  # ~70 gold answers per reader
            )
            for i in range(n_items)
        )
        # Five working days, busier in the middle; each labeled item gets three readers.
        per_day = [120, 190, 230, 210, 150]
        labeled = sum(per_day)
        leases, anns, times = [], [], []
        day_of = np.repeat(np.arange(5), per_day)
        for k in range(labeled):
            item = items[k]
            day = 4 - int(day_of[k])
            readers = rng.choice(len(people), size=3, replace=False)
            for r in readers:
                u, secs, acc = people[r]
                t = now - timedelta(days=day, hours=float(rng.uniform(0, 9)))
                dur = int(1000 * secs * rng.lognormal(0, 0.35))
                lab = truth[k] if rng.random() < acc else int(rng.integers(len(CLASSES)))
                leases.append(Lease(item=item, annotator=u, project=project, state="submitted", expires_at=t))
                anns.append((item, u, classes[lab], dur))
                times.append(t)
        leases = Lease.objects.bulk_create(leases)
        objs = Annotation.objects.bulk_create(
            Annotation(
                item=i, annotator=u, lease=le, label=lab, started_at=t - timedelta(milliseconds=d), duration_ms=d
            )
            for (i, u, lab, d), le, t in zip(anns, leases, times, strict=True)
        )
        for a, t in zip(objs, times, strict=True):
            Annotation.objects.filter(pk=a.pk).update(submitted_at=t)
        # A few undone answers: they must not count.
        Annotation.objects.filter(pk__in=[a.pk for a in objs[::97]]).update(retracted_at=now)
        # Items: done, or disputed (three different answers) and settled by the reviewer.
        reviews = []
        for k in range(labeled):
            votes = [c.pk for (i, _u, c, _d) in anns[3 * k : 3 * k + 3]]
            # Gold items are not sent to review: their answer is known (and the panel is measured on them).
            if len(set(votes)) == 3 and len(reviews) < 60 and items[k].gold_label is None:
                reviews.append(Review(item=items[k], reviewer=reviewer, label=classes[truth[k]]))
        Review.objects.bulk_create(reviews)
        reviewed = {r.item_id for r in reviews}
        Item.objects.filter(pk__in=[it.pk for it in items[:labeled]]).update(annotation_count=3, status="done")
        Item.objects.filter(pk__in=reviewed).update(status="reviewed")
        Item.objects.filter(pk__in=[it.pk for it in items[labeled : labeled + 40]]).update(
            annotation_count=1, lease_count=2, status="full"
        )

    # Consensus labels, reliabilities and agreement come from the app's own full recompute
    # (Dawid-Skene over the answers above, gold and reviews clamped), run as its job would run,
    # so the quality panel shows what the app computes, not numbers made up here.
    job = MLJob.objects.create(project=project, kind=MLJob.Kind.CONSENSUS, input_fingerprint="demo-consensus")
    ml_run_consensus(job_id=job.pk)
    job.refresh_from_db()
    if job.status != MLJob.Status.SUCCEEDED:
        raise SystemExit(f"consensus job {job.pk} {job.status}: {job.error}")
    print(f"consensus: {job.message}; {ConsensusLabel.objects.filter(item__project=project).count()} labels")

    with transaction.atomic():
        # Model versions on a noisy power law err(n) = 1.6 n^-0.45 + 0.06.
        # Money at training: the project's real cost per consensus label so far, times the labels.
        cpc = project_cost_summary(project_id=project.pk).cost_per_consensus_label or Decimal("1")
        versions = []
        for number, n in enumerate([60, 150, 300, 480, 700], start=1):
            acc = float(1 - (1.6 * n**-0.45 + 0.06) + rng.normal(0, 0.006))
            true_n = 120
            cm = np.zeros((5, 5), dtype=int)
            t_cls = rng.choice(5, size=true_n * 5 // 2, p=prior)
            for t in t_cls:
                p = t if rng.random() < acc else int(rng.integers(5))
                cm[t, p] += 1
            versions.append(
                ModelVersion.objects.create(
                    project=project,
                    number=number,
                    backbone="efficientnet_lite0",
                    class_ids=[c.pk for c in classes],
                    artifact=f"demo/v{number}.pt",
                    n_train=n,
                    cost_at_training=(cpc * n).quantize(Decimal("0.01")),
                    metrics={"accuracy": acc, "n": int(cm.sum()), "confusion": cm.tolist()},
                )
            )
        project.active_model = versions[-1]
        project.save(update_fields=["active_model"])
        MLJob.objects.create(
            project=project,
            kind=MLJob.Kind.TRAIN,
            status=MLJob.Status.RUNNING,
            input_fingerprint="demo-train-6",
            progress=0.45,
            message="training model v6 on 880 labels: epoch 9/20",
            heartbeat_at=now,
        )
        MLJob.objects.create(
            project=project, kind=MLJob.Kind.SCORE, status=MLJob.Status.PENDING, input_fingerprint="demo-score-6"
        )
        ImportJob.objects.create(
            project=project, status=ImportJob.Status.RUNNING, source="batch-07.zip", total=1000, processed=340
        )
    print(f"demo project #{project.pk}: {PROJECT}; login dash-manager / dash-manager-pw")


if __name__ == "__main__":
    main()
