"""The dashboard as a function of a request: authentication, CSRF, routing and the actions.

Independent of sockets (:mod:`.server` feeds it): :meth:`Dashboard.handle` takes a
:class:`Request` and returns a :class:`Response`. Actions (requeue, purge) are POSTs only,
reached through their confirmation page, checked for the CSRF token and refused in read-only mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import (
    BrokerUnavailable,
    InvalidArgument,
    InvalidQueueName,
    JobsError,
    QueueNotFound,
    ResultsNotConfigured,
)
from ..models import Job
from ..queues import dead_letter_queue_name
from .assets import STYLESHEET, STYLESHEET_PATH
from .data import queue_rows, workers_or_none
from .layout import href, page
from .pages import (
    ACTIONS,
    confirm_body,
    dead_letters_body,
    dead_letters_index_body,
    job_body,
    login_body,
    message_body,
    queues_body,
    workers_body,
)
from .sampling import Sampler
from .security import (
    AUTH_COOKIE,
    CSRF_COOKIE,
    CSRF_FIELD,
    Authenticator,
    csrf_matches,
    new_csrf_token,
    set_cookie,
)

if TYPE_CHECKING:
    from ..orchestrator import Orchestrator

__all__ = ["Dashboard", "Request", "Response"]

#: Dead letters listed on a queue's page.
DEAD_LETTER_LIMIT = 100


@dataclass(frozen=True)
class Request:
    """What the dashboard reads of an HTTP request."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Response:
    """Status, body and headers of an answer (``Set-Cookie`` may repeat)."""

    status: int
    body: str = ""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _redirect(location: str) -> Response:
    return Response(303, headers=[("Location", location)])


def _csrf_ok(request: Request) -> bool:
    """Whether a POST's CSRF field repeats its session's CSRF cookie."""
    return csrf_matches(request.cookies.get(CSRF_COOKIE), request.form.get(CSRF_FIELD))


@dataclass(frozen=True)
class _Context:
    """One request as the handlers see it: the request and its session's CSRF token."""

    request: Request
    csrf: str


