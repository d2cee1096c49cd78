"""`jobfleet`: the command line of the Jobfleet API, built on the client.

    jobfleet submit echo '{"order": 1001}' | jobfleet wait
    jobfleet ls --status failed --queue mail
    jobfleet tail
    jobfleet queue pause mail
    jobfleet schedules create nightly '30 2 * * *' send_report --tz Europe/Berlin

Tables for people by default; `--json` prints what the API answered, for scripts. The URL and
the key come from `--url` / `--key` or JOBFLEET_URL / JOBFLEET_KEY. Exit status: 0 when all went
well; 1 when a job waited on failed or was cancelled, a wait timed out, or the API refused or
could not be reached (the problem's code and detail on stderr); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobfleet._format import cell, compact, fields, table, truncate, when
from jobfleet.errors import APIError, JobFailed, JobfleetError, TransportError, WaitTimeout

if TYPE_CHECKING:
    from jobfleet.client import Client
    from jobfleet.models import Job, Page, Schedule, SchedulePage

__all__ = ["build_parser", "main"]

DEFAULT_URL = "http://127.0.0.1:8000"
PAGE_SIZE = 100  # the API's largest page
# `tail` re-reads the jobs created since the oldest job it still follows, up to this many pages
# per poll; older jobs' changes are no longer shown.
TAIL_PAGES = 5
REPLAY_LIMIT = 1000  # the most POST /dlq/replay moves at once

Handler = Callable[["Client", argparse.Namespace], int]
# What `tail` printed of each job it follows (status, attempts, cancel requested), and when the
# job was created.
Seen = dict[str, tuple[tuple[object, ...], datetime]]


class UsageError(Exception):
    """A command line that parsed but cannot be run as given (exit status 2)."""


# Output ------------------------------------------------------------------------------------------


def emit(text: str = "") -> None:
    print(text, flush=True)


def emit_json(value: object) -> None:
    emit(compact(value))


JOB_COLUMNS = ("ID", "STATUS", "QUEUE", "TASK", "PRI", "ATTEMPTS", "CREATED")


def job_row(job: Job) -> list[object]:
    return [
        job.id,
        job.status,
        job.queue,
        job.task,
        job.priority,
        f"{job.attempts}/{job.max_retries + 1}",
        job.created_at,
    ]


def job_lines(jobs: Sequence[Job], header: bool = True) -> str:
    """Jobs in fixed-width columns, so that pages printed one after the other line up."""
    widths = (36, 10, 12, 16, 3, 8)  # the created time is last, unpadded
    rows: list[Sequence[str]] = [JOB_COLUMNS] if header else []
    rows += [[cell(v) for v in job_row(job)] for job in jobs]
    return "\n".join(
        "  ".join([*(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    )


def outcome_line(job: Job) -> str:
    """`<id> <status> <result or error>`: what a finished job came to, on one line."""
    if job.status == "completed":
        return f"{job.id} {job.status} {compact(job.result)}"
    return f"{job.id} {job.status} {job.last_error or ''}".rstrip()


def job_details(job: Job) -> str:
    pairs: list[tuple[str, object]] = [
        ("id", job.id),
        ("status", job.status + (" (cancellation requested)" if job.cancel_requested else "")),
        ("tenant", job.tenant),
        ("queue", job.queue),
        ("task", job.task),
        ("priority", job.priority),
        ("attempts", f"{job.attempts} of {job.max_retries + 1}"),
        ("timeout", f"{job.timeout_seconds} s"),
        ("idempotency key", job.idempotency_key),
        ("worker", job.worker_id),
        ("created", job.created_at),
        ("run at", job.run_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("payload", compact(job.payload)),
        ("result", compact(job.result) if job.status == "completed" else None),
        ("last error", job.last_error),
    ]
    text = fields(pairs)
    history = getattr(job, "history", None) or []
    if history:
        rows = [
            [a.attempt, a.outcome, a.worker_id, a.started_at, a.finished_at, a.error]
            for a in history
        ]
        text += "\nhistory\n" + indent(
            table(("ATTEMPT", "OUTCOME", "WORKER", "STARTED", "FINISHED", "ERROR"), rows)
        )
    return text


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def page_footer(page: Page, shown: int) -> str | None:
    if not page.next_cursor:
        return None
    total = f"{page.total:,}" + ("" if page.total_exact else "+")
    return f"({shown} of {total}; next page: --cursor {page.next_cursor}, or --all)"


# Input -------------------------------------------------------------------------------------------


def read_payload(text: str | None) -> Any:
    """The payload argument: JSON text, `@file` or `-` (stdin); {} when none is given."""
    if text is None:
        return {}
    if text == "-":
        raw, source = sys.stdin.read(), "stdin"
    elif text.startswith("@"):
        try:
            raw, source = Path(text[1:]).read_text(), text[1:]
        except OSError as exc:
            raise UsageError(f"cannot read the payload file: {exc}") from None
    else:
        raw, source = text, "the payload"
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from None


def aware_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset (Z or +02:00)")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number within 0..{PAGE_SIZE}")
    return value


def ids_from_stdin() -> list[str]:
    """Job ids, one a line (what `jobfleet submit` prints), blank lines skipped."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("give job ids, or pipe them in one a line (jobfleet submit ... | wait)")
    return [line.strip() for line in sys.stdin if line.strip()]


