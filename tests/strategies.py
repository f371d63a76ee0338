"""
Hypothesis strategies: outcomes a server (or the network) can produce, the
state of a call, and policy documents, valid and not.
"""

import json
import string
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import yaml
from hypothesis import strategies as st

import referee


__all__ = [
    "ACTIONS",
    "FEATURES",
    "VALID_POLICY",
    "documents",
    "mutated_policies",
    "nows",
    "policy_texts",
    "raw_texts",
    "snapshots",
    "states",
    "valid_policies",
]

#: Methods, the usual ones and some that no rule expects.
METHODS = [
    "GET",
    "HEAD",
    "OPTIONS",
    "TRACE",
    "PUT",
    "DELETE",
    "POST",
    "PATCH",
    "CONNECT",
    "PROPFIND",
    "M-SEARCH",
    "BREW",
    "get",
    "Post",
    "",
]

URLS = [
    "https://api.example.com/v1/jobs/42",
    "http://api.example.com:8080/a/b/c?d=e#f",
    "https://api.enrow.io/email/find/single?id=abc",
    "https://api.experianaperture.io/phone/validation/v2",
    "https://API.EXAMPLE.COM/Upper/Case",
    "https://user:pw@api.example.com/secret",
    "https://bücher.example/ü/%zz",
    "/relative/path",
    "",
    "not a url at all",
    "http://[::1",
    "http://api.example.com:99999/",
    "file:///etc/passwd",
]

#: Header names the policies read, in several spellings, and some others.
HEADER_NAMES = [
    "Retry-After",
    "retry-after",
    "RETRY-AFTER",
    "retry-after-ms",
    "X-RateLimit-Reset",
    "x-ratelimit-reset",
    "X-RateLimit-Remaining",
    "RateLimit",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Content-Type",
    "Location",
    "X-Request-Id",
]

_UTC_DATES = st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - made aware below
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
).map(lambda d: d.replace(tzinfo=UTC))

_HTTP_DATES = st.one_of(
    _UTC_DATES.map(lambda d: format_datetime(d, usegmt=True)),
    _UTC_DATES.map(lambda d: d.strftime("%A, %d-%b-%y %H:%M:%S GMT")),
    _UTC_DATES.map(lambda d: d.strftime("%a %b %d %H:%M:%S %Y")),
)

_NUMBERS = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
)

_NUMBER_TEXT = st.one_of(
    _NUMBERS.map(str),
    _NUMBERS.map(repr),
    st.integers(min_value=0, max_value=10**12).map(lambda n: f"{n}ms"),
    st.sampled_from(
        [
            "1e400",
            "-1e400",
            "nan",
            "Infinity",
            "9" * 400,
            "9" * 5000,
            "0x10",
            "1_000",
            "٣",
            "+5",
            "-0",
            "0.0000001",
            "6m0s",
            "1h2m3.5s",
            "20ms",
            "999999999h",
        ]
    ),
)

_RATELIMIT = st.one_of(
    st.builds(
        lambda name, r, t: f'"{name}";r={r};t={t}',
        st.sampled_from(["default", "burst", ""]),
        _NUMBERS,
        _NUMBERS,
    ),
    st.builds(
        lambda limit, rem, reset: (
            f"limit={limit}, remaining={rem}, reset={reset}"
        ),
        _NUMBERS,
        _NUMBERS,
        _NUMBERS,
    ),
    st.just('"a";t=1, "b";t=2'),
    st.just(";;;t=;r="),
)

header_values = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=80),
    _NUMBER_TEXT,
    _HTTP_DATES,
    _RATELIMIT,
    st.text(min_size=100, max_size=600),
)

