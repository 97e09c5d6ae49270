"""Who may see the dashboard and which form posts are genuine.

- **Token authentication** (optional): with a token configured, every request must carry it, as
  ``Authorization: Bearer <token>`` or as the session cookie the login form sets. The cookie holds
  an HMAC of the token, not the token itself, and is ``HttpOnly`` and ``SameSite=Strict``.
- **CSRF**: each browser session gets a random token in a cookie; every form repeats it in a
  hidden field, and a POST is honoured only when both are present and equal
  (``hmac.compare_digest``). A page of another origin can neither read the cookie nor set it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

__all__ = ["AUTH_COOKIE", "CSRF_COOKIE", "CSRF_FIELD", "Authenticator", "csrf_matches", "new_csrf_token", "parse_cookies", "set_cookie"]

AUTH_COOKIE = "mindtrace_dashboard_session"
CSRF_COOKIE = "mindtrace_dashboard_csrf"
CSRF_FIELD = "csrf"
_SESSION_CONTEXT = b"mindtrace-dashboard-session"


def new_csrf_token() -> str:
    """A fresh per-session CSRF token (256 random bits)."""
    return secrets.token_urlsafe(32)


def csrf_matches(cookie: str | None, field: str | None) -> bool:
    """Whether a form's CSRF field repeats the session's CSRF cookie (constant-time)."""
    if not cookie or not field:
        return False
    return hmac.compare_digest(cookie.encode(), field.encode())


def parse_cookies(header: str | None) -> dict[str, str]:
    """The cookies of a ``Cookie`` header; a malformed header counts as none."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header or "")
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def set_cookie(name: str, value: str, *, max_age: int | None = None) -> str:
    """A ``Set-Cookie`` value: ``HttpOnly``, ``SameSite=Strict``, whole site."""
    attributes = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        attributes.append(f"Max-Age={max_age}")
    return "; ".join(attributes)


class Authenticator:
    """Checks requests against the configured token; without a token everyone is let in."""

    def __init__(self, token: str | None) -> None:
        self.required = bool(token)
        self._token = (token or "").encode()
        self._session = hmac.new(self._token, _SESSION_CONTEXT, hashlib.sha256).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is the token (constant-time)."""
        return self.required and hmac.compare_digest(candidate.encode(), self._token)

    @property
    def session_cookie(self) -> str:
        """The session cookie's value once the token was given (an HMAC of the token)."""
        return self._session

    def allows(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """Whether a request with these headers and cookies may see the dashboard."""
        if not self.required:
            return True
        scheme, _, credential = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(credential.strip()):
            return True
        return hmac.compare_digest(cookies.get(AUTH_COOKIE, "").encode(), self._session.encode())
