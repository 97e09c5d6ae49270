"""mindtrace-kombu: pydantic jobs on Kombu, one Orchestrator API over in-process, Redis and RabbitMQ."""

from . import serialization as _serialization  # registers the Kombu serializer
from .clients import Client, LocalClient, RabbitMQClient, RedisClient, client_from_url
from .errors import (
    BrokerUnavailable,
    InvalidPriority,
    InvalidQueueName,
    JobDecodeError,
    JobsError,
    QueueAlreadyExists,
    QueueNotFound,
    QueueTypeMismatch,
    UnsupportedQueueType,
)
from .models import (
    QUEUE_MAPPING,
    BackendType,
    ExecutionStatus,
    Job,
    JobInput,
    JobOutput,
    JobSchema,
    JobType,
)
from .orchestrator import Orchestrator
from .queues import QueueSpec, QueueType

__version__ = "0.1.0"

__all__ = [
    # orchestration
    "Orchestrator",
    # clients
    "Client",
    "LocalClient",
    "RabbitMQClient",
    "RedisClient",
    "client_from_url",
    # models
    "BackendType",
    "ExecutionStatus",
    "Job",
    "JobInput",
    "JobOutput",
    "JobSchema",
    "JobType",
    "QUEUE_MAPPING",
    "QueueSpec",
    "QueueType",
    # errors
    "BrokerUnavailable",
    "InvalidPriority",
    "InvalidQueueName",
    "JobDecodeError",
    "JobsError",
    "QueueAlreadyExists",
    "QueueNotFound",
    "QueueTypeMismatch",
    "UnsupportedQueueType",
]
