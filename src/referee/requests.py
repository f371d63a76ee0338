"""
referee for requests: a transport adapter to mount on a session.

::

    import requests
    import referee
    from referee.requests import PolicyAdapter

    session = requests.Session()
    adapter = PolicyAdapter(referee.load_policy("enrow"))
    session.mount("https://", adapter)
    session.mount("http://", adapter)

    found = session.get(
        "https://api.enrow.io/email/find/single",
        params={"id": search_id},
        headers={"x-api-key": key},
        timeout=10,
    ).json()               # polled until the search is no longer ongoing

:class:`PolicyAdapter` is an :class:`requests.adapters.HTTPAdapter` whose
``send`` hands every call to the runner (``referee._run.runner``), which
runs the flow; each attempt is the plain ``HTTPAdapter.send`` with the
caller's *timeout*, *verify*, *cert*, *proxies* and *stream*.  urllib3's
own ``Retry`` is switched off (``Retry(0, read=False)``): the policy is the
only thing that retries.

The adapter only translates — requests' responses to snapshots, requests'
(and urllib3's) exceptions to the portable failure words, a body read in
chunks back into the response.

- A response whose status no rule names (when nothing in the state must
  hear of it) is ``HTTPAdapter.send``'s very response, its body unread.
- A body is read to decide only when a candidate rule looks into it, up to
  the policy's ``body_limit``, within the time the call has left; never an
  event stream unless a rule opts in.  What was read is given back, decoded
  as requests decodes it (gzip and the rest): ``response.content``,
  ``iter_content()``, ``iter_lines()`` and, with ``stream=True``,
  ``response.raw.read(decode_content=True)`` and ``raw.stream()`` see the
  whole body, and the rest of a body left unread still arrives as it
  comes.  The body of a response the call aborts on is read too, briefly,
  for the error's message.  Every other body is left to requests: with
  ``stream=False`` (its default) it reads the body right after the
  adapter, and a body that breaks then raises requests' own exception,
  which no rule decides on.
- A request is sent again with its body: bytes or str as they are, a file
  (or ``BytesIO``) rewound to where it started, as requests rewinds it for
  a redirect; a multipart form (``files=``) is bytes already.  A
  generator's body cannot be: the call ends with
  :class:`referee.NotReplayable`.
- A re-send's timeouts are cut to what is left of the deadline.
- Only the final response reaches requests' session: the cookies and hooks
  of abandoned attempts are not applied.  A redirect is a new call through
  the adapter, decided on its own.
"""

from __future__ import annotations

import io
from http.client import HTTPException, IncompleteRead, RemoteDisconnected
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import urllib3.exceptions as u3
from requests import exceptions as rex
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import rewind_body
from urllib3.response import BaseHTTPResponse, HTTPResponse
from urllib3.util import Timeout as Urllib3Timeout
from urllib3.util.retry import Retry as _Urllib3Retry

from ._core.compile import Policy
from ._core.snapshot import Snapshot
from ._run.runner import Runner


if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterator

    from requests import PreparedRequest, Response
    from urllib3 import HTTPHeaderDict
    from urllib3.connection import HTTPConnection

    from ._core.decisions import PollRequest
    from ._core.state import CallOutcome
    from ._files.watch import PolicyWatcher


__all__ = ["OUTCOME_ATTRIBUTE", "PolicyAdapter"]

#: Where a response returned instead of an exception carries its
#: :class:`~referee.CallOutcome`: ``response.referee_outcome``.
OUTCOME_ATTRIBUTE: Final = "referee_outcome"

# The types of HTTPAdapter.send's arguments, as requests declares them
# (at run time it takes a urllib3 Timeout too).
Timeout: TypeAlias = float | tuple[float | None, float | None] | None
Verify: TypeAlias = bool | str
Cert: TypeAlias = str | tuple[str, str] | None

# Headers that describe a body: dropped when a poll changes the method and
# sends no body.
_CONTENT_HEADERS: Final = (
    "content-length",
    "content-type",
    "transfer-encoding",
)

# Headers that describe a body as it came over the wire: dropped from the
# raw response that gives back a body read to decide, which it gives
# decoded (nothing must decode it twice, or count it against the wire's
# length).
_WIRE_HEADERS: Final = (
    "content-encoding",
    "content-length",
    "transfer-encoding",
)

