"""
Adversarial inputs: hostile hints, huge and malformed bodies, catastrophic
patterns, hostile policy files, foreign origins and planted secrets, through
the engine and, where it matters, through the httpx adapter over loopback.

Each guarantee here is listed, with its test, in SECURITY.md.
"""

import math
import random
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import structlog
from tests.server import Reply, ScriptedServer

import referee
import referee.cli
from referee.httpx import PolicyTransport
from referee.testing import no_sleep


NOW = 1_700_000_000.0
BROKEN = Path(__file__).parent / "broken"

DECISIONS = (referee.Accept, referee.Retry, referee.Poll, referee.Abort)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def other() -> Iterator[ScriptedServer]:
    """
    A second server: another origin (same host, another port).
    """
    with ScriptedServer() as srv:
        yield srv


def _decide(policy, snap, *, now=NOW):
    return referee.decide(
        policy,
        snap,
        referee.AttemptState(started=now),
        now=now,
        rng=random.Random(7),
    )


def _client(policy, **kwargs):
    return httpx.Client(transport=PolicyTransport(policy, **kwargs))


# --- Retry-After ------------------------------------------------------------

HOSTILE_HINTS = [
    pytest.param("99999999999", id="eleven-nines"),
    pytest.param("-5", id="negative"),
    pytest.param("1e400", id="overflowing-float"),
    pytest.param("NaN", id="nan"),
    pytest.param("inf", id="inf"),
    pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", id="year-9999"),
    pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", id="year-1970"),
    pytest.param("zwölf Sekunden", id="non-ascii"),
    pytest.param("\uff15", id="fullwidth-digit"),
    pytest.param("9" * 5000, id="5000-digits"),
]

CAPPED = """\
policy: capped
defaults:
  server_delay: {max: 30s, on_exceed: cap}
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
    retry: {attempts: 3}
"""


def _policies():
    return [
        referee.load_policy("http-default"),
        referee.load_policy_text(CAPPED),
    ]


class TestRetryAfter:
    @pytest.mark.parametrize("value", HOSTILE_HINTS)
    def test_retry_within_ceiling_or_abort(self, value):
        """
        A hostile Retry-After gives a bounded retry or an abort, never more.
        """
        snap = referee.Snapshot.response(503, headers={"Retry-After": value})
        for policy in _policies():
            d = _decide(policy, snap)

            assert isinstance(d, referee.Retry | referee.Abort), d
            if isinstance(d, referee.Retry):
                assert math.isfinite(d.delay)
                assert 0.0 <= d.delay <= policy.server_delay_max

    @pytest.mark.parametrize("value", HOSTILE_HINTS)
    def test_huge_hint_is_refused_or_capped(self, value):
        """
        A capping policy never waits past server_delay.max; a failing one
        aborts rather than wait past it.
        """
        snap = referee.Snapshot.response(503, headers={"Retry-After": value})
        capped = _decide(referee.load_policy_text(CAPPED), snap)

        assert isinstance(capped, referee.Retry)
        assert capped.delay <= 30.0

    # http.server sends header values as latin-1.
    @pytest.mark.parametrize(
        "value", [p for p in HOSTILE_HINTS if p.id != "fullwidth-digit"]
    )
    def test_through_httpx_nothing_sleeps_long(self, server, value):
        """
        Over loopback, no hostile hint makes the client sleep past the
        ceiling; the call ends in a response or a referee error.
        """
        server.script("/x", [Reply(503, {"Retry-After": value})])
        policy = referee.load_policy_text(CAPPED)

        with no_sleep() as slept, _client(policy) as client:
            try:
                response = client.get(server.url("/x"))
            except referee.Aborted:
                response = None

        assert response is None or 503 == response.status_code
        assert all(0.0 <= s <= 30.0 for s in slept.delays), slept.delays
        assert 1 <= server.count("/x") <= 3


# --- Bodies -----------------------------------------------------------------

