"""
What the flow needs to know about response bodies, as pure functions:
whether one may be read to decide, where an event stream's first event
ends, and the API's own error message in a body.

Rule 1: nothing here reads a body; the runners do, when the flow asks.
Rule 2: a body that is not what is expected (not JSON, not an event
stream) gives None, never an exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson


if TYPE_CHECKING:
    from collections.abc import Mapping


__all__ = [
    "DETAIL_MAX",
    "api_detail",
    "declared_too_long",
    "event_data",
    "event_ended",
    "is_event_stream",
]

#: The longest API message carried into an exception's text, in
#: characters; the whole body stays on the exception.
DETAIL_MAX: Final = 200

# Where APIs put their message, most specific first: OpenAI and Anthropic
# (error.message), Stripe (error.message), GitHub (message), RFC 9457
# problem details (detail, title), OAuth 2.0 (error_description, error),
# and lists of errors (errors[0].message).
_PATHS: Final[tuple[tuple[str | int, ...], ...]] = (
    ("error", "message"),
    ("error", "detail"),
    ("message",),
    ("detail",),
    ("error_description",),
    ("errors", 0, "message"),
    ("errors", 0, "detail"),
    ("error",),
    ("title",),
)


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """
    Whether a response with *headers* is a server-sent event stream
    (``Content-Type: text/event-stream``, WHATWG HTML §9.2).
    """
    kind = headers.get("content-type")
    return kind is not None and kind.lstrip().lower().startswith(
        "text/event-stream"
    )


def declared_too_long(headers: Mapping[str, str], limit: int) -> bool:
    """
    Whether the response declares a ``Content-Length`` above *limit*: such
    a body is not read to decide (it could match no body rule anyway).
    """
    declared = headers.get("content-length")
    return (
        declared is not None and declared.isdigit() and int(declared) > limit
    )


def event_ended(buffer: bytes) -> bool:
    """
    Whether *buffer*, the start of an event stream, holds a whole event:
    a blank line ends one (``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``).
    """
    return b"\n\n" in buffer or b"\r\n\r\n" in buffer or b"\r\r" in buffer


def event_data(stream: bytes) -> bytes | None:
    """
    The data of the first event in *stream* that has any: its ``data:``
    lines joined by newlines, as an EventSource would dispatch it.  None
    when no whole event with data is there.
    """
    text = stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for block in text.split(b"\n\n")[:-1]:
        data = [
            line[5:].removeprefix(b" ")
            for line in block.split(b"\n")
            if line.startswith(b"data:")
        ]
        if data:
            return b"\n".join(data)
    return None


def api_detail(body: bytes | None) -> str | None:
    """
    The API's own error message in *body*, on one line and at most
    :data:`DETAIL_MAX` characters; None when the body has none.

    A JSON body gives the first string found at the usual places
    (``error.message``, ``message``, ``detail``, ``error_description``,
    ``errors[0].message``, ``error``, ``title``); a short plain-text body
    gives itself; anything else gives None.
    """
    if not body:
        return None
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _plain(body)
    for path in _PATHS:
        found = _at(doc, path)
        if isinstance(found, str) and found.strip():
            return _one_line(found)
    return None


def _at(doc: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(doc, list) or len(doc) <= step:
                return None
        elif not isinstance(doc, dict):
            return None
        doc = doc[step] if isinstance(step, int) else doc.get(step)
    return doc


def _plain(body: bytes) -> str | None:
    # A short text answer ("Service Unavailable") says what happened; an
    # HTML error page or binary does not.
    if len(body) > DETAIL_MAX or body.lstrip()[:1] == b"<":
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _one_line(text) if text.strip().isprintable() else None


def _one_line(text: str) -> str | None:
    line = " ".join(text.split())
    if not line:
        return None
    if len(line) > DETAIL_MAX:
        return line[: DETAIL_MAX - 1] + "…"
    return line