#: The most a body read to decide takes in one chunk (urllib3's own).
_CHUNK: Final = 2**16

_NOT_REPLAYABLE: Final = (
    "its body was a stream ({kind}) that the first send consumed; pass "
    "the body as bytes, str or a file (data=...) to let referee send it "
    "again"
)


def _failure_word(exc: BaseException) -> str | None:
    """
    The portable word for an exception ``HTTPAdapter.send`` (or reading a
    response body) raised, or None when it is not a transport failure.

    requests wraps urllib3's exceptions: a refused connection is a
    ``ConnectionError`` around a ``MaxRetryError`` whose ``reason`` is a
    ``NewConnectionError``; a server hanging up is a ``ConnectionError``
    around ``ProtocolError('Connection aborted.', RemoteDisconnected())``;
    an answer that is not HTTP is the same with a ``BadStatusLine``.
    """
    # ConnectTimeout is also a ConnectionError: test it first.  A TLS
    # handshake or a proxy that fails never reached the server.
    if isinstance(exc, rex.ConnectTimeout | rex.SSLError | rex.ProxyError):
        return "connect"
    if isinstance(exc, rex.ReadTimeout):
        return "timeout"
    if isinstance(exc, rex.ChunkedEncodingError):
        return "read"
    if isinstance(exc, rex.ContentDecodingError):
        return "protocol"
    # requests checks the caller's headers before the adapter; inside it,
    # InvalidHeader is urllib3's verdict on the server's (Content-Length).
    if isinstance(exc, rex.InvalidHeader):
        return "protocol" if isinstance(_arg(exc), u3.InvalidHeader) else None
    if isinstance(exc, rex.ConnectionError):
        return _cause(_arg(exc))
    return None


def _arg(exc: BaseException) -> object:
    return exc.args[0] if exc.args else None


def _cause(reason: object) -> str | None:
    """
    The word for what a requests ``ConnectionError`` wraps.
    """
    if isinstance(reason, u3.MaxRetryError):
        reason = reason.reason
    # NameResolutionError is a NewConnectionError, which is a
    # ConnectTimeoutError: all three never reached the server.
    if isinstance(reason, u3.ConnectTimeoutError | ConnectionRefusedError):
        return "connect"
    if isinstance(reason, u3.ReadTimeoutError):
        return "timeout"
    if isinstance(reason, u3.ProtocolError):
        inner = reason.args[1] if len(reason.args) > 1 else None
        # RemoteDisconnected is a BadStatusLine: a server that hangs up
        # before answering is a broken read in every adapter, not a
        # protocol error.  A body cut short is a broken read too.
        if isinstance(inner, RemoteDisconnected | IncompleteRead):
            return "read"
        if isinstance(inner, HTTPException):
            return "protocol"
        return "read"
    if isinstance(reason, OSError):
        return "read"
    return None


#: The attribute of a re-sent PreparedRequest (a copy: the caller's is
#: never marked) that caps its send's timeouts, in seconds.
_BOUND: Final = "_referee_timeout_cap"


def _bounded(timeout: Timeout, cap: float | None) -> Timeout:
    """
    *timeout* (a number, a (connect, read) pair, a urllib3 ``Timeout``, or
    None) with each part at most *cap*.
    """
    if cap is None:
        return timeout
    if isinstance(timeout, Urllib3Timeout):
        timeout = (
            _seconds(timeout.connect_timeout),
            _seconds(timeout.read_timeout),
        )
    if isinstance(timeout, tuple):
        connect, read = timeout
        return (
            cap if connect is None else min(connect, cap),
            cap if read is None else min(read, cap),
        )
    if timeout is None:
        return cap
    return min(float(timeout), cap)


def _seconds(part: object) -> float | None:
    # A urllib3 Timeout's part: seconds, None, or its "socket default".
    return float(part) if isinstance(part, int | float) else None


def _rewinds(request: PreparedRequest) -> bool:
    """
    Whether *request*'s body is a file requests can rewind to where it
    started (it noted the position when it prepared the request).
    """
    body = request.body
    position = request._body_position  # noqa: SLF001 - requests' own note
    if not isinstance(position, int) or not hasattr(body, "seek"):
        return False
    seekable = getattr(body, "seekable", None)
    try:
        return seekable is None or bool(seekable())
    except (OSError, ValueError):  # a closed file
        return False


