"""`jobfleet`, the client's command line, as a shell user meets it: the venv's console script
against a live API, in real bash pipelines; its exit statuses (0, 1 for a failed job or an API
error, 2 for usage); its tables and its JSON against what GET /jobs, /queues and /workers say."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jobfleet import Client
from jobfleet.cli import build_parser, main

from tests.helpers import ROOT, LiveAPI, terminate, wait_until
from tests.test_cli import undocumented

pytestmark = pytest.mark.live

JOBFLEET = Path(sys.executable).parent / "jobfleet"  # the console script of `pip install ./client`
ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def cli_env(url: str, key: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        # This checkout's client package, not whichever the venv's editable install names.
        "PYTHONPATH": str(ROOT / "client" / "src"),
        "JOBFLEET_URL": url,
    }
    env.pop("JOBFLEET_KEY", None)
    if key is not None:
        env["JOBFLEET_KEY"] = key
    return env


@dataclass
class Ran:
    returncode: int | str | None
    stdout: str
    stderr: str


class Cli:
    """Runs `jobfleet` against the API with a key: in this process (its `main`, quick), or as
    the console script in a bash of its own (`shell`), as a user does."""

    def __init__(self, url: str, key: str | None) -> None:
        self.url, self.key = url, key
        self.env = cli_env(url, key)

    def __call__(self, *args: str, stdin: str | None = None) -> Ran:
        argv = ["--url", self.url, *(["--key", self.key] if self.key else []), *args]
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    status: int | str | None = main(argv)
                except SystemExit as exit:
                    status = exit.code
        finally:
            sys.stdin = saved
        return Ran(status, out.getvalue(), err.getvalue())

    def ok(self, *args: str, stdin: str | None = None) -> str:
        run = self(*args, stdin=stdin)
        assert (run.returncode, run.stderr) == (0, ""), run
        return run.stdout

    def shell(self, script: str) -> subprocess.CompletedProcess[str]:
        """`script` in bash with pipefail, the venv's `jobfleet` on its PATH."""
        env = {**self.env, "PATH": f"{JOBFLEET.parent}:{self.env['PATH']}"}
        return subprocess.run(
            ["bash", "-c", f"set -o pipefail\n{script}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def admin_key(make_key: Callable[..., str]) -> str:
    return make_key("ops", "admin")


@pytest.fixture
def cli(live_api: LiveAPI, admin_key: str, monkeypatch: pytest.MonkeyPatch) -> Cli:
    # In this process, what the command line is given is all it knows.
    monkeypatch.delenv("JOBFLEET_KEY", raising=False)
    monkeypatch.delenv("JOBFLEET_URL", raising=False)
    return Cli(live_api.url, admin_key)


@pytest.fixture
def api(live_api: LiveAPI, admin_key: str) -> Iterator[Client]:
    with Client(live_api.url, admin_key) as client:
        yield client


def test_the_console_script_is_installed_and_every_argument_has_help() -> None:
    assert JOBFLEET.exists(), "pip install -e ./client (requirements-dev.txt) makes it"
    assert undocumented(build_parser(), "jobfleet") == []
    module = subprocess.run(
        [sys.executable, "-m", "jobfleet", "--help"],
        env=cli_env("http://127.0.0.1:1", None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert module.returncode == 0 and module.stdout.startswith("usage: jobfleet ")


def test_submit_piped_into_wait_in_a_shell_and_the_fleet_commands(
    cli: Cli, api: Client, start_fleet: Any
) -> None:
    fleet = start_fleet(processes=1, threads=1)
    piped = cli.shell("""jobfleet submit echo '{"a": 1}' | jobfleet wait""")
    assert (piped.returncode, piped.stderr) == (0, "")
    job_id, status, result = piped.stdout.split()
    assert (status, json.loads(result)) == ("completed", {"a": 1})
    assert api.get(job_id).result == {"a": 1}

    # A job that fails: wait exits 1, and says how it ended.
    failed = cli.shell(
        'jobfleet submit fail \'{"message": "no ink"}\' --max-retries 0 | jobfleet wait'
    )
    assert failed.returncode == 1
    assert failed.stdout.split()[1:3] == ["failed", "TaskFailed:"]
    # Several ids, from stdin, one JSON document a line; one failed job makes the status 1.
    ids = [cli.ok("submit", "echo", '{"n": 2}').strip(), failed.stdout.split()[0]]
    both = cli("wait", "--json", stdin="\n".join(ids) + "\n\n")
    assert both.returncode == 1
    assert [json.loads(line)["status"] for line in both.stdout.splitlines()] == [
        "completed",
        "failed",
    ]

    # The fleet as GET /workers shows it, in a table and as JSON.
    workers = api.workers()
    table = cli.ok("workers")
    assert table.splitlines()[0].split()[:3] == ["KIND", "WORKER", "HOST"]
    for worker in workers:
        assert worker["worker_id"] in table
    listed = json.loads(cli.ok("workers", "--json"))
    assert {w["worker_id"] for w in listed} == {w["worker_id"] for w in workers}

    assert cli.ok("fleet", "scale", fleet.host, "2") == f"host {fleet.host}: 2 worker processes\n"

    def desired() -> Any:
        managers = [w for w in api.workers() if w["kind"] == "manager" and w["host"] == fleet.host]
        return managers and managers[0]["desired"] == 2

    wait_until(desired, timeout=30)
    assert json.loads(cli.ok("--json", "fleet", "scale", fleet.host, "1")) == {
        "host": fleet.host,
        "processes": 1,
    }
    unknown = cli("fleet", "scale", "no-such-host", "1")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("jobfleet: 404 host-not-found: ")


def test_jobs_listed_changed_and_shown_as_the_api_shows_them(
    cli: Cli, api: Client, make_key: Callable[..., str]
) -> None:
    q = f"cli-{uuid.uuid4().hex[:6]}"  # served by no worker: the jobs stay where they are put
    first = cli.ok("submit", "echo", '{"n": 1}', "--queue", q).strip()
    second = cli.ok(
        "submit", "echo", "-", "--queue", q, "--priority", "5", stdin='{"n": 2}'
    ).strip()
    later = cli.ok("submit", "echo", "--queue", q, "--delay", "3600").strip()
    again = cli.ok("submit", "echo", "--queue", q, "--delay", "3600").strip()
    assert len({first, second, later, again}) == 4
    assert api.get(second).payload == {"n": 2} and api.get(second).priority == 5
    assert api.get(later).status == "scheduled" and api.get(later).payload == {}

    # An idempotency key: the same job again, and --json says it was not created this time.
    keyed = json.loads(
        cli.ok("submit", "echo", "[1]", "--queue", q, "--idempotency-key", q, "--json")
    )
    assert keyed["created"] is True
    repeat = json.loads(
        cli.ok("submit", "echo", "[1]", "--queue", q, "--idempotency-key", q, "--json")
    )
    assert (repeat["created"], repeat["job"]["id"]) == (False, keyed["job"]["id"])

    table = cli.ok("ls", "--queue", q).splitlines()
    assert table[0].split() == ["ID", "STATUS", "QUEUE", "TASK", "PRI", "ATTEMPTS", "CREATED"]
    assert [line.split()[0] for line in table[1:]] == [
        keyed["job"]["id"],
        again,
        later,
        second,
        first,
    ]
    page = json.loads(cli.ok("ls", "--json", "--queue", q, "--limit", "2"))
    reply = api.list(queue=q, limit=2)
    assert [j["id"] for j in page["items"]] == [j.id for j in reply.items]
    assert page["items"][0] == reply.items[0].raw
    assert (page["total"], page["total_exact"], page["limit"], page["offset"]) == (5, True, 2, 0)
    assert page["next_cursor"]
    assert (
        cli.ok("ls", "--queue", q, "--limit", "2")
        .splitlines()[-1]
        .startswith("(2 of 5; next page: --cursor ")
    )
    rest = cli.ok("ls", "--queue", q, "--limit", "2", "--cursor", page["next_cursor"], "--json")
    assert [j["id"] for j in json.loads(rest)["items"]] == [later, second]
    every = cli.ok("ls", "--all", "--json", "--queue", q).splitlines()
    assert [json.loads(line)["id"] for line in every] == [
        keyed["job"]["id"],
        again,
        later,
        second,
        first,
    ]
    scheduled = cli.ok("ls", "--queue", q, "--status", "scheduled").splitlines()[1:]
    assert sorted(line.split()[0] for line in scheduled) == sorted([later, again])

    shown = json.loads(cli.ok("get", first, "--json"))
    assert shown == api.get(first).raw
    details = cli.ok("get", first)
    assert f"id               {first}" in details and "status           queued" in details

    assert cli.ok("cancel", later) == f"{later} cancelled\n"
    assert cli.ok("retry", later) == f"{later} queued\n"
    assert json.loads(cli.ok("cancel", again, "--json"))["status"] == "cancelled"
    refused = cli("cancel", again)
    assert refused.returncode == 1
    assert refused.stderr.startswith("jobfleet: 409 invalid-state: cannot cancel a job that is ")

    # Two failed jobs in the dead-letter queue (nacked without retries by an HTTP worker).
    with Client(cli.url, make_key("ops", "worker")) as worker:
        for _ in range(2):
            lease = worker.lease(q, "cli-test")
            assert lease is not None
            worker.nack(lease.job.id, lease.lease_token, "bad input", retry=False)
    dead = cli.ok("dlq", "ls", "--queue", q).splitlines()
    assert len(dead) == 3 and all(" failed " in line for line in dead[1:])
    one = dead[1].split()[0]
    assert cli.ok("dlq", "replay", one) == f"{one} queued\n"
    assert cli.ok("dlq", "replay", "--all-matching", "--queue", q) == "replayed 1\n"
    assert api.dlq_list(queue=q).items == ()


def test_queues_and_pausing_as_get_queues_shows_them(cli: Cli, api: Client) -> None:
    q = f"cli-{uuid.uuid4().hex[:6]}"
    cli.ok("submit", "noop", "--queue", q)
    varying = "oldest_waiting_seconds"
    assert [{**x, varying: None} for x in json.loads(cli.ok("queues", "--json"))] == [
        {**x, varying: None} for x in api.queues()
    ]
    row = next(line for line in cli.ok("queues").splitlines() if line.startswith(q))
    assert row.split()[:4] == [q, "-", "1", "0"]  # not paused: queued 1, scheduled 0

    assert cli.ok("queue", "pause", q) == f"queue {q} paused\n"
    assert next(x for x in api.queues() if x["queue"] == q)["paused"] is True
    row = next(line for line in cli.ok("queues").splitlines() if line.startswith(q))
    assert row.split()[:3] == [q, "paused", "1"]
    assert json.loads(cli.ok("queue", "resume", q, "--json")) == {"queue": q, "paused": False}
    assert next(x for x in api.queues() if x["queue"] == q)["paused"] is False


def test_tail_prints_new_and_changed_jobs(cli: Cli, api: Client) -> None:
    q = f"tail-{uuid.uuid4().hex[:6]}"
    first = api.submit("echo", {"n": 1}, queue=q).id
    tail = subprocess.Popen(
        [str(JOBFLEET), "tail", "--queue", q, "--interval", "0.1", "--count", "3", "--for", "30"],
        env=cli.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert tail.stdout is not None
    stdout = tail.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        assert lines.get(timeout=30).split()[1:3] == [first, "queued"]
        second = api.submit("echo", {"n": 2}, queue=q).id
        assert lines.get(timeout=30).split()[1:3] == [second, "queued"]
        api.cancel(first)
        assert lines.get(timeout=30).split()[1:3] == [first, "cancelled"]
        assert tail.wait(timeout=30) == 0  # --count 3
    finally:
        terminate(tail)
        stdout.close()


def test_usage_errors_exit_2_and_api_errors_exit_1(cli: Cli, tmp_path: Path) -> None:
    keyless = Cli(cli.url, None)
    for run in (
        keyless("ls"),
        cli("no-such-command"),
        cli("submit"),
        cli("submit", "echo", "{not json"),
        cli("submit", "echo", f"@{tmp_path / 'missing.json'}"),
        cli("submit", "echo", "--delay", "5", "--run-at", "2030-01-01T00:00:00Z"),
        cli("submit", "echo", "--run-at", "2030-01-01T00:00:00"),
        cli("ls", "--limit", "0"),
        cli("dlq", "replay"),
    ):
        assert run.returncode == 2, run
        assert run.stdout == "" and "usage: jobfleet" in run.stderr, run
    assert "no API key" in keyless("ls").stderr
    # The console script itself, in a shell: the status a script tests.
    usage = cli.shell("jobfleet submit")
    assert usage.returncode == 2 and "the following arguments are required: task" in usage.stderr

    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "a file"}')
    job_id = cli.ok("submit", "echo", f"@{payload}", "--queue", "cli-idle").strip()
    assert json.loads(cli.ok("get", job_id, "--json"))["payload"] == {"from": "a file"}

    # A reader that went away (`jobfleet ls | head`): no traceback, the status SIGPIPE gives.
    read, write = os.pipe()
    os.close(read)
    try:
        closed = subprocess.run(
            [str(JOBFLEET), "ls"], env=cli.env, stdout=write, stderr=subprocess.PIPE, text=True,
            timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (closed.returncode, closed.stderr) == (128 + signal.SIGPIPE, "")

    missing = cli("get", str(uuid.uuid4()))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.startswith("jobfleet: 404 job-not-found: No job with this id")
    invalid = cli("submit", "echo", "--priority", "12")
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("jobfleet: 422 validation-error: body.priority: ")
    forbidden = Cli(cli.url, "jf_" + "x" * 40)("ls")
    assert forbidden.returncode == 1 and forbidden.stderr.startswith("jobfleet: 401 unauthorized")
    timed_out = cli("wait", job_id, "--timeout", "0.2")
    assert timed_out.returncode == 1
    assert (
        timed_out.stderr == f"jobfleet: job {job_id} did not finish within 0.2 s (still queued)\n"
    )
