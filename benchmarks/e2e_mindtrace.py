"""The end-to-end job on this package's worker:
``mindtrace-jobs worker benchmarks.e2e_mindtrace:handle -Q QUEUE``."""

from __future__ import annotations

from benchmarks import e2e_jobs
from mindtrace_kombu import Job, JobInput, JobSchema


class E2EInput(JobInput):
    """When the job was published (``time.time()``) and how many jobs the run has."""

    published: float
    total: int


def job(published: float, total: int) -> Job:
    """Build the job the producer publishes."""
    data = E2EInput(published=published, total=total)
    return Job(name="bench.e2e", payload=JobSchema(name="bench.e2e", input=data))


def handle(job: Job) -> None:
    """The worker's handler: :func:`benchmarks.e2e_jobs.record`."""
    data = job.payload.input
    assert isinstance(data, E2EInput)
    e2e_jobs.record(data.published, data.total)
