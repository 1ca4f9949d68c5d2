"""Items: import (synchronous, or as an ImportJob run by a Celery task).

The pipeline, per batch of candidates (bounded by count and bytes, so memory stays flat):

1. read each file with a size cap and hash it; a hash already seen in this import is a duplicate;
2. one query finds the hashes the project already has: duplicates;
3. Pillow verifies and decodes the rest and makes the thumbnails: rejections;
4. the files go to default storage, the rows in one ``bulk_create``.

Concurrency: two imports of the same file can both pass step 2. The insert uses
``ON CONFLICT DO NOTHING`` against ``item_unique_sha256`` (the IntegrityError of a plain
insert, without aborting the batch); reading the rows back tells which are ours (their
``file`` is the name we just stored). The loser deletes its stored files and reports a
duplicate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import OperationalError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from labeling.errors import ApplicationError, ImportRejectedError, ImportTooLargeError, NotFoundError, TransientJobError
from labeling.models import ImportJob, Item, Project
from labeling.services.fetch import candidates_from_urls, url_display
from labeling.services.imports import (
    ImageInfo,
    ImportCandidate,
    ImportReport,
    LoadedFile,
    Rejection,
    candidate_load,
    candidates_from_folder,
    candidates_from_references,
    candidates_from_uploads,
    candidates_from_zip,
    display_name,
    image_inspect,
    import_setting,
    reference_resolve,
    zip_check_limits,
    zip_open,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
BATCH_FILES = 200
BATCH_BYTES = 64 * 1024 * 1024


# --- the deterministic draws ------------------------------------------------------------


def _unit_draw(sha256: str, slot: int) -> float:
    """A number in [0, 1) read from 64 bits of the content hash: the same file, the same draw."""
    return int(sha256[16 * slot : 16 * (slot + 1)], 16) / 2**64


def item_split_for(*, sha256: str, eval_fraction: float) -> str:
    """Evaluation with probability ``eval_fraction``, seeded by the content: a re-import is stable."""
    return Item.Split.EVALUATION if _unit_draw(sha256, 0) < eval_fraction else Item.Split.TRAIN


def item_initial_priority(*, sha256: str) -> float:
    """A tie-breaker in [0, 1) so that before any scoring the queue order is not the import order."""
    return _unit_draw(sha256, 1)


# --- the import pipeline ----------------------------------------------------------------


@dataclass
class _Accepted:
    candidate: ImportCandidate
    loaded: LoadedFile
    info: ImageInfo


def items_import(
    *,
    project: Project,
    candidates: Iterable[ImportCandidate],
    total: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import candidates into ``project``: verified images become open items.

    Creates Item rows, their files and thumbnails in default storage. Rejections and
    duplicates are reported, never raised; each batch commits on its own, so a long import
    shows progress and a crash keeps what was done (a re-run reports those as duplicates).
    """
    report = ImportReport()
    seen: set[str] = set()
    batch: list[tuple[ImportCandidate, LoadedFile]] = []
    batch_bytes = 0
    reported = -1
    for candidate in candidates:
        loaded = candidate_load(candidate)
        if isinstance(loaded, Rejection):
            report.add_rejected(candidate.name, loaded)
        elif loaded.sha256 in seen:
            report.add_duplicate(candidate.name, loaded.sha256)
        else:
            seen.add(loaded.sha256)
            batch.append((candidate, loaded))
            batch_bytes += len(loaded.data)
        if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
            _import_batch(project, batch, report)
            batch, batch_bytes = [], 0
            if on_progress:
                on_progress(report.processed, total)
                reported = report.processed
    if batch:
        _import_batch(project, batch, report)
    if on_progress and report.processed != reported:
        on_progress(report.processed, total)
    if report.imported and settings.ML_AUTO_EMBED:
        # New items need embeddings before the cold-start order or a model can rank them.
        from labeling.services.ml_jobs import embedding_request

        embedding_request(project=project)
    return report


