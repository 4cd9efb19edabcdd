"""Who may talk to the web view: loopback binds are open to this machine, others need a token.

- Bound to a loopback address (the default, 127.0.0.1), no token is needed unless one is given;
  the ``Host`` header must then name a loopback host, so a web page elsewhere cannot reach the
  server through DNS rebinding.
- Bound to any other address, a token is required: ``--token`` or one generated with
  `secrets.token_urlsafe`. Every request must carry it, as ``Authorization: Bearer <token>`` or
  ``?token=<token>`` (the pages keep it and send the header on their API calls). The comparison
  is constant-time.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import parse_qs

LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or "" (every interface)


def resolve_token(host: str, token: str | None) -> str | None:
    """The token the server will require: the given one, a new one off loopback, else none."""
    if token is not None:
        if not token.strip():
            raise ValueError("the token must not be empty")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(32)


def request_token(authorization: str | None, query: str) -> str | None:
    """The token a request presents, from its ``Authorization`` header or ``?token=``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    values = parse_qs(query, keep_blank_values=True).get("token")
    return values[-1] if values else None


def token_matches(expected: str, given: str | None) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def host_is_loopback(host_header: str | None) -> bool:
    """True when a request's ``Host`` header names a loopback host (any port)."""
    if not host_header:
        return False
    host = host_header.strip()
    if host.startswith("["):  # [::1]:8265
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return is_loopback(host)
