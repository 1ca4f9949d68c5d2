"""factory_boy factories. Items carry a real PNG encoded by Pillow."""

from __future__ import annotations

import hashlib

import factory
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from factory.django import DjangoModelFactory

from labeling.models import Item, LabelClass, Membership, Project
from tests.conftest import png_bytes


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-123")


class ProjectFactory(DjangoModelFactory):
    class Meta:
        model = Project
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Project {n}")
    overlap = 1
    max_overlap = factory.LazyAttribute(lambda p: p.overlap)
    eval_fraction = 0.0
    eval_rate = 0.0

    @factory.post_generation
    def classes(self, create: bool, extracted: list[str] | None, **kwargs: object) -> None:
        names = extracted if extracted is not None else ["cat", "dog", "bird"]
        for i, name in enumerate(names):
            LabelClass.objects.create(project=self, name=name, shortcut=str(i + 1), order=i)


class MembershipFactory(DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    project = factory.SubFactory(ProjectFactory)
    role = Membership.Role.ANNOTATOR


class ItemFactory(DjangoModelFactory):
    class Meta:
        model = Item

    project = factory.SubFactory(ProjectFactory)
    original_name = factory.Sequence(lambda n: f"img{n:05d}.png")
    width = 32
    height = 24
    mode = "RGB"
    wanted = factory.LazyAttribute(lambda i: i.project.overlap)

    @factory.lazy_attribute_sequence
    def _png(self, n: int) -> bytes:
        return png_bytes(color=(n % 256, (n // 256) % 256, 77))

    sha256 = factory.LazyAttribute(lambda i: hashlib.sha256(i._png).hexdigest())
    file = factory.LazyAttribute(lambda i: ContentFile(i._png, name=i.original_name))

    class Params:
        _png = None

    @classmethod
    def _adjust_kwargs(cls, **kwargs: object) -> dict[str, object]:
        kwargs.pop("_png", None)
        return kwargs


def project_with_members(*, overlap: int = 1, n_annotators: int = 1, classes: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A project with one manager and ``n_annotators`` annotators: (project, manager, [annotators])."""
    project = ProjectFactory(overlap=overlap, max_overlap=overlap, classes=classes)
    manager = MembershipFactory(project=project, role=Membership.Role.MANAGER).user
    annotators = [MembershipFactory(project=project).user for _ in range(n_annotators)]
    return project, manager, annotators
