"""The conformance suite: every semantic of the README's API on every backend.

A backend that cannot do something raises the documented error, and a test asserts that.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import kombu
import pytest

from mindtrace_kombu import (
    InvalidPriority,
    InvalidQueueName,
    JobDecodeError,
    Orchestrator,
    QueueNotFound,
    QueueTypeMismatch,
    UnsupportedQueueType,
)
from mindtrace_kombu.clients import Client
from mindtrace_kombu.orchestrator import OutgoingMessage
from mindtrace_kombu.serialization import SERIALIZER

from .conftest import BACKENDS, SampleInput, make_client, make_job, unique

pytestmark = pytest.mark.timeout(60)
ROOT = str(__import__("pathlib").Path(__file__).resolve().parents[1])


@pytest.fixture(params=[*BACKENDS, "rediscluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend, and the Redis backend on a Redis Cluster (``REDIS_CLUSTER_URL``, else 6
    nodes this session starts)."""
    return str(request.param)


def values(orchestrator: Orchestrator, queue: str, n: int) -> list[int]:
    received = [orchestrator.receive_message(queue) for _ in range(n)]
    assert all(job is not None for job in received)
    return [job.payload.input.value for job in received]  # type: ignore[union-attr]


def test_fifo_delivers_in_publish_order(orchestrator: Orchestrator, queue_name: str) -> None:
    # Given a fifo queue with jobs 0..9
    orchestrator.declare_queue(queue_name)
    for value in range(10):
        orchestrator.publish(queue_name, make_job(value))
    # Expect them back in publish order, then None
    assert values(orchestrator, queue_name, 10) == list(range(10))
    assert orchestrator.receive_message(queue_name) is None


def test_stack_delivers_last_in_first_out(orchestrator: Orchestrator, backend: str, queue_name: str) -> None:
    if backend == "rabbitmq":
        with pytest.raises(UnsupportedQueueType, match="fifo.*priority"):
            orchestrator.declare_queue(queue_name, queue_type="stack")
        return
    orchestrator.declare_queue(queue_name, queue_type="stack")
    for value in range(10):
        orchestrator.publish(queue_name, make_job(value))
    assert values(orchestrator, queue_name, 10) == list(range(9, -1, -1))


def test_priority_takes_higher_first_and_ties_in_publish_order(
    orchestrator: Orchestrator, queue_name: str
) -> None:
    orchestrator.declare_queue(queue_name, queue_type="priority")
    priorities = [1, 5, 0, 10, 5, 1, 10, 0, 3, 5]
    for value, priority in enumerate(priorities):
        orchestrator.publish(queue_name, make_job(value), priority=priority)
    expected = sorted(range(10), key=lambda value: (-priorities[value], value))
    assert values(orchestrator, queue_name, 10) == expected


def test_readme_priority_example(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name, queue_type="priority")
    orchestrator.publish(queue_name, make_job(1), priority=1)
    orchestrator.publish(queue_name, make_job(10), priority=10)
    assert values(orchestrator, queue_name, 2) == [10, 1]


def test_max_priority_255_is_exact(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name, max_priority=255)
    for value, priority in enumerate([0, 255, 128, 254, 1]):
        orchestrator.publish(queue_name, make_job(value), priority=priority)
    assert values(orchestrator, queue_name, 5) == [1, 3, 2, 4, 0]


def test_priority_without_one_goes_last(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name, queue_type="priority")
    orchestrator.publish(queue_name, make_job(0))
    orchestrator.publish(queue_name, make_job(1), priority=1)
    assert values(orchestrator, queue_name, 2) == [1, 0]


@pytest.mark.parametrize("priority", [-1, 11, 2.5, "3", True])
def test_invalid_priority_refused_before_sending(
    orchestrator: Orchestrator, queue_name: str, priority: object
) -> None:
    orchestrator.declare_queue(queue_name, queue_type="priority")
    with pytest.raises(InvalidPriority, match=queue_name):
        orchestrator.publish(queue_name, make_job(), priority=priority)  # type: ignore[arg-type]
    assert orchestrator.count_queue_messages(queue_name) == 0