def _existing_sha256(project: Project, hashes: Sequence[str]) -> set[str]:
    return set(Item.objects.filter(project=project, sha256__in=hashes).values_list("sha256", flat=True))


def _import_batch(project: Project, batch: list[tuple[ImportCandidate, LoadedFile]], report: ImportReport) -> None:
    existing = _existing_sha256(project, [loaded.sha256 for _, loaded in batch])
    accepted: list[_Accepted] = []
    for candidate, loaded in batch:
        if loaded.sha256 in existing:
            report.add_duplicate(candidate.name, loaded.sha256)
            continue
        info = image_inspect(loaded.data)
        if isinstance(info, Rejection):
            report.add_rejected(candidate.name, info)
        else:
            accepted.append(_Accepted(candidate, loaded, info))
    if not accepted:
        return

    items: list[Item] = []
    stored: list[str] = []
    file_field = Item._meta.get_field("file")
    thumb_field = Item._meta.get_field("thumbnail")
    try:
        for acc in accepted:
            sha = acc.loaded.sha256
            item = Item(
                project=project,
                sha256=sha,
                original_name=acc.candidate.name,
                width=acc.info.width,
                height=acc.info.height,
                mode=acc.info.mode,
                metadata=acc.candidate.metadata,
                split=item_split_for(sha256=sha, eval_fraction=project.eval_fraction),
                status=Item.Status.OPEN,
                priority=item_initial_priority(sha256=sha),
                wanted=project.overlap,
            )
            # The suffix comes from the format Pillow found, not from the uploaded name.
            name = default_storage.save(
                file_field.generate_filename(item, f"image{acc.info.suffix}"), ContentFile(acc.loaded.data)
            )
            stored.append(name)
            item.file.name = name
            thumb = default_storage.save(
                thumb_field.generate_filename(item, "thumb.webp"), ContentFile(acc.info.thumbnail)
            )
            stored.append(thumb)
            item.thumbnail.name = thumb
            items.append(item)
        Item.objects.bulk_create(items, ignore_conflicts=True)
    except BaseException:
        _delete_stored(stored)
        raise

    ours = dict(
        Item.objects.filter(project=project, sha256__in=[i.sha256 for i in items]).values_list("sha256", "file")
    )
    for item in items:
        if ours.get(item.sha256) == item.file.name:
            report.imported += 1
        else:  # a concurrent import inserted the same content first
            _delete_stored([item.file.name, item.thumbnail.name])
            report.add_duplicate(item.original_name, item.sha256)


