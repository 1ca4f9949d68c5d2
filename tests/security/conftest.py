"""Fixtures of the attack tests: two projects with their people, clients logged in as each."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import AbstractBaseUser
from rest_framework.test import APIClient

from labeling.models import Item, Project
from tests.factories import ItemFactory, project_with_members


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class World:
    mine: Project
    manager: AbstractBaseUser
    annotator: AbstractBaseUser
    my_item: Item
    theirs: Project
    their_manager: AbstractBaseUser
    their_item: Item


@pytest.fixture
def world(db) -> World:  # type: ignore[no-untyped-def]
    mine, manager, (annotator,) = project_with_members()
    theirs, their_manager, _ = project_with_members()
    return World(
        mine=mine,
        manager=manager,
        annotator=annotator,
        my_item=ItemFactory(project=mine),
        theirs=theirs,
        their_manager=their_manager,
        their_item=ItemFactory(project=theirs),
    )


def api_as(user: AbstractBaseUser) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client
