"""Baselines: the same queue operations through raw redis-py and py-amqp, stock Kombu, Celery and RQ.

Everything runs against the real brokers in :class:`~benchmarks.harness.Settings` (stock Kombu also
on ``memory://``), on queues unique to the run that are deleted afterwards. Message bodies are the
1 KB :data:`~benchmarks.harness.BODY`; RabbitMQ messages are persistent on durable queues.
Celery and RQ are imported lazily: without them their rows are skipped.
"""

from __future__ import annotations

from functools import partial

import amqp
import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer
from kombu.utils.url import parse_url

from benchmarks.harness import (
    BODY,
    PAYLOAD,
    Result,
    Scenario,
    Settings,
    Skipped,
    time_batched,
    time_each,
    time_total,
    wait_until,
)
from benchmarks.names import (
    AMQP_CONSUME,
    AMQP_GET,
    AMQP_PUBLISH,
    AMQP_PUBLISH_CONFIRMED,
    CELERY_SEND_TASK,
    KOMBU_CONSUME,
    KOMBU_GET,
    KOMBU_PUBLISH,
    LPUSH,
    LPUSH_PIPELINED,
    RPOP,
    RQ_ENQUEUE,
)


def rq_task(data: str) -> int:
    """The function RQ jobs name; never run, the baseline measures enqueueing only."""
    return len(data)


def redis_py(s: Settings) -> list[Result]:
    """Raw redis-py: LPUSH and RPOP (one round trip each), LPUSH pipelined per batch (one per batch)."""
    client = redis.Redis.from_url(s.redis_url)
    queue = s.queue_name("redis-py")

    def push_batch(size: int) -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(size):
            pipe.lpush(queue, BODY)
        pipe.execute()

    try:
        return [
            time_each("redis", LPUSH, lambda: client.lpush(queue, BODY), s.n, warmup=1),
            time_each("redis", RPOP, lambda: client.rpop(queue), s.n),
            time_batched(
                "redis", LPUSH_PIPELINED, push_batch, s.n, s.batch, note=f"batch {s.batch}"
            ),
        ]
    finally:
        client.delete(queue)
        client.close()


def _amqp_connect(s: Settings, *, confirm_publish: bool = False) -> amqp.Connection:
    """Open a raw py-amqp connection to ``s.amqp_url``."""
    url = parse_url(s.amqp_url)
    connection = amqp.Connection(
        host=f"{url['hostname'] or '127.0.0.1'}:{url['port'] or 5672}",
        userid=url["userid"] or "guest",
        password=url["password"] or "guest",
        virtual_host=url["virtual_host"] or "/",
        confirm_publish=confirm_publish,
    )
    connection.connect()
    return connection


def _amqp_drain(connection: amqp.Connection, channel: amqp.Channel, queue: str, s: Settings) -> int:
    """Consume ``s.n`` messages with ``s.prefetch`` in flight, acking each; return the count."""
    received = 0

    def on_message(message: amqp.Message) -> None:
        nonlocal received
        channel.basic_ack(message.delivery_tag)
        received += 1

    channel.basic_qos(0, s.prefetch, False)
    tag = channel.basic_consume(queue, callback=on_message)
    while received < s.n:
        connection.drain_events(timeout=10)
    channel.basic_cancel(tag)
    return received


def py_amqp(s: Settings) -> list[Result]:
    """Raw py-amqp on a durable queue through the default exchange.

    An unconfirmed publish sends frames without waiting (the total includes waiting until the queue
    holds them all); with confirms (``confirm_publish=True``: py-amqp calls ``confirm_select`` once,
    then waits for each ack) it is one round trip, as is ``basic_get``.
    """
    connection, confirming = _amqp_connect(s), _amqp_connect(s, confirm_publish=True)
    channel, confirm_channel = connection.channel(), confirming.channel()
    queue = s.queue_name("py-amqp")
    message = amqp.Message(BODY, content_type="application/json", delivery_mode=2)

    def publish() -> None:
        channel.basic_publish(message, exchange="", routing_key=queue)

    def holds(count: int) -> None:
        wait_until(lambda: channel.queue_declare(queue, passive=True).message_count >= count)

    try:
        channel.queue_declare(queue, durable=True, auto_delete=False)
        results = [
            time_each(
                "rabbitmq",
                AMQP_PUBLISH,
                publish,
                s.n,
                finish=partial(holds, s.n),
                note="unconfirmed",
            ),
            time_each(
                "rabbitmq",
                AMQP_GET,
                lambda: channel.basic_get(queue, no_ack=True),
                s.n,
                note="no_ack",
            ),
            time_each(
                "rabbitmq",
                AMQP_PUBLISH_CONFIRMED,
                lambda: confirm_channel.basic_publish(message, exchange="", routing_key=queue),
                s.n,
                warmup=1,
                note="confirms",
            ),
        ]
        channel.queue_purge(queue)
        for _ in range(s.n):
            publish()
        holds(s.n)
        drain = partial(_amqp_drain, connection, channel, queue, s)
        results.append(time_total("rabbitmq", AMQP_CONSUME, drain, note=f"prefetch {s.prefetch}"))
        return results
    finally:
        channel.queue_delete(queue)
        connection.close()
        confirming.close()


