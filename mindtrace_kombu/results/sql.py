"""The SQL result store, through SQLAlchemy: SQLite (one file shared by processes, no server),
PostgreSQL, or anything else SQLAlchemy supports. The table is created on first use, with
indexes for look-ups by id (the primary key), by queue and status, and by status, each newest
first. Every batch is one transaction (an executemany where it writes many rows); waiting reads
with a backoff.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from sqlalchemy import (
    Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text, bindparam, create_engine, event, insert,
    select, update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..models import ExecutionStatus, Job
from ..redis_store.records import JobRecord
from .base import CANCELLED, KEPT_ON_SAVE, MISSING, OUTCOME_COLUMNS, Outcome, ResultStore, read_record, unavailable

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
        Column("started_at", String(40)),
        Column("completed_at", String(40)),
        Column("error", Text),
        Column("traceback", Text),
        Column("output", Text),
        Column("dead_lettered", Boolean, nullable=False, default=False),
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

    @staticmethod
    def _row(queue: str, record: JobRecord, status: ExecutionStatus) -> dict[str, Any]:
        data = record.data.decode() if isinstance(record.data, bytes) else record.data
        return {"id": record.job_id, "queue": queue, "status": status.value, "attempts": record.attempts,
                "created": time.time(), "job": data}

    def _upsert(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert the rows, or rewrite the records that exist: their creation time and last
        error stay, the other outcome columns are cleared."""
        try:
            with connection.begin_nested():
                connection.execute(insert(self.table), list(rows))
            return
        except IntegrityError:
            pass  # some exist (a retry's copy, a republished job): one at a time
        cleared = {name: None for name in OUTCOME_COLUMNS if name not in KEPT_ON_SAVE} | {"dead_lettered": False}
        for row in rows:
            values = {**{key: value for key, value in row.items() if key not in ("id", "created")}, **cleared}
            if not connection.execute(update(self.table).where(self.table.c.id == row["id"]).values(values)).rowcount:
                connection.execute(insert(self.table), [row])

    def save(self, queue: str, records: Sequence[JobRecord], status: ExecutionStatus = ExecutionStatus.QUEUED) -> None:
        with self._begin() as connection:
            self._upsert(connection, [self._row(queue, record, status) for record in records])

    def start(self, queue: str, job_ids: Sequence[str], started_at: str) -> list[int]:
        c = self.table.c
        statement = (
            update(self.table).where(c.id.in_(job_ids), c.status != _CANCELLED)
            .values(status=_RUNNING, attempts=c.attempts + 1, started_at=started_at).returning(c.id, c.attempts)
        )
        with self._begin() as connection:
            attempts = {row.id: int(row.attempts) for row in connection.execute(statement)}
            others = [job_id for job_id in job_ids if job_id not in attempts]
            if others:
                cancelled = set(connection.execute(select(c.id).where(c.id.in_(others))).scalars())
                attempts.update((job_id, CANCELLED if job_id in cancelled else MISSING) for job_id in others)
        return [attempts[job_id] for job_id in job_ids]

    def finish(self, queue: str, outcomes: Sequence[Outcome]) -> None:
        c = self.table.c
        statement = update(self.table).where(c.id == bindparam("job_id")).values(
            status=bindparam("new_status"), completed_at=bindparam("new_completed_at"), error=bindparam("new_error"),
            traceback=bindparam("new_traceback"), output=bindparam("new_output"),
            dead_lettered=bindparam("new_dead_lettered"),
        )
        rows = [{"job_id": outcome.job_id, "new_status": outcome.status.value,
                 **{f"new_{name}": value for name, value in outcome.columns().items() if name != "dead_lettered"},
                 "new_dead_lettered": outcome.dead_lettered} for outcome in outcomes]
        with self._begin() as connection:
            connection.execute(statement, rows)

    def cancel(self, job_id: str) -> bool:
        c = self.table.c
        with self._begin() as connection:
            statement = update(self.table).where(c.id == job_id, c.status == _QUEUED).values(status=_CANCELLED)
            return bool(connection.execute(statement).rowcount)

    def _columns(self) -> list[Any]:
        c = self.table.c
        return [c.job, c.status, c.attempts, *(c[name] for name in OUTCOME_COLUMNS)]

    @staticmethod
    def _job(row: Any) -> Job:
        columns = {name: getattr(row, name) for name in OUTCOME_COLUMNS}
        columns["dead_lettered"] = "1" if columns["dead_lettered"] else None
        return read_record(row.job, row.status, row.attempts, columns)

    def get(self, job_id: str) -> Job | None:
        with self._begin() as connection:
            row = connection.execute(select(*self._columns()).where(self.table.c.id == job_id)).first()
        return None if row is None else self._job(row)

    def list(self, queue: str | None, status: ExecutionStatus | None, limit: int) -> list[Job]:
        c = self.table.c
        statement = select(*self._columns()).order_by(c.created.desc()).limit(limit)
        if queue is not None:
            statement = statement.where(c.queue == queue)
        if status is not None:
            statement = statement.where(c.status == status.value)
        with self._begin() as connection:
            rows = connection.execute(statement).all()
        return [self._job(row) for row in rows]

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
