"""The README's RabbitMQ backend: durable queues, persistent messages, exact counts, priorities.

Needs a RabbitMQ server: AMQP_URL (default amqp://guest:guest@localhost:5672//). Queue names get
the suffix in MINDTRACE_EXAMPLE_SUFFIX (default none) so parallel runs on one server do not
collide; the queues are deleted at the end.

Run: python examples/rabbitmq_backend.py
"""

import os
import time
from urllib.parse import unquote, urlsplit

from mindtrace.jobs import Job, JobInput, JobSchema, Orchestrator, RabbitMQClient, UnsupportedQueueType

amqp_url = urlsplit(os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672//"))


def q(name: str) -> str:
    """A README queue name, suffixed with $MINDTRACE_EXAMPLE_SUFFIX."""
    return name + os.environ.get("MINDTRACE_EXAMPLE_SUFFIX", "")


class ReportInput(JobInput):
    report_id: str


def make_job(name: str) -> Job:
    return Job(name=name, payload=JobSchema(name="report", input=ReportInput(report_id=name)))


job = make_job("job")

client = RabbitMQClient(
    host=amqp_url.hostname or "localhost",
    port=amqp_url.port or 5672,
    username=unquote(amqp_url.username or "guest"),
    password=unquote(amqp_url.password or "guest"),
    virtual_host=unquote(amqp_url.path[1:]) or "/",
)
orchestrator = Orchestrator(client)

orchestrator.declare_queue(q("rabbitmq_queue"), force=True)
orchestrator.declare_queue(q("priority_queue"), force=True, max_priority=255)
orchestrator.publish(q("rabbitmq_queue"), job)
time.sleep(0.1)  # kept from the Mindtrace README; not needed: publish waits for the broker's confirm
count = orchestrator.count_queue_messages(q("rabbitmq_queue"))
print("count:", count)

# max_priority=255: priorities 0..255, higher first, equal priorities in publish order
for name, priority in [("background", 10), ("urgent", 255), ("normal", 100), ("urgent_too", 255)]:
    orchestrator.publish(q("priority_queue"), make_job(name), priority=priority)
print("priority count:", orchestrator.count_queue_messages(q("priority_queue")))
print("priority:", [orchestrator.receive_message(q("priority_queue")).name for _ in range(4)])

received_job = orchestrator.receive_message(q("rabbitmq_queue"))
print("received:", received_job.name, type(received_job.payload.input).__name__)

try:  # RabbitMQ has no LIFO queues; the error says what to use instead
    orchestrator.declare_queue(q("stack_queue"), queue_type="stack")
except UnsupportedQueueType as exc:
    print("stack:", exc)

for name in ("rabbitmq_queue", "priority_queue"):
    orchestrator.delete_queue(q(name))
orchestrator.close()
print("done")