def filters(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


# Commands ----------------------------------------------------------------------------------------


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    payload = read_payload(args.payload)
    options = filters(args, "queue", "priority", "max_retries", "idempotency_key")
    if args.delay is not None:
        options["delay"] = timedelta(seconds=args.delay)
    if args.run_at is not None:
        options["run_at"] = args.run_at
    if args.timeout is not None:
        options["timeout"] = args.timeout
    submitted = client.submit(args.task, payload, **options)
    if args.json:
        emit_json({"created": submitted.created, "job": submitted.job})
    else:
        emit(str(submitted.id))
    return 0


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.id)
    if args.json:
        emit_json(job)
    else:
        emit(job_details(job))
    return 0


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    ids = args.ids or ids_from_stdin()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    status = 0
    for job_id in ids:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            job = client.wait(job_id, timeout=left)
        except JobFailed as failed:
            job, status = failed.job, 1
        except WaitTimeout as timeout:
            # The jobs after it are not waited on: the time is up for all of them.
            still = f" (still {timeout.job.status})" if timeout.job is not None else ""
            print(
                f"jobfleet: job {job_id} did not finish within {args.timeout:g} s{still}",
                file=sys.stderr,
            )
            return 1
        if args.json:
            emit_json(job)
        else:
            emit(outcome_line(job))
    return status


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    chosen = filters(args, "status", "queue", "task", "tenant")
    return list_jobs(client.list, chosen, args)


def cmd_dlq_ls(client: Client, args: argparse.Namespace) -> int:
    return list_jobs(client.dlq_list, filters(args, "queue", "task"), args)


def list_jobs(fetch: Callable[..., Page], chosen: dict[str, Any], args: argparse.Namespace) -> int:
    """One page (`--limit`, `--cursor`), or every page (`--all`): a table, or with `--json` the
    page as the API answered (`--all --json`: one job per line)."""
    if args.all:
        first = True
        for job in every_job(fetch, chosen):
            if args.json:
                emit_json(job)
            else:
                emit(job_lines([job], header=first))
            first = False
        return 0
    page = fetch(**chosen, **filters(args, "limit", "cursor"))
    if args.json:
        emit_json(page_document(page))
        return 0
    if page.items:
        emit(job_lines(page.items))
    footer = page_footer(page, len(page.items))
    if footer:
        emit(footer)
    return 0


def page_document(page: Page) -> dict[str, Any]:
    """The page as the API sent it."""
    return {
        "items": page.items,
        "total": page.total,
        "total_exact": page.total_exact,
        "limit": page.limit,
        "offset": page.offset,
        "next_cursor": page.next_cursor,
    }


def every_job(fetch: Callable[..., Page], chosen: dict[str, Any]) -> Iterator[Job]:
    query = {**chosen, "limit": PAGE_SIZE}
    while True:
        page = fetch(**query)
        yield from page.items
        if not page.next_cursor:
            return
        query["cursor"] = page.next_cursor


