"""The Python client of Jobfleet: submit jobs, wait for them, page through them, and run the
HTTP lease protocol, with a sync Client and an AsyncClient of the same shape.

    from jobfleet import Client

    with Client("http://127.0.0.1:8000", "jf_...") as jobs:
        submitted = jobs.submit("send_email", {"to": "a@example.com"})
        job = jobs.wait(submitted.id, timeout=60)
"""

from jobfleet._protocol import RetryPolicy
from jobfleet._version import __version__
from jobfleet.client import AsyncClient, Client
from jobfleet.errors import (
    APIError,
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidState,
    JobFailed,
    JobfleetError,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    TransportError,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from jobfleet.models import (
    Attempt,
    BatchItem,
    BatchResult,
    DeadLetterQuery,
    Heartbeat,
    Job,
    JobFilters,
    JobQuery,
    JobSpec,
    Lease,
    Page,
    ReplayChoice,
    ReplayResult,
    Schedule,
    ScheduleChanges,
    ScheduleJob,
    SchedulePage,
    SubmitOptions,
    Submitted,
)
from jobfleet.worker import JobContext, NonRetryable, Worker

__all__ = [
    "APIError",
    "AsyncClient",
    "Attempt",
    "BatchItem",
    "BatchResult",
    "Client",
    "Conflict",
    "DeadLetterQuery",
    "Forbidden",
    "Heartbeat",
    "IdempotencyConflict",
    "InvalidState",
    "Job",
    "JobContext",
    "JobFailed",
    "JobFilters",
    "JobQuery",
    "JobSpec",
    "JobfleetError",
    "Lease",
    "LeaseLost",
    "NonRetryable",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "RateLimited",
    "ReplayChoice",
    "ReplayResult",
    "RetryPolicy",
    "Schedule",
    "ScheduleChanges",
    "ScheduleJob",
    "SchedulePage",
    "SubmitOptions",
    "Submitted",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "WaitTimeout",
    "Worker",
    "__version__",
]
