"""The one exception hierarchy. Each class's docstring is its default detail and says how to
fix the cause; the API turns any of them into RFC 9457 problem JSON in one place."""

from __future__ import annotations

from typing import Any, ClassVar


class JobfleetError(Exception):
    """Something went wrong inside Jobfleet."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        # Docstrings wrap over lines; a detail is one line of text.
        self.detail = detail or " ".join((self.__doc__ or self.title).split())
        self.extra = extra
        super().__init__(self.detail)


class NotFound(JobfleetError):
    """No such resource for this tenant: check the id and the API key's tenant."""

    status = 404
    code = "not-found"
    title = "Not found"


class JobNotFound(NotFound):
    """No job with this id for this tenant: check the id and the API key's tenant."""

    code = "job-not-found"
    title = "Job not found"


class HostNotFound(NotFound):
    """No fleet manager on this host has a live heartbeat, and no desired size is stored for
    it: check the host name against the `host` field of GET /workers."""

    code = "host-not-found"
    title = "Fleet host not found"


class BulkOperationNotFound(NotFound):
    """No bulk operation with this id for this key's tenant: check the id (POST /bulk and
    GET /bulk give it) and the API key's tenant."""

    code = "bulk-operation-not-found"
    title = "Bulk operation not found"


class ScheduleNotFound(NotFound):
    """No schedule with this id for this key's tenant: check the id (POST /schedules and
    GET /schedules give it) and the API key's tenant."""

    code = "schedule-not-found"
    title = "Schedule not found"


class ScheduleNameTaken(JobfleetError):
    """This tenant already has a schedule of that name: choose another name, or change the
    existing schedule with PATCH /schedules/{id}."""

    status = 409
    code = "schedule-name-taken"
    title = "Schedule name taken"


class BulkOperationEnded(JobfleetError):
    """The bulk operation has already ended (done or cancelled): there is nothing to cancel.
    GET /bulk/{id} shows how far it got."""

    status = 409
    code = "bulk-operation-ended"
    title = "Bulk operation already ended"


class IdempotencyConflict(JobfleetError):
    """This idempotency key was already used for a different request: use a new key, or send
    exactly the original request to get the original job back."""

    status = 409
    code = "idempotency-conflict"
    title = "Idempotency key reused with a different request"


class InvalidTransition(JobfleetError):
    """The job is not in a state that allows this action: read it again and check its status."""

    status = 409
    code = "invalid-state"
    title = "Action not allowed in the job's current state"


class Unauthorized(JobfleetError):
    """A valid API key is required: send `Authorization: Bearer <key>` with a key that exists
    and is not revoked."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(JobfleetError):
    """The API key lacks the scope this action needs: use a key with the named scope."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class PayloadTooLarge(JobfleetError):
    """The request body is larger than MAX_BODY_BYTES: send a smaller body, or keep large data
    elsewhere and pass a reference in the payload."""

    status = 413
    code = "payload-too-large"
    title = "Request body too large"


class InvalidRequest(JobfleetError):
    """The request is not valid: see `errors` for each field."""

    status = 422
    code = "validation-error"
    title = "Invalid request"


class RateLimited(JobfleetError):
    """Too many requests for this API key: wait for Retry-After seconds and try again."""

    status = 429
    code = "rate-limited"
    title = "Rate limit exceeded"


class Unavailable(JobfleetError):
    """A backing service is unavailable: retry shortly; the job store is Postgres, the
    dispatcher Redis."""

    status = 503
    code = "service-unavailable"
    title = "Service unavailable"


class LeaseLost(JobfleetError):
    """This lease is not current: it expired and the job was recovered or leased again, or the
    token is wrong. Stop working on the job; do not retry the call."""

    status = 409
    code = "lease-lost"
    title = "Lease lost"


class DatabaseNotReady(JobfleetError):
    """The database is not set up for Jobfleet's roles: run `python -m app migrate` connected as
    the role that owns the tables (MIGRATION_DATABASE_URL); see docs/OPERATIONS.md, Migrations."""

    status = 503
    code = "database-not-ready"
    title = "Database not ready"