def cmd_tail(client: Client, args: argparse.Namespace) -> int:
    """Print the newest jobs, then every job that appears or changes (status, attempts), until
    Ctrl-C, `--for` seconds or `--count` lines."""
    chosen = filters(args, "status", "queue", "task", "tenant")
    stop_at = None if args.seconds is None else time.monotonic() + args.seconds
    printed = 0
    # id -> (what was last printed of it, its creation time)
    seen: Seen = {}

    def show(job: Job) -> bool:
        nonlocal printed
        state = (job.status, job.attempts, job.cancel_requested)
        if job.id in seen and seen[job.id][0] == state:
            return False
        seen[job.id] = (state, created(job))
        if args.json:
            emit_json(job)
        else:
            emit(tail_line(job))
        printed += 1
        return args.count is not None and printed >= args.count

    try:
        first = client.list(**chosen, limit=max(1, args.lines))
        for job in reversed(first.items[: args.lines]):
            if show(job):
                return 0
        for job in first.items[args.lines :]:
            seen[job.id] = ((job.status, job.attempts, job.cancel_requested), created(job))
        while stop_at is None or time.monotonic() < stop_at:
            left = float("inf") if stop_at is None else stop_at - time.monotonic()
            time.sleep(max(0.0, min(args.interval, left)))
            since = tail_window(seen)
            window = {**chosen, "created_after": since} if since else chosen
            jobs = list(limited(every_job(client.list, window), TAIL_PAGES * PAGE_SIZE))
            for job in reversed(jobs):
                if show(job):
                    return 0
            forget_before(seen, jobs)
    except KeyboardInterrupt:
        pass
    return 0


def tail_line(job: Job) -> str:
    error = f"  {truncate(job.last_error)}" if job.last_error and job.status != "completed" else ""
    cancel = " (cancel requested)" if job.cancel_requested and job.status == "processing" else ""
    return (
        f"{when(job.updated_at)}  {job.id}  {job.status.ljust(10)}  {job.queue.ljust(12)}"
        f"  {job.task.ljust(16)}  attempts {job.attempts}{cancel}{error}"
    )


ACTIVE = {"queued", "scheduled", "processing"}


def created(job: Job) -> datetime:
    return job.created_at or datetime.min.replace(tzinfo=UTC)


def tail_window(seen: Seen) -> str | None:
    """Where the next poll starts: the oldest job still active (its changes are to come), or
    else the newest job seen (only new jobs are to come)."""
    if not seen:
        return None
    active = [created for state, created in seen.values() if state[0] in ACTIVE]
    start = min(active) if active else max(created for _, created in seen.values())
    return start.isoformat()


def forget_before(seen: Seen, jobs: list[Job]) -> None:
    """Jobs older than what the last poll read are out of its reach: forget them."""
    if jobs:
        oldest = min(created(job) for job in jobs)
        for job_id in [i for i, (_, created) in seen.items() if created < oldest]:
            del seen[job_id]


def limited(items: Iterator[Job], most: int) -> Iterator[Job]:
    for n, item in enumerate(items):
        if n >= most:
            return
        yield item


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.id)
    if args.json:
        emit_json(job)
    elif job.status == "processing":
        emit(f"{job.id} processing: cancellation requested, it ends when its worker stops")
    else:
        emit(f"{job.id} {job.status}")
    return 0


def cmd_retry(client: Client, args: argparse.Namespace) -> int:
    job = client.retry(args.id)
    if args.json:
        emit_json(job)
    else:
        emit(f"{job.id} {job.status}")
    return 0


