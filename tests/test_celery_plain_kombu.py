"""Plain Kombu consumers, without Celery and without importing mindtrace_kombu, read fifo jobs.

The consumer process imports only kombu; the job serializer reaches it through the
``kombu.serializers`` entry point of the installed package, and it accepts nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Iterator

import pytest

from mindtrace_kombu import Orchestrator
from tests.conftest import AMQP_URL, REDIS_URL, make_client, make_job, unique

CONSUMER = r'''
import json, sys
import kombu

url, queue, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert "mindtrace_kombu" not in sys.modules
received = []

def on_message(body, message):
    received.append({
        "class": type(body).__name__, "id": body.id,
        "input_class": type(body.payload.input).__name__, "input": body.payload.input.model_dump(),
    })
    message.ack()

with kombu.Connection(url) as connection:
    consumer = kombu.Consumer(
        connection, queues=[kombu.Queue(queue, no_declare=True)],
        accept=["application/x-mindtrace-job+json"], callbacks=[on_message],
    )
    with consumer:
        while len(received) < expected:
            connection.drain_events(timeout=10)
print(json.dumps({"transport": connection.transport_cls, "received": received}))
'''


@pytest.fixture(params=["redis", "rabbitmq"])
def orchestrator_and_url(request: pytest.FixtureRequest) -> Iterator[tuple[Orchestrator, str]]:
    client = make_client(str(request.param))
    orchestrator = Orchestrator(client)
    yield orchestrator, REDIS_URL if request.param == "redis" else AMQP_URL
    orchestrator.close()


def test_plain_kombu_consumer_reads_fifo_jobs(orchestrator_and_url: tuple[Orchestrator, str]) -> None:
    # Given fifo jobs published by the Orchestrator
    orchestrator, url = orchestrator_and_url
    queue = unique("plain-kombu")
    jobs = [make_job(value) for value in range(3)]
    try:
        orchestrator.declare_queue(queue)
        orchestrator.publish_many(queue, jobs)

        # When a process that imports only kombu consumes them with the stock transport
        done = subprocess.run(
            [sys.executable, "-c", CONSUMER, url, queue, str(len(jobs))],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        output = json.loads(done.stdout)

        # Expect every job, in order, decoded as a Job whose unregistered payload class fell
        # back to JobInput with every field kept; and nothing left in the queue
        assert output["transport"] in ("redis", "amqp")
        assert [item["id"] for item in output["received"]] == [job.id for job in jobs]
        assert {item["class"] for item in output["received"]} == {"Job"}
        assert {item["input_class"] for item in output["received"]} == {"JobInput"}
        assert [item["input"] for item in output["received"]] == [
            {"value": value, "label": "sample"} for value in range(3)
        ]
        assert orchestrator.count_queue_messages(queue) == 0
    finally:
        orchestrator.delete_queue(queue)
