"""Payload types shared by the Celery test app (worker side) and the tests (producer side)."""

from __future__ import annotations

from mindtrace_kombu import JobInput, JobOutput


class CeleryInput(JobInput):
    """Input of the test tasks: a number, and how many attempts should fail first."""

    value: int
    fail_times: int = 0


class CeleryOutput(JobOutput):
    """Output of the test tasks."""

    job_id: str
    doubled: int
    input_type: str
