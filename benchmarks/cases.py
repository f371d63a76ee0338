"""
The comparisons: what referee does on the hot path, beside what its peers
(or the physical floor of CPython) do for the same question.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

import attrs
import orjson
from urllib3 import HTTPResponse
from urllib3.util import Retry as Urllib3Retry

import referee
from referee import AttemptState, Snapshot, decide


if TYPE_CHECKING:
    from collections.abc import Callable


@attrs.frozen
class Comparison:
    key: str
    title: str
    target: str
    contenders: Callable[[], dict[str, Callable[[], Any]]]
    #: When set, the contender whose time is subtracted from every other's:
    #: the ratios are then of overheads, not of times.
    baseline: str | None = None


#: The physical-limit lines, timed beside referee.
LIMIT_LOOKUP = "limit: a bare function with one dict.get"
LIMIT_SEARCH = "limit: one byte search of the body"
LIMIT_PARSE = "limit: one byte search + orjson.loads + dict.get"

NOW = 1_700_000_000.0
STATE = AttemptState(started=NOW)

#: A ~300-byte Enrow finder result: what most 200s under the enrow policy
#: look like.
ENROW_VALID = json.dumps(
    {
        "id": "6f9c1c8e-3f7a-4f0e-9a53-2b1d4c5e6f70",
        "email": "john.doe@example.com",
        "qualification": "valid",
        "info": {
            "first_name": "John",
            "last_name": "Doe",
            "company_name": "Example Inc",
            "company_domain": "example.com",
            "linkedin": "https://www.linkedin.com/in/johndoe",
        },
        "custom": {"crm_id": "12345", "list": "q3-outbound"},
    }
).encode()
#: The same size, still running: the rule must parse to be sure, and
#: matches (a poll is decided).
ENROW_PARSE = ENROW_VALID.replace(b'"valid"', b'"ongoing"')


def _floor() -> dict[str, Callable[[], Any]]:
    table = {200: None}

    def bare(status: int) -> Any:
        return table.get(status)

    policy = referee.load_policy("http-default")
    snap = Snapshot.response(200)
    retry = Urllib3Retry(total=3, status_forcelist=[500, 502, 503, 504])
    return {
        "referee decide (200, http-default)": lambda: decide(
            policy, snap, STATE, now=NOW
        ),
        LIMIT_LOOKUP: lambda: bare(200),
        "urllib3 Retry.is_retry('GET', 200)": lambda: retry.is_retry(
            "GET", 200
        ),
    }


def _retry_after() -> dict[str, Callable[[], Any]]:
    policy = referee.load_policy("http-default")
    snap = Snapshot.response(503, headers={"Retry-After": "120"})
    retry = Urllib3Retry(total=3, status_forcelist=[503])
    response = HTTPResponse(
        status=503, headers={"Retry-After": "120"}, preload_content=False
    )

    def urllib3_path() -> float | None:
        nxt = retry.increment("GET", "/x", response=response)
        return nxt.get_retry_after(response)

    return {
        "referee decide (503, Retry-After: 120)": lambda: decide(
            policy, snap, STATE, now=NOW
        ),
        "urllib3 increment + get_retry_after": urllib3_path,
    }


def _body(
    body: bytes, label: str
) -> Callable[[], dict[str, Callable[[], Any]]]:
    def make() -> dict[str, Callable[[], Any]]:
        policy = referee.load_policy("enrow")
        snap = Snapshot.response(
            200,
            method="GET",
            url="https://api.enrow.io/email/find/single?id=1",
            body=body,
        )
        needle = b'"ongoing"'
        find = body.find
        contenders: dict[str, Callable[[], Any]] = {
            f"referee decide (200, {label})": lambda: decide(
                policy, snap, STATE, now=NOW
            ),
            "json.loads(body)": lambda: json.loads(body),
            "orjson.loads(body)": lambda: orjson.loads(body),
        }
        # The physical limit of a body rule: one byte search, and when
        # the bytes are there, one orjson parse (and a dict look-up).
        if find(needle) < 0:
            contenders[LIMIT_SEARCH] = lambda: find(needle) >= 0
        else:
            contenders[LIMIT_PARSE] = lambda: (
                find(needle) >= 0 and orjson.loads(body).get("qualification")
            )
        return contenders

    return make


METHODS = [
    "GET",
    "PUT",
    "POST",
    "PATCH",
    "DELETE",
    "HEAD",
    "OPTIONS",
    "TRACE",
    "PROPFIND",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "PURGE",
    "LINK",
    "UNLINK",
    "QUERY",
]


def _rules_policy(n: int) -> str:
    # One rule per (status, method): the shape of a large per-endpoint
    # table.  Each also checks the attempt, so the candidate is evaluated.
    rules = "\n".join(
        f"  - {{id: r{i}, when: {{status: {100 + i // len(METHODS)}, "
        f"method: {METHODS[i % len(METHODS)]}, attempt: {{gte: 2}}}}, "
        f"do: abort}}"
        for i in range(n)
    )
    return f"policy: scale\nrules:\n{rules}\n"


#: The policy sizes of the scale comparison, the largest first (the
#: ratios are against it).
SIZES = (10_000, 1_000, 100, 10)


def _scale() -> dict[str, Callable[[], Any]]:
    snap = Snapshot.response(100, method="PUT")

    def timed(n: int) -> Callable[[], Any]:
        policy = referee.load_policy_text(_rules_policy(n))
        return lambda: decide(policy, snap, STATE, now=NOW)

    return {f"referee decide, {n:,} rules": timed(n) for n in SIZES}


def _stub_transport(body: bytes, *, prebuilt: bool = False) -> Any:
    """
    A transport that answers every request with a 200 carrying *body*.

    By default it returns what a real transport returns: a fresh
    :class:`httpx.Response` per request, with raw header pairs and a
    stream nobody has read (so reading the body is part of the cost, and
    whoever decides on it must read it).  With *prebuilt*, the old stub:
    one response built once with ``content=``, its body already read —
    which hides the body read and the response's construction.
    """
    import httpx

    class UnreadBody(httpx.SyncByteStream):
        __slots__ = ("chunks", "read")

        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks
            self.read = False

        def __iter__(self) -> Any:
            self.read = True
            yield from self.chunks

        def close(self) -> None:
            pass

    chunks = [body]
    raw_headers = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
    ]

    class Stub(httpx.BaseTransport):
        #: The body stream of the last response (to check who read it).
        last: UnreadBody | None = None

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            self.last = stream = UnreadBody(chunks)
            return httpx.Response(
                200,
                headers=raw_headers,
                stream=stream,
                extensions={
                    "http_version": b"HTTP/1.1",
                    "reason_phrase": b"OK",
                },
            )

    prebuilt_response = httpx.Response(
        200, content=body, headers={"Content-Type": "application/json"}
    )

    class Prebuilt(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return prebuilt_response

    return Prebuilt() if prebuilt else Stub()


def _check_reads(
    transport: Any, stub: Any, request: Any, *, must_read: bool
) -> None:
    """
    One call through *transport* (referee's, over the unread *stub*): the
    caller gets the body intact, and when the policy needs the body to
    decide, the stub's stream was read inside the transport.
    """
    response = transport.handle_request(request)
    read_inside = stub.last.read
    content = response.read()
    if content != ENROW_VALID or response.status_code != 200:
        msg = "the stub's 200 did not come through referee intact"
        raise RuntimeError(msg)
    if must_read and not read_inside:
        msg = (
            "referee returned the 200 without reading its body: the enrow "
            "case is not measuring the body check it is meant to"
        )
        raise RuntimeError(msg)


def _middleware(
    policy_name: str, *, prebuilt: bool = False
) -> Callable[[], dict[str, Callable[[], Any]]]:
    def make() -> dict[str, Callable[[], Any]]:
        import backoff
        import httpx
        import redress
        import stamina
        import tenacity
        from httpx_retries import Retry as HttpxRetry
        from httpx_retries import RetryTransport

        from referee.httpx import PolicyTransport

        stub = _stub_transport(ENROW_VALID, prebuilt=prebuilt)
        request = httpx.Request(
            "GET", "https://api.enrow.io/email/find/single?id=1"
        )
        ours = PolicyTransport(referee.load_policy(policy_name), stub)
        theirs = RetryTransport(transport=stub, retry=HttpxRetry(total=3))
        if not prebuilt:
            _check_reads(ours, stub, request, must_read=policy_name == "enrow")

        # Every contender returns the response with its body read, as
        # httpx.Client.send does (the stub's stream is read by whoever
        # reads first: referee, to decide, or the caller).
        def read(response: httpx.Response) -> bytes:
            return response.read()

        contenders: dict[str, Callable[[], Any]] = {
            f"referee PolicyTransport ({policy_name})": lambda: read(
                ours.handle_request(request)
            ),
            "bare stub transport": lambda: read(stub.handle_request(request)),
            "httpx_retries.RetryTransport": lambda: read(
                theirs.handle_request(request)
            ),
        }
        if prebuilt:
            return contenders

        @tenacity.retry(stop=tenacity.stop_after_attempt(3))
        def with_tenacity() -> httpx.Response:
            return stub.handle_request(request)

        @stamina.retry(on=httpx.TransportError, attempts=3)
        def with_stamina() -> httpx.Response:
            return stub.handle_request(request)

        @backoff.on_exception(backoff.expo, httpx.TransportError, max_tries=3)
        def with_backoff_exception() -> httpx.Response:
            return stub.handle_request(request)

        @backoff.on_predicate(
            backoff.expo, lambda r: r.status_code >= 500, max_tries=3
        )
        def with_backoff_predicate() -> httpx.Response:
            return stub.handle_request(request)

        @redress.retry(max_attempts=3)
        def with_redress() -> httpx.Response:
            return stub.handle_request(request)

        contenders |= {
            "tenacity.retry around the call": lambda: read(with_tenacity()),
            "stamina.retry around the call": lambda: read(with_stamina()),
            "backoff.on_exception around the call": lambda: read(
                with_backoff_exception()
            ),
            "backoff.on_predicate around the call": lambda: read(
                with_backoff_predicate()
            ),
            "redress.retry around the call": lambda: read(with_redress()),
        }
        if policy_name == "enrow":
            # The peer doing the same job: httpx-retries with a validator
            # that reads the 200's body and looks for `ongoing` (the
            # caller's read is then free, as after referee's).
            def still_running(response: httpx.Response) -> None:
                if b'"ongoing"' in response.read():
                    raise httpx.TransportError("still running")

            checking = RetryTransport(
                transport=stub,
                retry=HttpxRetry(total=3, validate_response=still_running),
            )
            contenders[
                "httpx_retries.RetryTransport + validate_response (body read)"
            ] = lambda: read(checking.handle_request(request))
        return contenders

    return make


COMPARISONS = [
    Comparison(
        "floor",
        "A plain 200 under http-default (no rule can match)",
        "≤ 3× the bare dict.get function; ≤ 0.5× urllib3 is_retry",
        _floor,
    ),
    Comparison(
        "retry_after",
        "A 503 with Retry-After: 120, delay computed",
        "≤ 0.3× urllib3 increment + get_retry_after",
        _retry_after,
    ),
    Comparison(
        "body_skip",
        "A 200 with a ~300-byte body under enrow's `qualification: ongoing`",
        "≤ 0.15× json.loads (the byte check shows the rule cannot match)",
        _body(ENROW_VALID, "body, no parse needed"),
    ),
    Comparison(
        "body_parse",
        "The same body, still running: parsed, and a poll decided",
        "≤ 0.35× json.loads",
        _body(ENROW_PARSE, "body parsed"),
    ),
    Comparison(
        "middleware_default",
        "Middleware overhead on the success path (http-default; the stub "
        "transport returns a fresh 200 with an unread body stream, as a "
        "real transport does, and every contender's caller reads it)",
        "≤ 0.25× httpx-retries' overhead; ≥ 20× below tenacity's",
        _middleware("http-default"),
        baseline="bare stub transport",
    ),
    Comparison(
        "middleware_enrow",
        "Middleware overhead on the success path (enrow: a GET 200 with an "
        "unread ~300-byte body, which referee must read to check for "
        "`ongoing`; every contender's caller reads it)",
        "≤ 0.5× httpx-retries' overhead; ≥ 20× below tenacity's",
        _middleware("enrow"),
        baseline="bare stub transport",
    ),
    Comparison(
        "middleware_default_prebuilt",
        "For comparison only, NOT the target: the old stub (http-default; "
        "one prebuilt 200 whose body is already read, which hides the "
        "response's construction and the body read)",
        "none (the target is judged on middleware_default)",
        _middleware("http-default", prebuilt=True),
        baseline="bare stub transport",
    ),
    Comparison(
        "middleware_enrow_prebuilt",
        "For comparison only, NOT the target: the old stub (enrow; one "
        "prebuilt 200 whose body is already read, so referee never reads it)",
        "none (the target is judged on middleware_enrow)",
        _middleware("enrow", prebuilt=True),
        baseline="bare stub transport",
    ),
    Comparison(
        "scale",
        "10,000 status-indexed rules vs 10 (a status the rules name, none "
        "matching)",
        "≤ 1.3× (10,000 ÷ 10)",
        _scale,
    ),
]


@attrs.frozen
class Target:
    """
    A ratio the project aims for: referee ÷ *contender* in the comparison
    *key*, at most *bound*.
    """

    key: str
    contender: str
    bound: float
    what: str
    #: One of the targets of the current issue (judged first).
    issue: bool = False
    #: The physical-limit contender of the comparison, shown beside
    #: referee: what the decision cannot go below.
    limit: str | None = None


#: The bare client: the physical limit of an end-to-end call.
BARE = "the bare client"

TARGETS = [
    Target(
        "body_parse",
        "json.loads(body)",
        0.35,
        "decide body, parsed (a poll decided), vs json.loads",
        issue=True,
        limit=LIMIT_PARSE,
    ),
    Target(
        "body_skip",
        "json.loads(body)",
        0.15,
        "decide body, no parse (byte check), vs json.loads",
        issue=True,
        limit=LIMIT_SEARCH,
    ),
    Target(
        "middleware_enrow",
        "httpx_retries.RetryTransport",
        0.5,
        "overhead, enrow (body read to decide), vs httpx-retries'",
        issue=True,
    ),
    Target(
        "e2e_httpx",
        "bare httpx.Client",
        1.02,
        "end to end, httpx sync + enrow, vs the bare client",
        issue=True,
        limit=BARE,
    ),
    Target(
        "e2e_httpx_async",
        "bare httpx.AsyncClient",
        1.02,
        "end to end, httpx async + enrow, vs the bare client",
        issue=True,
        limit=BARE,
    ),
    Target(
        "e2e_httpx2",
        "bare httpx2.Client",
        1.02,
        "end to end, httpx2 sync + enrow, vs the bare client",
        issue=True,
        limit=BARE,
    ),
    Target(
        "e2e_httpx2",
        "bare httpx2.Client",
        1.02,
        "end to end, httpx2 sync + enrow, vs the bare client",
    ),
    Target(
        "e2e_httpx2_async",
        "bare httpx2.AsyncClient",
        1.02,
        "end to end, httpx2 async + enrow, vs the bare client",
    ),
    Target(
        "e2e_requests",
        "bare requests.Session",
        1.02,
        "end to end, requests + enrow, vs the bare session",
        issue=True,
        limit=BARE,
    ),
    Target(
        "e2e_aiohttp",
        "bare aiohttp.ClientSession",
        1.02,
        "end to end, aiohttp + enrow, vs the bare session",
        issue=True,
        limit=BARE,
    ),
    Target(
        "scale",
        "referee decide, 10 rules",
        1.3,
        "decide with 10,000 rules vs 10",
        issue=True,
    ),
    Target(
        "middleware_default",
        "httpx_retries.RetryTransport",
        0.25,
        "overhead, http-default, vs httpx-retries'",
    ),
    Target(
        "floor",
        LIMIT_LOOKUP,
        3.0,
        "decide 200 (http-default) vs a bare dict.get function",
        limit=LIMIT_LOOKUP,
    ),
    Target(
        "floor",
        "urllib3 Retry.is_retry('GET', 200)",
        0.5,
        "decide 200 (http-default) vs urllib3 is_retry",
        limit=LIMIT_LOOKUP,
    ),
    Target(
        "retry_after",
        "urllib3 increment + get_retry_after",
        0.3,
        "decide 503 + Retry-After vs urllib3",
    ),
    Target(
        "middleware_default",
        "tenacity.retry around the call",
        0.05,
        "overhead, http-default, vs tenacity's (≥ 20× below)",
    ),
    Target(
        "middleware_default",
        "stamina.retry around the call",
        0.05,
        "overhead, http-default, vs stamina's (≥ 20× below)",
    ),
    Target(
        "middleware_enrow",
        "tenacity.retry around the call",
        0.05,
        "overhead, enrow, vs tenacity's (≥ 20× below)",
    ),
    Target(
        "middleware_enrow",
        "stamina.retry around the call",
        0.05,
        "overhead, enrow, vs stamina's (≥ 20× below)",
    ),
    Target(
        "e2e_httpx",
        "httpx.Client + httpx-retries",
        1.0,
        "end to end, httpx sync, vs httpx-retries (never above the peer)",
    ),
    Target(
        "e2e_httpx_async",
        "httpx.AsyncClient + httpx-retries",
        1.0,
        "end to end, httpx async, vs httpx-retries",
    ),
    Target(
        "e2e_requests",
        "requests + HTTPAdapter(max_retries=Retry(3))",
        1.0,
        "end to end, requests, vs urllib3 Retry",
    ),
    Target(
        "e2e_aiohttp",
        "aiohttp_retry.RetryClient",
        1.0,
        "end to end, aiohttp, vs aiohttp-retry",
    ),
]


def extras() -> dict[str, Any]:
    """
    Figures that are not ratios: compile time and memory per rule.
    """
    text = _rules_policy(10_000)
    took = []
    for _ in range(3):
        started = time.perf_counter()
        referee.load_policy_text(text)
        took.append(time.perf_counter() - started)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    pol = referee.load_policy_text(text)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    random.seed(0)
    return {
        "load + compile 10,000 rules (s, best of 3)": round(min(took), 3),
        "memory per compiled rule (bytes, approx.)": size // len(pol.rules),
    }
