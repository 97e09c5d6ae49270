"""The in-process backend (``mindtrace_kombu.backends.memory``) against the contracts of
``mindtrace_kombu.backends.base``: order of each queue type, returned messages first in line in
their original order, priority capping, ``if_empty``, settlement from any thread, consumers that
wait on the broker's condition and respect their prefetch, and ``QueueNotFound``."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

import pytest

from mindtrace_kombu.backends.base import Delivery, WireMessage
from mindtrace_kombu.backends.memory import MemoryBackend
from mindtrace_kombu.errors import QueueNotEmpty, QueueNotFound
from mindtrace_kombu.queues import QueueSpec


def unique(prefix: str = "q") -> str:
    """A name no other test uses (this module needs none of conftest's brokers)."""
    return f"test-{prefix}-{uuid.uuid4().hex[:10]}"


def message(n: int) -> WireMessage:
    return WireMessage(str(n).encode(), "text/plain", "utf-8", {"n": n})


def numbers(deliveries: list[Delivery | None]) -> list[int]:
    return [int(d.message.body) for d in deliveries if d is not None]


def drain(backend: MemoryBackend, queue: str) -> list[int]:
    """Every ready message of ``queue``, taken for good, in order."""
    taken: list[Delivery | None] = []
    while (delivery := backend.get(queue, ack=False)) is not None:
        taken.append(delivery)
    return numbers(taken)


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend(unique("broker"))


def declared(
    backend: MemoryBackend, queue_type: str = "fifo", max_priority: int | None = None,
) -> str:
    """A new queue of that type on ``backend``."""
    return backend.declare(QueueSpec.create(unique(), queue_type, max_priority)).name


def publish_each(backend: MemoryBackend, queue: str, items: list[tuple[int, int | None]]) -> None:
    for n, priority in items:
        backend.publish(queue, [message(n)], priority)


def test_fifo_delivers_first_in_first_out(backend: MemoryBackend) -> None:
    """Given a fifo queue, when 1, 2, 3 are published in one batch, expect 1, 2, 3."""
    queue = declared(backend)
    backend.publish(queue, [message(1), message(2), message(3)], None)
    assert drain(backend, queue) == [1, 2, 3]


def test_stack_delivers_last_in_first_out(backend: MemoryBackend) -> None:
    """Given a stack queue, when 1, 2, 3 are published, expect 3, 2, 1."""
    queue = declared(backend, "stack")
    backend.publish(queue, [message(1), message(2), message(3)], None)
    assert drain(backend, queue) == [3, 2, 1]


def test_priority_delivers_higher_first_then_fifo(backend: MemoryBackend) -> None:
    """Given a priority queue, when messages of mixed priorities are published, expect the
    highest priority first and publish order among equal priorities."""
    queue = declared(backend, "priority", 10)
    publish_each(backend, queue, [(1, 1), (2, 5), (3, 1), (4, 9), (5, 5)])
    assert drain(backend, queue) == [4, 2, 5, 1, 3]


def test_priority_above_max_is_capped(backend: MemoryBackend) -> None:
    """Given a priority queue with max_priority 5, when a message with priority 5 and then one
    with 200 are published, expect them to rank equal (publish order), above priority 4."""
    queue = declared(backend, "priority", 5)
    publish_each(backend, queue, [(1, 4), (2, 5), (3, 200)])
    assert drain(backend, queue) == [2, 3, 1]


def test_declare_returns_the_stored_spec(backend: MemoryBackend) -> None:
    """Given a fifo queue, when it is declared again as a stack, expect the stored fifo spec
    back (the caller compares) and the queue unchanged."""
    queue = declared(backend)
    assert backend.declare(QueueSpec.create(queue, "stack")) == QueueSpec.create(queue)
    assert backend.lookup(queue) == QueueSpec.create(queue)
    assert QueueSpec.create(queue) in backend.list_specs([])


def test_requeued_message_goes_first_in_line(backend: MemoryBackend) -> None:
    """Given 1, 2, 3 on a fifo queue, when 1 is taken and rejected with requeue, expect it to be
    delivered next, marked redelivered, and the queue order 1, 2, 3."""
    queue = declared(backend)
    backend.publish(queue, [message(1), message(2), message(3)], None)
    first = backend.get(queue, ack=True)
    assert first is not None and not first.redelivered
    first.reject(requeue=True)
    again = backend.get(queue, ack=False)
    assert again is not None and again.redelivered and numbers([again]) == [1]
    assert drain(backend, queue) == [2, 3]


def test_requeued_message_goes_first_among_its_priority(backend: MemoryBackend) -> None:
    """Given priorities 5, 5, 9, when the first 5 is taken after the 9 and requeued, expect 9
    already gone, then the requeued 5 before the other 5."""
    queue = declared(backend, "priority", 10)
    publish_each(backend, queue, [(1, 5), (2, 5), (3, 9)])
    assert numbers([backend.get(queue, ack=False)]) == [3]
    taken = backend.get(queue, ack=True)
    assert taken is not None and taken.priority == 5
    backend.publish(queue, [message(4)], 5)
    taken.reject(requeue=True)
    assert drain(backend, queue) == [1, 2, 4]


def test_consumer_close_returns_messages_first_in_original_order(backend: MemoryBackend) -> None:
    """Given a consumer holding 1, 2, 3 unsettled and 4 still ready, when it closes, expect
    1, 2, 3 back first, in their original order, then 4."""
    queue = declared(backend)
    backend.publish(queue, [message(n) for n in (1, 2, 3, 4)], None)
    consumer = backend.consumer([queue], prefetch=3)
    assert numbers(list(consumer.fetch(10, 0))) == [1, 2, 3]
    consumer.close()
    assert drain(backend, queue) == [1, 2, 3, 4]


def test_stack_returned_messages_keep_stack_order(backend: MemoryBackend) -> None:
    """Given a stack consumer holding 3 and 2 (taken in that order) with 1 still ready, when
    they are requeued in reverse (2 then 3), expect 3, 2, 1."""
    queue = declared(backend, "stack")
    backend.publish(queue, [message(1), message(2), message(3)], None)
    three, two = backend.consumer([queue], prefetch=2).fetch(2, 0)
    two.reject(requeue=True)
    three.reject(requeue=True)
    assert drain(backend, queue) == [3, 2, 1]


def test_backend_close_returns_unsettled_gets(backend: MemoryBackend) -> None:
    """Given 1 and 2 taken with get(ack=True) and 3 ready, when the backend closes, expect 1, 2,
    3 in that order, and a later ack of the returned delivery to be ignored."""
    queue = declared(backend)
    backend.publish(queue, [message(1), message(2), message(3)], None)
    held = [backend.get(queue, ack=True), backend.get(queue, ack=True)]
    backend.close()
    assert held[0] is not None
    held[0].ack()
    assert drain(backend, queue) == [1, 2, 3]


def test_get_without_ack_takes_for_good(backend: MemoryBackend) -> None:
    """Given one message, when it is taken with ack=False and the backend closes, expect the
    queue to stay empty and nothing in flight."""
    queue = declared(backend)
    backend.publish(queue, [message(1)], None)
    assert backend.get(queue, ack=False) is not None
    backend.close()
    assert backend.count(queue) == 0 and backend.unacked_counts() == {}


def test_delete_if_empty_keeps_a_queue_with_ready_messages(backend: MemoryBackend) -> None:
    """Given a queue with one ready message, when deleted with if_empty, expect QueueNotEmpty
    and the queue and message kept."""
    queue = declared(backend)
    backend.publish(queue, [message(1)], None)
    with pytest.raises(QueueNotEmpty):
        backend.delete(queue, if_empty=True)
    assert backend.count(queue) == 1


def test_delete_if_empty_keeps_a_queue_with_messages_in_flight(backend: MemoryBackend) -> None:
    """Given a queue whose only message is in flight, when deleted with if_empty, expect
    QueueNotEmpty; once acknowledged, expect the delete to succeed."""
    queue = declared(backend)
    backend.publish(queue, [message(1)], None)
    delivery = backend.get(queue, ack=True)
    with pytest.raises(QueueNotEmpty):
        backend.delete(queue, if_empty=True)
    assert delivery is not None
    delivery.ack()
    backend.delete(queue, if_empty=True)
    assert backend.lookup(queue) is None


def test_requeue_after_delete_drops_the_message(backend: MemoryBackend) -> None:
    """Given a message in flight, when its queue is deleted and declared again and the message
    is requeued, expect it dropped (its queue is gone), as on RabbitMQ."""
    queue = declared(backend)
    backend.publish(queue, [message(1)], None)
    delivery = backend.get(queue, ack=True)
    backend.delete(queue)
    backend.declare(QueueSpec.create(queue))
    assert delivery is not None
    delivery.reject(requeue=True)
    assert backend.count(queue) == 0


def test_settlement_from_another_thread(backend: MemoryBackend) -> None:
    """Given a delivery taken on this thread, when another thread acknowledges it, expect the
    message gone: nothing in flight and nothing ready."""
    queue = declared(backend)
    backend.publish(queue, [message(1)], None)
    delivery = backend.get(queue, ack=True)
    assert delivery is not None and backend.unacked_counts() == {queue: 1}
    thread = threading.Thread(target=delivery.ack)
    thread.start()
    thread.join()
    assert backend.unacked_counts() == {} and backend.count(queue) == 0


def run_in_thread(action: Callable[[], None], delay: float) -> threading.Thread:
    def delayed() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=delayed)
    thread.start()
    return thread


