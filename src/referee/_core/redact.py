"""
Secrets never reach a log line, an error message, an alert or a trail.

Pure helpers: the URL with its credential-bearing query parameters and
userinfo masked, and the names of headers whose values are never shown.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit


__all__ = ["REDACTED", "SECRET_HEADERS", "SECRET_PARAMS", "redact_url"]

REDACTED: Final = "REDACTED"

#: Headers whose values are credentials (lower case).
SECRET_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "auth-token",
        "x-auth-token",
        "x-access-token",
        "x-app-key",
    }
)

#: Query parameters whose values are credentials (lower case).
SECRET_PARAMS: Final = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "key",
        "token",
        "access_token",
        "auth",
        "auth_token",
        "password",
        "secret",
        "client_secret",
        "signature",
        "sig",
    }
)

_PARAM: Final = re.compile(r"([^&=;]+)=([^&;]*)")


def redact_url(url: str) -> str:
    """
    *url* with secret query values and any userinfo replaced by
    ``REDACTED``.  Never raises: an unparsable URL is redacted whole.
    """
    if "?" not in url and "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = _PARAM.sub(
        lambda m: (
            f"{m.group(1)}={REDACTED}"
            if m.group(1).lower() in SECRET_PARAMS
            else m.group(0)
        ),
        parts.query,
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
