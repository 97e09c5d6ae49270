"""The example's job types and the Celery task that runs them."""

from __future__ import annotations

from mindtrace_kombu import Job, JobInput, JobOutput
from mindtrace_kombu.celery import job_task

from .app import QUEUE, app


class ThumbnailInput(JobInput):
    """What to shrink, and to which size."""

    image: str
    size: int = 128


class ThumbnailOutput(JobOutput):
    """Where the thumbnail went."""

    thumbnail: str
    size: int


@job_task(app, queue=QUEUE, name="examples.make_thumbnail")
def make_thumbnail(job: Job) -> ThumbnailOutput:
    """Run by a Celery worker for every job published to QUEUE; ``job.payload.input`` is a ThumbnailInput."""
    params = job.payload.input
    assert isinstance(params, ThumbnailInput)
    return ThumbnailOutput(thumbnail=f"{params.image.rsplit('.', 1)[0]}_{params.size}.png", size=params.size)
