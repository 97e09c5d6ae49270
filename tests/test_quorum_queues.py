"""Replicated queues (RabbitMQ quorum queues) against the shared RabbitMQ, without mocks; the
in-process and Redis backends refuse them. A 3-node cluster losing the queue's leader is
tests/test_rabbitmq_cluster.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import kombu
import pytest

from mindtrace_kombu import Orchestrator
from mindtrace_kombu.backends.amqp import _reported_spec
from mindtrace_kombu.clients import RabbitMQClient, RedisClient
from mindtrace_kombu.errors import (
    InvalidArgument,
    InvalidPriority,
    QueueArgumentsMismatch,
    QueueNotFound,
    QueueTypeMismatch,
    UnsupportedQueueType,
)
from mindtrace_kombu.queues import QueueSpec, QueueType

from .conftest import AMQP_URL, free_port, make_client, make_job, unique


@pytest.fixture
def rabbit() -> Iterator[Orchestrator]:
    """An orchestrator on the shared RabbitMQ; deletes the queues it saw."""
    orchestrator = Orchestrator(make_client("rabbitmq"))
    yield orchestrator
    for name in list(orchestrator._specs):
        try:
            orchestrator.delete_queue(name)
        except QueueNotFound:
            pass
    orchestrator.close()


@pytest.fixture
def foreign_queue() -> Iterator[Callable[..., str]]:
    """``declare(**arguments)``: a queue declared with plain Kombu, outside this package."""
    names: list[str] = []
    with kombu.Connection(AMQP_URL) as connection:
        channel = connection.channel()

        def declare(**arguments: Any) -> str:
            names.append(unique("foreign"))
            channel.queue_declare(names[-1], durable=True, auto_delete=False, arguments=arguments)
            return names[-1]

        yield declare
        for name in names:
            channel.queue_delete(name)


def fresh(orchestrator: Orchestrator) -> Orchestrator:
    """Another orchestrator on the same broker: it knows no spec, it has to look them up."""
    return Orchestrator(orchestrator.client)


# -- declaring -------------------------------------------------------------------------------------


def test_declare_replicated_is_a_quorum_queue_and_idempotent(rabbit: Orchestrator) -> None:
    # Given a queue declared replicated, holding a job
    name = unique("quorum")
    rabbit.declare_queue(name, replicated=True)
    rabbit.publish(name, make_job(1))
    # When it is declared again, through the orchestrator, the client API and another orchestrator
    rabbit.declare_queue(name, replicated=True)
    client = rabbit.client
    assert isinstance(client, RabbitMQClient)
    assert client.declare_queue(name, replicated=True)["status"] == "success"
    other = fresh(rabbit)
    try:
        other.declare_queue(name, replicated=True)
        # Expect one quorum queue, known as such by an orchestrator that did not declare it
        assert other.queue_spec(name) == QueueSpec(name, replicated=True)
        assert other.queue_spec(name).kind == "quorum"
    finally:
        other.close()
        client.close()
    # And declared as plain Kombu declares a quorum queue (Celery's task_default_queue_type)
    with kombu.Connection(AMQP_URL) as connection:
        connection.channel().queue_declare(name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    assert rabbit.count_queue_messages(name) == 1


def test_a_fifo_declaration_of_a_quorum_queue_is_a_type_mismatch_that_never_advises_force(
    rabbit: Orchestrator,
) -> None:
    # Given a quorum queue holding a job
    name = unique("quorum")
    rabbit.declare_queue(name, replicated=True)
    rabbit.publish(name, make_job(1))
    # When it is declared as a classic fifo or priority queue, with and without force
    for options in ({}, {"force": True}, {"max_priority": 5}, {"max_priority": 5, "force": True}):
        with pytest.raises(QueueTypeMismatch) as info:
            fresh(rabbit).declare_queue(name, **options)
        # Expect both types named, the fix, and no advice to force
        assert info.value.existing == "quorum"
        assert "replicated=True" in str(info.value) and "force" not in str(info.value)
    # And the queue untouched: still quorum, with its job
    assert fresh(rabbit).queue_spec(name).replicated
    assert rabbit.count_queue_messages(name) == 1


def test_a_replicated_declaration_of_a_classic_queue_is_a_mismatch_force_converts_it(
    rabbit: Orchestrator,
) -> None:
    # Given a classic fifo queue holding a job
    name = unique("classic")
    rabbit.declare_queue(name)
    rabbit.publish(name, make_job(1))
    # When it is declared replicated
    with pytest.raises(QueueTypeMismatch) as info:
        rabbit.declare_queue(name, replicated=True)
    # Expect the classic queue kept, and the usual advice: force re-creates it
    assert (info.value.existing, info.value.requested) == ("fifo", "quorum")
    assert "force=True" in str(info.value)
    assert rabbit.count_queue_messages(name) == 1
    # And with force, a quorum queue (the classic queue's messages are dropped)
    rabbit.declare_queue(name, replicated=True, force=True)
    assert fresh(rabbit).queue_spec(name) == QueueSpec(name, replicated=True)
    assert rabbit.count_queue_messages(name) == 0


def test_replicated_priority_queues_are_refused_before_the_broker_is_asked(rabbit: Orchestrator) -> None:
    # When a replicated queue is declared with priorities, or replicated is not a bool
    name = unique("quorum")
    for options in ({"queue_type": "priority"}, {"max_priority": 5}):
        with pytest.raises(UnsupportedQueueType) as info:
            rabbit.declare_queue(name, replicated=True, **options)
        # Expect the alternatives named
        assert "replicated fifo" in str(info.value) and "not replicated" in str(info.value)
    with pytest.raises(InvalidArgument):
        rabbit.declare_queue(name, replicated="yes")  # type: ignore[arg-type]
    # And no queue created
    with pytest.raises(QueueNotFound):
        rabbit.count_queue_messages(name)


def test_a_priority_on_a_quorum_queue_is_invalid(rabbit: Orchestrator) -> None:
    name = unique("quorum")
    rabbit.declare_queue(name, replicated=True)
    with pytest.raises(InvalidPriority) as info:
        rabbit.publish(name, make_job(1), priority=5)
    assert "quorum queue" in str(info.value)
    assert rabbit.count_queue_messages(name) == 0


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_local_and_redis_refuse_replicated_queues(backend: str) -> None:
    # Given a client of the in-process or Redis backend
    client = make_client(backend)
    orchestrator = Orchestrator(client)
    name = unique("replicated")
    try:
        # When a replicated queue is declared, through the orchestrator and the client API
        for declare in (orchestrator.declare_queue, client.declare_queue):
            with pytest.raises(UnsupportedQueueType) as info:
                declare(name, replicated=True)
            # Expect the typed error with what to do instead, and no queue
            assert "RabbitMQ" in str(info.value) and "Scaling out" in str(info.value)
        with pytest.raises(QueueNotFound):
            orchestrator.count_queue_messages(name)
    finally:
        orchestrator.close()
        client.close()


def test_redis_refuses_replicated_queues_before_any_broker_call() -> None:
    # Given a Redis client of a port nothing listens on: any broker call would fail to connect
    client = RedisClient(port=free_port(), connect_timeout=1)
    # Expect the refusal, not BrokerUnavailable
    with pytest.raises(UnsupportedQueueType):
        client.declare_queue(unique("replicated"), replicated=True)
    client.close()


# -- using a quorum queue ---------------------------------------------------------------------------


def test_publish_receive_count_clean_and_delete_a_quorum_queue(rabbit: Orchestrator) -> None:
    # Given a quorum queue with three jobs
    name = unique("quorum")
    rabbit.declare_queue(name, replicated=True)
    first = rabbit.publish(name, make_job(1))
    rabbit.publish_many(name, [make_job(2), make_job(3)])
    # Expect exact counts, fifo order, purge and delete
    assert rabbit.count_queue_messages(name) == 3
    received = rabbit.receive_message(name)
    assert received is not None and received.id == first
    assert rabbit.count_queue_messages(name) == 2
    assert rabbit.clean_queue(name) == 2
    assert rabbit.receive_message(name) is None
    rabbit.delete_queue(name)
    with pytest.raises(QueueNotFound):
        rabbit.count_queue_messages(name)


def test_a_worker_consumes_a_quorum_queue_and_dead_letters_replicated(rabbit: Orchestrator) -> None:
    # Given a quorum queue with jobs, one of which always fails
    name = unique("quorum")
    rabbit.declare_queue(name, replicated=True)
    jobs = [make_job(n) for n in range(20)]
    rabbit.publish_many(name, jobs)
    done: list[str] = []

    def handler(job: Any) -> None:
        if job.payload.input.value == 7:
            raise RuntimeError("broken job")
        done.append(job.id)

    # When a worker consumes it until it is empty
    stats = rabbit.consume(name, handler, until_empty=True, max_retries=1, retry_backoff=0.01, prefetch=5)
    # Expect every job processed once, the failing one dead-lettered to a replicated queue
    assert sorted(done) == sorted(job.id for job in jobs if job.payload.input.value != 7)
    assert (stats.completed, stats.dead_lettered) == (19, 1)
    assert rabbit.count_queue_messages(name) == 0
    dlq = f"{name}.dlq"
    assert fresh(rabbit).queue_spec(dlq) == QueueSpec(dlq, replicated=True)
    [letter] = rabbit.dead_letters(name)
    assert letter.job is not None and letter.job.payload.input.value == 7
    rabbit.delete_queue(dlq)


# -- queues declared elsewhere ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "kind", "expected"),
    [
        ({"x-queue-type": "quorum"}, "quorum", {"replicated": True}),
        ({"x-queue-type": "quorum", "x-quorum-initial-group-size": 1}, "quorum with arguments",
         {"replicated": True, "foreign": "x-quorum-initial-group-size"}),
        ({"x-queue-type": "stream"}, "stream", {"foreign": "stream"}),
        ({"x-max-length": 10}, "classic with arguments", {"foreign": "x-max-length"}),
    ],
    ids=["quorum", "quorum-group-size", "stream", "max-length"],
)
def test_queues_declared_elsewhere_are_listed_with_their_type(
    rabbit: Orchestrator, foreign_queue: Callable[..., str], arguments: dict[str, Any], kind: str,
    expected: dict[str, Any],
) -> None:
    # Given a queue declared with plain Kombu
    name = foreign_queue(**arguments)
    # When an orchestrator that never saw it looks it up and lists queues
    spec = rabbit.queue_spec(name)
    # Expect its real type
    assert spec == QueueSpec(name, **expected) and spec.kind == kind
    assert spec in rabbit.list_queues()
    rabbit._specs.pop(name)  # the fixture deletes it


def test_a_fifo_declaration_of_a_stream_is_a_mismatch_and_force_keeps_it(
    rabbit: Orchestrator, foreign_queue: Callable[..., str]
) -> None:
    name = foreign_queue(**{"x-queue-type": "stream"})
    for force in (False, True):
        with pytest.raises(QueueTypeMismatch) as info:
            rabbit.declare_queue(name, force=force)
        assert info.value.existing == "stream" and "force" not in str(info.value)
    assert rabbit.count_queue_messages(name) == 0
    rabbit._specs.pop(name)


def test_a_replicated_declaration_of_a_quorum_queue_with_arguments_is_an_arguments_mismatch(
    rabbit: Orchestrator, foreign_queue: Callable[..., str]
) -> None:
    # Given a quorum queue declared elsewhere with an argument of its own, holding a job
    name = foreign_queue(**{"x-queue-type": "quorum", "x-delivery-limit": 5})
    rabbit.publish(name, make_job(1))
    # When it is declared replicated, or fifo
    with pytest.raises(QueueArgumentsMismatch) as arguments:
        rabbit.declare_queue(name, replicated=True)
    with pytest.raises(QueueTypeMismatch) as fifo:
        rabbit.declare_queue(name, force=True)
    # Expect the argument named, never force advised, and the queue usable undeclared
    assert arguments.value.argument == "x-delivery-limit"
    assert fifo.value.existing == "quorum with arguments (x-delivery-limit)"
    assert "force" not in str(arguments.value) + str(fifo.value)
    received = rabbit.receive_message(name, timeout=5)
    assert received is not None and received.payload.input.value == 1
    rabbit._specs.pop(name)


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ({"type": "quorum", "arguments": {"x-queue-type": "quorum"}}, {"replicated": True}),
        ({"type": "quorum", "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 20}},
         {"replicated": True, "foreign": "x-delivery-limit"}),
        ({"type": "stream", "arguments": {"x-queue-type": "stream", "x-max-age": "1D"}}, {"foreign": "stream"}),
        ({"type": "classic", "arguments": {"x-max-priority": 7}}, {"queue_type": QueueType.PRIORITY, "max_priority": 7}),
        ({"type": "classic", "arguments": {"x-max-length": 5}}, {"foreign": "x-max-length"}),
        ({"arguments": {}}, {}),
    ],
    ids=["quorum", "quorum-delivery-limit", "stream", "priority", "max-length", "no-type"],
)
def test_the_management_api_report_gives_the_same_specs(queue: dict[str, Any], expected: dict[str, Any]) -> None:
    # The management plugin is off on the test broker: its JSON, as RabbitMQ 3.10 reports a queue
    assert _reported_spec({"name": "q", **queue}) == QueueSpec("q", **expected)


# -- command line -----------------------------------------------------------------------------------


def mindtrace_jobs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mindtrace_kombu.cli", "--broker", AMQP_URL, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_cli_declares_replicated_queues_and_lists_their_type(
    rabbit: Orchestrator, foreign_queue: Callable[..., str]
) -> None:
    # Given a stream declared elsewhere
    name, stream = unique("quorum"), foreign_queue(**{"x-queue-type": "stream"})
    # When a queue is declared with --replicated (twice), then both are listed
    for _ in range(2):
        declared = mindtrace_jobs("declare", name, "--replicated", "--json")
        assert declared.returncode == 0, declared.stderr
    assert json.loads(declared.stdout) == {"queue": name, "type": "quorum", "max_priority": None}
    listed = mindtrace_jobs("queues", "--json", "--queue", name, "--queue", stream)
    # Expect their real types; and --replicated with priorities is invalid input
    assert listed.returncode == 0, listed.stderr
    types = {row["name"]: row["type"] for row in json.loads(listed.stdout)["queues"]}
    assert (types[name], types[stream]) == ("quorum", "stream")
    refused = mindtrace_jobs("declare", unique("quorum"), "--replicated", "--max-priority", "5")
    assert refused.returncode == 5 and "replicated fifo" in refused.stderr
    assert rabbit.queue_spec(name).replicated  # and the fixture deletes it
