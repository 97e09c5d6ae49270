"""The SQL result store, through SQLAlchemy: SQLite (one file shared by processes, no server),
PostgreSQL, or anything else SQLAlchemy supports. The table is created on first use, with
indexes for look-ups by id (the primary key), by queue and status, and by status, each newest
first. Every state change is one statement in one transaction; waiting reads with a backoff.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from sqlalchemy import (
    Column, Float, Index, Integer, MetaData, String, Table, Text, create_engine, event, insert, select, update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..models import ExecutionStatus, Job
from .base import ResultStore, decode_record, encode_job, unavailable

__all__ = ["DEFAULT_TABLE", "SqlResultStore"]

DEFAULT_TABLE = "mindtrace_jobs"
_QUEUED, _RUNNING, _CANCELLED = (status.value for status in
                                 (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED))


def _table(name: str) -> Table:
    table = Table(
        name, MetaData(),
        Column("id", String(64), primary_key=True),
        Column("queue", String(255), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created", Float, nullable=False),
        Column("job", Text, nullable=False),
    )
    Index(f"{name}_queue_status", table.c.queue, table.c.status, table.c.created)
    Index(f"{name}_status", table.c.status, table.c.created)
    Index(f"{name}_created", table.c.created)
    return table


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    """Several processes on one file: write-ahead log, and wait for a writer's lock."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class SqlResultStore(ResultStore):
    """Job records in one table (``table``, default ``mindtrace_jobs``) of a SQLAlchemy database.

    Args:
        url: a SQLAlchemy URL (``sqlite:///jobs.db``, ``postgresql+psycopg://...``).
        table: the table's name (created with its indexes on first use).
    """

    def __init__(self, url: str, *, table: str = DEFAULT_TABLE, connect_timeout: float = 5.0) -> None:
        parsed = make_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            args["connect_timeout"] = max(1, int(connect_timeout))
        self.engine: Engine = create_engine(parsed, pool_pre_ping=True, connect_args=args)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.table = _table(table)
        self._created = False

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A transaction; the table is created on first use. Driver errors become
        :class:`~..errors.ResultStoreUnavailable`."""
        try:
            if not self._created:
                self.table.metadata.create_all(self.engine, checkfirst=True)
                self._created = True
            with self.engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise unavailable(self.url, exc) from exc

    def _row(self, queue: str, job: Job, attempts: int) -> dict[str, Any]:
        return {"id": job.id, "queue": queue, "status": job.status.value, "attempts": attempts,
                "created": time.time(), "job": encode_job(job)}

    def _upsert(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the rows, or update the records that exist (keeping their creation time)."""
        try:
            with connection.begin_nested():
                connection.execute(insert(self.table), list(rows))
            return
        except IntegrityError:
            pass  # some exist (a retry's copy, a republished job): one at a time
        for row in rows:
            values = {key: value for key, value in row.items() if key not in ("id", "created")}
            if not connection.execute(update(self.table).where(self.table.c.id == row["id"]).values(values)).rowcount:
                connection.execute(insert(self.table), [row])

    def save(self, queue: str, jobs: Sequence[Job]) -> None:
        with self._begin() as connection:
            self._upsert(connection, [self._row(queue, job, job.attempts) for job in jobs])

    def start(self, queue: str, job: Job) -> int | None:
        c = self.table.c
        statement = (
            update(self.table).where(c.id == job.id, c.status != _CANCELLED)
            .values(status=_RUNNING, attempts=c.attempts + 1, job=encode_job(job)).returning(c.attempts)
        )
        with self._begin() as connection:
            attempts = connection.execute(statement).scalar()
            if attempts is not None:
                return int(attempts)
            if connection.execute(select(c.status).where(c.id == job.id)).scalar() == _CANCELLED:
                return None
            self._upsert(connection, [self._row(queue, job, job.attempts)])  # published without a record
            return job.attempts

    def finish(self, queue: str, job: Job) -> None:
        c = self.table.c
        with self._begin() as connection:
            done = connection.execute(
                update(self.table).where(c.id == job.id).values(status=job.status.value, job=encode_job(job))
            ).rowcount
            if not done:
                self._upsert(connection, [self._row(queue, job, job.attempts)])

    def cancel(self, job_id: str) -> bool:
        c = self.table.c
        with self._begin() as connection:
            statement = update(self.table).where(c.id == job_id, c.status == _QUEUED).values(status=_CANCELLED)
            return bool(connection.execute(statement).rowcount)

    def get(self, job_id: str) -> Job | None:
        c = self.table.c
        with self._begin() as connection:
            row = connection.execute(select(c.job, c.status, c.attempts).where(c.id == job_id)).first()
        return None if row is None else decode_record(row.job, row.status, row.attempts)

    def list(self, queue: str | None, status: ExecutionStatus | None, limit: int) -> list[Job]:
        c = self.table.c
        statement = select(c.job, c.status, c.attempts).order_by(c.created.desc()).limit(limit)
        if queue is not None:
            statement = statement.where(c.queue == queue)
        if status is not None:
            statement = statement.where(c.status == status.value)
        with self._begin() as connection:
            rows = connection.execute(statement).all()
        return [decode_record(row.job, row.status, row.attempts) for row in rows]

    def forget(self, job_id: str) -> bool:
        with self._begin() as connection:
            return bool(connection.execute(self.table.delete().where(self.table.c.id == job_id)).rowcount)

    def drop(self) -> None:
        """Drop the table (tests, tear-down)."""
        with self._begin() as connection:
            self.table.drop(connection, checkfirst=True)
        self._created = False

    def close(self) -> None:
        self.engine.dispose()