class _Exchange:
    """
    requests, translated for the blocking runner.
    """

    def method_url(
        self, request: PreparedRequest
    ) -> tuple[str, Callable[[], str]]:
        return request.method or "GET", (request.url or "").__str__

    def status(self, response: Response) -> int:
        return response.status_code

    def snapshot(
        self, request: PreparedRequest, response: Response
    ) -> Snapshot:
        # A body requests holds already is handed over; a stream (requests
        # has read nothing yet) is left for the flow.
        return Snapshot(
            response.status_code,
            method=request.method or "GET",
            url=request.url or "",
            headers=response.headers,
            request_headers=request.headers,  # type: ignore[arg-type]
            body=_held(response),
        )

    def exception_snapshot(
        self, request: PreparedRequest, exc: Exception
    ) -> Snapshot | None:
        word = _failure_word(exc)
        if word is None:
            return None
        return Snapshot.failed(
            word,
            method=request.method or "GET",
            url=request.url or "",
            request_headers=request.headers,  # type: ignore[arg-type]
        )

    def poll_request(
        self, request: PreparedRequest, poll: PollRequest
    ) -> PreparedRequest:
        polled = request.copy()
        polled.prepare_url(poll.url, None)
        if poll.method != request.method:
            polled.method = poll.method
            headers = CaseInsensitiveDict(request.headers)
            for name in _CONTENT_HEADERS:
                headers.pop(name, None)
            polled.headers = headers
            polled.body = None
            polled._body_position = None  # noqa: SLF001 - no body to rewind
        return polled

    def with_header(
        self, request: PreparedRequest, name: str, value: str
    ) -> PreparedRequest:
        if name not in request.headers:
            request.headers[name] = value
        return request

    def replayable(self, request: PreparedRequest) -> str | None:
        body = request.body
        if body is None or isinstance(body, bytes | str) or _rewinds(request):
            return None
        return _NOT_REPLAYABLE.format(kind=type(body).__name__)

    def arrived(self, response: Response, limit: int) -> bytes | None:
        # A body requests holds already is in the snapshot; urllib3 shows
        # no buffered body without reading it.
        return None

    def attach(self, response: Response, outcome: CallOutcome) -> None:
        setattr(response, OUTCOME_ATTRIBUTE, outcome)

    def request_header(
        self, request: PreparedRequest, name: str
    ) -> str | None:
        value = request.headers.get(name)
        return value.decode("latin-1") if isinstance(value, bytes) else value

    def advise(
        self, response: Response, headers: tuple[tuple[str, str], ...]
    ) -> None:
        for name, value in headers:
            response.headers[name] = value

    def prepare(
        self, request: PreparedRequest, *, time_left: float | None
    ) -> PreparedRequest:
        if _rewinds(request):
            rewind_body(request)
        if time_left is None:
            return request
        # A copy carries the cap, so the caller's request is never marked
        # (it may be sent again, by another call).
        capped = request.copy()
        setattr(capped, _BOUND, time_left)
        return capped

    def chunks(self, response: Response) -> Iterator[bytes]:
        raw = response.raw
        # urllib3's own class first: isinstance on an ABC-registered base
        # costs two calls.
        if type(raw) is not HTTPResponse and not isinstance(
            raw, BaseHTTPResponse
        ):
            # Not urllib3's (a stub's file object): requests reads it
            # whole, and keeps it.
            yield response.content
            return
        # read1 gives what has arrived, decoded, without waiting for a
        # whole chunk; its failures become requests' own, as in
        # Response.iter_content.
        try:
            while chunk := raw.read1(_CHUNK, decode_content=True):
                yield chunk
        except u3.ProtocolError as exc:
            raise rex.ChunkedEncodingError(exc) from exc
        except u3.DecodeError as exc:
            raise rex.ContentDecodingError(exc) from exc
        except u3.ReadTimeoutError as exc:
            raise rex.ConnectionError(exc) from exc
        except u3.SSLError as exc:
            raise rex.SSLError(exc) from exc

    def restore(
        self,
        response: Response,
        head: list[bytes],
        rest: Iterator[bytes] | None,
    ) -> bytes | None:
        if response._content_consumed:  # noqa: SLF001 - requests read it itself
            return _held(response) if rest is None else None
        raw: BaseHTTPResponse = response.raw
        if rest is None:
            body = b"".join(head)
            response._content = body  # noqa: SLF001 - as requests keeps it
            response._content_consumed = True  # noqa: SLF001
            response.raw = _Later(raw, body)
            raw.release_conn()
            return body
        # The rest is nothing but more read1 calls on the same raw, which
        # keep nothing of their own: the replay makes them itself, so that
        # they fail with urllib3's exceptions, as the bare raw's do.
        response.raw = _Replay(raw, head)
        return None

    def close(self, response: Response) -> None:
        raw = response.raw
        if getattr(raw, "length_remaining", None) == 0:
            # Nothing is left to read (an empty body): reading that
            # nothing gives the connection back to the pool, where closing
            # the response unread would close it.
            raw.drain_conn()
        response.close()
        # requests leaves the raw response of a body it holds open: let go
        # of a replay's bytes too.
        raw.close()


