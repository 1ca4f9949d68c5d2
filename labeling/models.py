"""The domain's tables.

Models hold fields, constraints and indexes; every write with consequences goes through
``labeling.services`` (no domain logic in ``save()`` or signals). Annotations are the raw
truth and are never updated in place: consensus, predictions and priorities are derived.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Project(models.Model):
    class TaskType(models.TextChoices):
        IMAGE_CLASSIFICATION = "image_classification", "Single-label image classification"

    class Strategy(models.TextChoices):
        RANDOM = "random", "Random"
        LEAST_CONFIDENCE = "least_confidence", "Least confidence"
        MARGIN = "margin", "Margin"
        ENTROPY = "entropy", "Entropy"
        BALD = "bald", "BALD (MC dropout)"
        KCENTER = "kcenter", "k-center greedy (core-set)"
        BADGE = "badge", "BADGE"
        CLUSTER_MARGIN = "cluster_margin", "Cluster-margin (diverse margin)"
        HYBRID = "hybrid", "Hybrid: TypiClust while classes have few labels, then cluster-margin"

    name = models.CharField(max_length=200, help_text="Shown to annotators and managers.")
    instructions = models.TextField(blank=True, help_text="Labeling guidelines, plain text.")
    task_type = models.CharField(max_length=40, choices=TaskType.choices, default=TaskType.IMAGE_CLASSIFICATION)
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Annotations wanted per item.")
    max_overlap = models.PositiveSmallIntegerField(
        default=1, help_text="Adaptive overlap: the most annotations an item may get when readers disagree."
    )
    consensus_threshold = models.FloatField(
        default=0.0,
        help_text="Adaptive overlap: an item whose consensus confidence stays below this gets one more reader.",
    )
    lease_minutes = models.PositiveSmallIntegerField(default=10, help_text="How long a leased item stays reserved.")
    eval_fraction = models.FloatField(
        default=0.1, help_text="Fraction of imported items reserved as the evaluation set (never trained on)."
    )
    eval_rate = models.FloatField(
        default=0.1, help_text="Share of queue pulls that serve an evaluation-set item while any is left."
    )
    gold_rate = models.FloatField(default=0.0, help_text="Share of queue pulls that serve a gold item.")
    show_suggestions = models.BooleanField(
        default=True, help_text="Show the model's suggestion to annotators (off to measure anchoring bias)."
    )
    strategy = models.CharField(
        max_length=30, choices=Strategy.choices, default=Strategy.HYBRID, help_text="Active-learning query strategy."
    )
    retrain_every = models.PositiveIntegerField(default=50, help_text="Retrain after this many new consensus labels.")
    backbone = models.CharField(max_length=100, blank=True, help_text="Feature backbone; blank = the server default.")
    active_model = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The model version whose predictions are shown and drive the queue.",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class LabelClass(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="classes")
    name = models.CharField(max_length=100)
    shortcut = models.CharField(max_length=1, blank=True, help_text="Keyboard key that picks this class.")
    color = models.CharField(max_length=7, default="#4e79a7", help_text="#rrggbb")
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="labelclass_unique_name"),
            models.UniqueConstraint(
                fields=["project", "shortcut"], condition=~Q(shortcut=""), name="labelclass_unique_shortcut"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        MANAGER = "manager", "Manager"
        ANNOTATOR = "annotator", "Annotator"
        REVIEWER = "reviewer", "Reviewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.ANNOTATOR)
    hourly_rate = models.DecimalField(
        max_digits=10, decimal_places=2, default=0, help_text="Pay per hour of active labeling time."
    )
    price_per_label = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="If set, pay per annotation instead of per hour.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "project"], name="membership_unique_user_project")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


def item_upload_to(instance: Item, filename: str) -> str:
    return f"projects/{instance.project_id}/items/{instance.sha256[:2]}/{instance.sha256}{_suffix(filename)}"


def thumb_upload_to(instance: Item, filename: str) -> str:
    return f"projects/{instance.project_id}/thumbs/{instance.sha256[:2]}/{instance.sha256}.webp"


def _suffix(filename: str) -> str:
    dot = filename.rfind(".")
    suffix = filename[dot:].lower() if dot >= 0 else ""
    return suffix if suffix.isascii() and len(suffix) <= 6 and suffix[1:].isalnum() else ""


class Item(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        EVALUATION = "evaluation", "Evaluation"

    class Status(models.TextChoices):
        OPEN = "open", "Wants annotators"  # annotation_count + lease_count < wanted
        FULL = "full", "All slots leased"  # waiting on open leases
        DONE = "done", "Annotated"
        REVIEW = "review", "Needs review"
        REVIEWED = "reviewed", "Reviewed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    file = models.FileField(upload_to=item_upload_to, max_length=300)
    thumbnail = models.FileField(upload_to=thumb_upload_to, max_length=300, blank=True)
    original_name = models.CharField(max_length=500, help_text="File name as imported (display only).")
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    mode = models.CharField(max_length=10, blank=True, help_text="Pillow image mode, e.g. L, RGB, I;16.")
    metadata = models.JSONField(default=dict, blank=True)
    split = models.CharField(max_length=12, choices=Split.choices, default=Split.TRAIN)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    priority = models.FloatField(default=0.0, help_text="Queue order: higher is served first.")
    wanted = models.PositiveSmallIntegerField(default=1, help_text="Annotations wanted (overlap, adaptive).")
    annotation_count = models.PositiveIntegerField(default=0, help_text="Kept by the queue services, with F().")
    lease_count = models.PositiveIntegerField(default=0, help_text="Active leases; kept by the queue services.")
    gold_label = models.ForeignKey(
        LabelClass,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Known answer: makes this a gold (honeypot) item.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "sha256"], name="item_unique_sha256")]
        indexes = [
            # The queue's partial index: only items that still want an annotator, in serve order.
            models.Index(
                "project",
                "split",
                models.F("priority").desc(),
                "id",
                condition=Q(status="open"),
                name="item_queue_open",
            ),
            models.Index(fields=["project", "status"], name="item_project_status"),
        ]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.project_id})"


class Lease(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="leases")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="leases")
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # An annotator is never served the same item twice.
            models.UniqueConstraint(fields=["item", "annotator"], name="lease_unique_item_annotator"),
        ]
        indexes = [
            models.Index(fields=["expires_at"], condition=Q(state="active"), name="lease_active_expiry"),
            models.Index(fields=["annotator", "project"], condition=Q(state="active"), name="lease_active_by_user"),
        ]


class Annotation(models.Model):
    """One annotator's answer for one item. Immutable; undo sets ``retracted_at``."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations")
    lease = models.ForeignKey(Lease, on_delete=models.PROTECT, related_name="annotations")
    label = models.ForeignKey(LabelClass, on_delete=models.PROTECT, related_name="annotations")
    client_id = models.UUIDField(default=uuid.uuid4, help_text="Client-generated id: makes submit idempotent.")
    started_at = models.DateTimeField(help_text="When the item was shown.")
    submitted_at = models.DateTimeField(auto_now_add=True)
    duration_ms = models.PositiveIntegerField(default=0, help_text="Active time on the item (idle time excluded).")
    suggested_label = models.ForeignKey(
        LabelClass,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The model's suggestion shown with the item, if any.",
    )
    suggestion_accepted = models.BooleanField(default=False)
    model_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retracted_at = models.DateTimeField(
        null=True, blank=True, help_text="Set by undo; the annotation no longer counts."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "client_id"], name="annotation_unique_client_id"),
            models.UniqueConstraint(
                fields=["lease"], condition=Q(retracted_at__isnull=True), name="annotation_unique_live_per_lease"
            ),
        ]
        indexes = [
            models.Index(fields=["item"], condition=Q(retracted_at__isnull=True), name="annotation_live_item"),
            models.Index(fields=["annotator", "submitted_at"], name="annotation_annotator_time"),
        ]


