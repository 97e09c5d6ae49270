"""Choosing a result store by URL, as Celery's ``result_backend``.

=============================================  ===============================================
URL                                            store
=============================================  ===============================================
``memory://[name]``                            in-process (:mod:`.memory`)
``redis://…``, ``rediss://…`` (``?ttl=S``,     Redis (:mod:`.redis`); records expire after
``&prefix=``, ``&global_keyprefix=``)          ``ttl`` seconds (default 24 h)
``sqlite:///path``, ``postgresql://…``,        SQL through SQLAlchemy (:mod:`.sql`);
anything SQLAlchemy reads (``?table=NAME``)    ``db+`` (Celery's spelling) is accepted
=============================================  ===============================================

Without a URL: the local backend gets the in-process store of its broker id, Redis the broker's
own Redis and namespace (records written by the publish script; on Redis Cluster, where a batch's
records span slots, saved before the publish), RabbitMQ none.
"""

from __future__ import annotations

import os
from typing import Literal, Mapping, Union
from urllib.parse import parse_qsl, urlencode, urlsplit

from kombu.utils.url import maybe_sanitize_url

from ..clients import Client, LocalClient, RedisClient
from ..redis_store import DEFAULT_PREFIX, Namespace
from .base import DEFAULT_TTL, ResultStore
from .memory import MemoryResultStore
from .redis import RedisResultStore

__all__ = ["RESULT_BACKEND_VARIABLE", "Results", "choose_result_store", "default_result_store", "result_backend_from_env", "result_store_from_url"]

#: Environment variable naming the result store.
RESULT_BACKEND_VARIABLE = "MINDTRACE_RESULT_BACKEND"


def result_backend_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``MINDTRACE_RESULT_BACKEND``, or None."""
    return (os.environ if environ is None else environ).get(RESULT_BACKEND_VARIABLE) or None


def _pop_query(url: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Take this package's options out of a URL's query string; the rest stays as written
    (``sqlite:////abs/path`` keeps its slashes)."""
    head, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    options = {key: value for key, value in pairs if key in names}
    rest = urlencode([(key, value) for key, value in pairs if key not in names])
    return f"{head}?{rest}" if rest else head, options


def result_store_from_url(url: str, *, connect_timeout: float = 5.0) -> ResultStore:
    """The result store a URL names (table above).

    Raises:
        ValueError: an unsupported scheme. ImportError: SQL without SQLAlchemy (``pip install
        mindtrace-kombu[sql]``).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryResultStore(urlsplit(url).netloc + urlsplit(url).path.strip("/") or "default")
    if scheme in ("redis", "rediss"):
        import redis

        server, options = _pop_query(url, ("ttl", "prefix", "global_keyprefix"))
        namespace = Namespace(options.get("global_keyprefix", ""), options.get("prefix", DEFAULT_PREFIX))
        client = redis.Redis.from_url(server, socket_connect_timeout=connect_timeout, socket_timeout=connect_timeout + 1)
        return RedisResultStore(client, namespace, url=str(maybe_sanitize_url(url)),
                                ttl=float(options.get("ttl", DEFAULT_TTL)))
    if scheme in ("amqp", "amqps", "pyamqp", "rpc", ""):
        raise ValueError(f"unsupported result backend {maybe_sanitize_url(url)!r}: use memory://, redis://, "
                         "sqlite:///PATH or a SQLAlchemy URL (postgresql://...)")
    from .sql import SqlResultStore  # SQLAlchemy is an optional extra: imported only for SQL URLs

    sql_url, options = _pop_query(url.removeprefix("db+"), ("table",))
    if sql_url.startswith("postgresql://") or sql_url.startswith("postgres://"):
        sql_url = "postgresql+psycopg://" + sql_url.split("://", 1)[1]
    return SqlResultStore(sql_url, connect_timeout=connect_timeout, **options)


def default_result_store(client: Client) -> ResultStore | None:
    """The store of a client without a configured one: in-process for the local backend, the
    broker's own Redis (records in the publish script; on Redis Cluster saved before the
    publish), none for RabbitMQ."""
    if isinstance(client, LocalClient):
        return MemoryResultStore(client.broker_id)
    if isinstance(client, RedisClient):
        return RedisResultStore(client.redis_client(), client.namespace, url=client.url, ttl=client.result_expires,
                                shares_broker=True)
    return None


#: A result store, its URL, None (``MINDTRACE_RESULT_BACKEND``, else the broker's default) or False (none).
Results = Union[ResultStore, str, None, Literal[False]]


def choose_result_store(client: Client, results: Results) -> ResultStore | None:
    """The store ``results`` names for ``client`` (see :data:`Results`)."""
    if results is False:
        return None
    if results is None:
        results = result_backend_from_env()
        if results is None:
            return default_result_store(client)
    if isinstance(results, str):
        return result_store_from_url(results, connect_timeout=client.connect_timeout)
    return results
