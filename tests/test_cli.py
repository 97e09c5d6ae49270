"""The ``mindtrace-jobs`` command line, run as the installed console script in a subprocess.

Queue commands run against Redis and RabbitMQ (memory:// queues live in one process only, so
memory is used where one invocation is the whole story: bench, submit, input errors, config).
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mindtrace_kombu import Orchestrator, QueueNotFound

from .conftest import REDIS_URL, broker_url, make_client, make_job, unique

pytestmark = pytest.mark.timeout(60)

SCRIPT = Path(sys.executable).with_name("mindtrace-jobs")
HANDLERS = """
def run(job):
    if job.payload.input.label == "doomed":
        raise RuntimeError("boom")
"""


def run(
    *args: str,
    broker: str | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the console script; the environment names no broker unless ``env`` does."""
    assert SCRIPT.exists(), f"{SCRIPT} missing: pip install -e . to create the console script"
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MINDTRACE_BROKER_URL", "CELERY_BROKER_URL")
    }
    command = [str(SCRIPT), *(["--broker", broker] if broker else []), *args]
    result = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=50,
        cwd=cwd,
        env={**environment, **(env or {})},
    )
    assert ":guest@" not in result.stdout + result.stderr, "a password leaked into the output"
    return result


def run_all(
    *commands: tuple[str, ...],
    stdins: Sequence[str] = (),
    envs: Sequence[dict[str, str]] = (),
    **kwargs: Any,
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands concurrently (each costs an interpreter start-up)."""

    def one(index: int) -> subprocess.CompletedProcess[str]:
        stdin = stdins[index] if index < len(stdins) else None
        env = envs[index] if index < len(envs) else None
        return run(*commands[index], stdin=stdin, env=env, **kwargs)

    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(one, range(len(commands))))


def ok(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def json_lines(result: subprocess.CompletedProcess[str]) -> list[Any]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> str:
    make_client(
        request.param
    )  # skips, or fails under MINDTRACE_REQUIRE_BROKERS=1, when unreachable
    return broker_url(request.param)


@pytest.fixture
def queue(broker: str) -> Iterator[str]:
    """A unique queue name; the queue and its dead-letter queue are deleted afterwards."""
    name = unique("cli")
    yield name
    with Orchestrator.from_url(broker) as orchestrator:
        for leftover in (name, f"{name}.dlq"):
            try:
                orchestrator.delete_queue(leftover)
            except QueueNotFound:
                pass


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    """A directory holding ``handlers.py``, importable by ``worker handlers:...`` run from it."""
    (tmp_path / "handlers.py").write_text(HANDLERS)
    return tmp_path


def ready(broker: str, queue: str) -> dict[str, Any]:
    """The queue's row of ``queues --json --queue QUEUE``."""
    rows = as_json(ok("queues", "--json", "--queue", queue, broker=broker))["queues"]
    return next(row for row in rows if row["name"] == queue)


# -- queues, publish, receive ------------------------------------------------------------------


def test_declare_publish_count_and_receive(broker: str, queue: str) -> None:
    # Given a priority queue, a job published from options and a more urgent one from stdin
    assert as_json(ok("declare", queue, "--max-priority", "5", "--json", broker=broker)) == {
        "queue": queue,
        "type": "priority",
        "max_priority": 5,
    }
    ok(
        "publish",
        queue,
        "--name",
        "resize",
        "-i",
        "width=640",
        "-i",
        'tags=["a"]',
        "-i",
        "note=hi",
        "--priority",
        "1",
        broker=broker,
    )
    urgent = ok(
        "publish",
        queue,
        "-f",
        "-",
        "--priority",
        "4",
        broker=broker,
        stdin='{"name": "urgent", "input": {"v": 1}}',
    )
    assert urgent.stdout.startswith("published job ")
    # When counting through `queues --json --queue`
    row = ready(broker, queue)
    # Expect both jobs, on a priority queue with no dead-letter queue yet
    in_flight = row.pop("unacked")  # Redis: 0; RabbitMQ: None without the management API
    assert in_flight == 0 if broker.startswith("redis") else in_flight in (None, 0)
    published = row.pop("published")  # Redis: the queue's publish counter; RabbitMQ: the management API's
    assert published == 2 if broker.startswith("redis") else published in (None, 0, 2)
    assert row == {
        "name": queue,
        "type": "priority",
        "max_priority": 5,
        "ready": 2,
        "dead_letters": None,
        "consumers": 0,
    }
    # And `receive` prints them as JSON lines, higher priority first, input values typed
    received = run("receive", queue, "--count", "3", broker=broker)
    assert received.returncode == 0
    first, second = json_lines(received)
    assert (first["name"], first["payload"]["input"]) == ("urgent", {"v": 1})
    assert second["payload"]["input"] == {"width": 640, "tags": ["a"], "note": "hi"}
    assert "received 2 of 3" in received.stderr
    # And a priority out of range, or re-declaring as another type, is invalid input: exit 5
    bad_priority, mismatch = run_all(
        ("publish", queue, "-n", "x", "--priority", "9"), ("declare", queue), broker=broker
    )
    assert (bad_priority.returncode, bad_priority.stderr.splitlines()) == (
        5,
        [f"Error: invalid priority 9 for queue {queue!r}: allowed range is 0..5"],
    )
    assert (
        mismatch.returncode == 5
        and "already exists as priority(max_priority=5), not fifo" in mismatch.stderr
    )


def test_bulk_publish_purge_and_delete_with_prompts(broker: str, queue: str) -> None:
    # Given 50 jobs published in chunks of 20
    with Orchestrator.from_url(broker) as orchestrator:
        orchestrator.declare_queue(queue)
    published = as_json(
        ok(
            "publish",
            queue,
            "-n",
            "bulk",
            "--count",
            "50",
            "--chunk-size",
            "20",
            "--json",
            broker=broker,
        )
    )
    assert published["count"] == 50 and len(set(published["ids"])) == 50
    # When a purge is declined at the prompt, expect exit 1 and nothing removed
    declined = run("purge", queue, broker=broker, stdin="n\n")
    assert declined.returncode == 1
    assert "Purge 50 ready message(s)" in declined.stderr and "Aborted" in declined.stderr
    # When it is confirmed, expect all 50 removed and reported
    assert (
        ok("purge", queue, broker=broker, stdin="y\n").stdout.strip()
        == f"purged 50 message(s) from {queue!r}"
    )
    # And --yes purges without asking
    assert as_json(ok("purge", queue, "--yes", "--json", broker=broker)) == {
        "queue": queue,
        "removed": 0,
    }
    # When the queue is deleted (confirmed at the prompt), expect it gone: exit 3
    assert f"deleted queue {queue!r}" in ok("delete", queue, broker=broker, stdin="y\n").stdout
    missing = run("queues", "--queue", queue, broker=broker)
    assert missing.returncode == 3
    assert missing.stderr.strip() == (
        f"Error: queue {queue!r} does not exist: declare it with `mindtrace-jobs declare {queue}`"
    )


def test_broker_errors_are_one_masked_line() -> None:
    # Given a URL with a scheme no backend serves, and brokers that are not running
    bad_scheme, redis_down, amqp_down, debug = run_all(
        ("--broker", "http://user:secret@localhost/", "queues"),
        ("--broker", "redis://user:secret@localhost:1/0", "--connect-timeout", "1", "queues"),
        ("--broker", "amqp://user:secret@localhost:1//", "--connect-timeout", "1", "queues"),
        ("--broker", "redis://user:secret@localhost:1/0", "--log-level", "debug", "queues"),
    )
    # Expect a usage error (2) and broker unavailable (4), each one line, the password masked
    assert (
        bad_scheme.returncode == 2 and "unsupported broker URL scheme 'http'" in bad_scheme.stderr
    )
    assert redis_down.returncode == 4
    assert redis_down.stderr.startswith(
        "Error: broker redis://user:**@localhost:1/0 is unavailable"
    )
    assert amqp_down.returncode == 4
    assert amqp_down.stderr.startswith("Error: broker amqp://user:**@localhost:1// is unavailable")
    for result in (bad_scheme, redis_down, amqp_down):
        assert "Traceback" not in result.stderr and "secret" not in result.stderr
    # And --log-level debug adds the traceback, still masked
    assert debug.returncode == 4 and "Traceback" in debug.stderr and "secret" not in debug.stderr


# -- without a broker process: memory, input, configuration, help -----------------------------


def test_invalid_input_exits_before_the_broker_is_used(handlers: Path) -> None:
    not_json, bad_job, neither, bad_name, bad_handler = run_all(
        ("publish", "q", "-f", "-"),
        ("publish", "q", "-f", "-"),
        ("publish", "q"),
        ("declare", "amq.reserved"),
        ("worker", "handlers:nope", "-Q", "q"),
        broker="memory://",
        stdins=("{not json", '{"name": "x", "colour": "red"}'),
        cwd=handlers,
    )
    assert not_json.returncode == 5 and "not JSON or JSON lines" in not_json.stderr
    assert bad_job.returncode == 5 and "unknown fields ['colour']" in bad_job.stderr
    assert neither.returncode == 2 and "give either --file" in neither.stderr
    assert bad_name.returncode == 5 and "reserved by AMQP brokers" in bad_name.stderr
    assert bad_handler.returncode == 2 and "cannot import 'handlers:nope'" in bad_handler.stderr


def test_submit_and_bench_on_memory() -> None:
    submitted, bench = run_all(
        ("submit", "-n", "train", "-t", "data_processing", "--count", "3", "--json"),
        ("--json", "bench", "-n", "200", "--batch", "50"),
        broker="memory://",
    )
    # Expect submit to route by job type, and bench to report both phases with percentiles
    assert as_json(submitted)["queues"] == {"data_jobs": 3}
    publish, receive = as_json(bench)["phases"]
    assert (publish["jobs"], publish["calls"], receive["jobs"], receive["calls"]) == (
        200,
        4,
        200,
        200,
    )
    assert receive["p50_ms"] <= receive["p99_ms"] <= receive["max_ms"]


def test_broker_from_environment_then_config_module(tmp_path: Path) -> None:
    # Given a celeryconfig module in the current directory
    (tmp_path / "celeryconfig.py").write_text("broker_url = 'memory:///from-config'\n")
    from_config, from_env, missing = run_all(
        ("queues", "--json"),
        ("queues", "--json"),
        ("--config", "no_such_config", "queues"),
        cwd=tmp_path,
        envs=({}, {"CELERY_BROKER_URL": "memory:///from-env"}),
    )
    # Expect its broker_url used, the environment to win over it, and a missing module named
    assert as_json(from_config)["broker"] == "memory:///from-config"
    assert as_json(from_env)["broker"] == "memory:///from-env"
    assert (
        missing.returncode == 2 and "cannot import config module 'no_such_config'" in missing.stderr
    )


def test_help_version_and_completion() -> None:
    help_text, version, completion = run_all(
        ("--help",), ("--version",), (), envs=({}, {}, {"_MINDTRACE_JOBS_COMPLETE": "bash_source"})
    )
    for line in (
        "3  queue not found",
        "4  broker unavailable",
        "5  invalid input",
        "_MINDTRACE_JOBS_COMPLETE",
    ):
        assert line in help_text.stdout
    assert version.stdout.startswith("mindtrace-jobs 0.1.0")
    assert "complete -o nosort -F _mindtrace_jobs_completion mindtrace-jobs" in completion.stdout


def test_tables_are_rich_on_a_terminal_and_plain_when_piped() -> None:
    leader, follower = pty.openpty()
    try:
        terminal = subprocess.Popen(
            [str(SCRIPT), "--broker", "memory://", "queues"],
            stdout=follower,
            stderr=subprocess.DEVNULL,
        )
        plain = run("bench", "-n", "5", broker="memory://").stdout
        terminal.wait(timeout=30)
        rich = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert plain.splitlines()[0].split()[:3] == ["phase", "jobs", "seconds"]
    assert not set("┃━│") & set(plain)
    assert "┃" in rich and "━" in rich


# -- worker and dead letters ------------------------------------------------------------------


def test_worker_burst_and_dead_letters(broker: str, queue: str, handlers: Path) -> None:
    # Given four jobs that succeed and one whose handler fails
    with Orchestrator.from_url(broker) as orchestrator:
        orchestrator.declare_queue(queue)
        orchestrator.publish_many(queue, [make_job(value) for value in range(4)])
        orchestrator.publish(queue, make_job(99, label="doomed"))
    # When a burst worker without retries runs
    events = json_lines(
        ok(
            "worker",
            "handlers:run",
            "-Q",
            queue,
            "--burst",
            "--max-retries",
            "0",
            "--json",
            broker=broker,
            cwd=handlers,
        )
    )
    # Expect a start, one line per job, a final summary, and the failed job dead-lettered
    assert events[0]["event"] == "started" and events[0]["queues"] == [queue]
    outcomes = [event["outcome"] for event in events if event["event"] == "job"]
    assert sorted(outcomes) == ["completed"] * 4 + ["dead-lettered"]
    assert {k: events[-1][k] for k in ("event", "processed", "completed", "dead_lettered")} == {
        "event": "stopped",
        "processed": 5,
        "completed": 4,
        "dead_lettered": 1,
    }
    assert {k: ready(broker, queue)[k] for k in ("ready", "dead_letters")} == {
        "ready": 0,
        "dead_letters": 1,
    }
    # When listing the dead letters, expect the job with its error, left in place
    letters = as_json(ok("dlq", "list", queue, "--json", broker=broker))["dead_letters"]
    assert len(letters) == 1 and letters[0]["job"]["payload"]["input"]["label"] == "doomed"
    assert "boom" in letters[0]["error"]
    # When requeued, expect it back on the queue; then dlq purge has nothing left to remove
    assert (
        ok("dlq", "requeue", queue, broker=broker).stdout.strip()
        == f"requeued 1 dead letter(s) to {queue!r}"
    )
    assert as_json(ok("dlq", "purge", queue, "--yes", "--json", broker=broker)) == {
        "queue": queue,
        "removed": 0,
    }
    with Orchestrator.from_url(broker) as orchestrator:
        assert orchestrator.count_queue_messages(queue) == 1


def test_worker_exits_cleanly_on_sigterm(handlers: Path) -> None:
    # Given a worker that has handled a job (so its signal handlers are in place)
    make_client("redis")
    broker, queue = broker_url("redis"), unique("cli")
    with Orchestrator.from_url(broker) as orchestrator:
        orchestrator.declare_queue(queue)
        process = subprocess.Popen(
            [
                str(SCRIPT),
                "--broker",
                broker,
                "worker",
                "handlers:run",
                "-Q",
                queue,
                "--summary-interval",
                "0.2",
            ],
            cwd=handlers,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert " started " in process.stdout.readline()
            orchestrator.publish(queue, make_job(1))
            line = "-"
            while "total: 1 completed" not in line:  # the job's line, then a summary counting it
                line = process.stdout.readline()
                assert line, "the worker exited early"
            # When it receives SIGTERM, expect a final summary and exit code 0
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
            assert process.returncode == 0, err
            assert " stopped " in out and "1 processed (1 completed" in out
        finally:
            process.kill()
            orchestrator.delete_queue(queue)


def test_readme_worker_example_handler(broker: str, queue: str) -> None:
    # Given the README's example handler (examples/cli/tasks.py) and two jobs, one too wide
    with Orchestrator.from_url(broker) as orchestrator:
        orchestrator.declare_queue(queue)
    ok("publish", queue, "--name", "resize", "-i", "width=640", broker=broker)
    ok("publish", queue, "--name", "resize", "-i", "width=8000", broker=broker)
    # When the worker runs it from the repository root, as the README shows
    result = ok(
        "worker", "examples.cli.tasks:resize", "-Q", queue, "--burst", "--max-retries", "1",
        broker=broker, cwd=Path(__file__).resolve().parents[1],
    )
    # Expect one job completed and the too-wide one retried, then dead-lettered with its error
    assert "1 completed, 1 retried, 1 dead-lettered" in result.stdout
    assert "ValueError: width 8000 is too large" in result.stdout


def test_queues_shows_jobs_in_flight_on_redis() -> None:
    # Given a job claimed (delivered, not yet acknowledged) by another process
    broker = REDIS_URL
    make_client("redis")
    with Orchestrator.from_url(broker) as orchestrator:
        queue = unique("cli")
        orchestrator.declare_queue(queue)
        orchestrator.publish_many(queue, [make_job(1), make_job(2)])
        try:
            with orchestrator.claim(queue) as job:
                assert job is not None
                # Expect `queues` to show it in flight, and the other one ready
                row = ready(broker, queue)
                assert (row["ready"], row["unacked"]) == (1, 1)
            # and, once acknowledged, nothing in flight
            assert ready(broker, queue)["unacked"] == 0
        finally:
            orchestrator.delete_queue(queue)


def test_hints_name_the_flags_not_the_python_arguments(queue: str, broker: str) -> None:
    ok("declare", queue, broker=broker)
    mismatch = run("declare", queue, "--type", "priority", broker=broker)
    assert mismatch.returncode == 5 and "pass --force" in mismatch.stderr
    on_fifo = run("publish", queue, "-n", "x", "--priority", "3", broker=broker)
    assert on_fifo.returncode == 5 and "declare it with --type priority" in on_fifo.stderr
    for result in (mismatch, on_fifo):
        assert "force=True" not in result.stderr and "queue_type=" not in result.stderr


def test_url_mistakes_get_their_own_line_with_the_fix() -> None:
    make_client("redis")
    base = REDIS_URL.rsplit("/", 1)[0]
    no_such_db, bad_port, bad_db = (
        run("queues", broker=f"{base}/999"),
        run("queues", broker="redis://localhost:63x9/0"),
        run("queues", broker=f"{base}/zero"),
    )
    assert no_such_db.returncode == 4 and "unavailable (database)" in no_such_db.stderr
    assert "below its 'databases' setting" in no_such_db.stderr
    assert bad_port.returncode == 2 and "the port must be a number" in bad_port.stderr
    assert bad_db.returncode == 2 and "path is the database number" in bad_db.stderr


def test_publish_without_confirms(broker: str, queue: str) -> None:
    # Given a queue
    with Orchestrator.from_url(broker) as orchestrator:
        orchestrator.declare_queue(queue)
        # When 30 jobs are published with --no-confirm (RabbitMQ: not awaited; elsewhere as usual)
        published = as_json(ok("publish", queue, "-n", "fast", "--count", "30", "--no-confirm", "--json", broker=broker))
        # Expect all 30 reported and delivered, each once
        received = [orchestrator.receive_message(queue, timeout=10) for _ in range(30)]
        assert [job.id for job in received if job is not None] == published["ids"]
        assert orchestrator.receive_message(queue) is None