#: Server hints that parse, relative to no particular clock.
_HINTS = st.one_of(
    st.fixed_dictionaries(
        {"Retry-After": st.integers(min_value=0, max_value=400).map(str)}
    ),
    st.fixed_dictionaries(
        {
            "retry-after-ms": st.integers(min_value=0, max_value=400_000).map(
                str
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "RateLimit": st.integers(min_value=0, max_value=400).map(
                lambda t: f'"default";r=0;t={t}'
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "X-RateLimit-Reset": st.integers(
                min_value=0, max_value=4 * 10**9
            ).map(str)
        }
    ),
    st.fixed_dictionaries(
        {"Retry-After": _HTTP_DATES, "X-Poll": _NUMBER_TEXT}
    ),
    st.fixed_dictionaries(
        {
            "Location": st.sampled_from(
                [
                    "/jobs/1",
                    "https://api.example.com/jobs/2",
                    "https://evil.example.net/steal",
                    "//evil.example.net/x",
                    "http://[::1",
                    "",
                ]
            )
        }
    ),
)

headers = st.one_of(
    _HINTS,
    st.dictionaries(
        st.one_of(
            st.sampled_from(HEADER_NAMES), st.text(min_size=1, max_size=12)
        ),
        header_values,
        max_size=6,
    ),
)

#: JSON values of any shape, with the numbers that trouble parsers.
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        st.sampled_from(
            [
                "ongoing",
                "completed",
                "failed",
                "valid",
                "invalid",
                "not_found",
                "found",
                "Insufficient credits",
                "Could not retrieve the search",
            ]
        ),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "status",
                        "qualification",
                        "message",
                        "reason",
                        "success",
                        "id",
                        "results",
                        "result",
                        "error",
                        "data",
                    ]
                ),
                st.text(max_size=8),
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=20,
)

_JSON_BODIES = json_values.map(lambda v: json.dumps(v).encode())

#: Bodies the bundled and test policies look for.
_KNOWN_BODIES = st.sampled_from(
    [
        b'{"qualification": "ongoing"}',
        b'{"qualification": "found", "email": "a@b.c"}',
        b'{"general": {"status": "ongoing"}}',
        b'{"general": {"status": "failed"}}',
        b'{"general": {"status": "completed"}}',
        b'{"status": "ongoing", "id": "job/42?x"}',
        b'{"status": "pending", "id": 42}',
        b'{"status": "ongoing", "id": null}',
        b'{"results": [{"status": "failed"}, {"n": 7}]}',
        b'{"message": "Insufficient balance"}',
        b'{"reason": "Insufficient credits", "success": false}',
        b'{"message": "Could not retrieve the search"}',
        b'{"error": {"code": "RATE_LIMIT"}}',
    ]
)

bodies = st.one_of(
    st.none(),
    _KNOWN_BODIES,
    st.binary(max_size=200),
    _JSON_BODIES,
    st.sampled_from(
        [
            b"",
            b"\xff\xfe\xfd",
            b'{"status": "ongoing"',
            b'{"status": "\xff"}',
            b'{"n": 1e999}',
            b'{"n": ' + b"9" * 400 + b"}",
            b'{"n": ' + b"9" * 5000 + b"}",
            b'{"n": -0.0, "m": 1e-400}',
            b'{"a": {"b": {"c": {"d": [1, 2, {"e": null}]}}}}',
            b"[" * 2000 + b"]" * 2000,
            b'{"message": "\\u0000\\ud800"}',
            b'"just a string"',
            b"null",
            b"<html>502 Bad Gateway</html>",
        ]
    ),
    st.text(max_size=60).map(str.encode),
)


def _raising_loader():
    msg = "the connection broke while the body was read"
    raise OSError(msg)


@st.composite
def snapshots(draw):
    """
    A response with any status from 100 to 599, or a transport failure.
    """
    method = draw(st.one_of(st.just("GET"), st.sampled_from(METHODS)))
    url = draw(st.sampled_from(URLS))
    request_headers = draw(
        st.one_of(
            st.none(),
            st.just({"Idempotency-Key": "k-1"}),
            st.dictionaries(
                st.sampled_from(["Idempotency-Key", "Accept", "X-Api-Key"]),
                st.text(max_size=10),
                max_size=3,
            ),
        )
    )
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return referee.Snapshot.failed(
            draw(st.sampled_from(sorted(referee.FAILURES))),
            method=method,
            url=url,
            request_headers=request_headers,
        )
    if kind <= 3:
        # A job still running, or finished: what poll rules look for.
        return referee.Snapshot.response(
            draw(st.sampled_from([200, 202])),
            method=draw(st.sampled_from(["GET", "GET", "POST"])),
            url=url,
            headers=draw(headers),
            request_headers=request_headers,
            body=draw(_KNOWN_BODIES),
        )
    status = draw(
        st.one_of(
            st.integers(min_value=100, max_value=599),
            st.sampled_from([200, 202, 429, 503]),
            st.sampled_from(
                [200, 201, 202, 400, 401, 402, 404, 422, 429, 503]
            ),
        )
    )
    body = draw(st.one_of(_KNOWN_BODIES, bodies))
    lazy = draw(st.integers(0, 4))
    if lazy == 0:
        return referee.Snapshot.response(
            status,
            method=method,
            url=url,
            headers=draw(headers),
            request_headers=request_headers,
            load_body=lambda: body,
        )
    if lazy == 1:
        return referee.Snapshot.response(
            status,
            method=method,
            url=url,
            headers=draw(headers),
            request_headers=request_headers,
            load_body=_raising_loader,
        )
    return referee.Snapshot.response(
        status,
        method=method,
        url=url,
        headers=draw(headers),
        request_headers=request_headers,
        body=body,
    )


