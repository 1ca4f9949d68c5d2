"""The manager dashboard: cost arithmetic, progress, throughput/ETA, learning curve, permissions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.urls import reverse

from labeling.models import (
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
from labeling.selectors.dashboard import (
    power_law_fit,
    project_cost_summary,
    project_dashboard,
    project_learning_curve_projection,
    project_progress,
    project_throughput,
)
from tests.factories import ItemFactory, MembershipFactory, UserFactory, project_with_members

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def annotate(
    item: Item, user, *, duration_ms: int, at: datetime = NOW, label: LabelClass | None = None, retracted: bool = False
) -> Annotation:  # type: ignore[no-untyped-def]
    lease = Lease.objects.create(
        item=item, annotator=user, project_id=item.project_id, state=Lease.State.SUBMITTED, expires_at=at
    )
    label = label or LabelClass.objects.filter(project_id=item.project_id).first()
    ann = Annotation.objects.create(
        item=item,
        annotator=user,
        lease=lease,
        label=label,
        started_at=at - timedelta(milliseconds=duration_ms),
        duration_ms=duration_ms,
    )
    # submitted_at is auto_now_add: pin it afterwards for fixed-time tests.
    Annotation.objects.filter(pk=ann.pk).update(
        submitted_at=at, retracted_at=at + timedelta(seconds=5) if retracted else None
    )
    Item.objects.filter(pk=item.pk).update(annotation_count=item.annotations.filter(retracted_at__isnull=True).count())
    return ann


def set_rate(project: Project, user, *, hourly: str = "0", per_label: str | None = None) -> None:  # type: ignore[no-untyped-def]
    Membership.objects.filter(project=project, user=user).update(
        hourly_rate=Decimal(hourly), price_per_label=Decimal(per_label) if per_label is not None else None
    )


def consensus(item: Item, label: LabelClass | None = None, method: str = ConsensusLabel.Method.MAJORITY) -> None:
    ConsensusLabel.objects.create(
        item=item,
        label=label or LabelClass.objects.filter(project_id=item.project_id).first(),
        confidence=1.0,
        method=method,
    )


# --- cost -------------------------------------------------------------------------------


def test_hourly_rates_cost_active_time_only() -> None:
    project, _, (alice, bob) = project_with_members(n_annotators=2)
    set_rate(project, alice, hourly="100")
    set_rate(project, bob, hourly="60")
    items = ItemFactory.create_batch(3, project=project)
    annotate(items[0], alice, duration_ms=36_000)  # 10 s active at $100/h = $1.00
    annotate(items[1], alice, duration_ms=72_000)  # 20 s = $2.00
    # Bob's clock was paused while idle: the 30 s of active time is all that is paid, however
    # long the item was open (started_at is 30 s before submit here, the wall time is ignored).
    annotate(items[2], bob, duration_ms=30_000)  # 30 s at $60/h = $0.50
    annotate(items[2], alice, duration_ms=3_600_000, retracted=True)  # retracted: costs nothing

    cost = project_cost_summary(project_id=project.pk)

    assert cost.annotation_cost == Decimal("3.5000")
    assert cost.total == Decimal("3.5000")
    assert cost.annotations == 3
    assert cost.active_hours == pytest.approx(138 / 3600)
    assert cost.cost_per_annotation == (Decimal("3.5") / 3).quantize(Decimal("0.0001"))
    by_person = {row.label: row for row in cost.by_person}
    assert by_person[alice.username].annotation_cost == Decimal("3.0000")
    assert by_person[alice.username].annotations == 2
    assert by_person[bob.username].annotation_cost == Decimal("0.5000")


def test_price_per_label_overrides_the_hourly_rate() -> None:
    project, _, (alice,) = project_with_members(n_annotators=1)
    set_rate(project, alice, hourly="100", per_label="0.25")
    for item in ItemFactory.create_batch(4, project=project):
        annotate(item, alice, duration_ms=3_600_000)  # an hour each would be $100 at the hourly rate

    cost = project_cost_summary(project_id=project.pk)

    assert cost.annotation_cost == Decimal("1.0000")
    assert cost.cost_per_annotation == Decimal("0.2500")


def test_overlap_three_makes_a_consensus_label_cost_three_annotations() -> None:
    project, _, annotators = project_with_members(overlap=3, n_annotators=3)
    for user in annotators:
        set_rate(project, user, hourly="90")
    items = ItemFactory.create_batch(2, project=project)
    for item in items:
        for user in annotators:
            annotate(item, user, duration_ms=20_000)  # 20 s at $90/h = $0.50
        consensus(item)

    cost = project_cost_summary(project_id=project.pk)

    assert cost.cost_per_annotation == Decimal("0.5000")
    assert cost.consensus_labels == 2
    assert cost.cost_per_consensus_label == Decimal("1.5000")
    assert cost.cost_per_consensus_label == 3 * cost.cost_per_annotation


def test_review_cost_is_added(settings) -> None:  # type: ignore[no-untyped-def]
    settings.REVIEW_ASSUMED_SECONDS = 90
    project, _, (alice,) = project_with_members(n_annotators=1)
    set_rate(project, alice, hourly="60")
    hourly_reviewer = MembershipFactory(project=project, role=Membership.Role.REVIEWER, hourly_rate=Decimal("120")).user
    per_label_reviewer = MembershipFactory(
        project=project, role=Membership.Role.REVIEWER, hourly_rate=Decimal("120"), price_per_label=Decimal("2")
    ).user
    item = ItemFactory(project=project)
    annotate(item, alice, duration_ms=60_000)  # 1 min at $60/h = $1
    label = LabelClass.objects.filter(project=project).first()
    Review.objects.create(item=item, reviewer=hourly_reviewer, label=label)  # 90 s at $120/h = $3
    Review.objects.create(item=item, reviewer=per_label_reviewer, label=label)  # $2 per review
    consensus(item, method=ConsensusLabel.Method.REVIEW)

    cost = project_cost_summary(project_id=project.pk)

    assert cost.annotation_cost == Decimal("1.0000")
    assert cost.review_cost == Decimal("5.0000")
    assert cost.total == Decimal("6.0000")
    assert cost.reviews == 2
    assert cost.cost_per_annotation == Decimal("1.0000")  # reviews are not annotations
    assert cost.cost_per_consensus_label == Decimal("6.0000")  # but the label's price includes them
    by_person = {row.label: row for row in cost.by_person}
    assert by_person[hourly_reviewer.username].review_cost == Decimal("3.0000")
    assert by_person[hourly_reviewer.username].annotations == 0


def test_spend_per_day_fills_idle_days_with_zero() -> None:
    project, _, (alice,) = project_with_members(n_annotators=1)
    set_rate(project, alice, hourly="36")  # $0.01 per second
    items = ItemFactory.create_batch(3, project=project)
    annotate(items[0], alice, duration_ms=100_000, at=datetime(2026, 3, 1, 23, 59, tzinfo=UTC))  # $1
    annotate(items[1], alice, duration_ms=200_000, at=datetime(2026, 3, 1, 8, 0, tzinfo=UTC))  # $2
    annotate(items[2], alice, duration_ms=50_000, at=datetime(2026, 3, 3, 0, 1, tzinfo=UTC))  # $0.50

    days = project_cost_summary(project_id=project.pk).by_day

    assert [(d.key, d.annotations, d.annotation_cost) for d in days] == [
        ("2026-03-01", 2, Decimal("3.0000")),
        ("2026-03-02", 0, Decimal("0.0000")),
        ("2026-03-03", 1, Decimal("0.5000")),
    ]


def test_no_data_gives_nulls_not_numbers() -> None:
    project, manager, _ = project_with_members(n_annotators=1)
    d = project_dashboard(project=project, target_accuracy=0.9, now=NOW)
    assert d.cost.total == 0
    assert d.cost.cost_per_annotation is None
    assert d.cost.cost_per_consensus_label is None
    assert d.throughput.eta_hours == 0.0  # nothing wanted: nothing to wait for
    assert not d.learning_curve.labels.available
    assert "not enough model versions" in d.learning_curve.labels.reason
    assert not d.confusion.available
    assert d.quality.human_level_error is None and d.quality.panel_error is None and d.quality.model_error is None
    assert not d.quality.agreement_available


# --- progress and throughput --------------------------------------------------------------


def test_progress_counts_and_remaining_annotations() -> None:
    project, _, (alice, bob) = project_with_members(overlap=2, n_annotators=2)
    done = ItemFactory(project=project, status=Item.Status.DONE)
    half = ItemFactory(project=project)
    untouched = ItemFactory.create_batch(3, project=project)
    ItemFactory(project=project, split=Item.Split.EVALUATION)
    annotate(done, alice, duration_ms=1000)
    annotate(done, bob, duration_ms=1000)
    annotate(half, alice, duration_ms=1000)
    consensus(done)

    p = project_progress(project_id=project.pk)

    assert p.items_total == 6
    assert p.by_status["done"] == 1 and p.by_status["open"] == 5
    assert p.by_split["evaluation"]["open"] == 1
    assert p.items_done == 1
    assert (p.consensus_done, p.consensus_target) == (1, 6)
    assert p.remaining_annotations == 1 + 2 * len(untouched) + 2  # half, untouched, the eval item


def test_throughput_and_eta_on_fixed_timestamps() -> None:
    project, _, (alice, bob) = project_with_members(n_annotators=2)
    items = ItemFactory.create_batch(12, project=project)
    # Alice: 6 labels in the last 24 h, 30 s of active time each; 2 older ones 3 days ago.
    for i in range(6):
        annotate(items[i], alice, duration_ms=30_000, at=NOW - timedelta(hours=i + 1))
    for i in range(6, 8):
        annotate(items[i], alice, duration_ms=30_000, at=NOW - timedelta(days=3))
    # Bob: 2 labels in the last 24 h at 60 s each.
    for i in range(8, 10):
        annotate(items[i], bob, duration_ms=60_000, at=NOW - timedelta(hours=2))
    remaining = 100

    t = project_throughput(
        project_id=project.pk, remaining_annotations=remaining, cost_per_annotation=Decimal("0.5"), now=NOW
    )

    by_name = {a.username: a for a in t.annotators}
    assert by_name[alice.username].per_active_hour == pytest.approx(120.0)  # 30 s each
    assert by_name[bob.username].per_active_hour == pytest.approx(60.0)
    assert by_name[alice.username].per_wall_hour_recent == pytest.approx(6 / 24)
    assert by_name[alice.username].per_wall_hour == pytest.approx(8 / 72)  # window: first annotation 72 h ago
    assert t.overall.annotations == 10 and t.overall.annotations_recent == 8
    assert t.overall.per_wall_hour_recent == pytest.approx(8 / 24)
    assert t.overall.per_active_hour == pytest.approx(10 / ((8 * 30 + 2 * 60) / 3600))
    assert t.eta_hours == pytest.approx(remaining / (8 / 24))  # 300 h
    assert t.eta_at == NOW + timedelta(hours=300)
    assert t.labor_hours_to_finish == pytest.approx(remaining / t.overall.per_active_hour)
    assert t.cost_to_finish == Decimal("50.0000")


def test_eta_needs_a_recent_pace() -> None:
    project, _, (alice,) = project_with_members(n_annotators=1)
    item = ItemFactory(project=project)
    annotate(item, alice, duration_ms=1000, at=NOW - timedelta(days=2))
    t = project_throughput(project_id=project.pk, remaining_annotations=5, cost_per_annotation=None, now=NOW)
    assert t.eta_hours is None and t.eta_at is None
    assert "last 24 hours" in t.eta_reason


# --- learning curve -----------------------------------------------------------------------

A, B, C = 2.0, 0.5, 0.05  # err(n) = 2 n^-0.5 + 0.05; accuracy 0.9 <=> err 0.1 <=> n = (2 / 0.05)^2 = 1600


def test_power_law_fit_recovers_a_known_curve() -> None:
    n = np.array([50, 100, 200, 400, 800], dtype=np.float64)
    fit = power_law_fit(n, A * n**-B + C)
    assert fit.a == pytest.approx(A, rel=1e-3)
    assert fit.b == pytest.approx(B, rel=1e-3)
    assert fit.c == pytest.approx(C, abs=1e-4)
    assert fit.x_at_error(0.1) == pytest.approx(1600, rel=1e-2)


def test_projection_recovers_labels_needed_within_tolerance_with_noise(rng) -> None:  # type: ignore[no-untyped-def]
    n = np.array([50, 100, 150, 200, 300, 400, 600, 800], dtype=np.float64)
    acc = 1 - (A * n**-B + C) + rng.normal(0, 0.003, n.size)
    proj = project_learning_curve_projection(axis="labels", x=n, accuracy=acc, target_accuracy=0.9)
    assert proj.available and proj.reachable
    # Extrapolating 2x beyond the data with 0.3 % accuracy noise: the total is within 20 %.
    assert proj.needed_x == pytest.approx(1600, rel=0.2)
    assert proj.still_needed_x == pytest.approx(proj.needed_x - 800)
    assert proj.band_low is not None and proj.band_low <= proj.still_needed_x
    assert proj.band_high is None or proj.band_high >= proj.still_needed_x
    assert proj.asymptote_accuracy == pytest.approx(1 - C, abs=0.03)
    assert proj.curve and all(c["x"] >= 0 for c in proj.curve)


def test_projection_target_above_the_asymptote_is_not_reachable() -> None:
    n = np.array([50, 100, 200, 400, 800], dtype=np.float64)
    proj = project_learning_curve_projection(axis="labels", x=n, accuracy=1 - (A * n**-B + C), target_accuracy=0.97)
    assert proj.available and proj.reachable is False
    assert proj.reason == "not reachable with this model at the current trend"
    assert proj.still_needed_x is None


def test_projection_needs_three_versions_and_three_points_have_no_band() -> None:
    two = project_learning_curve_projection(
        axis="labels", x=np.array([10.0, 20.0]), accuracy=np.array([0.5, 0.6]), target_accuracy=0.9
    )
    assert not two.available and "not enough model versions" in two.reason
    n = np.array([100, 200, 400], dtype=np.float64)
    three = project_learning_curve_projection(axis="labels", x=n, accuracy=1 - (A * n**-B + C), target_accuracy=0.9)
    assert three.available and three.band_low is None and "at least 4" in three.band_method


def test_dashboard_learning_curve_and_confusion_from_model_versions() -> None:
    project, _, _ = project_with_members(n_annotators=1, classes=["cat", "dog"])
    class_ids = list(LabelClass.objects.filter(project=project).values_list("id", flat=True))
    for number, n in enumerate([50, 100, 200, 400, 800], start=1):
        mv = ModelVersion.objects.create(
            project=project,
            number=number,
            backbone="b",
            class_ids=class_ids,
            artifact="x",
            n_train=n,
            cost_at_training=Decimal(n) * Decimal("1.5"),
            metrics={"accuracy": 1 - (A * n**-B + C), "confusion": [[40, 10], [5, 45]], "n": 100},
        )
    project.active_model = mv
    project.save(update_fields=["active_model"])

    d = project_dashboard(project=project, target_accuracy=0.9, now=NOW)

    assert [p.n_train for p in d.learning_curve.points] == [50, 100, 200, 400, 800]
    assert d.learning_curve.points[-1].is_active
    assert d.learning_curve.labels.still_needed_x == pytest.approx(800, rel=0.02)
    assert d.learning_curve.money.still_needed_x == pytest.approx(800 * 1.5, rel=0.02)
    assert d.confusion.available and d.confusion.class_names == ["cat", "dog"]
    assert d.confusion.matrix == [[40, 10], [5, 45]]
    assert d.quality.model_error == pytest.approx(A * 800**-B + C)


def test_quality_vs_gold_and_consensus() -> None:
    project, _, (alice, bob) = project_with_members(n_annotators=2, classes=["cat", "dog"])
    cat, dog = LabelClass.objects.filter(project=project).order_by("order")
    gold_items = ItemFactory.create_batch(10, project=project, gold_label=cat)
    for i, item in enumerate(gold_items):
        annotate(item, alice, duration_ms=1000, label=cat)  # 10 / 10
        annotate(item, bob, duration_ms=1000, label=cat if i < 7 else dog)  # 7 / 10
        consensus(item, label=cat if i < 9 else dog)  # the panel: 9 / 10

    q = project_dashboard(project=project, target_accuracy=0.9, now=NOW).quality

    rows = {a.username: a for a in q.annotators}
    assert rows[alice.username].vs_gold_accuracy == 1.0 and rows[alice.username].vs_gold_n == 10
    assert rows[bob.username].vs_gold_accuracy == pytest.approx(0.7)
    assert rows[bob.username].vs_consensus_accuracy == pytest.approx(0.8)  # 7 agree + the 1 dog/dog
    assert q.human_level_error == 0.0
    assert q.panel_error == pytest.approx(0.1)


# --- JSON, CSV, jobs, permissions --------------------------------------------------------


def _urls(project_id: int) -> list[str]:
    return [
        reverse("dashboard", args=[project_id]),
        reverse("api-dashboard", args=[project_id]),
        reverse("api-dashboard-jobs", args=[project_id]),
        reverse("api-dashboard-spend", args=[project_id]) + "?by=annotator",
        reverse("api-dashboard-spend", args=[project_id]) + "?by=day",
        reverse("api-dashboard-learning-curve", args=[project_id]),
    ]


@pytest.mark.parametrize("who, expected", [("manager", 200), ("annotator", 403), ("reviewer", 403), ("outsider", 404)])
def test_only_managers_see_the_dashboard(client, who: str, expected: int) -> None:  # type: ignore[no-untyped-def]
    project, manager, (annotator,) = project_with_members(n_annotators=1)
    users = {
        "manager": manager,
        "annotator": annotator,
        "reviewer": MembershipFactory(project=project, role=Membership.Role.REVIEWER).user,
        "outsider": UserFactory(),
    }
    client.force_login(users[who])
    for url in _urls(project.pk):
        response = client.get(url)
        assert response.status_code == expected, url
        if expected != 200 and "/api/" in url:
            assert response.json()["code"] == ("role_required" if expected == 403 else "not_found")


def test_anonymous_is_sent_to_login_or_refused(client) -> None:  # type: ignore[no-untyped-def]
    project, _, _ = project_with_members(n_annotators=1)
    assert client.get(reverse("dashboard", args=[project.pk])).status_code == 302
    assert client.get(reverse("api-dashboard", args=[project.pk])).status_code in (401, 403)


def test_json_shape_and_csv_contents(client) -> None:  # type: ignore[no-untyped-def]
    project, manager, (alice,) = project_with_members(n_annotators=1)
    set_rate(project, alice, hourly="100")
    annotate(ItemFactory(project=project), alice, duration_ms=36_000, at=datetime(2026, 3, 1, 9, tzinfo=UTC))
    MLJob.objects.create(
        project=project,
        kind=MLJob.Kind.TRAIN,
        status=MLJob.Status.RUNNING,
        input_fingerprint="f",
        progress=0.4,
        message="epoch 2/5",
    )
    ImportJob.objects.create(project=project, status=ImportJob.Status.RUNNING, source="x.zip", total=10, processed=5)
    MLJob.objects.create(project=project, kind=MLJob.Kind.EMBED, status=MLJob.Status.SUCCEEDED, input_fingerprint="g")
    client.force_login(manager)

    data = client.get(reverse("api-dashboard", args=[project.pk]), {"target_accuracy": "0.95"}).json()

    assert set(data) == {
        "project",
        "generated_at",
        "cost",
        "progress",
        "throughput",
        "learning_curve",
        "confusion",
        "quality",
        "jobs",
    }
    assert data["cost"]["total"] == 1.0
    assert data["cost"]["by_person"][0]["total"] == 1.0
    assert data["learning_curve"]["target_accuracy"] == 0.95
    assert sorted((j["kind"], j["progress"]) for j in data["jobs"]) == [("import", 0.5), ("train", 0.4)]
    jobs = client.get(reverse("api-dashboard-jobs", args=[project.pk])).json()["jobs"]
    assert len(jobs) == 2

    bad = client.get(reverse("api-dashboard", args=[project.pk]), {"target_accuracy": "2"})
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"

    by_person = client.get(reverse("api-dashboard-spend", args=[project.pk]), {"by": "annotator"})
    assert by_person["Content-Type"].startswith("text/csv")
    lines = by_person.content.decode().splitlines()
    assert lines[0] == "user_id,username,annotations,active_hours,annotation_cost,reviews,review_cost,total"
    assert lines[1] == f"{alice.pk},{alice.username},1,0.0100,1.0000,0,0.0000,1.0000"
    by_day = client.get(reverse("api-dashboard-spend", args=[project.pk]), {"by": "day"}).content.decode()
    assert by_day.splitlines()[1] == "2026-03-01,1,0.0100,1.0000,0,0.0000,1.0000"
    assert client.get(reverse("api-dashboard-spend", args=[project.pk]), {"by": "week"}).status_code == 400
    curve = client.get(reverse("api-dashboard-learning-curve", args=[project.pk])).content.decode()
    assert curve.splitlines() == ["model_version,n_train,cost_at_training,eval_accuracy,is_active"]


def test_page_renders_the_frame(client) -> None:  # type: ignore[no-untyped-def]
    project, manager, _ = project_with_members(n_annotators=1)
    client.force_login(manager)
    html = client.get(reverse("dashboard", args=[project.pk]), {"target_accuracy": "0.93"}).content.decode()
    assert "vendor/chartjs/chart.umd.min.js" in html and "labeling/dashboard.js" in html
    assert 'value="0.93"' in html
    assert reverse("api-dashboard", args=[project.pk]) in html


def test_heavy_figures_are_cached_for_max_age_and_jobs_are_not(client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.DASHBOARD_CACHE_SECONDS = 60
    project, manager, (alice,) = project_with_members(n_annotators=1)
    set_rate(project, alice, hourly="100")
    annotate(ItemFactory(project=project), alice, duration_ms=36_000)
    client.force_login(manager)
    url = reverse("api-dashboard", args=[project.pk])
    first = client.get(url).json()
    annotate(ItemFactory(project=project), alice, duration_ms=36_000)
    MLJob.objects.create(project=project, kind=MLJob.Kind.TRAIN, status=MLJob.Status.PENDING, input_fingerprint="h")
    second = client.get(url).json()
    assert second["cost"]["total"] == first["cost"]["total"] == 1.0
    assert second["generated_at"] == first["generated_at"]
    assert len(second["jobs"]) == 1  # jobs are always fresh
    settings.DASHBOARD_CACHE_SECONDS = 0
    assert client.get(url).json()["cost"]["total"] == 2.0