def _delete_stored(names: Iterable[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("import: could not delete stored file %s", name)


def items_import_files(*, project: Project, files: Sequence[UploadedFile]) -> ImportReport:
    """Import multipart uploads synchronously."""
    return items_import(project=project, candidates=candidates_from_uploads(files), total=len(files))


def items_import_zip(*, project: Project, fileobj: Any, on_progress: ProgressCallback | None = None) -> ImportReport:
    """Import every image in a zip (read in memory, never extracted). Raises ImportRejectedError/TooLarge."""
    with zip_open(fileobj) as zf:
        total = len(zip_check_limits(zf))
        return items_import(project=project, candidates=candidates_from_zip(zf), total=total, on_progress=on_progress)


def items_import_folder(
    *, project: Project, directory: Path, on_progress: ProgressCallback | None = None
) -> ImportReport:
    """Import every file under a server folder (the management command: trusted, no root check)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImportRejectedError(f"Not a directory: {directory}", code="not_a_directory")
    candidates = candidates_from_folder(directory)
    return items_import(project=project, candidates=candidates, total=len(candidates), on_progress=on_progress)


def items_import_references(
    *, project: Project, references: Sequence[dict[str, Any]], on_progress: ProgressCallback | None = None
) -> ImportReport:
    """Import server paths under settings.IMPORT_ROOTS (files, or folders expanded), with per-file metadata."""
    if not settings_import_roots_configured():
        raise ImportRejectedError("No IMPORT_ROOTS are configured on this server.", code="import_roots_not_configured")
    candidates = candidates_from_references(references)
    return items_import(project=project, candidates=candidates, total=len(candidates), on_progress=on_progress)


def items_import_urls(
    *, project: Project, urls: Sequence[str], on_progress: ProgressCallback | None = None
) -> ImportReport:
    """Import http(s) URLs, each fetched through the SSRF guard of labeling.services.fetch."""
    candidates = candidates_from_urls(urls)
    return items_import(project=project, candidates=candidates, total=len(candidates), on_progress=on_progress)


def settings_import_roots_configured() -> bool:
    return any(settings.IMPORT_ROOTS)


# --- the API's entry point: synchronous when small, else an ImportJob ----------------------


def items_import_request(
    *,
    project: Project,
    actor: AbstractBaseUser | None,
    files: Sequence[UploadedFile] | None = None,
    zip_file: UploadedFile | None = None,
    references: Sequence[dict[str, Any]] | None = None,
    urls: Sequence[str] | None = None,
) -> ImportReport | ImportJob:
    """Import what an API request carries: exactly one of ``files``, ``zip_file``, ``references``, ``urls``.

    URLs are fetched in the request when there are at most IMPORT_URL_SYNC_MAX of them,
    else by an ImportJob (the worker fetches them, through the same guard).

    Small imports (at most IMPORT_SYNC_MAX_FILES files and IMPORT_SYNC_MAX_BYTES bytes, no
    folder reference) run now and return the ImportReport. Larger ones are staged in
    default storage under ``imports/<job id>/`` and return a pending ImportJob whose task
    is enqueued after commit. Raises ImportRejectedError / ImportTooLargeError for a zip
    that is not one or is over the limits, and when no import roots are configured.
    """
    if sum(x is not None for x in (files, zip_file, references, urls)) != 1:
        raise ImportRejectedError("Send exactly one of: files, zip, references, urls.", code="invalid_import")
    max_files, max_bytes = import_setting("IMPORT_SYNC_MAX_FILES"), import_setting("IMPORT_SYNC_MAX_BYTES")

    if files is not None:
        if len(files) <= max_files and sum(f.size or 0 for f in files) <= max_bytes:
            return items_import_files(project=project, files=files)
        return _import_job_stage_files(project=project, actor=actor, files=files)

    if zip_file is not None:
        if (zip_file.size or 0) > settings.IMPORT_MAX_ZIP_BYTES:
            raise ImportTooLargeError("The zip upload is over IMPORT_MAX_ZIP_BYTES.", code="zip_too_large")
        with zip_open(zip_file) as zf:
            entries = zip_check_limits(zf)
        if len(entries) <= max_files and sum(i.file_size for i in entries) <= max_bytes:
            return items_import_zip(project=project, fileobj=zip_file)
        return _import_job_stage_zip(project=project, actor=actor, zip_file=zip_file, total=len(entries))

    if urls is not None:
        if len(urls) > import_setting("IMPORT_MAX_REFERENCES"):
            raise ImportTooLargeError("Too many URLs in one request.", code="too_many_files")
        if len(urls) <= int(getattr(settings, "IMPORT_URL_SYNC_MAX", 5)):
            return items_import_urls(project=project, urls=urls)
        more = f" (+{len(urls) - 1} more)" if len(urls) > 1 else ""
        return _import_job_create(
            project=project,
            actor=actor,
            manifest={"kind": "urls", "urls": list(urls)},
            source=f"urls: {url_display(urls[0])}{more}"[:500],
            total=len(urls),
        )

    assert references is not None  # noqa: S101 - exactly one source, checked above
    if not settings_import_roots_configured():
        raise ImportRejectedError("No IMPORT_ROOTS are configured on this server.", code="import_roots_not_configured")
    if len(references) > import_setting("IMPORT_MAX_REFERENCES"):
        raise ImportTooLargeError("Too many references in one request.", code="too_many_files")
    small = len(references) <= max_files and not any(
        isinstance(p := reference_resolve(str(r.get("path", ""))), Path) and p.is_dir() for r in references
    )
    if small:
        return items_import_references(project=project, references=references)
    return _import_job_create(
        project=project,
        actor=actor,
        manifest={"kind": "references", "references": list(references)},
        source=_references_source(references),
        total=0,
    )


def _references_source(references: Sequence[dict[str, Any]]) -> str:
    first = display_name(str(references[0].get("path", ""))) if references else ""
    more = f" (+{len(references) - 1} more)" if len(references) > 1 else ""
    return f"references: {first}{more}"[:500]


def _staging_prefix(job_id: int) -> str:
    return f"imports/{job_id}"


def _import_job_stage_files(
    *, project: Project, actor: AbstractBaseUser | None, files: Sequence[UploadedFile]
) -> ImportJob:
    def stage(job: ImportJob) -> dict[str, Any]:
        entries = []
        for i, f in enumerate(files):
            f.seek(0)
            path = default_storage.save(f"{_staging_prefix(job.id)}/files/{i:06d}-{uuid.uuid4().hex[:8]}", f)
            entries.append({"name": display_name(Path((f.name or "").replace("\\", "/")).name), "path": path})
        return {"kind": "files", "entries": entries}

    return _import_job_create(
        project=project, actor=actor, manifest=stage, source=f"files: {len(files)} uploaded files", total=len(files)
    )


def _import_job_stage_zip(
    *, project: Project, actor: AbstractBaseUser | None, zip_file: UploadedFile, total: int
) -> ImportJob:
    def stage(job: ImportJob) -> dict[str, Any]:
        zip_file.seek(0)
        path = default_storage.save(f"{_staging_prefix(job.id)}/upload.zip", zip_file)
        return {"kind": "zip", "path": path}

    return _import_job_create(
        project=project,
        actor=actor,
        manifest=stage,
        source=f"zip: {display_name(Path((zip_file.name or 'upload.zip').replace(chr(92), '/')).name)}"[:500],
        total=total,
    )


def _import_job_create(
    *,
    project: Project,
    actor: AbstractBaseUser | None,
    manifest: dict[str, Any] | Callable[[ImportJob], dict[str, Any]],
    source: str,
    total: int,
) -> ImportJob:
    """Create a pending ImportJob, stage its input, enqueue ``labeling.import_items`` after commit."""
    from labeling.tasks import import_items as import_items_task

    staged_manifest: str | None = None
    try:
        with transaction.atomic():
            job = ImportJob.objects.create(
                project=project,
                created_by=actor if actor and actor.is_authenticated else None,
                source=source,
                total=total,
            )
            content = manifest(job) if callable(manifest) else manifest
            staged_manifest = default_storage.save(
                f"{_staging_prefix(job.id)}/manifest.json", ContentFile(json.dumps(content).encode())
            )
            transaction.on_commit(lambda: _enqueue(import_items_task, job.id))
    except BaseException:
        if staged_manifest is not None:
            _delete_stored([staged_manifest])
        raise
    return job


def _enqueue(task: Any, job_id: int) -> None:
    try:
        task.delay(job_id)
    except (KombuOperationalError, OSError) as exc:
        # The job row is committed and stays pending; the periodic reconcile sends it again.
        # One line, no traceback: during a broker outage every upload lands here.
        logger.warning("import: could not enqueue import job %s, left for reconcile: %s", job_id, exc)
        ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.PENDING).update(
            error="Could not reach the task broker; the job is waiting to be enqueued again."
        )


def import_job_enqueue(*, job: ImportJob) -> None:
    """Enqueue a pending job again (after a broker outage). Safe to call twice: the run claims the job."""
    from labeling.tasks import import_items as import_items_task

    transaction.on_commit(lambda: _enqueue(import_items_task, job.id))


# --- the worker side ---------------------------------------------------------------------


def import_job_run(*, job_id: int) -> None:
    """Run an ImportJob: claim it, import its staged input, record the report, clean up.

    Idempotent: a job that already finished is left alone; one that is re-delivered while
    RUNNING (a worker died) runs again, and what the first run imported is reported as
    duplicates. Database outages raise TransientJobError (the task retries); other
    failures mark the job FAILED.
    """
    try:
        with transaction.atomic():
            job = ImportJob.objects.select_for_update().select_related("project").filter(pk=job_id).first()
            if job is None:
                raise NotFoundError(f"Import job {job_id} not found.")
            if job.status in {ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED}:
                return
            job.status = ImportJob.Status.RUNNING
            job.error = ""
            job.save(update_fields=["status", "error"])
    except OperationalError as exc:
        raise TransientJobError(str(exc)) from exc

    prefix = _staging_prefix(job.id)

    def progress(processed: int, total: int | None) -> None:
        fields: dict[str, Any] = {"processed": processed}
        if total is not None:
            fields["total"] = total
        ImportJob.objects.filter(pk=job.id).update(**fields)

    try:
        with default_storage.open(f"{prefix}/manifest.json", "rb") as f:
            manifest = json.load(f)
        report = _import_job_execute(job.project, manifest, progress)
    except OperationalError as exc:
        raise TransientJobError(str(exc)) from exc
    except ApplicationError as exc:
        _import_job_finish(job.id, status=ImportJob.Status.FAILED, error=exc.message, report=None)
        _staging_delete(prefix)
        return
    except Exception as exc:
        _import_job_finish(job.id, status=ImportJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}", report=None)
        raise
    _import_job_finish(job.id, status=ImportJob.Status.SUCCEEDED, error="", report=report)
    _staging_delete(prefix)
    logger.info(
        "import job %s done: imported=%s duplicates=%s rejected=%s",
        job.id,
        report.imported,
        len(report.duplicates),
        len(report.rejected),
    )


def _import_job_execute(project: Project, manifest: dict[str, Any], progress: ProgressCallback) -> ImportReport:
    kind = manifest.get("kind")
    if kind == "zip":
        with default_storage.open(manifest["path"], "rb") as f:
            return items_import_zip(project=project, fileobj=f, on_progress=progress)
    if kind == "files":
        entries = manifest["entries"]

        def reader(path: str) -> Callable[[int], bytes]:
            def read(cap: int) -> bytes:
                with default_storage.open(path, "rb") as f:
                    return f.read(cap)

            return read

        candidates = [ImportCandidate(name=e["name"], read=reader(e["path"])) for e in entries]
        return items_import(project=project, candidates=candidates, total=len(candidates), on_progress=progress)
    if kind == "references":
        return items_import_references(project=project, references=manifest["references"], on_progress=progress)
    if kind == "urls":
        return items_import_urls(project=project, urls=manifest["urls"], on_progress=progress)
    raise ImportRejectedError(f"Unknown import kind {kind!r}.", code="invalid_import")


def _import_job_finish(job_id: int, *, status: str, error: str, report: ImportReport | None) -> None:
    fields: dict[str, Any] = {"status": status, "error": error, "finished_at": timezone.now()}
    if report is not None:
        fields["report"] = report.as_dict()
        fields["processed"] = report.processed
    ImportJob.objects.filter(pk=job_id).update(**fields)


def _staging_delete(prefix: str) -> None:
    """Delete a job's staged input (files first, then the folder where the storage is local)."""
    try:
        dirs, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotImplementedError):
        return
    for name in files:
        _delete_stored([f"{prefix}/{name}"])
    for sub in dirs:
        _staging_delete(f"{prefix}/{sub}")
    with contextlib.suppress(NotImplementedError, OSError):
        Path(default_storage.path(prefix)).rmdir()
