"""Plain Kombu consumers, without Celery and without importing mindtrace_kombu, read fifo jobs.

The consumer process imports only kombu; the job serializer reaches it through the
``kombu.serializers`` entry point of the installed package, and it accepts nothing else. On
Redis it names this package's transport by path (``mindtrace_kombu.transport.redis:Transport``),
as a Celery app does with ``broker_transport``; on RabbitMQ it uses Kombu's stock transport.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Iterator

import pytest

from mindtrace_kombu import Orchestrator
from mindtrace_kombu.clients import RedisClient
from tests.conftest import AMQP_URL, REDIS_URL, make_client, make_job, unique

REDIS_TRANSPORT_PATH = "mindtrace_kombu.transport.redis:Transport"

CONSUMER = r'''
import json, sys
import kombu

url, queue, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
transport, options = sys.argv[4] or None, json.loads(sys.argv[5])
assert "mindtrace_kombu" not in sys.modules
received = []

def on_message(body, message):
    received.append({
        "class": type(body).__name__, "id": body.id,
        "input_class": type(body.payload.input).__name__, "input": body.payload.input.model_dump(),
    })
    message.ack()

with kombu.Connection(url, transport=transport, transport_options=options) as connection:
    consumer = kombu.Consumer(
        connection, queues=[kombu.Queue(queue, no_declare=True)],
        accept=["application/x-mindtrace-job+json"], callbacks=[on_message],
    )
    with consumer:
        while len(received) < expected:
            connection.drain_events(timeout=10)
print(json.dumps({"transport": connection.transport.driver_name, "received": received}))
'''


@pytest.fixture(params=["redis", "rabbitmq"])
def orchestrator_and_url(request: pytest.FixtureRequest) -> Iterator[tuple[Orchestrator, list[str]]]:
    client = make_client(str(request.param))
    orchestrator = Orchestrator(client)
    if isinstance(client, RedisClient):
        yield orchestrator, [REDIS_URL, REDIS_TRANSPORT_PATH, json.dumps(client.transport_options)]
    else:
        yield orchestrator, [AMQP_URL, "", "{}"]
    orchestrator.close()


def test_plain_kombu_consumer_reads_fifo_jobs(orchestrator_and_url: tuple[Orchestrator, list[str]]) -> None:
    # Given fifo jobs published by the Orchestrator
    orchestrator, connection_args = orchestrator_and_url
    queue = unique("plain-kombu")
    jobs = [make_job(value) for value in range(3)]
    try:
        orchestrator.declare_queue(queue)
        orchestrator.publish_many(queue, jobs)

        # When a process that imports only kombu consumes them
        url, transport, options = connection_args
        done = subprocess.run(
            [sys.executable, "-c", CONSUMER, url, queue, str(len(jobs)), transport, options],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        output = json.loads(done.stdout)

        # Expect every job, in order, decoded as a Job whose unregistered payload class fell
        # back to JobInput with every field kept; and nothing left in the queue
        assert output["transport"] in ("mindtrace-redis", "py-amqp")
        assert [item["id"] for item in output["received"]] == [job.id for job in jobs]
        assert {item["class"] for item in output["received"]} == {"Job"}
        assert {item["input_class"] for item in output["received"]} == {"JobInput"}
        assert [item["input"] for item in output["received"]] == [
            {"value": value, "label": "sample"} for value in range(3)
        ]
        assert orchestrator.count_queue_messages(queue) == 0
    finally:
        orchestrator.delete_queue(queue)
