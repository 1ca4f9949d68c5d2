"""The annotation queue: leasing items, submitting, skipping, releasing, undo, expiry.

Invariants these services keep (tests/labeling/test_queue_*.py check them under load):

* An item never has more active leases + live annotations than ``wanted``.
* An annotator never gets an item twice: one ``Lease`` row per (item, annotator), enforced by
  ``lease_unique_item_annotator``; annotations and skips always come with a lease, so "never
  leased by A" also means "never annotated or skipped by A".
* ``Item.lease_count`` / ``annotation_count`` equal the rows they count, and ``Item.status``
  follows them: ``open`` while ``annotation_count + lease_count < wanted``, ``full`` while all
  slots are taken by leases, ``done`` once ``annotation_count >= wanted``. The review states
  (``review``, ``reviewed``) belong to consensus and are never changed here.

Locking (PostgreSQL, READ COMMITTED). Every write path locks the *item row* first and the
lease row second, so paths cannot deadlock on each other:

* ``lease_next`` picks with ``SELECT … FOR UPDATE SKIP LOCKED`` over the partial index
  ``item_queue_open``. The capacity test is ``status = 'open'`` — a column of the locked row.
  When a concurrent transaction has just leased the same item and committed, PostgreSQL
  re-evaluates the WHERE clause against the row's newest version (EvalPlanQual) before
  handing us the lock, so a now-``full`` item is dropped and the scan moves on. A subquery
  (say ``count(leases) < wanted``) would *not* be re-evaluated against new rows; that is why
  capacity lives in the item row and why every lease, submit, skip, release, expiry and undo
  updates that row in the same transaction.
* A per-user row lock (``auth_user … FOR NO KEY UPDATE``, see ``_begin_lease_transaction``)
  serialises one annotator's own ``next`` calls, so a double reload cannot lease two items where one was meant, and the
  hoarding cap (``QUEUE_MAX_ACTIVE_LEASES``) cannot be raced. Different annotators never
  wait on each other there, and the lock does not conflict with the FOR KEY SHARE locks that
  foreign keys take.
* ``leases_reclaim_expired`` locks the affected items ``ORDER BY id … SKIP LOCKED`` before
  touching their leases, in a single statement per batch.

SQLite (the embedded default) has no row locks: settings open every transaction with
``BEGIN IMMEDIATE``, which serialises writers, and the portable ORM path below runs inside it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, Exists, F, OuterRef, Value, When
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from labeling.errors import (
    ClientIdConflictError,
    InvalidLabelError,
    LeaseExpiredError,
    LeaseNotOpenError,
    NotFoundError,
    NotLatestAnnotationError,
    TooManyLeasesError,
    UndoWindowPassedError,
)
from labeling.models import Annotation, Item, LabelClass, Lease, Prediction, Project

log = logging.getLogger(__name__)

Status = Item.Status
State = Lease.State

# The states whose value the queue derives from the counters; the others belong to consensus.
_QUEUE_STATUSES = (Status.OPEN, Status.FULL, Status.DONE)
# How many expired leases one inline reclaim (at the start of lease_next) handles at most:
# bounds the latency a single request can pay for other people's abandoned leases.
_INLINE_RECLAIM_BATCH = 100
_RECLAIM_BATCH = 1000
_PICK_ATTEMPTS = 3


def _max_active_leases() -> int:
    # Two: the item on screen and the prefetched next one.
    return int(getattr(settings, "QUEUE_MAX_ACTIVE_LEASES", 2))


def _undo_window_seconds() -> int:
    return int(getattr(settings, "UNDO_WINDOW_SECONDS", 120))


def _use_skip_locked() -> bool:
    """PostgreSQL gets the single-statement SKIP LOCKED path; anything else the portable one."""
    return connection.vendor == "postgresql"


def item_status_for(*, status: str, wanted: int, annotation_count: int, lease_count: int) -> str:
    """The queue status implied by the counters (review states are left as they are)."""
    if status not in _QUEUE_STATUSES:
        return status
    if annotation_count >= wanted:
        return Status.DONE
    if annotation_count + lease_count >= wanted:
        return Status.FULL
    return Status.OPEN


def _item_lock(item_id: int) -> Item:
    return (
        Item.objects.select_for_update()
        .only("id", "project_id", "split", "status", "wanted", "annotation_count", "lease_count", "gold_label_id")
        .get(pk=item_id)
    )


def _item_save_counts(item: Item, *, annotation_delta: int = 0, lease_delta: int = 0) -> None:
    """Apply counter deltas to an item whose row this transaction has locked.

    Plain arithmetic in Python is safe here because the row is locked (select_for_update
    returned its newest committed version and nobody can change it until we commit).
    """
    item.annotation_count += annotation_delta
    item.lease_count += lease_delta
    item.status = item_status_for(
        status=item.status,
        wanted=item.wanted,
        annotation_count=item.annotation_count,
        lease_count=item.lease_count,
    )
    Item.objects.filter(pk=item.pk).update(
        annotation_count=item.annotation_count, lease_count=item.lease_count, status=item.status
    )


# --------------------------------------------------------------------------------------
# lease_next
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pool:
    """One place to look for an item: a split, and optionally gold-only / non-gold."""

    split: str
    gold: bool | None = None  # None: no gold filter


def _pools(project: Project, rng: random.Random) -> list[_Pool]:
    """The order in which to try the item pools for one pull.

    The evaluation set is interleaved at ``eval_rate`` and gold items at ``gold_rate`` by a
    coin toss per pull; when the chosen pool is empty the others are tried, so a rate is
    "while any is left" and the queue never stalls on an empty pool.
    """
    first, second = Item.Split.TRAIN, Item.Split.EVALUATION
    if project.eval_rate > 0 and rng.random() < project.eval_rate:
        first, second = second, first
    if project.gold_rate <= 0:
        # Gold items, if any, are served like any other item.
        return [_Pool(first), _Pool(second)]
    # Gold items are held back for the gold_rate pulls. NOTE: without a partial index on
    # gold items, the gold probe walks item_queue_open until it meets one (cheap while gold
    # items are plentiful near the head, a scan of the split once they run out); see
    # docs/queue.md, "Gold items", for the index that makes it O(1).
    gold_first = rng.random() < project.gold_rate
    order = [True, False] if gold_first else [False, True]
    return [_Pool(split, gold) for gold in order for split in (first, second)]


# One round trip: pick the best open item this user has never leased, skipping rows other
# transactions hold; bump its counters (status re-derived from the locked row's own
# columns); insert the lease. Served by item_queue_open (project, split, priority DESC, id)
# WHERE status = 'open', plus lease_unique_item_annotator for the NOT EXISTS probe.
_PICK_SQL = """
WITH picked AS (
    SELECT i.id
    FROM labeling_item i
    WHERE i.project_id = %(project_id)s
      AND i.split = %(split)s
      AND i.status = 'open'
      {gold_filter}
      AND NOT EXISTS (
          SELECT 1 FROM labeling_lease l WHERE l.item_id = i.id AND l.annotator_id = %(user_id)s
      )
    ORDER BY i.priority DESC, i.id
    LIMIT 1
    FOR UPDATE OF i SKIP LOCKED
), bumped AS (
    UPDATE labeling_item i
    SET lease_count = i.lease_count + 1,
        status = CASE WHEN i.annotation_count + i.lease_count + 1 >= i.wanted THEN 'full' ELSE 'open' END
    FROM picked
    WHERE i.id = picked.id AND i.status = 'open'
    RETURNING i.id
)
INSERT INTO labeling_lease (item_id, annotator_id, project_id, state, created_at, expires_at, closed_at)
SELECT bumped.id, %(user_id)s, %(project_id)s, 'active', %(now)s, %(expires_at)s, NULL
FROM bumped
RETURNING id, item_id
"""

_GOLD_FILTERS = {None: "", True: "AND i.gold_label_id IS NOT NULL", False: "AND i.gold_label_id IS NULL"}


def pick_sql(*, gold: bool | None = None) -> str:
    """The pick-and-lease statement (exposed for EXPLAIN in tests and the benchmark)."""
    return _PICK_SQL.format(gold_filter=_GOLD_FILTERS[gold])


def _pick_postgres(*, project: Project, user_id: int, pool: _Pool, now: datetime, expires_at: datetime) -> Lease | None:
    with connection.cursor() as cursor:
        cursor.execute(
            pick_sql(gold=pool.gold),
            {
                "project_id": project.pk,
                "split": pool.split,
                "user_id": user_id,
                "now": now,
                "expires_at": expires_at,
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None
    # Built from what the INSERT returned: saves a round trip on the hot path.
    return Lease(
        pk=row[0],
        item_id=row[1],
        annotator_id=user_id,
        project_id=project.pk,
        state=State.ACTIVE,
        created_at=now,
        expires_at=expires_at,
    )


def _pick_portable(*, project: Project, user_id: int, pool: _Pool, now: datetime, expires_at: datetime) -> Lease | None:
    # Runs inside BEGIN IMMEDIATE on SQLite, so nothing changes between the read and the writes.
    candidates = (
        Item.objects.filter(project_id=project.pk, split=pool.split, status=Status.OPEN)
        .exclude(Exists(Lease.objects.filter(item_id=OuterRef("pk"), annotator_id=user_id)))
        .order_by("-priority", "id")
    )
    if pool.gold is not None:
        candidates = candidates.filter(gold_label__isnull=not pool.gold)
    item_id = candidates.values_list("id", flat=True).first()
    if item_id is None:
        return None
    updated = Item.objects.filter(pk=item_id, status=Status.OPEN).update(
        lease_count=F("lease_count") + 1,
        status=Case(
            When(
                GreaterThanOrEqual(F("annotation_count") + F("lease_count") + 1, F("wanted")),
                then=Value(Status.FULL),
            ),
            default=Value(Status.OPEN),
        ),
    )
    if not updated:  # pragma: no cover - cannot happen under BEGIN IMMEDIATE
        return None
    return Lease.objects.create(
        item_id=item_id, annotator_id=user_id, project_id=project.pk, created_at=now, expires_at=expires_at
    )


def _begin_lease_transaction(user_id: int) -> None:
    """Serialise one user's lease_next calls, and commit leases without waiting for fsync.

    The row lock: see the module docstring. ``synchronous_commit = off`` for this
    transaction only: a lease is a reservation, not anyone's work, and waiting for the WAL
    flush was the largest part of ``next`` on a busy disk (about 7 ms p50, 20 ms p90 here).
    If PostgreSQL crashes within the few hundred ms before the WAL writer flushes, the lease
    and its counter bump are lost together (one transaction), leaving a consistent queue;
    any later synchronous commit (every submit is one) flushes them too. Submits, skips,
    releases and undos keep synchronous commits: an acknowledged answer is never lost.
    One round trip for both.
    """
    if not _use_skip_locked():
        return
    table = connection.ops.quote_name(get_user_model()._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT set_config('synchronous_commit', 'off', true) FROM {table} WHERE id = %s FOR NO KEY UPDATE",  # noqa: S608
            [user_id],
        )


def lease_next(
    *,
    project: Project,
    user: AbstractBaseUser,
    exclude_lease_ids: Iterable[int] = (),
    rng: random.Random | None = None,
) -> Lease | None:
    """Lease the next item for ``user`` in ``project``, or resume the lease they already hold.

    Resume: an active, unexpired lease of the user in the project that is not in
    ``exclude_lease_ids`` is returned as it is (page reload). The client passes the lease it
    shows as ``exclude_lease_ids`` to prefetch the next one.

    Otherwise: the highest-priority open item (priority DESC, id) the user has never leased,
    from the evaluation split at ``project.eval_rate`` and from gold items at
    ``project.gold_rate``, is leased for ``project.lease_minutes``.

    Returns None when nothing is left for this user.
    Raises TooManyLeasesError when the user already holds QUEUE_MAX_ACTIVE_LEASES leases
    here and excludes them all (the hoarding guard).
    """
    rng = rng or random.Random()  # noqa: S311 - interleaving, not security
    exclude = {int(x) for x in exclude_lease_ids}
    pick = _pick_postgres if _use_skip_locked() else _pick_portable
    reclaim = _reclaim_postgres if _use_skip_locked() else _reclaim_portable
    for attempt in range(_PICK_ATTEMPTS):
        try:
            with transaction.atomic():
                now = timezone.now()
                _begin_lease_transaction(user.pk)
                held = list(
                    Lease.objects.filter(
                        project_id=project.pk, annotator_id=user.pk, state=State.ACTIVE, expires_at__gt=now
                    ).order_by("created_at", "id")
                )
                for lease in held:
                    if lease.pk not in exclude:
                        return lease
                if len(held) >= _max_active_leases():
                    raise TooManyLeasesError(
                        "You already hold the most items allowed at once; submit, skip or release one first.",
                        extra={"active_lease_ids": [lease.pk for lease in held]},
                    )
                # Give this project's abandoned slots back before choosing, in the same
                # transaction (no extra BEGIN/COMMIT round trips). Cheap when nothing
                # expired: an empty range scan on lease_active_expiry. One bounded batch;
                # the periodic task does the rest.
                reclaim(project_id=project.pk, now=now, batch_size=_INLINE_RECLAIM_BATCH)
                expires_at = now + timedelta(minutes=project.lease_minutes)
                for pool in _pools(project, rng):
                    leased = pick(project=project, user_id=user.pk, pool=pool, now=now, expires_at=expires_at)
                    if leased is not None:
                        return leased
                return None
        except IntegrityError:
            # lease_unique_item_annotator: only reachable if the same user raced past the
            # user lock (not on PostgreSQL). A new attempt sees the committed lease.
            log.info("lease_next: duplicate lease for user %s, attempt %s", user.pk, attempt)
    return None


# --------------------------------------------------------------------------------------
# expiry
# --------------------------------------------------------------------------------------

# One statement per batch. ``items`` locks the items of expired leases in id order and skips
# rows someone else holds (they will be reclaimed by the next call), so this never waits and
# never deadlocks with lease_next/submit, which lock the item first too. The lease UPDATE
# re-checks ``state = 'active'`` on each row's newest version, so a lease submitted or
# released just before we got the item lock is left alone and not counted.
_RECLAIM_SQL = """
WITH items AS (
    SELECT i.id
    FROM labeling_item i
    WHERE i.id IN (
        SELECT l.item_id FROM labeling_lease l
        WHERE l.state = 'active' AND l.expires_at < %(now)s {project_filter}
        ORDER BY l.expires_at
        LIMIT %(batch)s
    )
    ORDER BY i.id
    FOR UPDATE SKIP LOCKED
), closed AS (
    UPDATE labeling_lease l
    SET state = 'expired', closed_at = %(now)s
    FROM items
    WHERE l.item_id = items.id AND l.state = 'active' AND l.expires_at < %(now)s
    RETURNING l.item_id
), per_item AS (
    SELECT item_id, count(*) AS n FROM closed GROUP BY item_id
), fixed AS (
    UPDATE labeling_item i
    SET lease_count = i.lease_count - per_item.n,
        status = CASE
            WHEN i.status NOT IN ('open', 'full', 'done') THEN i.status
            WHEN i.annotation_count >= i.wanted THEN 'done'
            WHEN i.annotation_count + i.lease_count - per_item.n >= i.wanted THEN 'full'
            ELSE 'open'
        END
    FROM per_item
    WHERE i.id = per_item.item_id
    RETURNING per_item.n
)
SELECT coalesce(sum(n), 0)::int, (SELECT count(*) FROM items)::int FROM fixed
"""


def _reclaim_postgres(*, project_id: int | None, now: datetime, batch_size: int) -> tuple[int, int]:
    sql = _RECLAIM_SQL.format(project_filter="AND l.project_id = %(project_id)s" if project_id else "")
    with connection.cursor() as cursor:
        cursor.execute(sql, {"now": now, "batch": batch_size, "project_id": project_id})
        expired, items = cursor.fetchone()
    return int(expired), int(items)


def _reclaim_portable(*, project_id: int | None, now: datetime, batch_size: int) -> tuple[int, int]:
    with transaction.atomic():
        leases = Lease.objects.filter(state=State.ACTIVE, expires_at__lt=now)
        if project_id:
            leases = leases.filter(project_id=project_id)
        item_ids = sorted(set(leases.order_by("expires_at").values_list("item_id", flat=True)[:batch_size]))
        expired = 0
        for item in Item.objects.select_for_update().filter(pk__in=item_ids).order_by("id"):
            n = Lease.objects.filter(item_id=item.pk, state=State.ACTIVE, expires_at__lt=now).update(
                state=State.EXPIRED, closed_at=now
            )
            if n:
                _item_save_counts(item, lease_delta=-n)
                expired += n
    return expired, len(item_ids)


def leases_reclaim_expired(
    *,
    project: Project | None = None,
    now: datetime | None = None,
    batch_size: int = _RECLAIM_BATCH,
    max_batches: int | None = None,
) -> int:
    """Expire active leases past ``expires_at`` and give their slots back to the items.

    Changes: those leases become EXPIRED (closed_at = now); each item's lease_count drops by
    its expired leases and a ``full`` item with room again becomes ``open``. Safe to run
    concurrently and repeatedly (the periodic task and every lease_next call it). Returns the
    number of leases expired. With ``project`` given, only that project's leases.
    """
    now = now or timezone.now()
    project_id = project.pk if project is not None else None
    reclaim = _reclaim_postgres if _use_skip_locked() else _reclaim_portable
    total, batches = 0, 0
    while True:
        with transaction.atomic():
            expired, items = reclaim(project_id=project_id, now=now, batch_size=batch_size)
        total += expired
        batches += 1
        # A short batch means we saw every expired lease (items someone holds locked are
        # skipped and left to the next call); lease_next does a single batch.
        if items < batch_size or expired == 0 or (max_batches is not None and batches >= max_batches):
            break
    if total:
        log.info("reclaimed %s expired leases (project=%s)", total, project_id)
    return total


# --------------------------------------------------------------------------------------
# submit
# --------------------------------------------------------------------------------------


def _after_submit(item_ids: list[int]) -> None:
    """The single hook point for consensus, run after commit of a submit or an undo.

    Consensus (and through it adaptive overlap and the training cadence) is derived state:
    if it fails here the annotation is already safe, and the next full recompute repairs it.
    """
    from labeling.services.consensus import consensus_update_items

    try:
        consensus_update_items(item_ids=item_ids)
    except Exception:  # noqa: BLE001 - never fail an acknowledged submit over derived state
        log.exception("consensus update failed for items %s", item_ids)


def _lease_get_own(*, user: AbstractBaseUser, lease_id: int) -> Lease:
    """The caller's lease in a project they are still a member of; NotFoundError otherwise."""
    lease = (
        Lease.objects.select_related("project")
        .filter(pk=lease_id, annotator_id=user.pk, project__memberships__user_id=user.pk)
        .first()
    )
    if lease is None:
        raise NotFoundError("Lease not found.")
    return lease