#: The driver's clock: small numbers, and Unix times (for HTTP-dates and
#: epoch resets).
nows = st.one_of(
    st.floats(min_value=0, max_value=10_000),
    st.floats(min_value=1.0e9, max_value=4.0e9),
    st.floats(min_value=-1.0e10, max_value=1.0e11),
)


@st.composite
def states(draw, now):
    """
    Where a call stands at *now*: any attempt and poll count, started at
    any time (before *now* or not), polling or not.
    """
    started = draw(
        st.one_of(
            st.floats(min_value=now - 1_000, max_value=now),
            st.floats(min_value=-1.0e10, max_value=1.0e11),
        )
    )
    polls = draw(
        st.one_of(
            st.integers(min_value=0, max_value=2),
            st.integers(min_value=0, max_value=50),
        )
    )
    poll_started = draw(
        st.one_of(
            st.none(),
            # now first: min(0.0, -0.0) is 0.0, above max_value=-0.0.
            st.floats(min_value=min(now, started), max_value=now),
            st.floats(min_value=-1.0e10, max_value=1.0e11),
        )
    )
    return referee.AttemptState(
        attempt=draw(
            st.one_of(
                st.integers(min_value=1, max_value=2),
                st.integers(min_value=1, max_value=20),
            )
        ),
        polls=polls,
        started=started,
        poll_started=poll_started,
    )


#: A policy that uses every feature of the language, to give the engine
#: more to do than the bundled ones.
FEATURES = """\
policy: features
defaults:
  retry:
    attempts: unlimited
    backoff: {initial: 250ms, multiplier: 3, max: 1m30s, jitter: equal}
    delay_from: [retry-after-ms, Retry-After, "X-RateLimit-Reset:epoch",
                 "RateLimit-Reset:delta", "RateLimit", "X-Wait:duration",
                 "X-Date:date", "X-Auto:auto"]
  poll:
    initial: 1s
    multiplier: 2
    max: 20s
    jitter: full
    deadline: 5m
    delay_from: [Retry-After, "X-Poll:auto"]
  deadline: 90s
  server_delay: {max: none, on_exceed: cap}
  body_limit: 4KiB
rules:
  - id: credits
    when:
      any:
        - {status: 402}
        - {status: 422, body: {message: {matches: "(?i)insufficient"}}}
    do: abort
    error: InsufficientCredits
    alert:
      kind: topup
      severity: critical
      dedupe: 1h
      message: "{policy}/{rule}: {status} {method} {request.path} {body.message} {header.X-Request-Id} {failure}"
    breaker: {name: credits, open_for: 10m}
    log: error
  - id: ongoing
    when:
      method: [GET, POST]
      body:
        status: {in: [ongoing, pending]}
        id: {exists: true}
    do: poll
    poll:
      request: {method: GET, url: "/jobs/{body.id}?from={request.path}&h={header.Location}"}
  - id: follow
    when:
      status: 202
      headers: {Location: {exists: true}}
    do: poll
    poll:
      request: {url: "{header.Location}"}
  - id: results
    when:
      body:
        results.0.status: failed
        results.1.n: {gt: 1, lte: 1000000}
    do: abort
    error: JobFailed
  - id: throttled
    when:
      any:
        - {status: 429}
        - headers: {X-RateLimit-Remaining: {lte: 0}}
        - headers: {X-Request-Id: {contains: throttle}}
    do: retry
    retry: {unsafe_methods: true, attempts: 8}
  - id: late-attempts
    when:
      status: "5xx"
      attempt: {gte: 3}
      not: {method: [POST, PATCH]}
    do: retry
    retry:
      backoff: {initial: 2s, multiplier: 1, max: 2s, jitter: none}
  - id: servers
    when:
      all:
        - {status: "500-599"}
        - not: {status: [501, 505]}
    do: retry
    error: ServerError
  - id: hosts
    when:
      host: ["*.example.com", "api.enrow.io"]
      path: ["/v1/**", "/email/*/single"]
      status: [400, "4xx"]
    do: accept
  - id: transport
    when: {failure: [connect, timeout, read, protocol]}
    do: retry
    retry: {attempts: 3, backoff: {jitter: full}}
  - id: anything
    do: accept
"""

