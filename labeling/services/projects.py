"""Writes for projects, their label classes and their members.

Every rule about a project's shape lives here, so the API, the admin and management
commands enforce the same ones: at least two classes with unique names and shortcuts,
``overlap >= 1``, ``max_overlap >= overlap``, ``0 <= eval_fraction < 1``, and a project
always keeps at least one manager.

Rule violations on input raise Django's ``ValidationError`` keyed by field (the API turns
it into ``validation_error`` with ``extra.fields``); conflicts with the current state raise
``ConflictError`` with a specific code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Max, Value, When
from django.db.models.functions import Greatest, Least
from django.db.models.lookups import GreaterThanOrEqual

from labeling.errors import ConflictError, PermissionDeniedError
from labeling.models import Annotation, Item, LabelClass, Membership, Project, Review

COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
MIN_CLASSES = 2

# Project settings a manager may change after creation (classes have their own services).
PROJECT_SETTINGS = (
    "name",
    "instructions",
    "overlap",
    "max_overlap",
    "consensus_threshold",
    "lease_minutes",
    "eval_fraction",
    "eval_rate",
    "gold_rate",
    "show_suggestions",
    "strategy",
    "retrain_every",
    "backbone",
)


# --- validation helpers ---------------------------------------------------------------


def _check_project_numbers(values: Mapping[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    overlap = values.get("overlap", 1)
    max_overlap = values.get("max_overlap", overlap)
    if overlap < 1:
        errors.setdefault("overlap", []).append("overlap must be at least 1.")
    if max_overlap < overlap:
        errors.setdefault("max_overlap", []).append("max_overlap must be at least overlap.")
    eval_fraction = values.get("eval_fraction", 0.0)
    if not 0.0 <= eval_fraction < 1.0:
        errors.setdefault("eval_fraction", []).append("eval_fraction must be in [0, 1).")
    for rate in ("eval_rate", "gold_rate", "consensus_threshold"):
        value = values.get(rate, 0.0)
        if not 0.0 <= value <= 1.0:
            errors.setdefault(rate, []).append(f"{rate} must be in [0, 1].")
    if values.get("lease_minutes", 1) < 1:
        errors.setdefault("lease_minutes", []).append("lease_minutes must be at least 1.")
    if values.get("retrain_every", 1) < 1:
        errors.setdefault("retrain_every", []).append("retrain_every must be at least 1.")
    strategy = values.get("strategy", Project.Strategy.HYBRID)
    if strategy not in Project.Strategy.values:
        errors.setdefault("strategy", []).append(f"Unknown strategy {strategy!r}.")
    if not str(values.get("name", "x")).strip():
        errors.setdefault("name", []).append("name must not be blank.")
    if errors:
        raise ValidationError(errors)


def _check_class_fields(*, name: str, shortcut: str, color: str) -> None:
    errors: dict[str, list[str]] = {}
    if not name.strip():
        errors["name"] = ["A class needs a name."]
    if len(shortcut) > 1 or shortcut.isspace():
        errors["shortcut"] = ["A shortcut is one printable key."]
    if not COLOR_RE.match(color):
        errors["color"] = ["color must be #rrggbb."]
    if errors:
        raise ValidationError(errors)


def _check_class_set(classes: Sequence[Mapping[str, Any]]) -> None:
    """The classes of one project: at least two, names unique (ignoring case), shortcuts unique."""
    if len(classes) < MIN_CLASSES:
        raise ValidationError({"classes": [f"A project needs at least {MIN_CLASSES} classes."]})
    names = [c["name"].strip().casefold() for c in classes]
    shortcuts = [c.get("shortcut", "") for c in classes if c.get("shortcut", "")]
    if len(set(names)) != len(names):
        raise ValidationError({"classes": ["Class names must be unique."]})
    if len(set(shortcuts)) != len(shortcuts):
        raise ValidationError({"classes": ["Class shortcuts must be unique."]})


# --- projects -------------------------------------------------------------------------


@transaction.atomic
def project_create(
    *, actor: AbstractBaseUser, name: str, classes: Sequence[Mapping[str, Any]], **fields: Any
) -> Project:
    """Create a project with its label classes; ``actor`` becomes its manager.

    ``fields`` are project settings from PROJECT_SETTINGS; ``max_overlap`` defaults to
    ``overlap``. Any authenticated user may create a project unless the setting
    ``PROJECT_CREATE_REQUIRES_STAFF`` is true, in which case only staff may.

    Raises ValidationError (bad settings or classes), PermissionDeniedError (staff_required).
    """
    if getattr(settings, "PROJECT_CREATE_REQUIRES_STAFF", False) and not getattr(actor, "is_staff", False):
        raise PermissionDeniedError("Only staff users may create projects.", code="staff_required")
    unknown = set(fields) - set(PROJECT_SETTINGS)
    if unknown:
        raise ValidationError({field: ["Unknown project setting."] for field in sorted(unknown)})
    values = {"name": name, **fields}
    values.setdefault("max_overlap", values.get("overlap", 1))
    _check_project_numbers(values)
    for i, spec in enumerate(classes):
        try:
            _check_class_fields(
                name=spec["name"], shortcut=spec.get("shortcut", ""), color=spec.get("color", "#4e79a7")
            )
        except ValidationError as exc:
            raise ValidationError(
                {
                    "classes": [
                        f"classes[{i}].{field}: {msg}" for field, msgs in exc.message_dict.items() for msg in msgs
                    ]
                }
            )
    _check_class_set(classes)

    project = Project.objects.create(created_by=actor, **values)
    LabelClass.objects.bulk_create(
        [
            LabelClass(
                project=project,
                name=spec["name"].strip(),
                shortcut=spec.get("shortcut", ""),
                color=spec.get("color", "#4e79a7"),
                order=spec.get("order", i),
            )
            for i, spec in enumerate(classes)
        ]
    )
    Membership.objects.create(project=project, user=actor, role=Membership.Role.MANAGER)
    return project


@transaction.atomic
def project_update(*, project: Project, actor: AbstractBaseUser, **fields: Any) -> Project:
    """Change project settings (a subset of PROJECT_SETTINGS).

    The combined result is validated (e.g. lowering ``overlap`` below ``max_overlap`` is
    fine, raising it above is not unless ``max_overlap`` rises too). ``eval_fraction``
    applies to items imported afterwards; items keep the split they were given. A new
    ``overlap`` reaches the items still in the queue (their ``wanted`` moves by the same amount).

    Raises ValidationError.
    """
    unknown = set(fields) - set(PROJECT_SETTINGS)
    if unknown:
        raise ValidationError({field: ["Not a project setting that can be changed."] for field in sorted(unknown)})
    project = Project.objects.select_for_update().get(pk=project.pk)
    values = {field: getattr(project, field) for field in PROJECT_SETTINGS}
    values.update(fields)
    _check_project_numbers(values)
    old_overlap = project.overlap
    for field, value in fields.items():
        setattr(project, field, value)
    if fields:
        project.save(update_fields=list(fields))
    if project.overlap != old_overlap:
        _items_shift_wanted(project, project.overlap - old_overlap)
    return project


def _items_shift_wanted(project: Project, delta: int) -> int:
    """Carry an overlap change to the items still in the queue, in one UPDATE.

    ``wanted`` moves by the same amount (extra annotations that adaptive overlap added stay
    added), within [1, max_overlap], never below what an item already has; the status is
    re-derived from the counters as the queue does. Items under or after review keep theirs.
    Items that the change completes get their consensus computed.
    """
    wanted = Greatest(Least(F("wanted") + delta, project.max_overlap), 1)
    queue_statuses = (Item.Status.OPEN, Item.Status.FULL, Item.Status.DONE)
    items = Item.objects.filter(project=project, status__in=queue_statuses)
    completed = []
    if delta < 0:
        completed = list(
            items.exclude(status=Item.Status.DONE)
            .annotate(new_wanted=wanted)
            .filter(annotation_count__gte=F("new_wanted"))
            .values_list("id", flat=True)
        )
    changed = items.update(
        wanted=wanted,
        status=Case(
            When(annotation_count__gte=wanted, then=Value(Item.Status.DONE)),
            When(GreaterThanOrEqual(F("annotation_count") + F("lease_count"), wanted), then=Value(Item.Status.FULL)),
            default=Value(Item.Status.OPEN),
        ),
    )
    if completed:
        from labeling.services.consensus import consensus_update_items

        transaction.on_commit(lambda: consensus_update_items(item_ids=completed))
    return changed


def project_delete(*, project: Project, actor: AbstractBaseUser) -> None:
    """Delete the project and everything in it (items, leases, annotations, models).

    Stored files are left on disk/object storage; a cleanup job removes orphans.
    """
    with transaction.atomic():
        # Annotations PROTECT their lease and label; delete them first so the cascade from
        # the project does not trip over the protection.
        Annotation.objects.filter(item__project=project).delete()
        Review.objects.filter(item__project=project).delete()
        Project.objects.filter(pk=project.pk).delete()


# --- label classes --------------------------------------------------------------------


def _lock_project(project: Project) -> Project:
    # Class and membership changes of one project are serialized on the project row, so
    # two concurrent requests cannot both pass a "keep at least N" check.
    return Project.objects.select_for_update().get(pk=project.pk)


def _check_class_unique(*, project: Project, name: str, shortcut: str, exclude_id: int | None = None) -> None:
    others = LabelClass.objects.filter(project=project)
    if exclude_id is not None:
        others = others.exclude(pk=exclude_id)
    if others.filter(name__iexact=name.strip()).exists():
        raise ValidationError({"name": ["This project already has a class with this name."]})
    if shortcut and others.filter(shortcut=shortcut).exists():
        raise ValidationError({"shortcut": ["This project already has a class with this shortcut."]})


@transaction.atomic
def label_class_create(
    *,
    project: Project,
    actor: AbstractBaseUser,
    name: str,
    shortcut: str = "",
    color: str = "#4e79a7",
    order: int | None = None,
) -> LabelClass:
    """Add a class to a project (also to a running one: existing annotations stay valid).

    ``order`` defaults to after the last class. Raises ValidationError.
    """
    _check_class_fields(name=name, shortcut=shortcut, color=color)
    project = _lock_project(project)
    _check_class_unique(project=project, name=name, shortcut=shortcut)
    if order is None:
        order = (LabelClass.objects.filter(project=project).aggregate(m=Max("order"))["m"] or 0) + 1
    return LabelClass.objects.create(project=project, name=name.strip(), shortcut=shortcut, color=color, order=order)


@transaction.atomic
def label_class_update(*, label_class: LabelClass, actor: AbstractBaseUser, **fields: Any) -> LabelClass:
    """Rename, recolor, re-key or reorder a class. Raises ValidationError."""
    allowed = {"name", "shortcut", "color", "order"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({field: ["Not a class field that can be changed."] for field in sorted(unknown)})
    _lock_project(label_class.project)
    label_class = LabelClass.objects.select_for_update().get(pk=label_class.pk)
    name = fields.get("name", label_class.name)
    shortcut = fields.get("shortcut", label_class.shortcut)
    color = fields.get("color", label_class.color)
    _check_class_fields(name=name, shortcut=shortcut, color=color)
    _check_class_unique(project=label_class.project, name=name, shortcut=shortcut, exclude_id=label_class.pk)
    if "name" in fields:
        fields["name"] = name.strip()
    for field, value in fields.items():
        setattr(label_class, field, value)
    if fields:
        try:
            with transaction.atomic():
                label_class.save(update_fields=list(fields))
        except IntegrityError:
            raise ConflictError("Another class has this name or shortcut.", code="duplicate_class")
    return label_class


@transaction.atomic
def label_class_delete(*, label_class: LabelClass, actor: AbstractBaseUser) -> None:
    """Delete a class nobody has used yet.

    Raises ConflictError ``class_in_use`` when an annotation (live or retracted), a review
    or a gold item refers to it — annotations are never rewritten, so the class stays —
    and ``too_few_classes`` when the project would keep fewer than two classes.
    """
    project = _lock_project(label_class.project)
    in_use = (
        Annotation.objects.filter(label=label_class).exists()
        or Review.objects.filter(label=label_class).exists()
        or Item.objects.filter(gold_label=label_class).exists()
    )
    if in_use:
        raise ConflictError(
            "This class has annotations, reviews or gold items; it cannot be deleted.",
            code="class_in_use",
            extra={"class_id": label_class.pk},
        )
    if LabelClass.objects.filter(project=project).count() <= MIN_CLASSES:
        raise ConflictError(f"A project needs at least {MIN_CLASSES} classes.", code="too_few_classes")
    label_class.delete()


# --- members --------------------------------------------------------------------------


def _resolve_user(*, user_id: int | None, username: str | None) -> AbstractBaseUser:
    User = get_user_model()
    if user_id is None and not username:
        raise ValidationError({"username": ["Give a username or a user_id."]})
    lookup = {"pk": user_id} if user_id is not None else {User.USERNAME_FIELD: username}
    user = User.objects.filter(is_active=True, **lookup).first()
    if user is None:
        field = "user_id" if user_id is not None else "username"
        raise ValidationError({field: ["No active user with this name or id."]})
    return user


def _check_rates(hourly_rate: Decimal | None, price_per_label: Decimal | None) -> None:
    if hourly_rate is not None and hourly_rate < 0:
        raise ValidationError({"hourly_rate": ["Must not be negative."]})
    if price_per_label is not None and price_per_label < 0:
        raise ValidationError({"price_per_label": ["Must not be negative."]})


def _check_keeps_a_manager(*, project: Project, leaving: Membership) -> None:
    others = Membership.objects.filter(project=project, role=Membership.Role.MANAGER).exclude(pk=leaving.pk)
    if not others.exists():
        raise ConflictError("A project must keep at least one manager.", code="last_manager")


@transaction.atomic
def membership_create(
    *,
    project: Project,
    actor: AbstractBaseUser,
    user_id: int | None = None,
    username: str | None = None,
    role: str = Membership.Role.ANNOTATOR,
    hourly_rate: Decimal | None = None,
    price_per_label: Decimal | None = None,
) -> Membership:
    """Add a user (by id or username) to the project with a role and rates.

    Raises ValidationError (unknown user, bad role or rates), ConflictError ``already_member``.
    """
    if role not in Membership.Role.values:
        raise ValidationError({"role": [f"Unknown role {role!r}."]})
    _check_rates(hourly_rate, price_per_label)
    user = _resolve_user(user_id=user_id, username=username)
    project = _lock_project(project)
    if Membership.objects.filter(project=project, user=user).exists():
        raise ConflictError("This user is already a member.", code="already_member", extra={"user_id": user.pk})
    return Membership.objects.create(
        project=project,
        user=user,
        role=role,
        hourly_rate=hourly_rate if hourly_rate is not None else Decimal("0"),
        price_per_label=price_per_label,
    )


@transaction.atomic
def membership_update(*, membership: Membership, actor: AbstractBaseUser, **fields: Any) -> Membership:
    """Change a member's role or rates (``price_per_label`` may be set to None).

    Raises ValidationError, ConflictError ``last_manager`` when the last manager is demoted.
    """
    allowed = {"role", "hourly_rate", "price_per_label"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({field: ["Not a membership field that can be changed."] for field in sorted(unknown)})
    if "role" in fields and fields["role"] not in Membership.Role.values:
        raise ValidationError({"role": [f"Unknown role {fields['role']!r}."]})
    if "hourly_rate" in fields and fields["hourly_rate"] is None:
        raise ValidationError({"hourly_rate": ["Must be a number."]})
    _check_rates(fields.get("hourly_rate"), fields.get("price_per_label"))
    project = _lock_project(membership.project)
    membership = Membership.objects.select_related("user").get(pk=membership.pk)
    if membership.role == Membership.Role.MANAGER and fields.get("role", membership.role) != Membership.Role.MANAGER:
        _check_keeps_a_manager(project=project, leaving=membership)
    for field, value in fields.items():
        setattr(membership, field, value)
    if fields:
        membership.save(update_fields=list(fields))
    return membership


@transaction.atomic
def membership_delete(*, membership: Membership, actor: AbstractBaseUser) -> None:
    """Remove a member. Their annotations stay (they are the raw truth); their open
    leases expire as usual. Raises ConflictError ``last_manager``."""
    project = _lock_project(membership.project)
    if membership.role == Membership.Role.MANAGER:
        _check_keeps_a_manager(project=project, leaving=membership)
    Membership.objects.filter(pk=membership.pk).delete()
