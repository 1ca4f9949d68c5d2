"""Fuzz the whole /api/v1/ surface from its OpenAPI schema (schemathesis): no 5xx, ever.

Every operation in the drf-spectacular schema gets a bounded number of generated requests
(valid and invalid bodies, queries and path parameters), sent through the real WSGI stack
(Django middleware, DRF, our exception handler) on the test database, authenticated as a
project manager by token. Each response must not be a 5xx, and must conform to the schema:
a documented status code, the documented content type and, for documented statuses, the
documented body.

Path parameters are drawn mostly from rows that exist (the manager's projects, classes,
items, members, leases, annotations, jobs), otherwise the fuzzer would only ever meet 404s.
A destructive call (``DELETE /projects/{id}/`` …) may remove the world; every case starts
by re-creating what is missing, so later cases still reach real objects.

Budget: ``FUZZ_EXAMPLES`` examples per operation (default 12), about a minute in all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import load_all_checks, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from labeling.models import Annotation, ImportJob, Item, LabelClass, Lease, Membership, MLJob, Project
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class World:
    """The manager's projects, with classes, items, an annotator, a lease and an annotation."""

    def __init__(self) -> None:
        self.manager = UserFactory(username="fuzz-manager")
        self.annotator = UserFactory(username="fuzz-annotator")

    def ensure(self) -> None:
        if Project.objects.filter(memberships__user=self.manager).count() >= 2:
            return
        from labeling.services.queue import annotation_submit, lease_next

        for _ in range(2):
            project = ProjectFactory(overlap=2, max_overlap=3)
            MembershipFactory(project=project, user=self.manager, role=Membership.Role.MANAGER)
            MembershipFactory(project=project, user=self.annotator, role=Membership.Role.ANNOTATOR)
            ItemFactory.create_batch(4, project=project, wanted=2)
            # One answered lease and one open lease of the manager's own: undo, skip and release
            # then have something real to act on.
            label = LabelClass.objects.filter(project=project).first()
            lease = lease_next(project=project, user=self.manager, exclude_lease_ids=[])
            assert lease is not None and label is not None
            annotation_submit(
                user=self.manager,
                lease_id=lease.pk,
                label_id=label.pk,
                client_id=f"00000000-0000-4000-8000-{lease.pk:012d}",
                duration_ms=1000,
                started_at=None,
                suggestion_accepted=False,
            )
            lease_next(project=project, user=self.manager, exclude_lease_ids=[])

    def token(self) -> str:
        # DELETE /auth/token/ revokes it: a fresh one per call keeps the fuzzer authenticated.
        return Token.objects.get_or_create(user=self.manager)[0].key

    def ids(self, name: str) -> list[int]:
        projects = Project.objects.filter(memberships__user=self.manager)
        querysets: dict[str, Any] = {
            "project_id": projects,
            "class_id": LabelClass.objects.filter(project__in=projects),
            "item_id": Item.objects.filter(project__in=projects),
            "membership_id": Membership.objects.filter(project__in=projects),
            "lease_id": Lease.objects.filter(project__in=projects),
            "annotation_id": Annotation.objects.filter(item__project__in=projects),
            "job_id": MLJob.objects.filter(project__in=projects),
        }
        if name == "job_id":  # /import-jobs/{job_id}/ and /jobs/{job_id}/ share the name
            return list(querysets[name].values_list("pk", flat=True)) + list(
                ImportJob.objects.filter(project__in=projects).values_list("pk", flat=True)
            )
        qs = querysets.get(name)
        return list(qs.values_list("pk", flat=True)[:50]) if qs is not None else []


@pytest.fixture
def world(settings) -> Iterator[World]:  # type: ignore[no-untyped-def]
    # The WSGI calls run in this thread, inside the test's transaction: keep Django from
    # closing the connection at each request's end, as django.test.Client does.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    from annotate.celery import app

    # Read before changing the Django setting: Celery's conf reads through to it, so reading
    # after would "restore" False and leave every later test non-eager.
    eager = app.conf.task_always_eager
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a 202 + job is the contract; no training in a request
    app.conf.task_always_eager = False
    w = World()
    w.ensure()
    _current.append(w)
    try:
        yield w
    finally:
        _current.clear()
        app.conf.task_always_eager = eager
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


_current: list[World] = []


def flatmap_path_parameters(context, path_parameters):  # type: ignore[no-untyped-def]
    """Mostly real ids (drawn from the database now), sometimes the generated ones."""
    if not path_parameters or not _current:
        return st.just(path_parameters)
    world = _current[0]
    strategies = {}
    for name, generated in path_parameters.items():
        real = world.ids(name)
        strategies[name] = (
            st.one_of(st.sampled_from(real), st.sampled_from(real), st.sampled_from(real), st.just(generated))
            if real
            else st.just(generated)
        )
    return st.fixed_dictionaries(strategies)


def _load_schema() -> schemathesis.BaseSchema:
    # Loaded at collection, through the app itself (the schema view needs no database).
    # schemathesis.pytest.from_fixture would be lazier, but 4.32 pokes at pytest's private
    # Node._nodeid, which pytest 9.2 no longer has.
    from annotate.wsgi import application

    loaded = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)
    loaded.hook(flatmap_path_parameters)
    return loaded


schema = _load_schema()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the shared tree; every run starts fresh
    derandomize=True,  # the same cases on every run: a failure in CI reproduces locally
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_never_5xx(case: schemathesis.Case, world: World) -> None:
    load_all_checks()
    world.ensure()
    case.call_and_validate(headers={"Authorization": f"Token {world.token()}"}, checks=CHECKS)
