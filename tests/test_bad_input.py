"""Bad input to every public call, on every backend: a typed error before the broker is touched,
and the broker's state unchanged (the queue's ready count and the queues there are)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from mindtrace_kombu import (
    InvalidArgument,
    InvalidPriority,
    InvalidQueueName,
    Job,
    JobEncodeError,
    JobInput,
    JobSchema,
    JobsError,
    LocalClient,
    Orchestrator,
    RabbitMQClient,
    RedisClient,
    UnsupportedQueueType,
)
from mindtrace_kombu.decoding import DecodeLimits

from .conftest import make_job

pytestmark = pytest.mark.timeout(60)

Call = Callable[[Orchestrator, str], Any]


def unencodable_job() -> Job:
    """A job whose input holds an object JSON cannot represent."""
    return Job(name="bad", payload=JobSchema(name="s", input=JobInput(blob=object())))


BAD_NAMES: list[object] = ["", "amq.reserved", "x" * 300, "bad\nname", None, 42]

QUEUE_CALLS: dict[str, Call] = {
    "declare_queue": lambda o, name: o.declare_queue(name),
    "queue_spec": lambda o, name: o.queue_spec(name),
    "count_queue_messages": lambda o, name: o.count_queue_messages(name),
    "clean_queue": lambda o, name: o.clean_queue(name),
    "delete_queue": lambda o, name: o.delete_queue(name),
    "publish": lambda o, name: o.publish(name, make_job()),
    "publish_many": lambda o, name: o.publish_many(name, [make_job()]),
    "receive_message": lambda o, name: o.receive_message(name),
    "claim": lambda o, name: o.claim(name).__enter__(),
    "dead_letters": lambda o, name: o.dead_letters(name),
    "requeue_dead_letters": lambda o, name: o.requeue_dead_letters(name),
}

NAN, INF = math.nan, math.inf

#: (call on an existing fifo queue ``q`` holding two jobs, the error it must raise)
BAD_CALLS: dict[str, tuple[Call, type[Exception]]] = {
    "declare unknown type": (lambda o, q: o.declare_queue(q + "-new", "lifo"), UnsupportedQueueType),
    "declare max_priority 0": (lambda o, q: o.declare_queue(q + "-new", max_priority=0), InvalidPriority),
    "declare max_priority 256": (lambda o, q: o.declare_queue(q + "-new", "priority", max_priority=256), InvalidPriority),
    "declare max_priority str": (lambda o, q: o.declare_queue(q + "-new", max_priority="5"), InvalidPriority),
    "declare max_priority float": (lambda o, q: o.declare_queue(q + "-new", max_priority=2.5), InvalidPriority),
    "declare stack with priority": (lambda o, q: o.declare_queue(q + "-new", "stack", max_priority=3), InvalidPriority),
    "publish a dict": (lambda o, q: o.publish(q, {"not": "a job"}), TypeError),
    "publish None": (lambda o, q: o.publish(q, None), TypeError),
    "publish priority on fifo": (lambda o, q: o.publish(q, make_job(), priority=1), InvalidPriority),
    "publish unencodable": (lambda o, q: o.publish(q, unencodable_job()), JobEncodeError),
    "publish_many non-job inside": (lambda o, q: o.publish_many(q, [make_job(), "job", make_job()]), TypeError),
    "publish_many unencodable inside": (
        lambda o, q: o.publish_many(q, [make_job(1), unencodable_job(), make_job(2)]), JobEncodeError,
    ),
    "publish_many not iterable": (lambda o, q: o.publish_many(q, 5), TypeError),
    "submit a dict": (lambda o, q: o.submit({"not": "a job"}), TypeError),
    "receive timeout nan": (lambda o, q: o.receive_message(q, timeout=NAN), InvalidArgument),
    "receive timeout inf": (lambda o, q: o.receive_message(q, timeout=INF), InvalidArgument),
    "receive timeout negative": (lambda o, q: o.receive_message(q, timeout=-1), InvalidArgument),
    "receive timeout str": (lambda o, q: o.receive_message(q, timeout="1"), InvalidArgument),
    "claim timeout nan": (lambda o, q: o.claim(q, timeout=NAN).__enter__(), InvalidArgument),
    "dead_letters limit negative": (lambda o, q: o.dead_letters(q, limit=-1), InvalidArgument),
    "requeue_dead_letters limit float": (lambda o, q: o.requeue_dead_letters(q, limit=1.5), InvalidArgument),
    "consume prefetch -1": (lambda o, q: o.consume(q, print, prefetch=-1), InvalidArgument),
    "consume prefetch 0": (lambda o, q: o.consume(q, print, prefetch=0), InvalidArgument),
    "consume concurrency 0": (lambda o, q: o.consume(q, print, concurrency=0), InvalidArgument),
    "consume concurrency float": (lambda o, q: o.consume(q, print, concurrency=1.5), InvalidArgument),
    "consume max_retries negative": (lambda o, q: o.consume(q, print, max_retries=-1), InvalidArgument),
    "consume backoff nan": (lambda o, q: o.consume(q, print, retry_backoff=NAN), InvalidArgument),
}


def state(orchestrator: Orchestrator, queue: str) -> tuple[int, list[str]]:
    """What bad input must not change: the queue's ready messages, and the test's queues."""
    names = [spec.name for spec in orchestrator.list_queues() if spec.name.startswith(queue)]
    return orchestrator.count_queue_messages(queue), sorted(names)


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_input_raises_a_typed_error_and_changes_nothing(
    orchestrator: Orchestrator, queue_name: str, call: tuple[Call, type[Exception]]
) -> None:
    function, error = call
    orchestrator.declare_queue(queue_name)
    orchestrator.publish_many(queue_name, [make_job(1), make_job(2)])
    before = state(orchestrator, queue_name)

    with pytest.raises(error) as caught:
        function(orchestrator, queue_name)

    assert isinstance(caught.value, (JobsError, TypeError))
    assert state(orchestrator, queue_name) == before


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
@pytest.mark.parametrize("call", list(QUEUE_CALLS.values()), ids=list(QUEUE_CALLS))
def test_every_call_taking_a_queue_refuses_a_bad_name(orchestrator: Orchestrator, call: Call, name: object) -> None:
    with pytest.raises(InvalidQueueName):
        call(orchestrator, name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: RedisClient(connect_timeout=NAN),
        lambda: RabbitMQClient(connect_timeout=-1),
        lambda: LocalClient(connect_timeout=INF),
        lambda: RabbitMQClient(heartbeat=-5),
        lambda: Orchestrator.from_url("amqp://guest:guest@127.0.0.1:5672//?confirm_timeout=nan"),
        lambda: Orchestrator.from_url("redis://127.0.0.1:6379/0?lease_timeout=0"),
        lambda: Orchestrator.from_url("redis://127.0.0.1:6379/0?lease_timeout=soon"),
        lambda: Orchestrator(LocalClient(), connection_retries=-1),
        lambda: Orchestrator(LocalClient(), limits=DecodeLimits(max_decompressed_bytes=0)),
        lambda: Orchestrator.from_url("redis://127.0.0.1:63x9/0"),
        lambda: Orchestrator.from_url("amqp://guest:guest@127.0.0.1:port//"),
        lambda: Orchestrator.from_url("redis://127.0.0.1:6379/zero"),
    ],
    ids=["redis connect nan", "amqp connect negative", "local connect inf", "heartbeat negative",
         "confirm_timeout nan", "lease 0", "lease text", "retries negative", "decompressed limit 0",
         "redis port", "amqp port", "redis database"],
)
def test_bad_client_and_orchestrator_options_raise_invalid_argument(make: Callable[[], object]) -> None:
    with pytest.raises(InvalidArgument):
        make()


def test_from_url_gives_the_orchestrator_its_own_options() -> None:
    limits = DecodeLimits(max_message_bytes=1024)
    orchestrator = Orchestrator.from_url("memory://", limits=limits, connection_retries=0, connect_timeout=2)
    assert orchestrator.limits is limits and orchestrator.connection_retries == 0
    assert orchestrator.client.connect_timeout == 2
