"""The exceptions of the Jobfleet client: one base class, and one class per kind of problem the
API answers (RFC 9457 problem JSON), so callers branch on a class or on `code`.

    JobfleetError
    ├── TransportError          the request did not get a reply (connection refused, reset, timeout)
    ├── APIError                the API answered with an error; carries the problem JSON
    │   ├── Unauthorized        401
    │   ├── Forbidden           403
    │   ├── NotFound            404
    │   ├── Conflict            409
    │   │   ├── IdempotencyConflict   409 idempotency-conflict (job_id)
    │   │   ├── InvalidState          409 invalid-state (job_status)
    │   │   └── LeaseLost             409 lease-lost
    │   ├── PayloadTooLarge     413
    │   ├── ValidationError     422 (errors)
    │   ├── RateLimited         429 (retry_after)
    │   └── Unavailable         503 (retry_after)
    ├── JobFailed               wait(): the job ended failed or cancelled (job)
    └── WaitTimeout             wait(): the job did not finish in time (job_id, job)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobfleet.models import Job

__all__ = [
    "APIError",
    "Conflict",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidState",
    "JobFailed",
    "JobfleetError",
    "LeaseLost",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "WaitTimeout",
    "error_from_problem",
]


class JobfleetError(Exception):
    """Something the Jobfleet client could not do; the subclass says what."""


class TransportError(JobfleetError):
    """No reply came from the API: it is down, unreachable, or the connection broke. The client
    has already retried what was safe to retry; check the URL and that the API is running."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        #: False when the request surely never reached the API (the connection was refused);
        #: True when it may have been applied and only the reply was lost.
        self.sent = sent


class APIError(JobfleetError):
    """The API refused the request; `code` and `detail` say why (docs/API.md, Errors)."""

    def __init__(
        self,
        status: int,
        problem: Mapping[str, Any],
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.problem: dict[str, Any] = dict(problem)
        self.code: str = str(problem.get("code") or "http-error")
        self.title: str = str(problem.get("title") or "")
        self.detail: str = str(problem.get("detail") or self.title or f"HTTP {status}")
        self.request_id = request_id
        #: Seconds the API asked to wait before a new try (Retry-After), when it said.
        self.retry_after = (
            _number(problem.get("retry_after")) if retry_after is None else retry_after
        )
        super().__init__(f"{status} {self.code}: {self.detail}")


class Unauthorized(APIError):
    """401: no key, or an unknown or revoked one. Pass `key=` or set JOBFLEET_KEY."""


class Forbidden(APIError):
    """403: the key lacks the scope this call needs (`detail` names it)."""


class NotFound(APIError):
    """404: no such job (or schedule, host, bulk operation) for this key's tenant."""


class Conflict(APIError):
    """409: the request conflicts with the current state; see the subclasses."""


class IdempotencyConflict(Conflict):
    """409 idempotency-conflict: the idempotency key was used for a different request;
    `job_id` names that job. Use a new key for a different job."""

    @property
    def job_id(self) -> str | None:
        value = self.problem.get("job_id")
        return str(value) if value is not None else None


class InvalidState(Conflict):
    """409 invalid-state: the action is not allowed in the job's status (`job_status`)."""

    @property
    def job_status(self) -> str | None:
        value = self.problem.get("job_status")
        return str(value) if value is not None else None


class LeaseLost(Conflict):
    """409 lease-lost: the lease token is no longer current. Stop working on the job and do
    not repeat the call: another worker may have it now."""


class PayloadTooLarge(APIError):
    """413: the body is larger than the API's MAX_BODY_BYTES; send a smaller payload or batch."""


class ValidationError(APIError):
    """422: invalid fields; `errors` lists each one with its `loc`, `msg` and `type`."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        value = self.problem.get("errors")
        return [dict(item) for item in value] if isinstance(value, list) else []


class RateLimited(APIError):
    """429: this key is over its rate limit for the action; retry after `retry_after` seconds.
    The client already waited and retried as often as its retry policy allows."""


class Unavailable(APIError):
    """503: Postgres or Redis did not answer the API in time. Nothing was changed; the client
    already retried as often as its retry policy allows."""


class JobFailed(JobfleetError):
    """wait(): the job ended `failed` or `cancelled`; `job` holds it, `job.last_error` why."""

    def __init__(self, job: Job) -> None:
        self.job = job
        reason = f": {job.last_error}" if job.last_error else ""
        super().__init__(f"job {job.id} ended {job.status}{reason}")


class WaitTimeout(JobfleetError):
    """wait(): the job had not finished when the timeout ran out; `job` is its last state
    (None when it could not be read). Wait longer, or look at why it has not run."""

    def __init__(self, job_id: str, timeout: float, job: Job | None = None) -> None:
        self.job_id = job_id
        self.job = job
        self.timeout = timeout
        status = f" (still {job.status})" if job is not None else ""
        super().__init__(f"job {job_id} did not finish within {timeout:g} s{status}")


_BY_STATUS: dict[int, type[APIError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: Unavailable,
}
_BY_CODE: dict[str, type[APIError]] = {
    "idempotency-conflict": IdempotencyConflict,
    "invalid-state": InvalidState,
    "lease-lost": LeaseLost,
}


def error_from_problem(
    status: int,
    problem: Mapping[str, Any],
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """The exception for an error reply: by its `code` first, else by its status."""
    cls = _BY_CODE.get(str(problem.get("code"))) or _BY_STATUS.get(status, APIError)
    return cls(status, problem, request_id, retry_after)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