BODY_RULE = """\
policy: bodies
defaults:
  body_limit: 1MiB
rules:
  - id: running
    when: {status: 200, body: {state: running}}
    do: poll
  - id: busy
    when: {status: 400, body: {count: {gt: 5}}}
    do: abort
  - id: quota
    when: {status: 402, body: {message: {matches: "quota"}}}
    do: abort
"""

BIG = 50 * 1024 * 1024


class _CountingStream(httpx.SyncByteStream):
    """
    *total* bytes of JSON-ish noise, in 64 KiB chunks, counting what was
    pulled.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        chunk = b"x" * 65536
        while self.pulled < self.total:
            self.pulled += len(chunk)
            yield chunk


def _chunked_client(stream):
    def handler(request):
        return httpx.Response(200, stream=stream)

    policy = referee.load_policy_text(BODY_RULE)
    return _client(policy, transport=httpx.MockTransport(handler))


class TestHugeBodies:
    def test_declared_50mb_body_is_not_read(self, server):
        """
        A 50 MB body whose Content-Length exceeds body_limit is neither
        read nor parsed: the caller gets the stream untouched.
        """
        server.script("/big", [Reply(200, body=b"x" * BIG)])
        policy = referee.load_policy_text(BODY_RULE)

        with (
            no_sleep() as slept,
            _client(policy) as client,
            client.stream("GET", server.url("/big")) as response,
        ):
            consumed = response.is_stream_consumed
            downloaded = response.num_bytes_downloaded
            first = next(response.iter_bytes(1024))

        assert (False, 0) == (consumed, downloaded)
        assert b"x" * len(first) == first
        assert [] == slept.delays
        assert str(BIG) == response.headers["content-length"]

    def test_chunked_50mb_body_is_not_parsed(self):
        """
        A 50 MB chunked body (no Content-Length) under a body rule is read
        (the adapter cannot know its size), but not parsed: no rule
        matches, and the caller still gets all of it.
        """
        stream = _CountingStream(BIG)

        with no_sleep() as slept, _chunked_client(stream) as client:
            response = client.get("http://api.test/big")

        assert (200, BIG) == (response.status_code, len(response.content))
        assert [] == slept.delays

    def test_chunked_body_is_read_only_up_to_the_limit(self):
        """
        Deciding pulls at most body_limit (plus one chunk) of a chunked
        body before the caller reads it.
        """
        stream = _CountingStream(BIG)

        with (
            no_sleep(),
            _chunked_client(stream) as client,
            client.stream("GET", "http://api.test/big") as response,
        ):
            pulled = stream.pulled
            response.close()

        assert pulled <= 1024 * 1024 + 65536, pulled


#: Bodies the parser rejects: each decides, matching nothing.
UNPARSABLE = [
    pytest.param(b'\xff\xfe{"state": "running"}', id="invalid-utf8"),
    pytest.param(b'{"state": "runn\xc3\x28ing"}', id="invalid-utf8-inside"),
    pytest.param(b'{"state": "\\ud800"}', id="lone-surrogate"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100000-deep-arrays"),
    pytest.param(
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="100000-deep-objects"
    ),
    pytest.param(b'{"count": 1e309}', id="1e309"),
    pytest.param(b'{"count": ' + b"1" * 5000 + b"}", id="5000-digits"),
    pytest.param(b"1" * 100_000, id="100000-digit-document"),
    pytest.param(b"\x00" * 1000, id="nul-bytes"),
]


class TestMalformedBodies:
    @pytest.mark.parametrize("body", UNPARSABLE)
    @pytest.mark.parametrize("status", [200, 400, 402])
    def test_no_match_no_exception(self, body, status):
        """
        A body that cannot be parsed matches no body rule; decide returns.
        """
        policy = referee.load_policy_text(BODY_RULE)
        for snap in (
            referee.Snapshot.response(status, body=body),
            referee.Snapshot.response(status, load_body=lambda: body),
        ):
            d = _decide(policy, snap)

            assert isinstance(d, referee.Accept), d
            assert d.rule_id is None

    @pytest.mark.parametrize("body", UNPARSABLE)
    def test_through_httpx(self, server, body):
        """
        Over loopback, such a body comes back to the caller as it was sent.
        """
        server.script("/x", [Reply(200, body=body)])
        policy = referee.load_policy_text(BODY_RULE)

        with no_sleep() as slept, _client(policy) as client:
            response = client.get(server.url("/x"))

        assert (200, body) == (response.status_code, response.content)
        assert [] == slept.delays


# --- Catastrophic patterns --------------------------------------------------

REDOS = """\
policy: redos
rules:
  - id: bad
    when: {status: 400, body: {message: {matches: "%s"}}}
    do: abort