class Dashboard:
    """The web dashboard of one orchestrator.

    Args:
        orchestrator: the broker to show.
        sampler: samples its queues (started and stopped by the caller).
        read_only: hide the actions and refuse them (403).
        token: require this token on every request (login form or ``Authorization: Bearer``).
        refresh: seconds between reloads of the queues page.
    """

    def __init__(
        self, orchestrator: Orchestrator, sampler: Sampler, *, read_only: bool = False, token: str | None = None,
        refresh: int = 5,
    ) -> None:
        self.orchestrator = orchestrator
        self.sampler = sampler
        self.read_only = read_only
        self.auth = Authenticator(token)
        self.refresh = refresh
        self._get: dict[str, Callable[[_Context], Response]] = {
            "/": lambda context: _redirect("/queues"),
            "/queues": self._queues,
            "/workers": self._workers,
            "/jobs": self._job,
            "/dead-letters": self._dead_letters,
            "/dead-letters/confirm": self._confirm,
        }
        self._post: dict[str, Callable[[_Context], Response]] = {
            f"/dead-letters/{action}": self._action for action in ACTIONS
        }

    # -- the request pipeline ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer ``request``; a new session gets its CSRF cookie with the answer."""
        csrf = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        response = self._dispatch(_Context(request, csrf))
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.headers.append(("Set-Cookie", set_cookie(CSRF_COOKIE, csrf)))
        return response

    def _dispatch(self, context: _Context) -> Response:
        request = context.request
        if request.path == STYLESHEET_PATH:
            return Response(200, STYLESHEET, "text/css; charset=utf-8")
        if request.path == "/login":
            return self._login(context)
        if not self.auth.allows(request.headers, request.cookies):
            return self._login_page(context, 401, failed=False)
        routes = self._post if request.method == "POST" else self._get
        handler = routes.get(request.path)
        if handler is None:
            allowed = [method for method, table in (("GET", self._get), ("POST", self._post)) if request.path in table]
            if allowed:
                return self._message(405, "Method not allowed", f"{request.path} answers {' and '.join(allowed)} only.",
                                     headers=[("Allow", ", ".join(allowed))])
            return self._message(404, "Not found", f"There is no page {request.path}.")
        if request.method == "POST" and not _csrf_ok(request):
            return self._csrf_refusal()
        try:
            return handler(context)
        except BrokerUnavailable as exc:
            return self._message(503, "Broker unavailable", str(exc))
        except (InvalidArgument, InvalidQueueName) as exc:
            return self._message(400, "Bad request", str(exc))
        except QueueNotFound as exc:
            return self._message(404, "Not found", str(exc))
        except JobsError as exc:
            return self._message(500, "Broker error", f"{type(exc).__name__}: {exc}")

    def _html(self, status: int, title: str, body: str, *, active: str | None = None, refresh: int | None = None,
              headers: list[tuple[str, str]] | None = None, public: bool = False) -> Response:
        """A page; a ``public`` one (seen before signing in) names neither the broker nor the pages."""
        broker = None if public else self.orchestrator.client.url
        return Response(status, page(title, body, active=active, broker=broker, refresh=refresh), headers=headers or [])

    def _message(self, status: int, title: str, message: str, headers: list[tuple[str, str]] | None = None,
                 public: bool = False) -> Response:
        return self._html(status, title, message_body(message), headers=headers, public=public)

    def _csrf_refusal(self) -> Response:
        return self._message(
            403, "Forbidden", "The form's CSRF token does not match this session: reload the page and try again.",
            public=True,
        )

    # -- authentication ----------------------------------------------------------------------------

    def _login_page(self, context: _Context, status: int, *, failed: bool) -> Response:
        headers = [("WWW-Authenticate", 'Bearer realm="mindtrace-dashboard"')] if status == 401 else []
        return self._html(status, "Sign in", login_body(context.csrf, failed), headers=headers, public=True)

    def _login(self, context: _Context) -> Response:
        request = context.request
        if not self.auth.required:
            return _redirect("/queues")
        if request.method != "POST":
            return self._login_page(context, 200, failed=False)
        if not _csrf_ok(request):
            return self._csrf_refusal()
        if not self.auth.token_matches(request.form.get("token", "")):
            return self._login_page(context, 401, failed=True)
        response = _redirect("/queues")
        response.headers.append(("Set-Cookie", set_cookie(AUTH_COOKIE, self.auth.session_cookie)))
        return response

    # -- pages -------------------------------------------------------------------------------------

    def _queues(self, context: _Context) -> Response:
        body = queues_body(self.sampler.sample(), self.sampler.interval)
        return self._html(200, "Queues", body, active="/queues", refresh=self.refresh)

    def _workers(self, context: _Context) -> Response:
        workers = workers_or_none(self.orchestrator)
        body = workers_body(workers, [] if workers is not None else queue_rows(self.orchestrator))
        return self._html(200, "Workers", body, active="/workers")

    def _job(self, context: _Context) -> Response:
        job_id = context.request.query.get("id", "").strip()
        job: Job | None = None
        problem = None
        if job_id:
            try:
                job = self.orchestrator.get_job(job_id)
            except ResultsNotConfigured:
                problem = "No result store is configured for this broker, so jobs cannot be looked up " \
                          "(start the dashboard with MINDTRACE_RESULT_BACKEND set)."
        return self._html(200 if job or not job_id else 404, "Job look-up", job_body(job_id, job, problem), active="/jobs")

    def _dead_letters(self, context: _Context) -> Response:
        query = context.request.query
        queue = query.get("queue")
        if not queue:
            body = dead_letters_index_body(queue_rows(self.orchestrator))
            return self._html(200, "Dead letters", body, active="/dead-letters")
        letters = self.orchestrator.dead_letters(queue, limit=DEAD_LETTER_LIMIT)
        done = next(((past, query[action]) for action, (_, _, past) in ACTIONS.items() if action in query), None)
        notice = None if done is None else f"{done[0].capitalize()} {done[1]} dead letter(s)."
        body = dead_letters_body(queue, letters, self.read_only, notice)
        return self._html(200, f"Dead letters of {queue}", body, active="/dead-letters")

    def _on_dead_letters(self, queue: str, operation: Callable[[str], int]) -> int:
        """``operation`` on ``queue``'s dead-letter queue; 0 if nothing was ever dead-lettered."""
        try:
            return operation(dead_letter_queue_name(queue))
        except QueueNotFound:
            return 0

    def _refuse_if_read_only(self) -> Response | None:
        if self.read_only:
            return self._message(403, "Read-only", "This dashboard is read-only: actions are disabled.")
        return None

    def _confirm(self, context: _Context) -> Response:
        query = context.request.query
        queue, action = query.get("queue", ""), query.get("action", "")
        refusal = self._refuse_if_read_only()
        if refusal is not None:
            return refusal
        if not queue or action not in ACTIONS:
            return self._message(400, "Bad request", "Name a queue and an action (requeue or purge).")
        body = confirm_body(queue, action, self._on_dead_letters(queue, self.orchestrator.count_queue_messages), context.csrf)
        return self._html(200, f"{ACTIONS[action][0]} dead letters of {queue}?", body, active="/dead-letters")

    def _action(self, context: _Context) -> Response:
        refusal = self._refuse_if_read_only()
        if refusal is not None:
            return refusal
        request = context.request
        action = request.path.rsplit("/", 1)[1]
        queue = request.form.get("queue", "")
        if not queue:
            return self._message(400, "Bad request", "Name a queue.")
        if action == "requeue":
            done = self.orchestrator.requeue_dead_letters(queue)
        else:
            done = self._on_dead_letters(queue, self.orchestrator.clean_queue)
        return _redirect(href("/dead-letters", queue=queue, **{action: done}))