class ConsensusLabel(models.Model):
    """Derived: the current combined label of an item. Recomputed, never edited by hand."""

    class Method(models.TextChoices):
        MAJORITY = "majority", "Majority vote"
        DAWID_SKENE = "dawid_skene", "Dawid-Skene"
        REVIEW = "review", "Reviewer decision"
        GOLD = "gold", "Gold answer"

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="consensus")
    label = models.ForeignKey(LabelClass, on_delete=models.CASCADE, related_name="+")
    confidence = models.FloatField()
    method = models.CharField(max_length=20, choices=Method.choices)
    posterior = models.JSONField(default=dict, help_text="{class_id: probability}")
    n_annotations = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)


class Review(models.Model):
    """A reviewer's final decision on a disputed item; never overwrites annotations."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    label = models.ForeignKey(LabelClass, on_delete=models.PROTECT, related_name="+")
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class ImportJob(models.Model):
    """A long import (zip or folder): progress shown to the manager."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    source = models.CharField(max_length=500, blank=True, help_text="What is imported (zip name, folder).")
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True, help_text="imported, duplicates, rejected[{file, reason}]")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)


class MLJob(models.Model):
    """A background ML job (embed, train, score). The Celery task receives only its id."""

    class Kind(models.TextChoices):
        EMBED = "embed", "Embed items"
        TRAIN = "train", "Train model"
        SCORE = "score", "Predict and prioritise"
        CONSENSUS = "consensus", "Recompute consensus"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="ml_jobs")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    input_fingerprint = models.CharField(max_length=64, help_text="Equal inputs, equal job: makes enqueue idempotent.")
    attempt = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0, help_text="0..1")
    message = models.CharField(max_length=300, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="Null while the broker could not take it.")
    result = models.JSONField(default=dict, blank=True)
    error_code = models.CharField(max_length=60, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "input_fingerprint"], name="mljob_unique_input"),
        ]
        indexes = [models.Index(fields=["project", "kind", "status"], name="mljob_project_kind_status")]


class Embedding(models.Model):
    """Cached backbone features of one item; an item is embedded once per backbone."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="embeddings")
    backbone = models.CharField(max_length=100)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField(help_text="float32 little-endian, dim values")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "backbone"], name="embedding_unique_item_backbone")]


class ModelVersion(models.Model):
    """A trained head, published atomically with its evaluation metrics."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    backbone = models.CharField(max_length=100)
    head = models.CharField(max_length=30, default="linear")
    class_ids = models.JSONField(help_text="Output index -> LabelClass id.")
    artifact = models.CharField(max_length=500, help_text="Path of the saved head under ML_ARTIFACT_ROOT.")
    n_train = models.PositiveIntegerField(default=0, help_text="Consensus labels it was trained on.")
    cost_at_training = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    metrics = models.JSONField(
        default=dict, help_text="accuracy, macro_f1, per_class_recall, ece, confusion on the evaluation set"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "number"], name="modelversion_unique_number")]
        ordering = ["project", "number"]


class Prediction(models.Model):
    """The active model's output for an item: shown as the suggestion, feeds priorities."""

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="prediction")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    label = models.ForeignKey(LabelClass, on_delete=models.CASCADE, related_name="+")
    confidence = models.FloatField()
    probs = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)
