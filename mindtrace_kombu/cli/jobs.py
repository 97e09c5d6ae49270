"""Building jobs from what a user types: a JSON file or stdin, or ``--name/--type/--input`` options.

A JSON source holds one job object, a list of them, or JSON lines. Each object is either a full
job as ``receive`` prints it (with ``payload``) or the short form
``{"name": ..., "job_type": ..., "input": {...}}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import IO, Any

import click
from pydantic import ValidationError

from ..models import Job, JobInput, JobType
from .context import InvalidInputError, import_object

__all__ = ["build_jobs", "chunks", "copies", "job_options", "parse_assignments"]


def parse_assignments(values: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON (``3``, ``true``, ``[1]``) is typed."""
    fields: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--input")
        try:
            fields[key] = json.loads(raw)
        except ValueError:
            fields[key] = raw
    return fields


def _read_objects(stream: IO[str]) -> list[Any]:
    text = stream.read()
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise InvalidInputError(f"{stream.name}: not JSON or JSON lines: {exc}") from None
    objects = data if isinstance(data, list) else [data]
    if not objects:
        raise InvalidInputError(f"{stream.name}: no job in the input")
    return objects


def _job(data: Any, input_type: type[JobInput], where: str) -> Job:
    """Validate one job object, full or short form; ``where`` names it in errors."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where}: a job is a JSON object, got {type(data).__name__}")
    if "payload" not in data:
        unknown = sorted(set(data) - {"name", "job_type", "input"})
        if unknown:
            raise InvalidInputError(
                f"{where}: unknown fields {unknown}; a short-form job has name, job_type, input"
            )
        data = {
            "name": data.get("name"),
            "job_type": data.get("job_type", JobType.DEFAULT),
            "payload": {"name": data.get("name"), "input": data.get("input") or {}},
        }
    try:
        job = Job.model_validate(data)
        job.payload.input = input_type.model_validate(job.payload.input.model_dump())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInputError(f"{where}: invalid job: {problems}") from None
    return job


def build_jobs(
    source: IO[str] | None,
    name: str | None,
    job_type: str,
    inputs: Sequence[str],
    input_type: str | None,
) -> list[Job]:
    """The jobs described by ``--file`` or by ``--name/--type/--input`` (exactly one)."""
    if (source is None) == (name is None):
        raise click.UsageError("give either --file PATH (or --file - for stdin) or --name NAME")
    cls: type[JobInput] = JobInput
    if input_type is not None:
        cls = import_object(input_type, "--input-type")
        if not (isinstance(cls, type) and issubclass(cls, JobInput)):
            raise click.BadParameter(
                f"{input_type!r} is not a JobInput subclass", param_hint="--input-type"
            )
    if source is not None:
        objects = _read_objects(source)
        return [_job(obj, cls, f"{source.name} job {i + 1}") for i, obj in enumerate(objects)]
    short = {"name": name, "job_type": job_type, "input": parse_assignments(inputs)}
    return [_job(short, cls, "options")]


def copies(jobs: Sequence[Job], count: int) -> Iterator[Job]:
    """``count`` rounds of ``jobs``; with more than one, every copy gets a fresh id and time."""
    if count == 1:
        yield from jobs
        return
    for _ in range(count):
        now = datetime.now(timezone.utc).isoformat()
        for job in jobs:
            yield job.model_copy(update={"id": str(uuid.uuid4()), "created_at": now})


def chunks(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    """Consecutive lists of at most ``size`` jobs."""
    chunk: list[Job] = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def job_options(func: Any) -> Any:
    """The options shared by ``publish`` and ``submit``."""
    options = (
        click.option(
            "--file",
            "-f",
            "source",
            type=click.File("r"),
            help="JSON job, list of jobs or JSON lines; '-' reads stdin.",
        ),
        click.option("--name", "-n", help="Job name (builds the job from options)."),
        click.option(
            "--type",
            "-t",
            "job_type",
            type=click.Choice([t.value for t in JobType]),
            default=JobType.DEFAULT.value,
            show_default=True,
            help="Job type; submit routes by it.",
        ),
        click.option(
            "--input",
            "-i",
            "inputs",
            multiple=True,
            metavar="KEY=VALUE",
            help="Input field; VALUE is parsed as JSON when it can be. Repeatable.",
        ),
        click.option(
            "--input-type",
            metavar="MODULE:CLASS",
            help="JobInput subclass to validate the input with, so consumers get that type.",
        ),
        click.option(
            "--priority", "-p", type=int, help="Priority, on priority queues (0..max_priority)."
        ),
        click.option(
            "--count",
            "-c",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Publish COUNT copies (fresh ids), in chunks, with a progress bar.",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=1),
            default=500,
            show_default=True,
            help="Jobs per publish_many call when loading in bulk.",
        ),
        click.option(
            "--confirm/--no-confirm",
            default=True,
            show_default=True,
            help="RabbitMQ: wait for the broker's publisher confirms; --no-confirm sends "
            "persistent jobs without waiting (Celery's guarantee).",
        ),
    )
    for option in reversed(options):
        func = option(func)
    return func
