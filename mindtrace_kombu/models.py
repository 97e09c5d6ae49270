"""Job models: what a job is, what it carries, and where it is routed.

``JobInput`` and ``JobOutput`` are the payload base classes users subclass. Every subclass is
recorded in :data:`PAYLOAD_TYPES` under a stable name (``module.QualName``) when the class is
created, so a consumer can rebuild the concrete class from a message without importing anything
the message names. Unknown fields are kept as extra fields, never dropped.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

__all__ = [
    "PAYLOAD_TYPES",
    "BackendType",
    "ExecutionStatus",
    "Job",
    "JobInput",
    "JobOutput",
    "JobSchema",
    "JobType",
    "QUEUE_MAPPING",
    "payload_type_name",
]

#: Registry of payload classes by stable name; filled as subclasses are created.
PAYLOAD_TYPES: dict[str, type[BaseModel]] = {}


def payload_type_name(cls: type[BaseModel]) -> str:
    """Return the stable registry name of a payload class (``module.QualName``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


class _Payload(BaseModel):
    """Shared base of job inputs and outputs: extra fields kept, subclasses registered."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        PAYLOAD_TYPES[payload_type_name(cls)] = cls


class JobInput(_Payload):
    """Base class for job inputs. Subclass it with your own fields."""


class JobOutput(_Payload):
    """Base class for job outputs. Subclass it with your own fields."""


PAYLOAD_TYPES[payload_type_name(JobInput)] = JobInput
PAYLOAD_TYPES[payload_type_name(JobOutput)] = JobOutput


class JobSchema(BaseModel):
    """What a job carries: a name, a typed input and, once run, a typed output."""

    name: str
    input: SerializeAsAny[JobInput]
    output: SerializeAsAny[JobOutput] | None = None


class JobType(str, Enum):
    """Kinds of jobs; each routes to its own queue through :data:`QUEUE_MAPPING`."""

    ML_TRAINING = "ml_training"
    OBJECT_DETECTION = "object_detection"
    DATA_PROCESSING = "data_processing"
    CLASSIFICATION = "classification"
    DEFAULT = "default"


#: Queue each job type is routed to by ``Orchestrator.submit``.
QUEUE_MAPPING: dict[JobType, str] = {
    JobType.ML_TRAINING: "ml_training_jobs",
    JobType.OBJECT_DETECTION: "detection_jobs",
    JobType.DATA_PROCESSING: "data_jobs",
    JobType.CLASSIFICATION: "classification_jobs",
    JobType.DEFAULT: "default_jobs",
}


class ExecutionStatus(str, Enum):
    """Lifecycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Completed, failed or cancelled: the job will not run (again)."""
        return self in (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)


class BackendType(str, Enum):
    """The three backends."""

    LOCAL = "local"
    REDIS = "redis"
    RABBITMQ = "rabbitmq"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Job(BaseModel):
    """A unit of work: identity, routing type, typed payload and lifecycle fields."""

    model_config = ConfigDict(validate_assignment=False)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    name: str
    job_type: JobType = JobType.DEFAULT
    payload: JobSchema
    created_at: str = Field(default_factory=_utc_now)
    status: ExecutionStatus = ExecutionStatus.QUEUED
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    traceback: str | None = None
    dead_lettered: bool = False
    attempts: int = 0
    max_retries: int | None = None

    FORMAT_VERSION: ClassVar[int] = 1
