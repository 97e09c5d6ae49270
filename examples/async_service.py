"""An asyncio service: jobs published concurrently from many tasks, consumed by an async handler.

Runs on the in-process backend (no server needed): ``python examples/async_service.py``. The same
code runs on Redis or RabbitMQ with ``AsyncOrchestrator.from_url(...)``.
"""

from __future__ import annotations

import asyncio

from mindtrace_kombu import AsyncOrchestrator, Job, JobInput, JobOutput, JobSchema

QUEUE = "thumbnails"


class ThumbnailInput(JobInput):
    image: str


class Thumbnail(JobOutput):
    path: str


def thumbnail_job(image: str) -> Job:
    return Job(name="thumbnail", payload=JobSchema(name="thumbnail", input=ThumbnailInput(image=image)))


async def make_thumbnail(job: Job) -> Thumbnail:
    await asyncio.sleep(0.01)  # stands for real I/O: an HTTP call, a database query
    return Thumbnail(path=f"/thumbs/{job.payload.input.image}")


async def main() -> None:
    async with AsyncOrchestrator() as orchestrator:
        await orchestrator.declare_queue(QUEUE)
        jobs = [thumbnail_job(f"img-{n}.png") for n in range(20)]
        # 20 concurrent publishes share a few round trips; each returns once its job is queued
        ids = await asyncio.gather(*(orchestrator.publish(QUEUE, job) for job in jobs))
        print(f"published {len(ids)}, queued {await orchestrator.count_queue_messages(QUEUE)}")

        # the handler runs on this event loop, at most 5 jobs at a time, each acknowledged when done
        stats = await orchestrator.consume(QUEUE, make_thumbnail, concurrency=5, until_empty=True)
        print(f"completed={stats.completed} retried={stats.retried} dead-lettered={stats.dead_lettered}")

        done = await orchestrator.wait_for(ids[0], timeout=5)
        print(f"{done.payload.input.image} -> {done.payload.output.path} ({done.status.value})")

        await orchestrator.publish(QUEUE, thumbnail_job("late.png"))
        async with orchestrator.claim(QUEUE) as job:  # one job, acknowledged when the block exits
            print(f"claimed: {job.payload.input.image}")


asyncio.run(main())