def test_fetch_wakes_on_publish_from_another_thread(backend: MemoryBackend) -> None:
    """Given a consumer waiting on an empty queue, when another thread publishes 0.3 s later,
    expect fetch to return that message at once, having spent almost no CPU while waiting
    (it sleeps on the broker's condition instead of polling)."""
    queue = declared(backend)
    consumer = backend.consumer([queue], prefetch=1)
    thread = run_in_thread(lambda: backend.publish(queue, [message(1)], None), 0.3)
    started, cpu = time.monotonic(), time.thread_time()
    taken = consumer.fetch(1, 5.0)
    waited, spent = time.monotonic() - started, time.thread_time() - cpu
    thread.join()
    assert numbers(list(taken)) == [1]
    assert 0.25 < waited < 1.0
    assert spent < 0.05


def test_fetch_returns_empty_after_timeout(backend: MemoryBackend) -> None:
    """Given an empty queue, when a consumer fetches with a 0.1 s timeout, expect [] after
    about that long."""
    consumer = backend.consumer([declared(backend)], prefetch=1)
    started = time.monotonic()
    assert consumer.fetch(1, 0.1) == []
    assert 0.09 < time.monotonic() - started < 1.0


def test_prefetch_bounds_unsettled_deliveries(backend: MemoryBackend) -> None:
    """Given 5 messages and a consumer with prefetch 2, expect 2 deliveries, then none until one
    is acknowledged, then one more; after set_prefetch(4), expect the remaining two."""
    queue = declared(backend)
    backend.publish(queue, [message(n) for n in range(1, 6)], None)
    consumer = backend.consumer([queue], prefetch=2)
    first = consumer.fetch(10, 0)
    assert numbers(list(first)) == [1, 2]
    assert consumer.fetch(10, 0.05) == []
    first[0].ack()
    assert numbers(list(consumer.fetch(10, 0))) == [3]
    consumer.set_prefetch(4)
    assert numbers(list(consumer.fetch(10, 0))) == [4, 5]