def cmd_dlq_replay(client: Client, args: argparse.Namespace) -> int:
    if args.ids and args.all_matching:
        raise UsageError("give job ids or --all-matching, not both")
    if not args.ids and not args.all_matching:
        raise UsageError("give the ids of failed jobs, or --all-matching with filters")
    if args.all_matching:
        return replay_matching(client, args)
    status = 0
    for job_id in args.ids:
        try:
            job = client.dlq_replay(job_id)
        except APIError as exc:
            # One refused id does not stop the others; the exit status tells.
            print(f"jobfleet: {job_id}: {exc.code}: {exc.detail}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            emit_json(job)
        else:
            emit(f"{job.id} {job.status}")
    return status


def replay_matching(client: Client, args: argparse.Namespace) -> int:
    """Every failed job matching the filters, 1,000 a call until a call finds fewer: jobs
    that fail again while this runs are not replayed twice by it."""
    total = 0
    chosen = filters(args, "queue", "task")
    while True:
        reply = client.dlq_replay_many(**chosen, limit=REPLAY_LIMIT)
        total += reply.replayed
        if args.json:
            for job in reply.items:
                emit_json(job)
        if reply.replayed < REPLAY_LIMIT:
            break
    if not args.json:
        emit(f"replayed {total}")
    return 0


def cmd_queues(client: Client, args: argparse.Namespace) -> int:
    queues = client.queues()
    if args.json:
        emit_json(queues)
        return 0
    statuses = ("queued", "scheduled", "processing", "completed", "failed", "cancelled")
    rows = [
        [
            q["queue"],
            "paused" if q["paused"] else "",
            *(q["depth"].get(s, 0) for s in statuses),
            _age(q.get("oldest_waiting_seconds")),
            q.get("ready_in_redis"),
        ]
        for q in queues
    ]
    headers = ("QUEUE", "PAUSED", *(s.upper() for s in statuses), "OLDEST", "IN REDIS")
    emit(table(headers, rows) if rows else "no queues")
    return 0


def _age(value: object) -> str | None:
    if not isinstance(value, int | float):
        return None
    return f"{value:.1f} s" if value < 60 else f"{value / 60:.1f} min"


def cmd_workers(client: Client, args: argparse.Namespace) -> int:
    workers = client.workers()
    if args.json:
        emit_json(workers)
        return 0
    rows = []
    for w in workers:
        if w.get("kind") == "manager":
            detail = f"processes {w.get('processes')} of {w.get('desired')}"
        else:
            jobs = w.get("current_jobs") or []
            detail = f"threads {w.get('threads')}, jobs {len(jobs)}, processed {w.get('processed')}"
            detail += f", failed {w.get('failed')}"
        rows.append(
            [w.get("kind"), w.get("worker_id"), w.get("host"), w.get("pid"), w.get("state"),
             ",".join(w.get("queues") or []), detail, when(w.get("seen_at"))]
        )  # fmt: skip
    headers = ("KIND", "WORKER", "HOST", "PID", "STATE", "QUEUES", "DETAIL", "SEEN")
    emit(table(headers, rows) if rows else "no live workers")
    return 0


def cmd_fleet_scale(client: Client, args: argparse.Namespace) -> int:
    reply = client.set_fleet_size(args.host, args.processes)
    if args.json:
        emit_json(reply)
    else:
        plural = "" if args.processes == 1 else "es"
        emit(f"host {args.host}: {args.processes} worker process{plural}")
    return 0


def cmd_queue_pause(client: Client, args: argparse.Namespace) -> int:
    return queue_flag(client.pause_queue(args.queue), args)


def cmd_queue_resume(client: Client, args: argparse.Namespace) -> int:
    return queue_flag(client.resume_queue(args.queue), args)


def queue_flag(reply: Any, args: argparse.Namespace) -> int:
    if args.json:
        emit_json(reply)
    else:
        paused = reply["paused"] if isinstance(reply, dict) else bool(reply)
        emit(f"queue {args.queue} {'paused' if paused else 'resumed'}")
    return 0


# Schedules ---------------------------------------------------------------------------------------

SCHEDULE_COLUMNS = ("ID", "NAME", "CRON", "TIMEZONE", "TASK", "QUEUE", "STATE", "NEXT FIRE")


def schedule_row(schedule: Schedule) -> list[object]:
    return [
        schedule.id,
        schedule.name,
        schedule.cron,
        schedule.timezone,
        schedule.task,
        schedule.queue,
        schedule_state(schedule),
        schedule.next_fire_at,
    ]


def schedule_state(schedule: Schedule) -> str:
    return "running" if schedule.enabled else "paused"


def schedule_details(schedule: Schedule) -> str:
    pairs: list[tuple[str, object]] = [
        ("id", schedule.id),
        ("name", schedule.name),
        ("state", schedule_state(schedule)),
        ("tenant", schedule.tenant),
        ("cron", f"{schedule.cron} ({schedule.timezone})"),
        ("task", schedule.task),
        ("payload", compact(schedule.payload)),
        ("queue", schedule.queue),
        ("priority", schedule.priority),
        ("max retries", schedule.max_retries),
        ("timeout", None if schedule.timeout_seconds is None else f"{schedule.timeout_seconds} s"),
        ("misfire policy", schedule.misfire_policy),
        ("next fire", schedule.next_fire_at),
        ("last fired", schedule.last_fired_at),
        ("created", schedule.created_at),
        ("updated", schedule.updated_at),
    ]
    text = fields(pairs)
    if schedule.upcoming:
        text += "\nnext fire times\n" + indent("\n".join(when(t) for t in schedule.upcoming))
    if schedule.recent_jobs:
        rows = [
            [j.id, j.status, "run now" if j.manual else j.fire_time, j.created_at, j.finished_at]
            for j in schedule.recent_jobs
        ]
        headers = ("JOB", "STATUS", "FIRE TIME", "CREATED", "FINISHED")
        text += "\nlatest jobs\n" + indent(table(headers, rows))
    return text


def schedule_footer(page: SchedulePage) -> str | None:
    if not page.next_cursor:
        return None
    return f"(next page: --cursor {page.next_cursor}, or --all)"


def cmd_schedules_ls(client: Client, args: argparse.Namespace) -> int:
    """One page (`--limit`, `--cursor`) or every page (`--all`), oldest first: a table, or
    with `--json` the page as the API answered (`--all --json`: one schedule per line)."""
    if args.all:
        schedules = list(client.iterate_schedules())
        if args.json:
            for schedule in schedules:
                emit_json(schedule)
        elif schedules:
            emit(table(SCHEDULE_COLUMNS, [schedule_row(s) for s in schedules]))
        else:
            emit("no schedules")
        return 0
    page = client.list_schedules(**filters(args, "limit", "cursor"))
    if args.json:
        emit_json({"items": page.items, "limit": page.limit, "next_cursor": page.next_cursor})
        return 0
    rows = [schedule_row(s) for s in page.items]
    emit(table(SCHEDULE_COLUMNS, rows) if rows else "no schedules")
    footer = schedule_footer(page)
    if footer:
        emit(footer)
    return 0


def cmd_schedules_create(client: Client, args: argparse.Namespace) -> int:
    schedule = client.create_schedule(
        args.name,
        args.cron,
        args.task,
        read_payload(args.payload),
        timezone=args.tz,
        queue=args.queue,
        priority=args.priority,
        max_retries=args.max_retries,
        timeout=args.timeout,
        misfire_policy=args.misfire,
        enabled=not args.paused,
    )
    if args.json:
        emit_json(schedule)
    else:
        emit(schedule.id)
    return 0


def cmd_schedules_get(client: Client, args: argparse.Namespace) -> int:
    schedule = client.get_schedule(args.id, upcoming=args.upcoming)
    if args.json:
        emit_json(schedule)
    else:
        emit(schedule_details(schedule))
    return 0


def cmd_schedules_pause(client: Client, args: argparse.Namespace) -> int:
    return schedule_line(client.pause_schedule(args.id), args)


def cmd_schedules_resume(client: Client, args: argparse.Namespace) -> int:
    return schedule_line(client.resume_schedule(args.id), args)


def schedule_line(schedule: Schedule, args: argparse.Namespace) -> int:
    if args.json:
        emit_json(schedule)
    elif schedule.enabled:
        emit(f"{schedule.id} running, next fire {when(schedule.next_fire_at)}")
    else:
        emit(f"{schedule.id} paused")
    return 0


def cmd_schedules_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_schedule(args.id)
    if args.json:
        emit_json({"id": args.id, "deleted": True})
    else:
        emit(f"{args.id} deleted")
    return 0


def cmd_schedules_run(client: Client, args: argparse.Namespace) -> int:
    job = client.run_schedule(args.id)
    if args.json:
        emit_json(job)
    else:
        emit(job.id)  # alone, as submit prints it: `jobfleet schedules run ID | jobfleet wait`
    return 0


# The parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # Every command also takes the common options after its name (`jobfleet ls --json`).
    # SUPPRESS keeps a command's parser from resetting what was given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the API's URL (default: $JOBFLEET_URL, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--key", default=argparse.SUPPRESS, help="the API key (default: $JOBFLEET_KEY)"
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON as the API answers it, instead of a table",
    )
    parser = argparse.ArgumentParser(
        prog="jobfleet",
        parents=[common],
        description="Submit, watch and steer Jobfleet jobs over its HTTP API.",
        epilog="Exit status: 0 ok; 1 a waited job failed, or an API error; 2 usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group: Any, name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name, parents=[common], help=text, description=text
        )
        sub.set_defaults(handler=handler, parser=sub)
        return sub

    def job_filters(sub: argparse.ArgumentParser, status: bool = True) -> None:
        if status:
            sub.add_argument(
                "--status",
                choices=("queued", "scheduled", "processing", "completed", "failed", "cancelled"),
                help="only jobs in this status",
            )
        sub.add_argument("--queue", help="only jobs of this queue")
        sub.add_argument("--task", help="only jobs of this task")

    def paging(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--limit", type=positive_int, default=20, help="page size, 1..100 (20)")
        sub.add_argument("--cursor", help="the next page: the cursor printed with the last one")
        sub.add_argument(
            "--all", action="store_true", help="every page (of 100), following the cursors"
        )

    submit = command(commands, "submit", cmd_submit, "submit a job; prints its id")
    submit.add_argument("task", help="the task's name")
    submit.add_argument(
        "payload",
        nargs="?",
        help="the payload: JSON text, @FILE to read it from a file, - to read stdin (default {})",
    )
    submit.add_argument("--queue", help="the queue (default: default)")
    submit.add_argument("--priority", type=int, help="0..9, 9 runs first (default 0)")
    when_group = submit.add_mutually_exclusive_group()
    when_group.add_argument("--delay", type=seconds, help="run it in this many seconds")
    when_group.add_argument(
        "--run-at", type=aware_time, help="run it at this time (ISO 8601 with a UTC offset)"
    )
    submit.add_argument("--max-retries", type=int, help="retries after a failed attempt (0..100)")
    submit.add_argument("--timeout", type=positive_int, help="the job's timeout in seconds")
    submit.add_argument(
        "--idempotency-key",
        help="submitting again with this key returns the same job instead of a new one",
    )

    get = command(commands, "get", cmd_get, "show a job and its attempts")
    get.add_argument("id", help="the job's id")

    wait = command(
        commands, "wait", cmd_wait, "wait until jobs finish; exit 1 if one failed or was cancelled"
    )
    wait.add_argument("ids", nargs="*", metavar="ID", help="job ids (default: read from stdin)")
    wait.add_argument("--timeout", type=seconds, help="give up after this many seconds (exit 1)")

    ls = command(commands, "ls", cmd_ls, "list jobs, newest first")
    job_filters(ls)
    ls.add_argument("--tenant", help="an admin key: only this tenant's jobs")
    paging(ls)

    tail = command(commands, "tail", cmd_tail, "print jobs as they appear and change")
    job_filters(tail)
    tail.add_argument("--tenant", help="an admin key: only this tenant's jobs")
    tail.add_argument("-n", "--lines", type=int, default=10, help="newest jobs to print first (10)")
    tail.add_argument("--interval", type=seconds, default=1.0, help="seconds between polls (1)")
    tail.add_argument("--for", dest="seconds", type=seconds, help="stop after this many seconds")
    tail.add_argument("--count", type=positive_int, help="stop after printing this many lines")

    cancel = command(commands, "cancel", cmd_cancel, "cancel a job (a running one when it stops)")
    cancel.add_argument("id", help="the job's id")

    retry = command(commands, "retry", cmd_retry, "queue a failed or cancelled job again")
    retry.add_argument("id", help="the job's id")

    dlq = commands.add_parser("dlq", help="the dead-letter queue: failed jobs")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    dlq_ls = command(dlq_commands, "ls", cmd_dlq_ls, "list failed jobs, newest first")
    job_filters(dlq_ls, status=False)
    paging(dlq_ls)
    replay = command(
        dlq_commands, "replay", cmd_dlq_replay, "queue failed jobs again, with fresh retries"
    )
    replay.add_argument("ids", nargs="*", metavar="ID", help="the failed jobs' ids")
    replay.add_argument(
        "--all-matching",
        action="store_true",
        help="every failed job that matches --queue and --task (all of them without filters)",
    )
    replay.add_argument("--queue", help="with --all-matching: only jobs of this queue")
    replay.add_argument("--task", help="with --all-matching: only jobs of this task")

    command(commands, "queues", cmd_queues, "every queue: jobs per status, paused (admin)")
    command(commands, "workers", cmd_workers, "the live fleet processes (admin)")

    fleet = commands.add_parser("fleet", help="the worker fleet (admin)")
    fleet_commands = fleet.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    scale = command(
        fleet_commands, "scale", cmd_fleet_scale, "set how many worker processes a host runs"
    )
    scale.add_argument("host", help="the host, as `jobfleet workers` names it")
    scale.add_argument("processes", type=int, help="worker processes, 0..256")

    queue = commands.add_parser("queue", help="pause or resume a queue (admin)")
    queue_commands = queue.add_subparsers(dest="queue_command", required=True, metavar="COMMAND")
    for name, handler, text in (
        ("pause", cmd_queue_pause, "stop handing out the jobs of a queue"),
        ("resume", cmd_queue_resume, "hand out the jobs of a paused queue again"),
    ):
        command(queue_commands, name, handler, text).add_argument("queue", help="the queue")

    schedules = commands.add_parser("schedules", help="cron schedules: a job at each fire time")
    schedule_commands = schedules.add_subparsers(
        dest="schedules_command", required=True, metavar="COMMAND"
    )
    schedules_ls = command(
        schedule_commands, "ls", cmd_schedules_ls, "list schedules, oldest first"
    )
    paging(schedules_ls)
    create = command(
        schedule_commands, "create", cmd_schedules_create, "create a schedule; prints its id"
    )
    create.add_argument("name", help="the schedule's name, unique within the tenant")
    create.add_argument(
        "cron", help="five fields (`30 2 * * *`) or an alias (@hourly, @daily, ...); quote it"
    )
    create.add_argument("task", help="the task of its jobs")
    create.add_argument(
        "payload",
        nargs="?",
        help="its jobs' payload: JSON text, @FILE, - for stdin (default {})",
    )
    create.add_argument(
        "--tz", default="UTC", help="the IANA time zone the cron is read in (default UTC)"
    )
    create.add_argument("--queue", help="its jobs' queue (default: default)")
    create.add_argument("--priority", type=int, help="its jobs' priority, 0..9 (default 0)")
    create.add_argument("--max-retries", type=int, help="its jobs' retries (default: the server's)")
    create.add_argument(
        "--timeout", type=positive_int, help="its jobs' timeout in seconds (default: the server's)"
    )
    create.add_argument(
        "--misfire",
        choices=("skip", "run_latest"),
        help="fire times missed while no duty ran: skip, or one job for the latest (default)",
    )
    create.add_argument("--paused", action="store_true", help="create it paused")
    schedule_get = command(
        schedule_commands, "get", cmd_schedules_get, "a schedule, its next fire times, its jobs"
    )
    schedule_get.add_argument("id", help="the schedule's id")
    schedule_get.add_argument(
        "--upcoming", type=positive_int, help="how many next fire times to show, 1..50 (5)"
    )
    for name, handler, text in (
        ("pause", cmd_schedules_pause, "no fire until resumed"),
        ("resume", cmd_schedules_resume, "fire again, from the next fire time after now"),
        ("delete", cmd_schedules_delete, "delete a schedule (its jobs stay)"),
        ("run", cmd_schedules_run, "one job of the schedule now; prints the job's id"),
    ):
        command(schedule_commands, name, handler, text).add_argument("id", help="the schedule's id")
    return parser


# Running -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The common options' defaults, set here: a default on their shared argparse actions would
    # let a command's parser reset what was given before the command (`--key K ls`).
    for name, default in (("url", None), ("key", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    key = args.key or os.environ.get("JOBFLEET_KEY")
    if not key:
        args.parser.error("no API key: pass --key or set JOBFLEET_KEY")
    url = args.url or os.environ.get("JOBFLEET_URL") or DEFAULT_URL
    from jobfleet.client import Client  # the client's import cost only past argument parsing

    try:
        with Client(url, key) as client:
            status: int = args.handler(client, args)
            return status
    except UsageError as exc:
        args.parser.error(str(exc))
    except TransportError as exc:
        print(f"jobfleet: cannot reach the API at {url}: {exc}", file=sys.stderr)
    except APIError as exc:
        print(f"jobfleet: {exc.status} {exc.code}: {exc.detail}", file=sys.stderr)
    except JobfleetError as exc:
        print(f"jobfleet: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`jobfleet ls | head`): stop quietly with the status of a
        # program that SIGPIPE ended. Python flushes stdout once more at exit; devnull takes it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return 1


if __name__ == "__main__":
    sys.exit(main())