def test_priority_on_fifo_queue_refused(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    with pytest.raises(InvalidPriority, match="queue_type='priority'"):
        orchestrator.publish(queue_name, make_job(), priority=1)
    assert orchestrator.count_queue_messages(queue_name) == 0


@pytest.mark.parametrize("max_priority", [0, 256, -3])
def test_max_priority_range(orchestrator: Orchestrator, queue_name: str, max_priority: int) -> None:
    with pytest.raises(InvalidPriority, match="1..255"):
        orchestrator.declare_queue(queue_name, queue_type="priority", max_priority=max_priority)


def test_count_is_exact_right_after_publish_and_zero_after_clean(
    orchestrator: Orchestrator, queue_name: str
) -> None:
    orchestrator.declare_queue(queue_name)
    for value in range(7):
        orchestrator.publish(queue_name, make_job(value))
        assert orchestrator.count_queue_messages(queue_name) == value + 1
    assert orchestrator.clean_queue(queue_name) == 7
    assert orchestrator.count_queue_messages(queue_name) == 0
    # the queue stays usable
    orchestrator.publish(queue_name, make_job(42))
    assert values(orchestrator, queue_name, 1) == [42]


def test_publish_many_keeps_order_and_returns_ids(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    jobs = [make_job(value) for value in range(25)]
    assert orchestrator.publish_many(queue_name, jobs) == [job.id for job in jobs]
    assert orchestrator.count_queue_messages(queue_name) == 25
    assert values(orchestrator, queue_name, 25) == list(range(25))


def test_publish_many_validates_every_job_first(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    with pytest.raises(TypeError, match="Job"):
        orchestrator.publish_many(queue_name, [make_job(1), {"not": "a job"}])  # type: ignore[list-item]
    assert orchestrator.count_queue_messages(queue_name) == 0


def test_delete_really_deletes(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job())
    orchestrator.delete_queue(queue_name)
    with pytest.raises(QueueNotFound):
        orchestrator.count_queue_messages(queue_name)
    orchestrator.declare_queue(queue_name)
    assert orchestrator.count_queue_messages(queue_name) == 0


def test_delete_from_another_client(client: Client, backend: str, queue_name: str) -> None:
    first, second = Orchestrator(client), Orchestrator(client)
    first.declare_queue(queue_name, queue_type="priority")
    first.publish(queue_name, make_job(), priority=3)
    second.delete_queue(queue_name)
    with pytest.raises(QueueNotFound):
        first.publish(queue_name, make_job(), priority=3)
    with pytest.raises(QueueNotFound):
        first.count_queue_messages(queue_name)
    first.close()
    second.close()


@pytest.mark.parametrize("operation", ["publish", "receive", "count", "clean", "delete"])
def test_undeclared_queue_raises_queue_not_found(
    orchestrator: Orchestrator, queue_name: str, operation: str
) -> None:
    calls = {
        "publish": lambda: orchestrator.publish(queue_name, make_job()),
        "receive": lambda: orchestrator.receive_message(queue_name),
        "count": lambda: orchestrator.count_queue_messages(queue_name),
        "clean": lambda: orchestrator.clean_queue(queue_name),
        "delete": lambda: orchestrator.delete_queue(queue_name),
    }
    with pytest.raises(QueueNotFound, match=queue_name) as info:
        calls[operation]()
    assert isinstance(info.value, KeyError)
    # and nothing was created as a side effect
    with pytest.raises(QueueNotFound):
        orchestrator.count_queue_messages(queue_name)


def test_redeclare_same_type_is_a_noop(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name, queue_type="priority", max_priority=20)
    orchestrator.publish(queue_name, make_job(), priority=20)
    orchestrator.declare_queue(queue_name, queue_type="priority", max_priority=20)
    orchestrator.declare_queue(queue_name, queue_type="priority", max_priority=20, force=True)
    assert orchestrator.count_queue_messages(queue_name) == 1


@pytest.mark.parametrize(
    "first, second",
    [
        ({}, {"queue_type": "priority"}),
        ({"queue_type": "priority"}, {}),
        ({"queue_type": "priority"}, {"queue_type": "priority", "max_priority": 20}),
    ],
)
def test_redeclare_other_type_raises_unless_forced(
    orchestrator: Orchestrator, queue_name: str, first: dict[str, object], second: dict[str, object]
) -> None:
    orchestrator.declare_queue(queue_name, **first)  # type: ignore[arg-type]
    orchestrator.publish(queue_name, make_job())
    with pytest.raises(QueueTypeMismatch, match="force=True"):
        orchestrator.declare_queue(queue_name, **second)  # type: ignore[arg-type]
    assert orchestrator.count_queue_messages(queue_name) == 1
    orchestrator.declare_queue(queue_name, force=True, **second)  # type: ignore[arg-type]
    assert orchestrator.count_queue_messages(queue_name) == 0
    if second.get("queue_type") == "priority":
        orchestrator.publish(queue_name, make_job(), priority=int(second.get("max_priority", 10)))  # type: ignore[call-overload]
    else:
        with pytest.raises(InvalidPriority):
            orchestrator.publish(queue_name, make_job(), priority=1)


@pytest.mark.parametrize("backend", ["local", "redis", "rediscluster"])  # RabbitMQ refuses stack queues (tested above)
def test_redeclare_stack_as_fifo_raises(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name, queue_type="stack")
    with pytest.raises(QueueTypeMismatch, match="stack"):
        orchestrator.declare_queue(queue_name)


@pytest.mark.parametrize("name", ["", "x" * 256, "bad\nname", "tab\tname", "amq.reserved", None])
def test_invalid_queue_names(orchestrator: Orchestrator, name: object) -> None:
    with pytest.raises(InvalidQueueName):
        orchestrator.declare_queue(name)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueueName):
        orchestrator.publish(name, make_job())  # type: ignore[arg-type]


def test_payload_subclass_and_fields_survive(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    job = make_job(7, label="hello", extra_field={"nested": [1, 2]})
    orchestrator.publish(queue_name, job)
    received = orchestrator.receive_message(queue_name)
    assert received is not None
    assert type(received.payload.input) is SampleInput
    assert received.model_dump() == job.model_dump()
    assert received.payload.input.model_extra == {"extra_field": {"nested": [1, 2]}}


def test_submit_routes_by_job_type_and_declares(client: Client, backend: str) -> None:
    from mindtrace_kombu import JobType

    queue = unique("routed")
    orchestrator = Orchestrator(client, routes={JobType.CLASSIFICATION: queue})
    try:
        job_id = orchestrator.submit(make_job(3, job_type=JobType.CLASSIFICATION))
        assert orchestrator.route(make_job(job_type=JobType.CLASSIFICATION)) == queue
        received = orchestrator.receive_message(queue)
        assert received is not None and received.id == job_id
    finally:
        orchestrator.delete_queue(queue)
        orchestrator.close()


def test_submit_uses_an_existing_priority_queue(client: Client) -> None:
    from mindtrace_kombu import JobType

    queue = unique("routed")
    orchestrator = Orchestrator(client, routes={JobType.ML_TRAINING: queue})
    try:
        orchestrator.declare_queue(queue, queue_type="priority")
        orchestrator.submit(make_job(1, job_type=JobType.ML_TRAINING), priority=1)
        orchestrator.submit(make_job(9, job_type=JobType.ML_TRAINING), priority=9)
        assert values(orchestrator, queue, 2) == [9, 1]
    finally:
        orchestrator.delete_queue(queue)
        orchestrator.close()


def test_receive_waits_up_to_timeout(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    assert orchestrator.receive_message(queue_name, timeout=0.2) is None
    timer = threading.Timer(0.2, lambda: orchestrator.publish(queue_name, make_job(5)))
    timer.start()
    received = orchestrator.receive_message(queue_name, timeout=5)
    timer.join()
    assert received is not None and received.payload.input.value == 5


@pytest.mark.parametrize(
    "body, content_type, reason",
    [
        (b"{not json", "application/x-mindtrace-job+json", "cannot decode"),
        (b'{"a": 1}', "application/json", "content type"),
        (b'{"hello": "world"}', "application/x-mindtrace-job+json", "not a Job"),
        (b'{"mindtrace_job": 99, "job": {}}', "application/x-mindtrace-job+json", "version"),
        (b'{"mindtrace_job": 1, "input_type": null, "job": {"payload": {}}}', "application/x-mindtrace-job+json", "cannot decode"),
    ],
)
def test_undecodable_message_is_dead_lettered(
    orchestrator: Orchestrator, queue_name: str, body: bytes, content_type: str, reason: str
) -> None:
    # Given a bad message between two good jobs
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(1))
    raw = OutgoingMessage(body, {"content_type": content_type, "content_encoding": "utf-8"})
    orchestrator._send(queue_name, [orchestrator._encode(raw)], None)
    orchestrator.publish(queue_name, make_job(2))
    # Expect the good job, then a JobDecodeError naming the dead-letter queue, then the next job
    assert values(orchestrator, queue_name, 1) == [1]
    with pytest.raises(JobDecodeError, match=reason) as info:
        orchestrator.receive_message(queue_name)
    assert info.value.dead_letter_queue == f"{queue_name}.dlq"
    assert values(orchestrator, queue_name, 1) == [2]
    # and the bad message sits in the dead-letter queue, unchanged, with the reason
    assert orchestrator.count_queue_messages(f"{queue_name}.dlq") == 1
    dead = orchestrator.take(f"{queue_name}.dlq", None, ack=False)
    assert dead is not None
    assert dead.message.body == body
    assert reason in dead.headers["x-death-reason"]
    assert dead.headers["x-original-queue"] == queue_name


_OTHER_PROCESS = """
import sys
from mindtrace_kombu import Orchestrator, InvalidPriority
orch = Orchestrator.from_url(sys.argv[1])
try:
    orch.publish(sys.argv[2], __import__("tests.conftest", fromlist=["make_job"]).make_job(8), priority=300)
except InvalidPriority as exc:
    print("invalid:", exc)
orch.publish(sys.argv[2], __import__("tests.conftest", fromlist=["make_job"]).make_job(8), priority=7)
print("ok")
"""


@pytest.mark.parametrize("backend", ["redis", "rediscluster", "rabbitmq"])
def test_queue_declared_in_one_process_is_usable_in_another(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "rediscluster":
        request.getfixturevalue("redis_cluster_url")
    client = make_client(backend)
    orchestrator = Orchestrator(client)
    queue = unique("shared")
    orchestrator.declare_queue(queue, queue_type="priority", max_priority=7)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _OTHER_PROCESS, client._url, queue],
            capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
        )
        assert "allowed range is 0..7" in result.stdout
        assert result.stdout.strip().endswith("ok")
        assert orchestrator.count_queue_messages(queue) == 1
    finally:
        orchestrator.delete_queue(queue)
        orchestrator.close()


def test_local_brokers_are_scoped_by_broker_id() -> None:
    from mindtrace_kombu import LocalClient

    queue = unique()
    shared_a = Orchestrator(LocalClient(broker_id="scope-a"))
    shared_b = Orchestrator(LocalClient(broker_id="scope-a"))
    other = Orchestrator(LocalClient(broker_id="scope-b"))
    shared_a.declare_queue(queue)
    shared_a.publish(queue, make_job(4))
    assert shared_b.count_queue_messages(queue) == 1
    with pytest.raises(QueueNotFound):
        other.count_queue_messages(queue)
    shared_b.delete_queue(queue)


def test_local_threads_deliver_every_job_exactly_once() -> None:
    from mindtrace_kombu import LocalClient

    orchestrator = Orchestrator(LocalClient(broker_id=unique("threads")))
    queue = unique()
    orchestrator.declare_queue(queue)
    per_thread, received, lock = 250, [], threading.Lock()
    publishing_done = threading.Event()

    def publisher(offset: int) -> None:
        for value in range(offset, offset + per_thread):
            orchestrator.publish(queue, make_job(value))

    def receiver() -> None:
        while True:
            job = orchestrator.receive_message(queue, timeout=0.05)
            if job is not None:
                with lock:
                    received.append(job.payload.input.value)
            elif publishing_done.is_set():
                return

    publishers = [threading.Thread(target=publisher, args=(n * per_thread,)) for n in range(8)]
    receivers = [threading.Thread(target=receiver) for _ in range(8)]
    for thread in publishers + receivers:
        thread.start()
    for thread in publishers:
        thread.join()
    publishing_done.set()
    for thread in receivers:
        thread.join()
    assert sorted(received) == list(range(8 * per_thread))


def test_a_queue_recreated_elsewhere_with_priorities_accepts_them(client: Client, queue_name: str) -> None:
    # Given an orchestrator that knows the queue as fifo
    first, second = Orchestrator(client), Orchestrator(client)
    first.declare_queue(queue_name)
    first.publish(queue_name, make_job(1))
    # When another one re-creates it as a priority queue
    second.declare_queue(queue_name, queue_type="priority", force=True)
    # Expect the first to learn the new type rather than refuse the priority
    first.publish(queue_name, make_job(2), priority=5)
    assert second.count_queue_messages(queue_name) == 1
    second.delete_queue(queue_name)
    first.close()
    second.close()


INTERNAL_LOOKING_NAMES = [
    "mindtrace.unacked", "mindtrace.seq", "mindtrace.queues", "mindtrace:queues", "mindtrace:q:{x}:meta",
    "x}:ready", "_kombu.binding.celery", "unacked", "a{b}c", "50%{",
]


@pytest.mark.parametrize("name", INTERNAL_LOOKING_NAMES)
def test_names_of_internal_keys_are_ordinary_queues(orchestrator: Orchestrator, name: str) -> None:
    """Given queues named like the package's (or Kombu's) own keys, each is an ordinary queue:
    its jobs stay its own, and every other queue keeps working."""
    neighbour = unique("neighbour")
    orchestrator.declare_queue(neighbour, queue_type="priority")
    orchestrator.declare_queue(name, queue_type="priority", max_priority=3)
    orchestrator.publish(name, make_job(1), priority=1)
    orchestrator.publish(name, make_job(2), priority=3)
    orchestrator.publish(neighbour, make_job(9), priority=2)
    assert name in {spec.name for spec in orchestrator.list_queues()} | set(orchestrator._specs)
    assert orchestrator.count_queue_messages(name) == 2
    assert values(orchestrator, name, 2) == [2, 1]
    assert values(orchestrator, neighbour, 1) == [9]
    orchestrator.delete_queue(name)
    assert orchestrator.count_queue_messages(neighbour) == 0


def test_a_kombu_publish_above_max_priority_counts_as_max(client: Client, orchestrator: Orchestrator, queue_name: str) -> None:
    """Given a priority queue with max_priority 5, when a plain Kombu producer publishes with
    priorities 9, 5 and 4, then 9 is served as 5 (in publish order with the other 5), as RabbitMQ
    does, on every backend."""
    orchestrator.declare_queue(queue_name, max_priority=5)
    with client.kombu_connection() as connection:
        producer = kombu.Producer(connection, serializer=SERIALIZER, auto_declare=False)
        for value, priority in [(1, 9), (2, 5), (3, 4)]:
            producer.publish(make_job(value), exchange="", routing_key=queue_name, priority=priority)
    assert values(orchestrator, queue_name, 3) == [1, 2, 3]
