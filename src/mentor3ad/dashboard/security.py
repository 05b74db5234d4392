"""Who may see the dashboard: everyone on this machine when it listens on a loopback address; with an access
token (required when it listens on any other address) only browsers that present it.

The token comes as ``?token=T`` on the first visit (the server then sets an HttpOnly, SameSite=Strict
cookie for the page's own requests), as that cookie, or as ``Authorization: Bearer T``. Tokens are compared
in constant time. A request without it gets 401 and a one-line explanation.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
from typing import Optional

from ..errors import ConfigError

COOKIE = "mentor3ad_dashboard_token"
TOKEN_ENV = "MENTOR3AD_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 12


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: Optional[str]) -> Optional[str]:
    """The token to require (``token``, else $MENTOR3AD_DASHBOARD_TOKEN, else none); ConfigError when the
    host is not a loopback address and there is none, or when it is too short to guess safely."""
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if token is None:
        if not is_loopback(host):
            raise ConfigError(f"the dashboard listens on {host}, reachable from other machines: give an access token "
                              f"(--token or ${TOKEN_ENV}, at least {MIN_TOKEN_LENGTH} characters) or bind to 127.0.0.1")
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"the access token must have at least {MIN_TOKEN_LENGTH} characters")
    return token


def install_token_guard(server, token: Optional[str]) -> None:
    """Refuse every request of the Flask ``server`` that does not present ``token`` (nothing when None)."""
    if token is None:
        return
    from flask import Response, g, request

    expected = token.encode()

    def presented() -> str:
        header = request.headers.get("Authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else ""
        return request.args.get("token") or request.cookies.get(COOKIE) or bearer

    @server.before_request
    def check_token():
        if not hmac.compare_digest(presented().encode(), expected):
            return Response("mentor3ad dashboard: access token required (open the address with ?token=...)\n",
                            status=401, mimetype="text/plain")
        g.token_from_query = request.args.get("token") is not None
        return None

    @server.after_request
    def remember_token(response):
        if getattr(g, "token_from_query", False):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response


__all__ = ["is_loopback", "resolve_token", "install_token_guard", "COOKIE", "TOKEN_ENV"]
