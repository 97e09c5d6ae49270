"""Publish thumbnail jobs through the Orchestrator, let a Celery worker run them, print the results.

Start a worker first (see ``app.py``), then, from the repository root::

    python -m examples.celery_app.producer

The queue belongs to the worker that consumes it, so the producer leaves it declared (on RabbitMQ,
deleting a queue cancels its consumers). When you are done, stop the worker, then delete it::

    mindtrace-jobs delete thumbnail_jobs --if-empty
"""

from __future__ import annotations

from mindtrace_kombu import Job, JobSchema, JobType, Orchestrator
from mindtrace_kombu.celery import job_result, job_status

from .app import QUEUE, app
from .tasks import ThumbnailInput


def thumbnail_job(image: str, size: int = 128) -> Job:
    return Job(
        name=f"thumbnail {image}", job_type=JobType.DATA_PROCESSING,
        payload=JobSchema(name="thumbnail", input=ThumbnailInput(image=image, size=size)),
    )


def main() -> None:
    # The app's broker, connection pool and job tasks: jobs for QUEUE become Celery task messages.
    with Orchestrator.from_celery(app, routes={JobType.DATA_PROCESSING: QUEUE}) as orchestrator:
        orchestrator.declare_queue(QUEUE, max_priority=10)
        jobs = [thumbnail_job("cat.jpg"), thumbnail_job("dog.jpg", 64)]
        orchestrator.publish(QUEUE, jobs[0], priority=1)
        orchestrator.publish(QUEUE, jobs[1], priority=9)
        jobs.append(thumbnail_job("bird.jpg", 32))
        orchestrator.submit(jobs[2])  # routed by job type to QUEUE

        for job in jobs:
            result = job_result(app, job)  # Celery's AsyncResult; the task id is the job id
            output = result.get(timeout=60)
            print(f"{job.name}: {job_status(result).value} -> {type(output).__name__}({output.thumbnail}, {output.size})")
            result.forget()  # read: no need to keep it in the result backend


if __name__ == "__main__":
    main()
