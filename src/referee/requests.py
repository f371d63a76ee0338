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
``send`` runs every attempt of a call through the policy; each attempt is
the plain ``HTTPAdapter.send`` with the caller's *timeout*, *verify*,
*cert*, *proxies* and *stream*.  urllib3's own ``Retry`` is switched off
(``Retry(0, read=False)``): the policy is the only thing that retries.

The adapter only translates: requests' responses to snapshots, requests'
(and urllib3's) exceptions to the portable failure words; the driver does
the rest.

- A response no rule matches is returned untouched: without a snapshot when
  no rule names its status, without the driver when the rules that do name
  it do not match (a 200 that is not ``ongoing``).
- With ``stream=False`` (requests' default), requests reads every body it
  returns right after the adapter; the adapter reads the bodies of the
  responses it decides on itself, so that a body that breaks half-way is a
  ``read`` failure the policy sees, and the connection of an abandoned
  response goes back to the pool.  With ``stream=True`` a body is read only
  when a rule looks into it (and it is not declared longer than the
  policy's ``body_limit``); the caller can still read it afterwards, since
  requests keeps what it read.
- A request is sent again only if its body can be: bytes, str or none.  A
  generator or file body is not re-sent, and the error says why.
- Only the final response reaches requests' session: the cookies and hooks
  of abandoned attempts are not applied.  A redirect is a new call through
  the adapter, decided on its own.
"""

from __future__ import annotations

import time
from http.client import HTTPException, IncompleteRead, RemoteDisconnected
from typing import TYPE_CHECKING, Final, TypeAlias

import urllib3.exceptions as u3
from requests import exceptions as rex
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.util.retry import Retry as _Urllib3Retry

from ._core.engine import NO_MATCH, decide
from ._core.snapshot import Snapshot
from ._core.state import FIRST_ATTEMPT
from ._files.watch import PolicyWatcher
from ._run.drivers import admit_sync, run_sync, settle_plain


if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from requests import PreparedRequest, Response

    from ._core.compile import Policy
    from ._core.decisions import PollRequest
    from ._core.state import CallOutcome


__all__ = ["OUTCOME_ATTRIBUTE", "PolicyAdapter"]

#: Where a response returned instead of an exception carries its
#: :class:`~referee.CallOutcome`: ``response.referee_outcome``.
OUTCOME_ATTRIBUTE: Final = "referee_outcome"

# The types of HTTPAdapter.send's arguments, as requests declares them.
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

_NOT_REPLAYABLE: Final = (
    "its body was a stream ({kind}) that has been consumed; pass the body "
    "as bytes or str (data=...) to let referee re-send it"
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


#: The attribute on a PreparedRequest that caps its send's timeouts.
_BOUND: Final = "_referee_timeout_cap"


def _bounded(timeout: Timeout, cap: float | None) -> Timeout:
    """
    *timeout* (a number, a (connect, read) pair, or None) with each part at
    most *cap*.
    """
    if cap is None:
        return timeout
    if isinstance(timeout, tuple):
        connect, read = timeout
        return (
            cap if connect is None else min(connect, cap),
            cap if read is None else min(read, cap),
        )
    if timeout is None:
        return cap
    return min(float(timeout), cap)


class _Exchange:
    """
    What the driver needs to know about requests.
    """

    def snapshot(
        self, request: PreparedRequest, response: Response
    ) -> Snapshot:
        # The body is read only if a rule looks into it (unless the adapter
        # read it already); requests keeps it, so the caller can read it
        # afterwards.
        return Snapshot(
            response.status_code,
            None,
            request.method or "GET",
            request.url or "",
            response.headers,
            request.headers,  # type: ignore[arg-type]
            None,
            _loader(response),
            response.status_code,
        )

    def failure(self, exc: BaseException) -> str | None:
        return _failure_word(exc)

    def method_url(self, request: PreparedRequest) -> tuple[str, str]:
        return request.method or "GET", request.url or ""

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

    def replayable(self, request: PreparedRequest) -> str | None:
        body = request.body
        if body is None or isinstance(body, bytes | str):
            return None
        return _NOT_REPLAYABLE.format(kind=type(body).__name__)

    def bound(
        self, request: PreparedRequest, seconds: float
    ) -> PreparedRequest:
        """
        *request*, marked so that its send's timeouts are at most
        *seconds* (what is left of the deadline).
        """
        setattr(request, _BOUND, seconds)
        return request

    def close(self, response: Response) -> None:
        response.close()


def _loader(response: Response) -> Callable[[], bytes | None]:
    def load() -> bytes | None:
        return response.content

    return load


def _attach(response: Response, outcome: CallOutcome) -> None:
    setattr(response, OUTCOME_ATTRIBUTE, outcome)


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
        "rng",
    ]

    def __init__(
        self,
        policy: Policy | PolicyWatcher,
        *,
        raise_on_abort: bool = True,
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
        self.rng = rng
        self._exchange = _Exchange()

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
            return super(PolicyAdapter, self).send(
                req,
                stream=stream,
                timeout=_bounded(timeout, getattr(req, _BOUND, None)),
                verify=verify,
                cert=cert,
                proxies=proxies,
            )

        policy = self.policy
        if type(policy) is PolicyWatcher:
            policy = policy.current
        url = request.url or ""
        if policy.breakers or policy.rate_limit is not None:
            admit_sync(policy, request.method or "GET", url)
        try:
            first = send_once(request)
        except Exception as exc:
            if _failure_word(exc) is None:
                raise
            return self._run(policy, request, exc, send_once, stream=stream)
        # The success path: a status no rule names is returned without a
        # snapshot, a decision or a header look-up; one that rules name but
        # do not match (a 200 that is not `ongoing`) after one decision,
        # without the driver.
        if not policy.index.get(first.status_code, policy.fallback):
            if policy.settles:
                settle_plain(policy, lambda: url, time.time())
            return first
        try:
            _read_if_needed(policy, request, first, stream=stream)
        except Exception as exc:
            if _failure_word(exc) is None:
                raise
            return self._run(policy, request, exc, send_once, stream=stream)
        snap = self._exchange.snapshot(request, first)
        if decide(policy, snap, FIRST_ATTEMPT, now=0.0) is NO_MATCH:
            if policy.settles:
                settle_plain(policy, lambda: url, time.time())
            return first
        return self._run(policy, request, first, send_once, stream=stream)

    def _run(
        self,
        policy: Policy,
        request: PreparedRequest,
        first: Response | Exception,
        send_once: Callable[[PreparedRequest], Response],
        *,
        stream: bool,
    ) -> Response:
        pending = [first]

        def send(req: PreparedRequest) -> Response:
            if pending:
                got = pending.pop()
                if isinstance(got, Exception):
                    raise got
                # Its body was read (or not) before the first decision.
                return got
            response = send_once(req)
            _read_if_needed(policy, req, response, stream=stream)
            return response

        return run_sync(
            policy,
            request,
            send,
            self._exchange,
            raise_on_abort=self.raise_on_abort,
            rng=self.rng,
            on_finish=None if self.raise_on_abort else _attach,
            first_sent=True,
        )


def _read_if_needed(
    policy: Policy,
    request: PreparedRequest,
    response: Response,
    *,
    stream: bool,
) -> None:
    """
    Read the body before deciding: always without *stream* (requests would
    read it right after), else when a candidate rule looks into it and it
    is not declared longer than the policy parses.  A body that cannot be
    read closes the response and raises what requests raised.
    """
    if stream:
        rules = policy.candidates(response.status_code, request.method)
        if not any(r.needs_body for r in rules):
            return
        declared = response.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > policy.body_limit
        ):
            return
    try:
        response.content  # noqa: B018 - read, and kept by requests
    except Exception:
        response.close()
        raise