"""

HOSTILE_VALUE = "a" * 100_000 + "!"


class TestCatastrophicPatterns:
    def test_check_is_silent(self, tmp_path, capsys):
        """
        A nested quantifier loads, and referee check has nothing to say:
        RE2 cannot backtrack.
        """
        path = tmp_path / "redos.yaml"
        path.write_text(REDOS % "(a+)+$")

        code = referee.cli.main(["check", str(path)])
        out = capsys.readouterr().out

        assert 0 == code
        assert "warning" not in out

    def test_input_is_truncated(self):
        """
        Only the first REGEX_INPUT_LIMIT characters are searched: '!$'
        does not find the '!' at the end of a 100 kB value.
        """
        policy = referee.load_policy_text(REDOS % "!$")
        snap = referee.Snapshot.response(
            400, body=f'{{"message": "{HOSTILE_VALUE}"}}'
        )
        d = _decide(policy, snap)

        assert re.search("!$", HOSTILE_VALUE)
        assert isinstance(d, referee.Accept)
        assert d.rule_id is None

    @pytest.mark.parametrize(
        ("count", "expected"),
        [
            # 'aaa…a!': the '!' keeps '$' from matching.
            (30, "Accept None"),
            # Only the first REGEX_INPUT_LIMIT characters are searched: all
            # a's, so '$' matches where the search stops.
            (10_000, "Abort bad"),
        ],
        ids=["30", "10000"],
    )
    def test_nested_quantifier_decides_at_once(self, count, expected):
        """
        '^(a+)+$' against a 400 body of 30 (41 s under Python's re) or
        10,000 a's and a '!' decides in milliseconds: RE2 runs in linear
        time.
        """
        # In a child process, with a timeout: a backtracking engine would
        # not return for hours, and no thread can interrupt it.  The bound
        # is not a benchmark: it tells "at once" from "hours" with a margin
        # of about a thousand.
        code = (
            "import time, referee\n"
            f"p = referee.load_policy_text({REDOS % '^(a+)+$'!r})\n"
            f"body = '{{\"message\": \"' + 'a' * {count} + '!\"}}'\n"
            "s = referee.Snapshot.response(400, body=body)\n"
            "t = time.perf_counter()\n"
            "d = referee.decide(p, s, referee.AttemptState(), now=0.0)\n"
            "took = time.perf_counter() - t\n"
            "print(type(d).__name__, d.rule_id, took < 1.0)\n"
        )
        proc = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert (0, f"{expected} True") == (
            proc.returncode,
            proc.stdout.strip(),
        )


# --- Hostile policy files ---------------------------------------------------

HOSTILE_FILES = [
    "billion-laughs.yaml",
    "billion-laughs-keys.yaml",
    "python-tag.yaml",
    "python-tag-mapping.yaml",
    "python-tag-scalar.yaml",
]


class TestHostilePolicyText:
    @pytest.mark.parametrize("name", HOSTILE_FILES)
    def test_text_is_refused(self, name, capfd):
        """
        The corpus' alias bombs and python tags, given as text, are a
        PolicyError and run nothing.
        """
        text = (BROKEN / name).read_text()

        with pytest.raises(referee.PolicyError) as ei:
            referee.load_policy_text(text, source=name)

        assert ei.value.problems
        assert ("", "") == capfd.readouterr()

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param(
                "policy: !!python/object/apply:os.system [echo pwned]\n",
                id="apply",
            ),
            pytest.param(
                "policy: !!python/object/new:os.system [echo pwned]\n",
                id="new",
            ),
            pytest.param("policy: !!python/name:os.system\n", id="name"),
            pytest.param("policy: !!python/module:os\n", id="module"),
            pytest.param(
                "!!python/object:referee.Policy {name: x}\n", id="object"
            ),
        ],
    )
    def test_python_tags_never_run(self, text, capfd):
        """
        Every python/* tag is a PolicyError, and nothing runs.
        """
        with pytest.raises(referee.PolicyError):
            referee.load_policy_text(text)

        assert ("", "") == capfd.readouterr()

    def test_inline_alias_bomb(self):
        """
        A billion-laughs written inline is refused for its expansion.
        """
        lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol"]']
        for i in range(1, 9):
            prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
            lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 8) + "]")
        lines.append("policy: *i")

        with pytest.raises(referee.PolicyError) as ei:
            referee.load_policy_text("\n".join(lines) + "\n")

        assert "aliases" in str(ei.value)


# --- Foreign origins --------------------------------------------------------

POLL_ANYWHERE = """\
policy: jobs
rules:
  - id: by-location
    when: {status: 202, headers: {Location: {exists: true}}}
    do: poll
    poll: {request: {url: "{header.Location}"}}
  - id: by-body
    when: {status: 202}
    do: poll
    poll: {request: {url: "{body.poll_url}"}}
"""

CREDENTIALS = {
    "Authorization": "Bearer SECRET-TOKEN",
    "x-api-key": "SECRET-KEY",
}


class TestForeignOrigins:
    def test_location_elsewhere_is_refused(self, server, other):
        """
        A Location on another origin (a live server on another port) is
        not polled: the call aborts and that server receives nothing.
        """
        other.script("/jobs/1", [Reply(200, body={"done": True})])
        server.script(
            "/start", [Reply(202, {"Location": other.url("/jobs/1")})]
        )
        policy = referee.load_policy_text(POLL_ANYWHERE)

        with (
            no_sleep() as slept,
            _client(policy) as client,
            pytest.raises(referee.Aborted) as ei,
        ):
            client.get(server.url("/start"), headers=CREDENTIALS)

        assert (0, []) == (other.connections, other.requests)
        assert ["/start"] == [r.path for r in server.requests]
        assert [] == slept.delays
        assert "origin" in ei.value.reason

    def test_body_url_stays_on_the_origin(self, server, other):
        """
        A body field holding another origin's URL is escaped into a path
        on the request's own origin: that server receives nothing.
        """
        other.script("/jobs/1", [Reply(200, body={"done": True})])
        server.script(
            "/start", [Reply(202, body={"poll_url": other.url("/jobs/1")})]
        )
        policy = referee.load_policy_text(POLL_ANYWHERE)

        with no_sleep(), _client(policy) as client:
            response = client.get(server.url("/start"), headers=CREDENTIALS)

        assert (0, []) == (other.connections, other.requests)
        assert 404 == response.status_code
        assert ["/start", "/" + quote(other.url("/jobs/1"), safe="")] == [
            r.path for r in server.requests
        ]

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("https://127.0.0.1:{port}/jobs/1", id="scheme"),
            pytest.param("http://localhost:{port}/jobs/1", id="host"),
            pytest.param("//127.0.0.1:1/jobs/1", id="protocol-relative"),
            pytest.param("http://127.0.0.1:{port}@evil.test/", id="userinfo"),
        ],
    )
    def test_lookalike_origins_are_refused(self, url):
        """
        Another scheme, host name, port or a userinfo trick is another
        origin: the engine aborts.
        """
        policy = referee.load_policy_text(POLL_ANYWHERE)
        location = url.format(port=8080)
        snap = referee.Snapshot.response(
            202,
            url="http://127.0.0.1:8080/start",
            headers={"Location": location},
            request_headers=CREDENTIALS,
        )
        d = _decide(policy, snap)

        assert isinstance(d, referee.Abort), d
        assert "origin" in d.reason


# --- Secrets ----------------------------------------------------------------

SECRETS = [
    "HDR-AUTH-S1",
    "HDR-KEY-S2",
    "HDR-COOKIE-S3",
    "URL-APIKEY-S4",
    "URL-TOKEN-S5",
    "URL-KEY-S6",
    "URL-PASS-S7",
    "BODY-PASS-S8",
]

SECRET_HEADERS = {
    "Authorization": "Bearer HDR-AUTH-S1",
    "x-api-key": "HDR-KEY-S2",
    "Cookie": "session=HDR-COOKIE-S3",
}

# Planted on purpose.
SECRET_URL = (
    "http://alice:URL-PASS-S7@127.0.0.1:{port}/charge"  # noqa: S105
    "?api_key=URL-APIKEY-S4&token=URL-TOKEN-S5&key=URL-KEY-S6&q=ok"
)

ALERTING = """\
policy: alerting
rules:
  - id: payment
    when: {status: 402}
    do: abort
    alert:
      kind: topup
      severity: critical
      message: "{method} {request.url} / {url} got {status} ({rule})"
  - id: unavailable
    when: {status: 503}
    do: retry
    retry: {attempts: 2, backoff: {initial: 0s}}
"""


def _leaks(texts):
    return [(s, t) for t in texts for s in SECRETS if s in t]


class _Sink:
    def __init__(self):
        self.alerts = []
        self.lock = threading.Lock()

    def __call__(self, alert):
        with self.lock:
            self.alerts.append(alert)


class TestSecrets:
    def _call(self, server, status):
        sink = _Sink()
        policy = referee.load_policy_text(ALERTING, alert_sinks=[sink])
        server.script("/charge", [Reply(status, body={"error": "no"})])
        url = SECRET_URL.format(port=server.port)
        with (
            no_sleep(),
            structlog.testing.capture_logs() as logs,
            _client(policy) as client,
            pytest.raises(referee.Aborted) as ei,
        ):
            client.post(
                url,
                headers=SECRET_HEADERS,
                json={"password": "BODY-PASS-S8"},
            )
        assert policy.runtime.alerts.flush(2)
        return logs, ei.value, sink.alerts

    @pytest.mark.parametrize("status", [402, 503])
    def test_logs_and_errors(self, server, status):
        """
        No planted secret reaches a log event, the error's str or repr, or
        the repr of its trail.
        """
        logs, err, _ = self._call(server, status)
        texts = [repr(v) for e in logs for v in e.values()]
        texts += [str(err), repr(err), err.reason, repr(err.trail)]
        texts += [repr(record) for record in err.trail]

        assert [] == _leaks(texts)
        assert logs
        assert all("q=ok" in e.get("url", "q=ok") for e in logs)

    def test_alerts(self, server):
        """
        An alert whose template names the URL carries it redacted: no
        secret in the Alert, its repr, its dict or its message.
        """
        _, _, alerts = self._call(server, 402)
        texts = [a.message for a in alerts]
        texts += [repr(a) for a in alerts]
        texts += [repr(a.as_dict()) for a in alerts]

        assert 1 == len(alerts)
        assert "q=ok" in alerts[0].message
        assert [] == _leaks(texts)

    def _decisions(self):
        policy = referee.load_policy_text(ALERTING)
        url = SECRET_URL.format(port=1)
        for status in (402, 503, 200):
            snap = referee.Snapshot.response(
                status,
                method="POST",
                url=url,
                request_headers=SECRET_HEADERS,
                body=b'{"password": "BODY-PASS-S8"}',
            )
            yield snap, _decide(policy, snap)

    def test_decisions(self):
        """
        The repr and reason of a decision, and its alert notice, hold no
        planted secret.
        """
        texts = []
        for _snap, d in self._decisions():
            texts += [repr(d), d.reason]
            if d.alert is not None:
                texts += [repr(d.alert), d.alert.message]

        assert [] == _leaks(texts)

    def test_snapshot_repr(self):
        """
        The repr of a snapshot holds no planted secret: the URL is
        redacted, headers show their names only.
        """
        texts = [repr(snap) for snap, _d in self._decisions()]

        assert [] == _leaks(texts)
