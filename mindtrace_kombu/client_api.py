"""The queue API on the clients themselves, as the original Mindtrace jobs clients had it.

``client.declare_queue(...)``, ``client.publish(...)``, ``client.receive_message(...)`` and the
rest delegate to one :class:`~.core.QueueOperations` per client, the same core as the
Orchestrator's: no second copy of queue logic. Return shapes are the original's (status dicts
for declare, clean and delete); the semantics are this package's (``publish`` returns
``job.id``; a missing queue raises ``QueueNotFound``, a ``KeyError``). ``client.connection`` is
an object with ``close()``, as the original's attribute was.
"""

from __future__ import annotations

import threading

from .backends.base import Backend
from .core import QueueOperations
from .errors import ExchangeNotFound
from .models import Job
from .queues import QueueSpec

__all__ = ["ClientConnection", "ClientQueueAPI"]

Status = dict[str, str]


def _success(message: str) -> Status:
    return {"status": "success", "message": message}


class ClientConnection:
    """What ``client.connection`` is: ``close()`` releases the client's broker connections
    (the next call opens new ones)."""

    def __init__(self, client: ClientQueueAPI) -> None:
        self._client = client

    def close(self) -> None:
        self._client.close()

    def is_open(self) -> bool:
        """Whether the client holds broker connections (it opens them on first use)."""
        return self._client._operations is not None


class ClientQueueAPI:
    """Base of every client: the original clients' queue and exchange methods."""

    _operations: QueueOperations | None = None
    _operations_lock = threading.Lock()

    def open_backend(self) -> Backend:
        """Open this broker's backend (the seam every operation of the package goes through)."""
        raise NotImplementedError

    def check_supported(self, spec: QueueSpec) -> None:
        """Raise :class:`~.errors.UnsupportedQueueType` if this backend cannot provide ``spec``."""
        raise NotImplementedError

    @property
    def connection(self) -> ClientConnection:
        """An object with ``close()``, as the original clients' ``connection`` attribute."""
        return ClientConnection(self)

    @property
    def operations(self) -> QueueOperations:
        """The queue operations behind this client's methods, opened on first use."""
        with self._operations_lock:
            if self._operations is None:
                self._operations = QueueOperations(self)
            return self._operations

    def close(self) -> None:
        """Release the connections the client's own methods opened."""
        with self._operations_lock:
            operations, self._operations = self._operations, None
        if operations is not None:
            operations.close()

    # -- queues ------------------------------------------------------------------------------------

    def declare_queue(
        self, queue_name: str, queue_type: str = "fifo", *, max_priority: int | None = None, force: bool = False,
        exchange: str | None = None, routing_key: str | None = None, replicated: bool = False,
    ) -> Status:
        """Declare a queue (see ``Orchestrator.declare_queue``, also for ``replicated``); with
        ``exchange`` (RabbitMQ), also bind it to that exchange with ``routing_key`` (default: the
        queue's name)."""
        operations = self.operations
        if exchange is not None and not operations.exchange_exists(exchange):  # before the queue exists
            raise ExchangeNotFound(exchange)
        operations.declare_queue(queue_name, queue_type, max_priority=max_priority, force=force, replicated=replicated)
        if exchange is None:
            return _success(f"Queue '{queue_name}' declared successfully.")
        operations.bind_queue(queue_name, exchange, routing_key)
        return _success(f"Queue '{queue_name}' declared and bound to exchange '{exchange}' successfully.")

    def publish(
        self, queue_name: str, job: Job, priority: int | None = None, *,
        exchange: str | None = None, routing_key: str | None = None,
    ) -> str:
        """Publish ``job``; returns ``job.id`` (see ``Orchestrator.publish``)."""
        return self.operations.publish(queue_name, job, priority=priority, exchange=exchange, routing_key=routing_key)

    def receive_message(self, queue_name: str, block: bool = False, timeout: float | None = None) -> Job | None:
        """The next job, or None. ``block=True`` waits ``timeout`` seconds (forever if None)."""
        if not block or timeout is not None:
            return self.operations.receive_message(queue_name, timeout=timeout if block else None)
        while True:
            job = self.operations.receive_message(queue_name, timeout=_BLOCK_STEP)
            if job is not None:
                return job

    def count_queue_messages(self, queue_name: str) -> int:
        """Ready messages in the queue."""
        return self.operations.count_queue_messages(queue_name)

    def clean_queue(self, queue_name: str) -> Status:
        """Remove the ready messages."""
        removed = self.operations.clean_queue(queue_name)
        return _success(f"Cleaned queue '{queue_name}' ({removed} messages removed).")

    def delete_queue(self, queue_name: str) -> Status:
        """Delete the queue and its messages."""
        self.operations.delete_queue(queue_name)
        return _success(f"Deleted queue '{queue_name}'.")

    # -- exchanges (RabbitMQ; the other backends raise UnsupportedOperation, a NotImplementedError) ---

    def declare_exchange(
        self, exchange: str, exchange_type: str = "direct", durable: bool = True, auto_delete: bool = False
    ) -> Status:
        """Declare an exchange; declaring it again is a success too."""
        self.operations.declare_exchange(exchange, exchange_type, durable=durable, auto_delete=auto_delete)
        return _success(f"Exchange '{exchange}' declared successfully.")

    def delete_exchange(self, exchange: str) -> Status:
        """Delete an exchange (``ExchangeNotFound`` if there is none)."""
        self.operations.delete_exchange(exchange)
        return _success(f"Deleted exchange '{exchange}'.")

    def count_exchanges(self, *, exchange: str) -> int:
        """How many exchanges named ``exchange`` exist: 1 or 0."""
        return int(self.operations.exchange_exists(exchange))


_BLOCK_STEP = 1.0  # seconds of each wait of a receive_message(block=True) without a timeout