def _suggestion_shown(*, project: Project, item: Item) -> tuple[int | None, int | None]:
    """(label_id, model_version_id) of the suggestion shown with this item, or (None, None).

    Evaluation items never show a suggestion: their human labels measure the model, and a
    label anchored on the model's own guess would flatter it.
    """
    if not project.show_suggestions or item.split == Item.Split.EVALUATION:
        return None, None
    row = Prediction.objects.filter(item_id=item.pk).values_list("label_id", "model_version_id").first()
    return (row[0], row[1]) if row else (None, None)


def _existing_for_client_id(
    *, user: AbstractBaseUser, client_id: UUID, lease_id: int, label_id: int
) -> Annotation | None:
    existing = Annotation.objects.filter(annotator_id=user.pk, client_id=client_id).first()
    if existing is None:
        return None
    if existing.lease_id != lease_id or existing.label_id != label_id:
        raise ClientIdConflictError(
            "This client_id was already used for a different answer.",
            extra={"annotation_id": existing.pk},
        )
    return existing


def annotation_submit(
    *,
    user: AbstractBaseUser,
    lease_id: int,
    label_id: int,
    client_id: UUID | str,
    duration_ms: int,
    started_at: datetime | None = None,
    suggestion_accepted: bool = False,
) -> tuple[Annotation, bool]:
    """Store the user's answer for the item of ``lease_id`` and close the lease.

    Idempotent on (user, client_id): a repeat returns the stored annotation and
    ``created=False``; a repeat whose lease or label differs raises ClientIdConflictError.

    Changes (one transaction, item row locked): an Annotation; the lease SUBMITTED; the
    item's annotation_count +1, lease_count -1 and status re-derived (``done`` at ``wanted``).
    After commit: the consensus hook for the item.

    A lease past its expiry is still accepted while its slot is free: either nobody
    reclaimed it yet (the slot is still held by this lease), or it was reclaimed and the
    item still has room. Only when someone else took the slot is the answer refused.

    Raises NotFoundError (not the caller's lease, or no longer a member), InvalidLabelError,
    LeaseNotOpenError (submitted, skipped or released), LeaseExpiredError.
    """
    client_id = client_id if isinstance(client_id, UUID) else UUID(str(client_id))
    try:
        return _annotation_submit(
            user=user,
            lease_id=lease_id,
            label_id=label_id,
            client_id=client_id,
            duration_ms=duration_ms,
            started_at=started_at,
            suggestion_accepted=suggestion_accepted,
        )
    except IntegrityError:
        # annotation_unique_client_id: the same client_id raced in on another lease (the
        # item locks differ, so both passed the check). The committed one decides.
        existing = _existing_for_client_id(user=user, client_id=client_id, lease_id=lease_id, label_id=label_id)
        if existing is None:
            raise
        return existing, False


