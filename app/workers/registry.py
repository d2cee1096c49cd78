"""Tasks: Python callables registered by name with `@task("name")`.

A task receives the job's payload; if it also has a parameter named `job` it receives a
`JobContext` (id, attempt, deadline, cancellation). What it returns must be JSON-serialisable.
A task that knows running it again cannot help raises `NonRetryable`.

Most tasks register themselves at import. Built-in tasks that need settings (`http`) are built
and registered by `load_task_modules`, in the process that runs them.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.settings import Settings

TaskFunction = Callable[..., Any]


@dataclass
class JobContext:
    """What a running task may know about its job."""

    id: uuid.UUID
    queue: str
    attempt: int
    max_retries: int
    deadline: float  # time.time() at which the soft timeout fires
    cancel_event: threading.Event = field(default_factory=threading.Event)

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested; a long task should check it and return."""
        return self.cancel_event.is_set()


@dataclass(frozen=True)
class Task:
    name: str
    function: TaskFunction
    wants_context: bool

    def __call__(self, payload: Any, job: JobContext) -> Any:
        if self.wants_context:
            return self.function(payload, job=job)
        return self.function(payload)


class UnknownTask(LookupError):
    """No task is registered under this name: register it with @task("name") in a module
    listed in TASK_MODULES, or fix the task name of the job."""


class NonRetryable(Exception):
    """Raised by a task when running it again cannot succeed (a malformed payload, a refused
    destination): the job fails at once, without retries, with this error."""


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def register(self, name: str, function: TaskFunction) -> TaskFunction:
        wants_context = "job" in inspect.signature(function).parameters
        self._tasks[name] = Task(name, function, wants_context)
        return function

    def get(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(f"no task named '{name}' is registered") from None

    def names(self) -> list[str]:
        return sorted(self._tasks)


# The registry @task writes to. Registration is plain data, opens no connection.
registry = TaskRegistry()


def task(name: str) -> Callable[[TaskFunction], TaskFunction]:
    """Register the decorated function as the task `name`."""

    def decorator(function: TaskFunction) -> TaskFunction:
        return registry.register(name, function)

    return decorator


def load_task_modules(settings: Settings) -> TaskRegistry:
    """Import the built-in tasks, register those built from the settings, then import every
    module named in TASK_MODULES (which may replace a built-in by registering its name)."""
    from app.workers.builtin import configured_tasks  # builtin imports this module

    for name, function in configured_tasks(settings).items():
        registry.register(name, function)
    for name in settings.task_module_names:
        importlib.import_module(name)
    return registry
