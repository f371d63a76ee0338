"""
A library-neutral view of one outcome: a response, or a transport failure.

Adapters build a :class:`Snapshot` from their HTTP client's objects; the
engine reads nothing else.  Everything costly is lazy: the response headers
are the client's own case-insensitive mapping, read only when a candidate
rule names a header, and the body may be given as a loader that the engine
calls only when a candidate rule looks into the body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import attrs


__all__ = [
    "FAILURES",
    "IDEMPOTENT_METHODS",
    "NO_HEADERS",
    "CIHeaders",
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


class CIHeaders(dict[str, str]):
    """
    A small case-insensitive header mapping, for tests and adapters whose
    client has none.  Keys are stored lower-cased.
    """

    __slots__ = ()

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__()
        if items:
            for k, v in items.items():
                dict.__setitem__(self, k.lower(), v)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, key.lower(), default)


NO_HEADERS: Final[Mapping[str, str]] = CIHeaders()


@attrs.frozen
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
        headers: The response headers: any mapping whose ``get`` is
            case-insensitive (httpx, requests and aiohttp all have one;
            :class:`CIHeaders` otherwise).
        request_headers: The request headers, likewise.
        body: The response body, if it has been read already.
        load_body: Reads the body when a rule needs it; used when *body* is
            None.  It may be called at most once per decision.
    """

    status: int | None
    failure: str | None = None
    method: str = "GET"
    url: str = ""
    headers: Mapping[str, str] = NO_HEADERS
    request_headers: Mapping[str, str] = NO_HEADERS
    body: bytes | None = None
    load_body: Callable[[], bytes | None] | None = attrs.field(
        default=None, eq=False, repr=False
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
            status=status,
            failure=None,
            method=method.upper(),
            url=url,
            headers=_ci(headers),
            request_headers=_ci(request_headers),
            body=body.encode() if isinstance(body, str) else body,
            load_body=load_body,
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
            status=None,
            failure=failure,
            method=method.upper(),
            url=url,
            request_headers=_ci(request_headers),
        )


def _ci(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    if not headers:
        return NO_HEADERS
    if type(headers) is dict:
        return CIHeaders(headers)
    return headers