@transaction.atomic
def _annotation_submit(
    *,
    user: AbstractBaseUser,
    lease_id: int,
    label_id: int,
    client_id: UUID,
    duration_ms: int,
    started_at: datetime | None,
    suggestion_accepted: bool,
) -> tuple[Annotation, bool]:
    lease = _lease_get_own(user=user, lease_id=lease_id)
    project = lease.project
    if not LabelClass.objects.filter(pk=label_id, project_id=project.pk).exists():
        raise InvalidLabelError("This label is not one of the project's classes.", extra={"label": label_id})

    item = _item_lock(lease.item_id)
    # Checked after the item lock: a concurrent repeat of the same submit waits on the lock
    # above and then finds the committed annotation here, instead of a closed lease.
    existing = _existing_for_client_id(user=user, client_id=client_id, lease_id=lease_id, label_id=label_id)
    if existing is not None:
        return existing, False

    # No select_related here: FOR UPDATE would lock the joined project row too and
    # serialise every submit in the project.
    lease = Lease.objects.select_for_update().get(pk=lease.pk)
    now = timezone.now()
    lease_delta = -1
    if lease.state == State.ACTIVE:
        pass  # expired or not, the slot is still ours
    elif lease.state == State.EXPIRED:
        # Reclaimed: the slot went back to the item. Take it again if nobody else did.
        if item.status not in (Status.OPEN,) or item.annotation_count + item.lease_count >= item.wanted:
            raise LeaseExpiredError("This lease expired and the item went to someone else.")
        lease_delta = 0
    else:
        raise LeaseNotOpenError(f"This lease is already {lease.state}.", extra={"state": lease.state})

    suggested_label_id, model_version_id = _suggestion_shown(project=project, item=item)
    annotation = Annotation.objects.create(
        item_id=item.pk,
        annotator_id=user.pk,
        lease=lease,
        label_id=label_id,
        client_id=client_id,
        started_at=started_at or lease.created_at,
        duration_ms=duration_ms,
        suggested_label_id=suggested_label_id,
        suggestion_accepted=bool(suggestion_accepted and suggested_label_id is not None),
        model_version_id=model_version_id,
    )
    lease.state = State.SUBMITTED
    lease.closed_at = now
    lease.save(update_fields=["state", "closed_at"])
    _item_save_counts(item, annotation_delta=+1, lease_delta=lease_delta)
    item_ids = [item.pk]
    transaction.on_commit(lambda: _after_submit(item_ids))
    return annotation, True


