"""The README's Redis backend: fifo, stack and priority queues with exact order.

Needs a Redis server: REDIS_URL (default redis://localhost:6379/0). Queue names get the suffix in
MINDTRACE_EXAMPLE_SUFFIX (default none) so parallel runs on one server do not collide; the queues
are deleted at the end.

Run: python examples/redis_backend.py
"""

import os
from urllib.parse import unquote, urlsplit

from mindtrace.jobs import Job, JobInput, JobSchema, JobType, Orchestrator, RedisClient

redis_url = urlsplit(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))


def q(name: str) -> str:
    """A README queue name, suffixed with $MINDTRACE_EXAMPLE_SUFFIX."""
    return name + os.environ.get("MINDTRACE_EXAMPLE_SUFFIX", "")


class ImageInput(JobInput):
    image_path: str


def make_job(name: str) -> Job:
    return Job(
        name=name,
        job_type=JobType.OBJECT_DETECTION,
        payload=JobSchema(name="detection", input=ImageInput(image_path=f"/images/{name}.png")),
    )


job = make_job("job")
high_priority_job = make_job("high_priority_job")
low_priority_job = make_job("low_priority_job")

client = RedisClient(
    host=redis_url.hostname or "localhost",
    port=redis_url.port or 6379,
    db=int(redis_url.path.strip("/") or 0),
    password=unquote(redis_url.password) if redis_url.password else None,
)
orchestrator = Orchestrator(client)

# Priority queues: higher number first, equal priorities in publish order (0..10 by default)
orchestrator.declare_queue(q("priority_queue"), queue_type="priority")
orchestrator.publish(q("priority_queue"), low_priority_job, priority=1)
orchestrator.publish(q("priority_queue"), job, priority=10)
orchestrator.publish(q("priority_queue"), high_priority_job, priority=10)
received = [orchestrator.receive_message(q("priority_queue")) for _ in range(3)]
print("priority:", [received_job.name for received_job in received])
print("payload:", type(received[0].payload.input).__name__, received[0].payload.input.image_path)

# Queue types: fifo (the default), stack (last in, first out)
orchestrator.declare_queue(q("fifo_queue"), queue_type="fifo")
orchestrator.declare_queue(q("stack_queue"), queue_type="stack")
for name in ("first", "second", "third"):
    orchestrator.publish(q("fifo_queue"), make_job(name))
    orchestrator.publish(q("stack_queue"), make_job(name))
print("fifo count:", orchestrator.count_queue_messages(q("fifo_queue")))
print("fifo:", [orchestrator.receive_message(q("fifo_queue")).name for _ in range(3)])
print("stack:", [orchestrator.receive_message(q("stack_queue")).name for _ in range(3)])

for name in ("priority_queue", "fifo_queue", "stack_queue"):
    orchestrator.delete_queue(q(name))
orchestrator.close()
print("done")