def _held(response: Response) -> bytes | None:
    """
    The body requests has read already, or None.
    """
    content = response._content  # noqa: SLF001 - no public way to ask
    if response._content_consumed and isinstance(content, bytes):  # noqa: SLF001
        return content
    return None


def _decoded(headers: HTTPHeaderDict) -> HTTPHeaderDict:
    """
    *headers*, for a raw response that gives its body decoded.
    """
    found = headers.copy()
    for name in _WIRE_HEADERS:
        found.discard(name)
    return found


def _replayed(raw: BaseHTTPResponse, body: bytes) -> HTTPResponse:
    """
    A raw response standing for *raw*, whose body (decoded) was *body*.
    """
    return HTTPResponse(
        io.BytesIO(body),
        headers=_decoded(raw.headers),
        status=raw.status,
        version=raw.version,
        version_string=raw.version_string,
        reason=raw.reason,
        preload_content=False,
        # The session takes its cookies from the raw response's.
        original_response=getattr(raw, "_original_response", None),
        msg=getattr(raw, "msg", None),
        request_url=raw.url,
        retries=raw.retries,
    )


class _Later:
    """
    The raw response of a body read whole, made only if someone asks for
    it: requests (with ``stream=False``, its default) hands the caller
    ``content`` and never reads ``raw`` again, and a urllib3 response
    costs more to build than the rest of the call's overhead.  What the
    session reads of ``raw`` at once (the cookies' original response) is
    here without building it.
    """

    def __init__(self, original: BaseHTTPResponse, body: bytes) -> None:
        self._original = original
        self._body = body
        self._made: HTTPResponse | None = None
        # The session takes its cookies from the raw response's.
        self._original_response = getattr(original, "_original_response", None)

    def _raw(self) -> HTTPResponse:
        if self._made is None:
            self._made = _replayed(self._original, self._body)
        return self._made

    def release_conn(self) -> None:
        if self._made is not None:
            self._made.release_conn()

    def close(self) -> None:
        if self._made is not None:
            self._made.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw(), name)


