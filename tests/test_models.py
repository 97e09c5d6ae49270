"""Unit tests of the job models: defaults, enum values, the payload registry."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from mindtrace_kombu import (
    QUEUE_MAPPING,
    BackendType,
    ExecutionStatus,
    Job,
    JobInput,
    JobOutput,
    JobSchema,
    JobType,
)
from mindtrace_kombu.models import PAYLOAD_TYPES, payload_type_name


class ModelsInput(JobInput):
    """A payload declared at module level, as users do."""

    path: str
    retries: int = 3


class ModelsOutput(JobOutput):
    score: float


def job(**fields: object) -> Job:
    return Job(name="models-job", payload=JobSchema(name="s", input=ModelsInput(path="/data")), **fields)  # type: ignore[arg-type]


# -- Job defaults --------------------------------------------------------------------------------


def test_job_id_defaults_to_a_fresh_uuid() -> None:
    # Given two jobs built without an id
    first, second = job(), job()
    # Expect each to carry its own valid UUID
    assert uuid.UUID(first.id) and uuid.UUID(second.id)
    assert first.id != second.id


def test_job_created_at_defaults_to_now_in_utc_iso_8601() -> None:
    before = datetime.now(timezone.utc)
    created = datetime.fromisoformat(job().created_at)
    after = datetime.now(timezone.utc)
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= after


def test_explicit_id_and_created_at_are_kept_as_given() -> None:
    # The README passes both explicitly
    given = job(id="job_123", created_at="2024-01-01T00:00:00")
    assert given.id == "job_123"
    assert given.created_at == "2024-01-01T00:00:00"


def test_other_job_defaults() -> None:
    given = job()
    assert given.job_type is JobType.DEFAULT
    assert given.status is ExecutionStatus.QUEUED
    assert (given.started_at, given.completed_at, given.error, given.max_retries) == (None, None, None, None)
    assert given.attempts == 0
    assert given.payload.output is None


def test_job_type_accepts_its_string_value() -> None:
    assert job(job_type="data_processing").job_type is JobType.DATA_PROCESSING


def test_job_requires_name_and_payload() -> None:
    with pytest.raises(ValueError):
        Job(name="no payload")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Job(payload=JobSchema(name="s", input=JobInput()))  # type: ignore[call-arg]


# -- enums and routing ---------------------------------------------------------------------------


def test_job_type_values_are_exact() -> None:
    assert {member.name: member.value for member in JobType} == {
        "ML_TRAINING": "ml_training",
        "OBJECT_DETECTION": "object_detection",
        "DATA_PROCESSING": "data_processing",
        "CLASSIFICATION": "classification",
        "DEFAULT": "default",
    }
    assert JobType.ML_TRAINING == "ml_training"  # a str enum


def test_queue_mapping_matches_the_readme_exactly() -> None:
    assert QUEUE_MAPPING == {
        JobType.ML_TRAINING: "ml_training_jobs",
        JobType.OBJECT_DETECTION: "detection_jobs",
        JobType.DATA_PROCESSING: "data_jobs",
        JobType.CLASSIFICATION: "classification_jobs",
        JobType.DEFAULT: "default_jobs",
    }


def test_execution_status_and_backend_type_values() -> None:
    assert [status.value for status in ExecutionStatus] == ["queued", "running", "completed", "failed", "cancelled"]
    assert [backend.value for backend in BackendType] == ["local", "redis", "rabbitmq"]


# -- the payload registry ------------------------------------------------------------------------


def test_registry_records_subclasses_under_module_and_qualname() -> None:
    assert payload_type_name(ModelsInput) == f"{__name__}.ModelsInput"
    assert PAYLOAD_TYPES[payload_type_name(ModelsInput)] is ModelsInput
    assert PAYLOAD_TYPES[payload_type_name(ModelsOutput)] is ModelsOutput


def test_registry_holds_the_base_classes() -> None:
    assert PAYLOAD_TYPES["mindtrace_kombu.models.JobInput"] is JobInput
    assert PAYLOAD_TYPES["mindtrace_kombu.models.JobOutput"] is JobOutput


def test_registry_records_a_class_as_it_is_created() -> None:
    # Given a subclass created at run time, nested in a function
    class LateInput(JobInput):
        x: int = 0

    # Expect it registered under its qualified name, subclasses of subclasses too
    assert PAYLOAD_TYPES[payload_type_name(LateInput)] is LateInput
    assert "<locals>.LateInput" in payload_type_name(LateInput)

    class LaterInput(LateInput):
        y: int = 1

    assert PAYLOAD_TYPES[payload_type_name(LaterInput)] is LaterInput


# -- extra fields ----------------------------------------------------------------------------------


def test_extra_fields_are_kept_not_dropped() -> None:
    given = ModelsInput(path="/data", undeclared={"k": [1, 2]}, note="n")
    assert given.model_extra == {"undeclared": {"k": [1, 2]}, "note": "n"}
    assert given.model_dump() == {"path": "/data", "retries": 3, "undeclared": {"k": [1, 2]}, "note": "n"}


def test_generic_job_input_keeps_every_field() -> None:
    given = JobInput(data="test_data", param1="value1")
    assert given.model_dump() == {"data": "test_data", "param1": "value1"}
    assert given.data == "test_data"  # type: ignore[attr-defined]


def test_schema_keeps_subclass_fields_when_dumped() -> None:
    # Given a schema typed JobInput holding a subclass
    schema = JobSchema(name="s", input=ModelsInput(path="/p", extra=1), output=ModelsOutput(score=0.5))
    # Expect the dump to carry the subclass's fields, not only the base's
    assert schema.model_dump() == {
        "name": "s",
        "input": {"path": "/p", "retries": 3, "extra": 1},
        "output": {"score": 0.5},
    }


def test_job_dump_and_validate_keep_fields_as_generic_input() -> None:
    original = job(id="j1")
    rebuilt = Job.model_validate(original.model_dump())
    assert rebuilt.model_dump() == original.model_dump()
