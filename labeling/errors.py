"""Typed domain errors with stable machine-readable codes.

The API's exception handler turns them into ``{"code", "message", "extra"}`` with the
error's HTTP status; management commands print the message.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    code = "invalid"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra or {}


class NotFoundError(ApplicationError):
    code = "not_found"
    http_status = 404


class PermissionDeniedError(ApplicationError):
    code = "permission_denied"
    http_status = 403


class ConflictError(ApplicationError):
    code = "conflict"
    http_status = 409


class LeaseNotOpenError(ConflictError):
    code = "lease_not_open"


class LeaseExpiredError(ConflictError):
    code = "lease_expired"


class InvalidLabelError(ApplicationError):
    code = "invalid_label"
    http_status = 400


class PoolTooSmallError(ApplicationError):
    code = "pool_too_small"
    http_status = 422


class TransientJobError(Exception):
    """A background job failed for a reason worth retrying (broker, storage, DB outage)."""


class ImportRejectedError(ApplicationError):
    """An import refused as a whole (not a zip, no import roots...); single bad files go to the report."""

    code = "import_rejected"
    http_status = 400


class ImportTooLargeError(ApplicationError):
    """An import over a size or count limit as a whole (zip bytes, declared sizes, entry count)."""

    code = "import_too_large"
    http_status = 413


# --- queue (labeling.services.queue) -------------------------------------------------
class ClientIdConflictError(ConflictError):
    """A submit reused a client_id that already names a different answer (other lease or label)."""

    code = "client_id_conflict"


class TooManyLeasesError(ConflictError):
    """The caller already holds the most active leases allowed in the project (hoarding guard)."""

    code = "too_many_leases"


class UndoWindowPassedError(ConflictError):
    code = "undo_window_passed"


class NotLatestAnnotationError(ConflictError):
    """Undo applies only to the caller's latest live annotation in the project."""

    code = "not_latest"


# --- learning loop (labeling.services.ml_jobs / ml_runs) -----------------------------
class NotEnoughLabelsError(ApplicationError):
    """Training was requested before the training split has enough labeled items."""

    code = "not_enough_labels"
    http_status = 422


class MLJobFailedError(Exception):
    """A background ML job failed permanently; ``code`` is stored on MLJob.error_code."""

    def __init__(self, message: str, *, code: str = "job_failed") -> None:
        super().__init__(message)
        self.code = code
