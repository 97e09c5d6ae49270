"""Payload types and the handler of the result-store tests, importable by every process."""

from __future__ import annotations

import os

from mindtrace_kombu import Job, JobInput, JobOutput, JobSchema


class Numbers(JobInput):
    value: int


class Doubled(JobOutput):
    doubled: int
    worker_pid: int


def make(value: int, **fields: object) -> Job:
    return Job(name=f"n{value}", payload=JobSchema(name="numbers", input=Numbers(value=value)), **fields)


def handler(job: Job) -> Doubled:
    value = job.payload.input.value  # type: ignore[attr-defined]
    if value < 0:
        raise ValueError(f"negative: {value}")
    return Doubled(doubled=2 * value, worker_pid=os.getpid())