class _Replay(BaseHTTPResponse):
    """
    The raw response of a body whose start was read to decide: the chunks
    read (decoded), then the rest of the original as it arrives.

    ``read1`` and ``stream`` (what ``Response.iter_content`` reads) give
    what has come without waiting to fill their size, so an event stream
    keeps flowing to the caller; ``read(amt)`` waits for *amt* bytes, as
    urllib3's does.  The rest comes decoded, so ``decode_content`` makes
    no difference.
    """

    def __init__(self, original: BaseHTTPResponse, head: list[bytes]) -> None:
        self.original = original
        super().__init__(
            headers=_decoded(original.headers),
            status=original.status,
            version=original.version,
            version_string=original.version_string,
            reason=original.reason,
            decode_content=True,
            request_url=original.url,
            retries=original.retries,
        )
        self.length_remaining = None
        # The session takes its cookies from the raw response's.
        self._original_response = getattr(original, "_original_response", None)
        self._head = bytearray(b"".join(head))
        self._body: bytes | None = None

    def read1(
        self, amt: int | None = None, decode_content: bool | None = None
    ) -> bytes:
        if not self._head:
            return self.original.read1(amt, decode_content=True) or b""
        size = len(self._head) if amt is None or amt < 0 else amt
        data = bytes(self._head[:size])
        del self._head[:size]
        return data

    def read(
        self,
        amt: int | None = None,
        decode_content: bool | None = None,
        cache_content: bool = False,
    ) -> bytes:
        left = None if amt is None or amt < 0 else amt
        parts: list[bytes] = []
        while left is None or left > 0:
            data = self.read1(left)
            if not data:
                break
            parts.append(data)
            if left is not None:
                left -= len(data)
        return b"".join(parts)

    def stream(
        self, amt: int | None = _CHUNK, decode_content: bool | None = None
    ) -> Iterator[bytes]:
        while data := self.read1(amt):
            yield data

    def read_chunked(
        self, amt: int | None = None, decode_content: bool | None = None
    ) -> Iterator[bytes]:
        return self.stream(amt)

    @property
    def data(self) -> bytes:
        if self._body is None:
            self._body = self.read()
        return self._body

    @property
    def url(self) -> str | None:
        return self.original.url

    @url.setter
    def url(self, url: str | None) -> None:
        self.original.url = url

    @property
    def connection(self) -> HTTPConnection | None:
        return self.original.connection  # type: ignore[return-value]

    @property
    def closed(self) -> bool:
        return not self._head and self.original.closed

    def readable(self) -> bool:
        return True

    def release_conn(self) -> None:
        self.original.release_conn()

    def drain_conn(self) -> None:
        self._head.clear()
        self.original.drain_conn()

    def shutdown(self) -> None:
        self.original.shutdown()

    def close(self) -> None:
        self._head.clear()
        self.original.close()


class PolicyAdapter(HTTPAdapter):
    """
    A requests transport adapter that enforces *policy* on every request
    sent through it.

    Args:
        policy: The compiled policy, or a :class:`~referee.PolicyWatcher`
            (each call runs under the policy current when it starts).
        raise_on_abort: When False, an abort returns the last response
            instead of raising; ``response.referee_outcome`` holds the
            :class:`~referee.CallOutcome` and its trail.
        sdk: The client belongs to a vendor SDK that retries on its own
            (openai, anthropic, stripe): the policy is then the only
            retry layer (the docs' *Vendor SDKs* page).
        rng: The source of jitter.
        pool_connections: As for :class:`~requests.adapters.HTTPAdapter`.
        pool_maxsize: Likewise.
        pool_block: Likewise.

    There is no *max_retries*: the policy does the retrying, and urllib3
    is told not to (``Retry(0, read=False)``).
    """

    __attrs__ = [  # noqa: RUF012 - HTTPAdapter's pickling list, extended
        *HTTPAdapter.__attrs__,
        "policy",
        "raise_on_abort",
        "sdk",
        "rng",
    ]

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        *,
        raise_on_abort: bool = True,
        sdk: bool = False,
        rng: random.Random | None = None,
        pool_connections: int = 10,
        pool_maxsize: int = 10,
        pool_block: bool = False,
    ) -> None:
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=_Urllib3Retry(0, read=False),
            pool_block=pool_block,
        )
        self.policy = policy
        self.raise_on_abort = raise_on_abort
        self.sdk = sdk
        self.rng = rng
        self._runner = self._new_runner()

    def _new_runner(self) -> Runner[PreparedRequest, Response]:
        return Runner(
            _Exchange(),
            raise_on_abort=self.raise_on_abort,
            sdk=getattr(self, "sdk", False),  # pickled before there was one
            rng=self.rng,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._runner = self._new_runner()

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Timeout = None,
        verify: Verify = True,
        cert: Cert = None,
        proxies: dict[str, str] | None = None,
    ) -> Response:
        """
        Send *request* as the policy says: once, or again and again until
        the policy accepts or aborts.

        Raises:
            referee.Aborted: The policy aborted (when *raise_on_abort*).
            requests.RequestException: A failure no rule handles, as
                requests raised it.
        """

        def send_once(req: PreparedRequest) -> Response:
            cap = getattr(req, _BOUND, None)  # a re-send's
            return super(PolicyAdapter, self).send(
                req,
                stream=stream,
                timeout=timeout if cap is None else _bounded(timeout, cap),
                verify=verify,
                cert=cert,
                proxies=proxies,
            )

        policy = self.policy
        return self._runner.call(
            policy if type(policy) is Policy else policy.current,
            request,
            send_once,
        )
