"""Create the demo users and a demo project of real Animal-MNIST images (idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from PIL import Image

from labeling.models import LabelClass, Membership, Project

DEMO_PROJECT = "Animal silhouettes (demo)"
DEMO_USERS = {
    "manager": ("demo-manager", Membership.Role.MANAGER),
    "annotator": ("demo-annotator", Membership.Role.ANNOTATOR),
}
COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


class Command(BaseCommand):
    help = "Create a demo manager, a demo annotator and a demo project of real images (dev only)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--per-class", type=int, default=30, help="Images per class (10 classes).")

    def handle(self, *args: Any, per_class: int, **options: Any) -> None:
        if settings.ANNOTATE_ENV == "prod":
            raise CommandError("seed_demo creates users with known passwords; it refuses to run in prod.")
        from mltasks.datasets import DatasetNotInstalledError, load_animal_mnist

        users = {}
        User = get_user_model()
        for role_key, (username, _role) in DEMO_USERS.items():
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(f"{username}-pw")
            user.save(update_fields=["password"])
            users[role_key] = user

        project = Project.objects.filter(name=DEMO_PROJECT).first()
        if project is None:
            try:
                data = load_animal_mnist()
            except DatasetNotInstalledError as exc:
                raise CommandError(str(exc))
            with transaction.atomic():
                project = Project.objects.create(
                    name=DEMO_PROJECT,
                    instructions="Pick the animal whose silhouette you see. Keys 1-9 and 0 pick a class.",
                    overlap=1,
                    max_overlap=1,
                    eval_fraction=0.1,
                    created_by=users["manager"],
                )
                for i, name in enumerate(data.class_names):
                    LabelClass.objects.create(
                        project=project, name=name, shortcut=str((i + 1) % 10), color=COLORS[i], order=i
                    )
                Membership.objects.create(
                    project=project, user=users["manager"], role=Membership.Role.MANAGER, hourly_rate=100
                )
                Membership.objects.create(
                    project=project, user=users["annotator"], role=Membership.Role.ANNOTATOR, hourly_rate=100
                )
            folder = self._write_pngs(data.images, data.labels, data.class_names, per_class)
            call_command("import_items", str(project.pk), str(folder), stdout=self.stdout)

        self.stdout.write(self.style.SUCCESS(f"Demo project #{project.pk}: {project.name}"))
        for username, _role in DEMO_USERS.values():
            self.stdout.write(f"  login: {username:15s} password: {username}-pw")

    def _write_pngs(self, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], per_class: int) -> Path:
        folder = Path(settings.VAR_DIR) / "demo" / "animal-mnist"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for c in range(len(class_names)):
            idx = rng.permutation(np.flatnonzero(labels == c))[:per_class]
            for i in idx:
                Image.fromarray(images[i]).save(folder / f"animal-{int(i):05d}.png")
        return folder