#: The actions of rules, for generated policies.
ACTIONS = ("accept", "retry", "poll", "abort")

#: A valid policy as a document, to be mutated.
VALID_POLICY = {
    "policy": "mutant",
    "description": "a valid policy to break",
    "extends": "http-default",
    "defaults": {
        "retry": {
            "attempts": 4,
            "backoff": {
                "initial": "1s",
                "multiplier": 2,
                "max": "30s",
                "jitter": "full",
            },
            "unsafe_methods": False,
            "delay_from": ["Retry-After", "X-RateLimit-Reset:epoch"],
        },
        "poll": {
            "initial": "2s",
            "multiplier": 1.5,
            "max": "30s",
            "deadline": "10m",
            "request": {"method": "GET", "url": "/jobs/{body.id}"},
        },
        "deadline": "2m",
        "server_delay": {"max": "120s", "on_exceed": "fail"},
        "body_limit": "64KiB",
    },
    "rules": [
        {
            "id": "credits",
            "when": {"status": 402},
            "do": "abort",
            "error": "InsufficientCredits",
            "alert": {"kind": "topup", "severity": "critical"},
            "breaker": {"name": "credits", "open_for": "10m"},
        },
        {
            "id": "limited",
            "when": {"status": [429, "503"], "method": "GET"},
            "do": "retry",
            "retry": {"attempts": "unlimited"},
        },
        {
            "when": {
                "body": {"status": {"in": ["ongoing"]}},
                "not": {"failure": "connect"},
                "any": [{"attempt": {"gte": 2}}, {"headers": {"X": 1}}],
            },
            "do": "poll",
        },
    ],
}

_KEYS = sorted(
    {
        "policy",
        "description",
        "extends",
        "defaults",
        "rules",
        "retry",
        "poll",
        "attempts",
        "backoff",
        "initial",
        "multiplier",
        "max",
        "jitter",
        "unsafe_methods",
        "delay_from",
        "deadline",
        "request",
        "method",
        "url",
        "server_delay",
        "on_exceed",
        "body_limit",
        "id",
        "when",
        "do",
        "error",
        "alert",
        "breaker",
        "log",
        "kind",
        "severity",
        "dedupe",
        "message",
        "name",
        "open_for",
        "status",
        "host",
        "path",
        "headers",
        "body",
        "failure",
        "attempt",
        "any",
        "all",
        "not",
        "exists",
        "equals",
        "in",
        "contains",
        "matches",
        "gt",
        "gte",
        "lt",
        "lte",
    }
)

#: Scalars a policy document may hold, right or wrong.  Integers stay well
#: under Python's 4300-digit conversion limit (a known core bug, tested
#: apart).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "5xx",
            "6xx",
            "500-599",
            "599-500",
            "1m30s",
            "250ms",
            "-1s",
            "none",
            "unlimited",
            "64KiB",
            "retry",
            "abort",
            "poll",
            "accept",
            "full",
            "cap",
            "GET",
            "connect",
            "InsufficientCredits",
            "Retry-After:epoch",
            "X:nope",
            "(",
            "[a-",
            "{status}",
            "{nope}",
            "{body.}",
            "*.example.com",
            "**",
            "http-default",
            "no-such-policy",
        ]
    ),
)

#: Any document of mappings, lists and scalars, keyed mostly by the
#: language's own words so that it gets past the first checks.
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)


def _paths(doc, prefix=()):
    """
    Every path to a container in *doc*.
    """
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            if isinstance(v, dict | list):
                yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            if isinstance(v, dict | list):
                yield from _paths(v, (*prefix, i))


@st.composite
def mutated_policies(draw):
    """
    VALID_POLICY with a few keys deleted, replaced or inserted anywhere.
    """
    doc = json.loads(json.dumps(VALID_POLICY))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        containers = list(_paths(doc))
        _path, target = draw(st.sampled_from(containers))
        op = draw(st.sampled_from(["delete", "replace", "insert"]))
        if isinstance(target, dict):
            keys = list(target)
            if op == "insert" or not keys:
                key = draw(
                    st.one_of(st.sampled_from(_KEYS), st.text(max_size=8))
                )
                target[key] = draw(documents)
            elif op == "delete":
                del target[draw(st.sampled_from(keys))]
            else:
                target[draw(st.sampled_from(keys))] = draw(documents)
        elif op == "insert" or not target:
            target.insert(
                draw(st.integers(min_value=0, max_value=len(target))),
                draw(documents),
            )
        elif op == "delete":
            del target[
                draw(st.integers(min_value=0, max_value=len(target) - 1))
            ]
        else:
            target[
                draw(st.integers(min_value=0, max_value=len(target) - 1))
            ] = draw(documents)
    return doc


