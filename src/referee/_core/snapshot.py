"""
A library-neutral view of one outcome: a response, or a transport failure.

Adapters build a :class:`Snapshot` from their HTTP client's objects; the
engine reads nothing else.  Everything costly is lazy: the response headers
are looked up only when a candidate rule names a header, and the body may be
given as a loader that the engine calls only when a candidate rule looks
into the body.

A snapshot is a value: never change one.  It is not ``attrs.frozen``
because a frozen instance costs three times as much to make, on the hot path
of every response.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import attrs

from .redact import redact_url


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


__all__ = [
    "FAILURES",
    "IDEMPOTENT_METHODS",
    "NO_HEADERS",
    "Snapshot",
]

#: The portable words for transport failures.
#:
#: - ``connect``: the request never reached the server (refused, DNS, TLS
#:   handshake, connect timeout): safe to retry whatever the method.
#: - ``timeout``: the request was sent and no answer came in time.
#: - ``read``: the connection broke while the response was being read.
#: - ``protocol``: the server answered something that is not valid HTTP.
FAILURES: Final = frozenset({"connect", "timeout", "read", "protocol"})

#: RFC 9110 §9.2.2: methods whose intended effect is the same when repeated.
IDEMPOTENT_METHODS: Final = frozenset(
    {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}
)


#: An empty header mapping.
NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


def _url_repr(url: str | None) -> str:
    return repr(None if url is None else redact_url(url))


def _names_repr(headers: Mapping[str, str]) -> str:
    try:
        return f"<headers {sorted(str(k).lower() for k in headers)}>"
    except Exception:  # noqa: BLE001 - a repr must not raise
        return "<headers>"


def _body_repr(body: bytes | None) -> str:
    return "None" if body is None else f"<{len(body)} bytes>"


@attrs.define(eq=True, init=False)
class Snapshot:
    """
    One outcome of one attempt.

    Exactly one of *status* and *failure* is set.

    Attributes:
        status: The response's status code, or None after a transport
            failure.
        failure: One of :data:`FAILURES`, or None for a response.
        method: The request's method, upper case.
        url: The request's full URL.
        headers: The response headers: a mapping whose ``get`` answers
            for lower-case names (a dict with lower-case keys, or the
            case-insensitive mappings of httpx, requests and aiohttp).
        request_headers: The request headers, likewise.
        body: The response body, if it has been read already.
        load_body: Reads the body when a rule needs it; used when *body* is
            None.  It may be called at most once per decision.
        key: *status*, or *failure* when there is no status: what the
            policy's index is keyed by.
        url_from: Computes the URL when *url* is None.
    """

    status: int | None
    failure: str | None = None
    method: str = "GET"
    # The repr never shows a secret: the URL is redacted, headers show their
    # names only, the body its size.
    _url: str | None = attrs.field(default="", alias="url", repr=_url_repr)
    headers: Mapping[str, str] = attrs.field(
        default=NO_HEADERS, repr=_names_repr
    )
    request_headers: Mapping[str, str] = attrs.field(
        default=NO_HEADERS, repr=_names_repr
    )
    body: bytes | None = attrs.field(default=None, repr=_body_repr)
    load_body: Callable[[], bytes | None] | None = attrs.field(
        default=None, eq=False, repr=False
    )
    key: int | str | None = attrs.field(default=None, eq=False, repr=False)
    url_from: Callable[[], str] | None = attrs.field(
        default=None, eq=False, repr=False
    )

    # Written out rather than generated: attrs' __init__ would call a
    # post-init hook for *key*, a second call on every response.
    def __init__(
        self,
        status: int | None,
        failure: str | None = None,
        method: str = "GET",
        url: str | None = "",
        headers: Mapping[str, str] = NO_HEADERS,
        request_headers: Mapping[str, str] = NO_HEADERS,
        body: bytes | None = None,
        load_body: Callable[[], bytes | None] | None = None,
        key: int | str | None = None,
        url_from: Callable[[], str] | None = None,
    ) -> None:
        self.status = status
        self.failure = failure
        self.method = method
        self._url = url
        self.headers = headers
        self.request_headers = request_headers
        self.body = body
        self.load_body = load_body
        self.key = (
            key if key is not None else (failure if status is None else status)
        )
        self.url_from = url_from

    @property
    def url(self) -> str:
        """
        The request's URL; with *url_from* (and ``url=None``), computed on
        first use, because turning a client's URL object into a string
        costs more than most decisions.
        """
        url = self._url
        if url is None:
            url = self._url = self.url_from() if self.url_from else ""
        return url

    def with_body(self, body: bytes | None) -> Snapshot:
        """
        This snapshot with *body* (a new one: snapshots are values).
        """
        return Snapshot(
            self.status,
            self.failure,
            self.method,
            self._url,
            self.headers,
            self.request_headers,
            body,
            None,
            self.key,
            self.url_from,
        )

    @classmethod
    def response(
        cls,
        status: int,
        *,
        method: str = "GET",
        url: str = "",
        headers: Mapping[str, str] | None = None,
        request_headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        load_body: Callable[[], bytes | None] | None = None,
    ) -> Snapshot:
        """
        A snapshot of a response; plain dicts of headers are made
        case-insensitive.
        """
        return cls(
            status,
            None,
            method.upper(),
            url,
            _lower(headers),
            _lower(request_headers),
            body.encode() if isinstance(body, str) else body,
            load_body,
            status,
        )

    @classmethod
    def failed(
        cls,
        failure: str,
        *,
        method: str = "GET",
        url: str = "",
        request_headers: Mapping[str, str] | None = None,
    ) -> Snapshot:
        """
        A snapshot of a transport failure.

        Raises:
            ValueError: *failure* is not one of :data:`FAILURES`.
        """
        if failure not in FAILURES:
            msg = (
                f"unknown failure {failure!r}; expected one of "
                f"{', '.join(sorted(FAILURES))}"
            )
            raise ValueError(msg)
        return cls(
            None,
            failure,
            method.upper(),
            url,
            NO_HEADERS,
            _lower(request_headers),
            None,
            None,
            failure,
        )


def _lower(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    if not headers:
        return NO_HEADERS
    if type(headers) is dict:
        return {k.lower(): v for k, v in headers.items()}
    return headers