def test_ack_on_another_thread_wakes_a_consumer_at_its_prefetch(backend: MemoryBackend) -> None:
    """Given a consumer at its prefetch of 1 with a second message ready, when another thread
    acknowledges the held delivery, expect the waiting fetch to return the second message."""
    queue = declared(backend)
    backend.publish(queue, [message(1), message(2)], None)
    consumer = backend.consumer([queue], prefetch=1)
    (held,) = consumer.fetch(1, 0)
    thread = run_in_thread(held.ack, 0.1)
    assert numbers(list(consumer.fetch(1, 5.0))) == [2]
    thread.join()


def test_consumer_takes_from_queues_round_robin(backend: MemoryBackend) -> None:
    """Given two queues holding a1, a2 and b1, b2, when one consumer fetches 4, expect them
    alternating between the queues."""
    a, b = declared(backend), declared(backend)
    backend.publish(a, [message(11), message(12)], None)
    backend.publish(b, [message(21), message(22)], None)
    assert numbers(list(backend.consumer([a, b], prefetch=0).fetch(4, 0))) == [11, 21, 12, 22]


@pytest.mark.parametrize(
    "operation",
    [
        lambda b, q: b.count(q),
        lambda b, q: b.purge(q),
        lambda b, q: b.delete(q),
        lambda b, q: b.publish(q, [message(1)], None),
        lambda b, q: b.get(q, ack=False),
        lambda b, q: b.consumer([q], 1),
    ],
    ids=["count", "purge", "delete", "publish", "get", "consumer"],
)
def test_undeclared_queue_raises_queue_not_found(
    backend: MemoryBackend, operation: Callable[[MemoryBackend, str], object],
) -> None:
    """Given a queue that was never declared, when an operation names it, expect QueueNotFound."""
    with pytest.raises(QueueNotFound):
        operation(backend, unique())


def test_purge_drops_ready_messages_only(backend: MemoryBackend) -> None:
    """Given 1 in flight and 2, 3 ready, when purged, expect 2 removed and 1 still in flight."""
    queue = declared(backend)
    backend.publish(queue, [message(1), message(2), message(3)], None)
    assert backend.get(queue, ack=True) is not None
    assert backend.purge(queue) == 2
    assert backend.count(queue) == 0 and backend.unacked_counts() == {queue: 1}


def test_backends_with_the_same_broker_id_share_queues(backend: MemoryBackend) -> None:
    """Given two backends with the same broker id and one with another, expect the first two to
    see the same messages and the third not to see the queue."""
    queue = declared(backend)
    MemoryBackend(backend.broker_id).publish(queue, [message(7)], None)
    assert backend.count(queue) == 1
    assert MemoryBackend(unique("broker")).lookup(queue) is None