# --------------------------------------------------------------------------------------
# skip, release
# --------------------------------------------------------------------------------------


@transaction.atomic
def _lease_close(*, user: AbstractBaseUser, lease_id: int, state: str) -> Lease:
    lease = _lease_get_own(user=user, lease_id=lease_id)
    item = _item_lock(lease.item_id)
    lease = Lease.objects.select_for_update().get(pk=lease.pk)
    if lease.state == state:
        return lease  # a retried request: already done
    if lease.state != State.ACTIVE:
        raise LeaseNotOpenError(f"This lease is already {lease.state}.", extra={"state": lease.state})
    lease.state = state
    lease.closed_at = timezone.now()
    lease.save(update_fields=["state", "closed_at"])
    _item_save_counts(item, lease_delta=-1)
    return lease


def lease_skip(*, user: AbstractBaseUser, lease_id: int) -> Lease:
    """The user won't label this item: the lease is SKIPPED and its slot freed.

    The lease row stays, so the user is never served this item again. Idempotent.
    Raises NotFoundError, LeaseNotOpenError.
    """
    return _lease_close(user=user, lease_id=lease_id, state=State.SKIPPED)


def lease_release(*, user: AbstractBaseUser, lease_id: int) -> Lease:
    """Give the item back without an answer (e.g. the page was closed): RELEASED, slot freed.

    Like every closed lease, it keeps the user from being served the item again (one lease
    per item and annotator). Idempotent. Raises NotFoundError, LeaseNotOpenError.
    """
    return _lease_close(user=user, lease_id=lease_id, state=State.RELEASED)


