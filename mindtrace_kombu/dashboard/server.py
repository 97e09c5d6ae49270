"""The dashboard's HTTP server: the standard library's ``ThreadingHTTPServer`` feeding
:class:`~.app.Dashboard`, with security headers on every answer."""

from __future__ import annotations

import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from .app import Dashboard, Request, Response
from .sampling import Sampler
from .security import parse_cookies

if TYPE_CHECKING:
    from ..orchestrator import Orchestrator

__all__ = ["DashboardServer"]

logger = logging.getLogger(__name__)

#: Largest form body read (the dashboard's forms are a few fields).
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "mindtrace-dashboard"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(self.server.dashboard.handle(self._request(form={})))

    def do_HEAD(self) -> None:
        self._answer(self.server.dashboard.handle(self._request(form={})), body=False)

    def do_POST(self) -> None:
        declared = self.headers.get("Content-Length") or "0"
        length = int(declared) if declared.isdigit() else -1
        if not 0 <= length <= MAX_FORM_BYTES:
            self._answer(Response(HTTPStatus.BAD_REQUEST, "a form of at most 64 KiB is expected", "text/plain; charset=utf-8"))
            return
        form = dict(parse_qsl(self.rfile.read(length).decode("utf-8", errors="replace")))
        self._answer(self.server.dashboard.handle(self._request(form=form)))

    def _request(self, form: dict[str, str]) -> Request:
        url = urlsplit(self.path)
        return Request(
            method="GET" if self.command == "HEAD" else self.command,
            path=url.path,
            query=dict(parse_qsl(url.query)),
            form=form,
            headers={name: value for name, value in self.headers.items()},
            cookies=parse_cookies(self.headers.get("Cookie")),
        )

    def _answer(self, response: Response, *, body: bool = True) -> None:
        data = response.body.encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (*SECURITY_HEADERS, *response.headers):
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        logger.info("%s %s", self.address_string(), format % args)


class DashboardServer(ThreadingHTTPServer):
    """Serves the dashboard of ``orchestrator`` on ``(host, port)`` (port 0: any free one) and
    samples its queues every ``interval`` seconds while it runs; the queues page reloads every
    ``refresh`` seconds. ``read_only`` and ``token``: see :class:`~.app.Dashboard`.

    ``serve_forever()`` runs it (``shutdown()`` from another thread ends it); :meth:`close` then
    stops sampling and releases the socket.
    """

    daemon_threads = True

    def __init__(
        self, orchestrator: Orchestrator, host: str = "127.0.0.1", port: int = 8080, *, read_only: bool = False,
        token: str | None = None, interval: float = 5.0, refresh: int = 5,
    ) -> None:
        self.sampler = Sampler(orchestrator, interval=interval)
        self.dashboard = Dashboard(orchestrator, self.sampler, read_only=read_only, token=token, refresh=refresh)
        super().__init__((host, port), _Handler)
        self.sampler.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    def close(self) -> None:
        """Stop sampling and release the socket."""
        self.sampler.stop()
        self.server_close()
