"""A worker: at-least-once processing with retries and a dead-letter queue. No server needed.

Run: python examples/worker.py   (set MINDTRACE_BROKER_URL=redis://... or amqp://... for a broker)
"""

import os

from mindtrace.jobs import Job, JobInput, JobOutput, JobSchema, Orchestrator


class ResizeInput(JobInput):
    image: str
    width: int


class ResizeOutput(JobOutput):
    path: str


def resize(job: Job) -> ResizeOutput:
    """The handler: return normally and the job is acknowledged; raise and it is retried."""
    if job.payload.input.width <= 0:
        raise ValueError(f"bad width {job.payload.input.width}")
    return ResizeOutput(path=f"/tmp/{job.payload.input.image}-{job.payload.input.width}.png")


QUEUE = "resize_jobs" + os.environ.get("MINDTRACE_EXAMPLE_SUFFIX", "")  # unique on a shared broker
orchestrator = Orchestrator.from_url(os.environ.get("MINDTRACE_BROKER_URL", "memory://"))
orchestrator.declare_queue(QUEUE)
for image, width in [("cat", 64), ("dog", 128), ("broken", 0)]:
    job = Job(name="resize", payload=JobSchema(name="resize", input=ResizeInput(image=image, width=width)))
    orchestrator.publish(QUEUE, job)

# Burst mode: process until the queue is empty; a long-running worker calls .consume() without
# until_empty and stops on SIGINT/SIGTERM after finishing the job in hand.
stats = orchestrator.consume(
    QUEUE,
    resize,
    until_empty=True,
    max_retries=2,
    retry_backoff=0.01,
    on_event=lambda event: print(f"{event.outcome}: {event.job_id[:8]} attempt {event.attempts}"),
)
print(f"completed={stats.completed} retried={stats.retried} dead-lettered={stats.dead_lettered}")

for letter in orchestrator.dead_letters(QUEUE):
    print(f"dead letter: {letter.job.payload.input.image} after {letter.attempts} attempts: {letter.reason}")

with orchestrator.claim(QUEUE, timeout=0.1) as job:  # one job, acknowledged on success
    print(f"claimed: {job}")

orchestrator.delete_queue(f"{QUEUE}.dlq")
orchestrator.delete_queue(QUEUE)