# --------------------------------------------------------------------------------------
# undo
# --------------------------------------------------------------------------------------


@transaction.atomic
def annotation_undo(*, user: AbstractBaseUser, annotation_id: int, window_seconds: int | None = None) -> Lease:
    """Retract the caller's latest annotation in its project and give them the item back.

    Changes: the annotation's ``retracted_at``; its lease ACTIVE again with a fresh expiry;
    the item's annotation_count -1, lease_count +1 (the slot passes from the answer back to
    the lease, so the item can never be over-assigned by an undo). After commit: the
    consensus hook. Returns the reopened lease. Repeating an undo returns the same lease.

    Raises NotFoundError (not the caller's), UndoWindowPassedError (older than
    ``window_seconds``, default settings.UNDO_WINDOW_SECONDS), NotLatestAnnotationError.
    """
    window = _undo_window_seconds() if window_seconds is None else window_seconds
    annotation = (
        Annotation.objects.select_related("item", "lease__project")
        .filter(pk=annotation_id, annotator_id=user.pk, item__project__memberships__user_id=user.pk)
        .first()
    )
    if annotation is None:
        raise NotFoundError("Annotation not found.")
    lease = annotation.lease
    project = lease.project
    now = timezone.now()
    item = _item_lock(annotation.item_id)
    annotation = Annotation.objects.select_for_update().get(pk=annotation.pk)
    lease = Lease.objects.select_for_update().get(pk=lease.pk)
    if annotation.retracted_at is not None:
        if (
            lease.state == State.ACTIVE
            and not Annotation.objects.filter(lease=lease, retracted_at__isnull=True).exists()
        ):
            return lease  # a retried undo
        raise NotLatestAnnotationError("This annotation was already undone.")
    if now - annotation.submitted_at > timedelta(seconds=window):
        raise UndoWindowPassedError("Too late to undo this annotation.", extra={"window_seconds": window})
    latest_id = (
        Annotation.objects.filter(annotator_id=user.pk, item__project_id=project.pk, retracted_at__isnull=True)
        .order_by("-submitted_at", "-id")
        .values_list("id", flat=True)
        .first()
    )
    if latest_id != annotation.pk:
        raise NotLatestAnnotationError("Only your latest annotation can be undone.")
    if lease.state != State.SUBMITTED:  # pragma: no cover - a live annotation's lease is SUBMITTED
        raise LeaseNotOpenError(f"This lease is {lease.state}.", extra={"state": lease.state})

    annotation.retracted_at = now
    annotation.save(update_fields=["retracted_at"])
    lease.state = State.ACTIVE
    lease.closed_at = None
    lease.expires_at = now + timedelta(minutes=project.lease_minutes)
    lease.save(update_fields=["state", "closed_at", "expires_at"])
    _item_save_counts(item, annotation_delta=-1, lease_delta=+1)
    item_ids = [item.pk]
    transaction.on_commit(lambda: _after_submit(item_ids))
    return lease


def queue_counters_check(*, project: Project) -> list[dict[str, Any]]:
    """Items whose counters disagree with their rows, or that are over-assigned (for tests, bench, ops)."""
    rows = []
    items = Item.objects.filter(project_id=project.pk).values(
        "id", "wanted", "annotation_count", "lease_count", "status"
    )
    live = dict(
        Annotation.objects.filter(item__project_id=project.pk, retracted_at__isnull=True)
        .values_list("item_id")
        .annotate(n=Count("id"))
        .values_list("item_id", "n")
    )
    active = dict(
        Lease.objects.filter(project_id=project.pk, state=State.ACTIVE)
        .values_list("item_id")
        .annotate(n=Count("id"))
        .values_list("item_id", "n")
    )
    for item in items:
        a, leased = live.get(item["id"], 0), active.get(item["id"], 0)
        expected_status = item_status_for(
            status=item["status"], wanted=item["wanted"], annotation_count=a, lease_count=leased
        )
        if (
            a != item["annotation_count"]
            or leased != item["lease_count"]
            or a + leased > item["wanted"]
            or expected_status != item["status"]
        ):
            rows.append({**item, "live_annotations": a, "active_leases": leased})
    return rows