#: Text in any of the three formats: generated documents dumped, and bits
#: of policy syntax.
raw_texts = st.one_of(
    st.text(max_size=200),
    st.text(
        alphabet="{}[]:,-#&*!|>'\"\n ?%@`policyrules0123456789.=", max_size=120
    ),
    st.lists(
        st.sampled_from(
            [
                "policy: x\n",
                "policy = 'x'\n",
                '{"policy": "x"}',
                "rules:\n",
                "  - when: {status: 429}\n",
                "    do: retry\n",
                "[[rules]]\n",
                "do = 'abort'\n",
                "&a [*a]\n",
                "<<: *a\n",
                "!!str ",
                "---\n",
                "...\n",
                "\t",
                "\x00",
                "\ufeff",
                "? ",
                ": ",
                "'",
                '"',
            ]
        ),
        max_size=12,
    ).map("".join),
)


_durations = st.one_of(
    st.floats(min_value=0, max_value=86_400),
    st.integers(min_value=0, max_value=86_400),
    st.builds(
        lambda n, unit: f"{n}{unit}",
        st.integers(min_value=0, max_value=1000),
        st.sampled_from(["ms", "s", "m", "h"]),
    ),
    st.builds(
        lambda m, s: f"{m}m{s}s",
        st.integers(min_value=0, max_value=59),
        st.integers(min_value=0, max_value=59),
    ),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=1)).map(
        lambda d: f"{d.total_seconds():.3f}s"
    ),
)


@st.composite
def valid_policies(draw):
    """
    A small valid policy: status rules that accept, retry, poll or abort.
    """
    rules = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        action = draw(st.sampled_from(ACTIONS))
        status = draw(
            st.one_of(
                st.integers(min_value=100, max_value=599),
                st.sampled_from(["1xx", "2xx", "3xx", "4xx", "5xx"]),
                st.integers(min_value=100, max_value=599).flatmap(
                    lambda lo: st.integers(min_value=lo, max_value=599).map(
                        lambda hi, lo=lo: f"{lo}-{hi}"
                    )
                ),
                st.lists(
                    st.integers(min_value=100, max_value=599),
                    min_size=1,
                    max_size=3,
                ),
            )
        )
        rule = {"id": f"r{i}", "when": {"status": status}, "do": action}
        if action == "retry" and draw(st.booleans()):
            rule["retry"] = {
                "attempts": draw(
                    st.one_of(
                        st.integers(min_value=1, max_value=10),
                        st.just("unlimited"),
                    )
                ),
                "backoff": {
                    "initial": draw(_durations),
                    "multiplier": draw(st.floats(min_value=1, max_value=10)),
                    "max": draw(_durations),
                    "jitter": draw(st.sampled_from(["full", "equal", "none"])),
                },
                "unsafe_methods": draw(st.booleans()),
            }
        if action == "poll" and draw(st.booleans()):
            rule["poll"] = {
                "initial": draw(_durations),
                "max": draw(_durations),
                "deadline": draw(st.one_of(_durations, st.just("none"))),
            }
        if action == "abort" and draw(st.booleans()):
            rule["error"] = draw(
                st.sampled_from(
                    ["RateLimited", "ServerError", "NotFound", "Aborted"]
                )
            )
        rules.append(rule)
    doc = {
        "policy": draw(
            st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True)
        )
    }
    if draw(st.booleans()):
        doc["defaults"] = {
            "deadline": draw(st.one_of(_durations, st.just("none"))),
            "server_delay": {
                "max": draw(st.one_of(_durations, st.just("none"))),
                "on_exceed": draw(st.sampled_from(["cap", "fail"])),
            },
        }
    doc["rules"] = rules
    return doc


def policy_texts(doc):
    """
    *doc* as (format, text) pairs: JSON and YAML.
    """
    return [
        ("json", json.dumps(doc)),
        ("yaml", yaml.safe_dump(doc, allow_unicode=True)),
    ]