def _kombu_url(s: Settings, backend: str) -> str:
    return {"local": "memory://", "redis": s.redis_url, "rabbitmq": s.pyamqp_url}[backend]


def _own_exchange_queue(name: str) -> Queue:
    """A durable queue bound to a direct exchange of its own name, as Celery declares it.

    The binding lets the virtual transports (memory, redis) delete the queue.
    """
    return Queue(name, Exchange(name, "direct", durable=True), routing_key=name, durable=True)


def _drop_queue(connection: Connection, queue: Queue) -> None:
    """Delete ``queue`` and its exchange, declaring them first so this process knows the binding."""
    bound = queue(connection.default_channel)
    bound.declare()
    bound.delete()
    bound.exchange.delete()


def _kombu_drain(connection: Connection, queue: Queue, s: Settings) -> int:
    """Consume ``s.n`` messages of the bound ``queue`` through a stock Consumer, acking each."""
    received = 0

    def on_message(body: object, message: Message) -> None:
        nonlocal received
        message.ack()
        received += 1

    consumer = Consumer(
        queue.channel, [queue], accept=["json"], prefetch_count=s.prefetch, callbacks=[on_message]
    )
    with consumer:
        while received < s.n:
            connection.drain_events(timeout=10)
    return received


def kombu_stock(s: Settings, backend: str) -> list[Result]:
    """Stock Kombu: publish to the default exchange (JSON, persistent), get+ack, Consumer+ack."""
    queue = _own_exchange_queue(s.queue_name(f"kombu-{backend}"))
    with Connection(_kombu_url(s, backend)) as connection:
        bound = queue(connection.default_channel)
        bound.declare()
        producer = Producer(bound.channel)

        def publish() -> None:
            producer.publish(
                PAYLOAD, exchange="", routing_key=queue.name, serializer="json", delivery_mode=2
            )

        def get_ack() -> None:
            bound.get(no_ack=False, accept=["json"]).ack()

        def holds(count: int) -> None:
            wait_until(lambda: bound.queue_declare(passive=True).message_count >= count)

        try:
            results = [
                time_each(
                    backend, KOMBU_PUBLISH, publish, s.n, warmup=1, finish=partial(holds, s.n)
                ),
                time_each(backend, KOMBU_GET, get_ack, s.n),
            ]
            bound.purge()
            for _ in range(s.n):
                publish()
            holds(s.n)
            drain = partial(_kombu_drain, connection, bound, s)
            results.append(time_total(backend, KOMBU_CONSUME, drain, note=f"prefetch {s.prefetch}"))
            return results
        finally:
            _drop_queue(connection, queue)


def celery_send_task(s: Settings, backend: str) -> list[Result]:
    """Celery's client side: ``app.send_task`` to a named queue; no worker runs."""
    try:
        from celery import Celery
    except ImportError as exc:
        raise Skipped("celery is not installed (pip install celery)") from exc
    url = _kombu_url(s, backend)
    queue = _own_exchange_queue(s.queue_name(f"celery-{backend}"))
    app = Celery("benchmarks", broker=url, set_as_current=False)
    data = PAYLOAD["data"]
    try:
        send = partial(app.send_task, "benchmarks.task", args=(data,), queue=queue.name)
        return [time_each(backend, CELERY_SEND_TASK, send, s.n, warmup=1)]
    finally:
        app.close()
        with Connection(url) as connection:
            _drop_queue(connection, queue)


def rq_enqueue(s: Settings) -> list[Result]:
    """RQ's client side: ``Queue.enqueue`` of :func:`rq_task`; no worker runs."""
    try:
        import rq
    except ImportError as exc:
        raise Skipped("rq is not installed (pip install rq)") from exc
    client = redis.Redis.from_url(s.redis_url)
    queue = rq.Queue(s.queue_name("rq"), connection=client)
    try:
        enqueue = partial(queue.enqueue, rq_task, PAYLOAD["data"])
        return [time_each("redis", RQ_ENQUEUE, enqueue, s.n, warmup=1)]
    finally:
        queue.delete(delete_jobs=True)
        client.close()


def scenarios(backend: str) -> list[Scenario]:
    """The baselines measured on ``backend`` (local, redis or rabbitmq; none on rediscluster:
    Kombu, Celery and RQ have no Redis Cluster support, and its rows compare with single Redis)."""
    return {
        "local": [Scenario("stock kombu (memory://)", partial(kombu_stock, backend="local"))],
        "redis": [
            Scenario("raw redis-py", redis_py),
            Scenario("stock kombu (redis://)", partial(kombu_stock, backend="redis")),
            Scenario("celery send_task (redis)", partial(celery_send_task, backend="redis")),
            Scenario("rq enqueue", rq_enqueue),
        ],
        "rabbitmq": [
            Scenario("raw py-amqp", py_amqp),
            Scenario("stock kombu (pyamqp://)", partial(kombu_stock, backend="rabbitmq")),
            Scenario("celery send_task (pyamqp)", partial(celery_send_task, backend="rabbitmq")),
        ],
    }.get(backend, [])
