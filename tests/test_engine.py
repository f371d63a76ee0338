"""
The decision engine: the semantics of DESIGN.md §2, one behaviour a test.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import attrs
import pytest

import referee
from referee import (
    Abort,
    Accept,
    AttemptState,
    Poll,
    Retry,
    Snapshot,
    advance,
    decide,
    load_policy_text,
)
from referee._core.engine import NO_MATCH


NOW = 1_700_000_000.0


def policy(text: str) -> referee.Policy:
    return load_policy_text(text)


def run(
    pol: referee.Policy,
    snap: Snapshot,
    state: AttemptState | None = None,
    now: float = NOW,
    seed: int = 0,
) -> referee.Decision:
    st = state if state is not None else AttemptState(started=now)
    return decide(pol, snap, st, now=now, rng=random.Random(seed))


RETRY_503 = policy(
    """
policy: t
defaults:
  retry: {attempts: 4, backoff: {initial: 1s, multiplier: 2, max: 8s, jitter: none}}
rules:
  - id: unavailable
    when: {status: 503}
    do: retry
"""
)


class TestMatching:
    def test_no_rule_accepts_with_the_shared_decision(self):
        """
        An outcome no rule names is accepted with the prebuilt NO_MATCH.
        """
        assert run(RETRY_503, Snapshot.response(200)) is NO_MATCH

    def test_unmatched_failure_passes_through(self):
        """
        A transport failure no rule names is accepted: it propagates.
        """
        d = run(RETRY_503, Snapshot.failed("read"))

        assert Accept is type(d)
        assert d.rule_id is None

    def test_first_match_wins(self):
        """
        Rules are tried in order and the first that matches decides.
        """
        pol = policy(
            """
policy: t
rules:
  - {id: a, when: {status: 500, method: POST}, do: abort}
  - {id: b, when: {status: "5xx"}, do: accept}
  - {id: c, when: {status: 500}, do: abort}
"""
        )

        assert "a" == run(pol, Snapshot.response(500, method="POST")).rule_id
        assert "b" == run(pol, Snapshot.response(500)).rule_id

    def test_rule_without_when_matches_everything(self):
        """
        A rule with no conditions matches every outcome, failures included.
        """
        pol = policy("policy: t\nrules: [{id: all, do: abort}]")

        assert "all" == run(pol, Snapshot.response(200)).rule_id
        assert "all" == run(pol, Snapshot.failed("timeout")).rule_id

    @pytest.mark.parametrize(
        ("spec", "status", "hit"),
        [
            ("429", 429, True),
            ("[500, 503]", 503, True),
            ("[500, 503]", 502, False),
            ('"5xx"', 599, True),
            ('"5xx"', 499, False),
            ('"400-404"', 404, True),
            ('"400-404"', 405, False),
            ('["4xx", 503]', 503, True),
        ],
        ids=[
            "code",
            "list-hit",
            "list-miss",
            "class",
            "class-miss",
            "range",
            "range-miss",
            "mixed",
        ],
    )
    def test_status_forms(self, spec, status, hit):
        """
        Status conditions take codes, lists, classes and ranges.
        """
        pol = policy(
            f"policy: t\nrules: [{{id: r, when: {{status: {spec}}}, do: abort}}]"
        )

        assert hit == (run(pol, Snapshot.response(status)).rule_id == "r")

    def test_method_host_and_path(self):
        """
        method, host and path globs all have to hold.
        """
        pol = policy(
            """
policy: t
rules:
  - id: r
    when: {method: [GET, HEAD], host: "*.example.com", path: "/v1/*/items"}
    do: abort
"""
        )

        def hit(method: str, url: str) -> bool:
            return (
                run(
                    pol, Snapshot.response(500, method=method, url=url)
                ).rule_id
                == "r"
            )

        assert hit("GET", "https://API.example.com/v1/x/items?q=1")
        assert not hit("POST", "https://api.example.com/v1/x/items")
        assert not hit("GET", "https://example.org/v1/x/items")
        assert not hit("GET", "https://api.example.com/v1/x/y/items")

    def test_double_star_crosses_segments(self):
        """
        ** in a path glob matches across segments; * does not.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {path: /a/**}, do: abort}]"
        )

        assert (
            "r"
            == run(pol, Snapshot.response(500, url="http://h/a/b/c")).rule_id
        )

    def test_headers_are_case_insensitive(self):
        """
        Header conditions find the header whatever its case.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {headers: {X-Veto: 'true'}}, do: accept}]"
        )

        d = run(pol, Snapshot.response(503, headers={"x-VETO": "true"}))

        assert "r" == d.rule_id

    def test_header_compared_as_text(self):
        """
        A YAML boolean matches the header text 'true'.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {headers: {X-Should-Retry: true}}, do: retry}]"
        )

        assert (
            "r"
            == run(
                pol, Snapshot.response(500, headers={"x-should-retry": "true"})
            ).rule_id
        )

    def test_failure_words(self):
        """
        failure conditions match transport failures only.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {failure: [timeout, read]}, do: abort}]"
        )

        assert "r" == run(pol, Snapshot.failed("timeout")).rule_id
        assert run(pol, Snapshot.failed("connect")).rule_id is None
        assert run(pol, Snapshot.response(500)).rule_id is None

    def test_attempt_condition(self):
        """
        attempt conditions see the number of the attempt being decided.
        """
        pol = policy(
            """
policy: t
rules:
  - {id: late, when: {status: 503, attempt: {gte: 3}}, do: abort}
  - {id: early, when: {status: 503}, do: retry}
"""
        )

        assert (
            "early"
            == run(
                pol,
                Snapshot.response(503),
                AttemptState(attempt=2, started=NOW),
            ).rule_id
        )
        assert (
            "late"
            == run(
                pol,
                Snapshot.response(503),
                AttemptState(attempt=3, started=NOW),
            ).rule_id
        )

    def test_any_all_not(self):
        """
        any, all and not combine conditions, status included.
        """
        pol = policy(
            """
policy: t
rules:
  - id: r
    when:
      any: [{status: 402}, {status: 422, body: {message: {matches: "(?i)insufficient"}}}]
      not: {method: DELETE}
    do: abort
"""
        )

        assert "r" == run(pol, Snapshot.response(402)).rule_id
        assert (
            "r"
            == run(
                pol,
                Snapshot.response(
                    422, body='{"message": "Insufficient balance"}'
                ),
            ).rule_id
        )
        assert (
            run(
                pol, Snapshot.response(422, body='{"message": "bad email"}')
            ).rule_id
            is None
        )
        assert (
            run(pol, Snapshot.response(402, method="DELETE")).rule_id is None
        )
        assert run(pol, Snapshot.response(500)).rule_id is None


class TestBody:
    POLL = policy(
        """
policy: t
rules:
  - id: ongoing
    when: {body: {qualification: ongoing}}
    do: poll
"""
    )

    def test_body_value(self):
        """
        A body path with the value matches.
        """
        d = run(
            self.POLL,
            Snapshot.response(202, body='{"qualification": "ongoing"}'),
        )

        assert Poll is type(d)

    def test_escaped_body_still_matches(self):
        """
        The byte prefilter never skips a body that spells the value with
        \\u escapes.
        """
        d = run(
            self.POLL,
            Snapshot.response(202, body='{"qualification": "ongo\\u0069ng"}'),
        )

        assert "ongoing" == d.rule_id

    @pytest.mark.parametrize(
        "body",
        [
            '{"qualification":"ongoing"}',
            '{"qualification" :\n  "ongoing"}',
            '{"a": {"qualification": "ongoing"}, "qualification": "ongoing"}',
        ],
        ids=["compact", "spaced", "nested-too"],
    )
    def test_json_spacing_still_matches(self, body):
        """
        The key-and-value prefilter allows any JSON spacing.
        """
        assert (
            "ongoing"
            == run(self.POLL, Snapshot.response(202, body=body)).rule_id
        )

    def test_value_under_another_key_is_not_parsed(self, monkeypatch):
        """
        A body with the value under another key is skipped without a parse.
        """
        import referee._core.matchers as m

        parses = []
        real = m.orjson.loads
        monkeypatch.setattr(
            m,
            "orjson",
            type(
                "J",
                (),
                {
                    "loads": staticmethod(
                        lambda b: parses.append(b) or real(b)
                    ),
                    "JSONDecodeError": m.orjson.JSONDecodeError,
                },
            ),
        )
        body = '{"qualification": "valid", "note": "ongoing"}'

        assert run(self.POLL, Snapshot.response(200, body=body)) is NO_MATCH
        assert [] == parses
        run(
            self.POLL,
            Snapshot.response(200, body='{"qualification": "ongoing"}'),
        )
        assert 1 == len(parses)

    def test_value_elsewhere_does_not_match(self):
        """
        The value under another key passes the prefilter but not the match.
        """
        d = run(
            self.POLL,
            Snapshot.response(
                200, body='{"qualification": "valid", "note": "ongoing"}'
            ),
        )

        assert d is NO_MATCH

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"\xff\xfe",
            b"",
            b'{"qualification": ["ongoing"]}',
            b"[1, 2]",
        ],
        ids=["text", "invalid-utf8", "empty", "list-value", "json-list"],
    )
    def test_bodies_that_do_not_match(self, body):
        """
        Bodies that are not JSON, or not of the shape, simply do not match.
        """
        assert run(self.POLL, Snapshot.response(200, body=body)) is NO_MATCH

    def test_loader_called_once_and_only_when_needed(self):
        """
        A body loader is called once for a rule that needs the body, and
        never for an outcome no body rule can match.
        """
        calls = []

        def load() -> bytes:
            calls.append(1)
            return b'{"qualification": "ongoing"}'

        run(self.POLL, Snapshot.response(202, load_body=load))
        run(RETRY_503, Snapshot.response(200, load_body=load))

        assert [1] == calls

    def test_body_limit(self):
        """
        Bodies over body_limit are not parsed and do not match.
        """
        pol = policy(
            """
policy: t
defaults: {body_limit: 16}
rules: [{id: r, when: {body: {a: {exists: true}}}, do: abort}]
"""
        )

        assert "r" == run(pol, Snapshot.response(200, body='{"a": 1}')).rule_id
        assert (
            run(
                pol,
                Snapshot.response(200, body='{"a": 1, "padding": "xxxxx"}'),
            )
            is NO_MATCH
        )

    @pytest.mark.parametrize(
        ("matcher", "body", "hit"),
        [
            ("{exists: false}", '{"b": 1}', True),
            ("{exists: false}", '{"a": null}', False),
            ("[1, 2]", '{"a": 2}', True),
            ("1", '{"a": true}', False),
            ("true", '{"a": true}', True),
            ("{contains: lo}", '{"a": "hello"}', True),
            ("{contains: 3}", '{"a": [1, 3]}', True),
            ("{gt: 5}", '{"a": 6}', True),
            ("{gt: 5, lte: 6}", '{"a": 7}', False),
            ("{matches: '^x+$'}", '{"a": 5}', False),
            ("{in: [x, y]}", '{"a": "y"}', True),
            ("null", '{"a": null}', True),
        ],
        ids=[
            "absent",
            "present-null",
            "one-of",
            "bool-not-int",
            "bool",
            "substring",
            "member",
            "gt",
            "gt-lte",
            "regex-non-string",
            "in",
            "null",
        ],
    )
    def test_value_matchers(self, matcher, body, hit):
        """
        Value matchers compare JSON values by type, booleans apart from
        numbers.
        """
        pol = policy(
            f"policy: t\nrules: [{{id: r, when: {{body: {{a: {matcher}}}}}, do: abort}}]"
        )

        assert hit == (
            run(pol, Snapshot.response(200, body=body)).rule_id == "r"
        )

    def test_list_index_paths(self):
        """
        A digit in a dotted path indexes a list.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {body: {results.0.status: failed}}, do: abort}]"
        )

        d = run(
            pol,
            Snapshot.response(200, body='{"results": [{"status": "failed"}]}'),
        )

        assert "r" == d.rule_id


class TestRetry:
    def test_backoff_schedule_counts_the_first_send(self):
        """
        attempts: 4 allows three retries with doubling delays, then gives up.
        """
        snap = Snapshot.response(503)
        delays = []
        state = AttemptState(started=NOW)
        while True:
            d = run(RETRY_503, snap, state)
            if not isinstance(d, Retry):
                break
            delays.append(d.delay)
            state = advance(state, snap, d, now=NOW)

        assert [1.0, 2.0, 4.0] == delays
        assert Abort is type(d)
        assert referee.RetriesExhausted is d.error
        assert 4 == state.attempt

    @pytest.mark.parametrize(
        ("jitter", "lo", "hi"),
        [("full", 0.0, 8.0), ("equal", 4.0, 8.0), ("none", 8.0, 8.0)],
        ids=["full", "equal", "none"],
    )
    def test_jitter_bounds(self, jitter, lo, hi):
        """
        Jitter keeps delays inside its documented range.
        """
        pol = policy(
            f"""
policy: t
defaults: {{retry: {{attempts: 9, backoff: {{initial: 8s, multiplier: 1, max: 8s, jitter: {jitter}}}}}}}
rules: [{{id: r, when: {{status: 503}}, do: retry}}]
"""
        )

        delays = [
            run(pol, Snapshot.response(503), seed=s).delay for s in range(50)
        ]

        assert all(lo <= d <= hi for d in delays)

    def test_retry_after_seconds(self):
        """
        Retry-After in seconds sets the delay.
        """
        d = run(
            RETRY_503, Snapshot.response(503, headers={"Retry-After": "7"})
        )

        assert (7.0, "Retry-After") == (d.delay, d.delay_source)

    def test_retry_after_date(self):
        """
        Retry-After as an HTTP-date is measured from now.
        """
        when = format_datetime(
            datetime.fromtimestamp(NOW + 30, tz=UTC), usegmt=True
        )

        d = run(
            RETRY_503, Snapshot.response(503, headers={"Retry-After": when})
        )

        assert 30.0 == d.delay

    def test_retry_after_ms_comes_first(self):
        """
        retry-after-ms wins over Retry-After by default.
        """
        d = run(
            RETRY_503,
            Snapshot.response(
                503, headers={"Retry-After": "7", "retry-after-ms": "1500"}
            ),
        )

        assert 1.5 == d.delay

    def test_past_or_garbage_hint_falls_back_to_backoff(self):
        """
        A hint in the past, or one that does not parse, leaves the backoff.
        """
        past = format_datetime(
            datetime.fromtimestamp(NOW - 30, tz=UTC), usegmt=True
        )

        for value in (past, "soon", "-5"):
            d = run(
                RETRY_503,
                Snapshot.response(503, headers={"Retry-After": value}),
            )
            assert ("backoff", 1.0) == (d.delay_source, d.delay)

    def test_named_reset_header(self):
        """
        A rule's delay_from names reset headers with their format.
        """
        pol = policy(
            """
policy: t
rules:
  - id: r
    when: {status: 429}
    do: retry
    retry: {delay_from: ["X-RateLimit-Reset:epoch"]}
"""
        )

        d = run(
            pol,
            Snapshot.response(
                429, headers={"X-RateLimit-Reset": str(int(NOW) + 12)}
            ),
        )

        assert (12.0, "X-RateLimit-Reset") == (d.delay, d.delay_source)

    def test_hint_above_ceiling_fails(self):
        """
        A hint above server_delay.max fails the call by default.
        """
        d = run(
            RETRY_503, Snapshot.response(503, headers={"Retry-After": "86400"})
        )

        assert Abort is type(d)
        assert referee.ServerError is d.error
        assert "above server_delay.max" in d.reason

    def test_hint_above_ceiling_capped(self):
        """
        on_exceed: cap waits the ceiling instead.
        """
        pol = policy(
            """
policy: t
defaults: {server_delay: {max: 60s, on_exceed: cap}}
rules: [{id: r, when: {status: 503}, do: retry}]
"""
        )

        d = run(pol, Snapshot.response(503, headers={"Retry-After": "86400"}))

        assert (60.0, "Retry-After (capped)") == (d.delay, d.delay_source)

    def test_deadline_is_never_overrun(self):
        """
        A sleep that would overrun the call's deadline is not taken.
        """
        pol = policy(
            """
policy: t
defaults: {deadline: 10s}
rules: [{id: r, when: {status: 503}, do: retry}]
"""
        )
        state = AttemptState(started=NOW - 5)

        ok = run(
            pol, Snapshot.response(503, headers={"Retry-After": "4"}), state
        )
        late = run(
            pol, Snapshot.response(503, headers={"Retry-After": "6"}), state
        )

        assert Retry is type(ok)
        assert referee.DeadlineExceeded is late.error

    @pytest.mark.parametrize("method", ["POST", "PATCH"])
    def test_unsafe_methods_are_not_retried(self, method):
        """
        POST and PATCH are not retried after the server may have seen them,
        and the reason says so.
        """
        d = run(RETRY_503, Snapshot.response(503, method=method))

        assert Abort is type(d)
        assert referee.ServerError is d.error
        assert "not idempotent" in d.reason

    def test_unsafe_method_after_connect_failure(self):
        """
        A POST that never reached the server is retried.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {failure: connect}, do: retry}]"
        )

        assert Retry is type(
            run(pol, Snapshot.failed("connect", method="POST"))
        )

    def test_unsafe_method_with_idempotency_key(self):
        """
        A POST carrying an Idempotency-Key is retried.
        """
        snap = Snapshot.response(
            503, method="POST", request_headers={"Idempotency-Key": "k1"}
        )

        assert Retry is type(run(RETRY_503, snap))

    def test_unsafe_methods_flag(self):
        """
        unsafe_methods: true on the rule retries a POST.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {status: 429}, do: retry, retry: {unsafe_methods: true}}]"
        )

        assert Retry is type(run(pol, Snapshot.response(429, method="POST")))

    def test_exhausted_retry_raises_rule_error(self):
        """
        A retry rule with error: raises it when it runs out.
        """
        pol = policy(
            """
policy: t
rules: [{id: r, when: {status: 500}, do: retry, error: NotFound, retry: {attempts: 2}}]
"""
        )

        d = run(
            pol, Snapshot.response(500), AttemptState(attempt=2, started=NOW)
        )

        assert referee.NotFound is d.error


class TestPoll:
    POLL = policy(
        """
policy: t
defaults:
  retry: {attempts: 2, backoff: {jitter: none}}
  poll: {initial: 2s, multiplier: 2, max: 8s, deadline: 30s}
rules:
  - {id: ongoing, when: {body: {status: ongoing}}, do: poll}
  - {id: flaky, when: {status: 503}, do: retry}
"""
    )
    ONGOING = Snapshot.response(
        202, url="https://h/jobs/1", body='{"status": "ongoing"}'
    )

    def test_polls_follow_their_schedule_and_spend_no_attempts(self):
        """
        Polls grow on their own schedule and leave the attempt count alone,
        so a later failure can still be retried.
        """
        state = AttemptState(started=NOW)
        delays = []
        now = NOW
        for _ in range(4):
            d = run(self.POLL, self.ONGOING, state, now=now)
            delays.append(d.delay)
            state = advance(state, self.ONGOING, d, now=now)
            now += d.delay

        assert [2.0, 4.0, 8.0, 8.0] == delays
        assert (1, 4) == (state.attempt, state.polls)
        assert Retry is type(
            run(self.POLL, Snapshot.response(503), state, now=now)
        )

    def test_poll_deadline(self):
        """
        A poll that would overrun the poll deadline aborts with
        DeadlineExceeded.
        """
        state = AttemptState(started=NOW - 100, polls=3, poll_started=NOW - 25)

        d = run(self.POLL, self.ONGOING, state)

        assert referee.DeadlineExceeded is d.error
        assert "still running" in d.reason

    def test_polling_call_trades_its_deadline(self):
        """
        Once a call polls, the call deadline no longer cuts its retries.
        """
        pol = policy(
            """
policy: t
defaults: {deadline: 5s, poll: {deadline: 10m}}
rules: [{id: r, when: {status: 503}, do: retry}]
"""
        )
        state = AttemptState(started=NOW - 60, polls=5, poll_started=NOW - 50)

        assert Retry is type(run(pol, Snapshot.response(503), state))

    def test_retries_while_polling_keep_the_poll_deadline(self):
        """
        A retry in the middle of polling may not sleep past the poll
        deadline (the call's deadline no longer applies, but the poll's
        does).
        """
        state = AttemptState(started=NOW - 100, polls=3, poll_started=NOW - 28)
        state = attrs.evolve(
            state,
            history=(
                referee.AttemptRecord(
                    202, None, "ongoing", "poll", 2.0, NOW - 2
                ),
            ),
        )

        d = run(
            self.POLL,
            Snapshot.response(503, headers={"Retry-After": "5"}),
            state,
        )

        assert referee.DeadlineExceeded is d.error
        assert "poll's deadline" in d.reason

    def test_poll_request_from_the_body(self):
        """
        A poll request template builds the next URL from the response.
        """
        pol = policy(
            """
policy: t
rules:
  - id: started
    when: {method: POST, body: {id: {exists: true}}}
    do: poll
    poll: {request: {method: GET, url: "{request.url}?id={body.id}"}}
"""
        )
        snap = Snapshot.response(
            200,
            method="POST",
            url="https://api.x/find",
            body='{"id": "a b/c"}',
        )

        d = run(pol, snap)

        assert (
            referee.PollRequest("GET", "https://api.x/find?id=a%20b%2Fc")
            == d.request
        )

    def test_poll_location_relative(self):
        """
        A relative Location is resolved against the request's URL.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {status: 202}, do: poll, poll: {request: {url: '{header.Location}'}}}]"
        )
        snap = Snapshot.response(
            202, url="https://api.x/jobs", headers={"Location": "/jobs/7"}
        )

        assert "https://api.x/jobs/7" == run(pol, snap).request.url

    @pytest.mark.parametrize(
        "location",
        [
            "https://evil.example/jobs/7",
            "http://api.x/jobs/7",
            "https://api.x:8443/j",
            "//evil.example/x",
        ],
        ids=["host", "scheme", "port", "scheme-relative"],
    )
    def test_poll_to_another_origin_is_refused(self, location):
        """
        A poll URL on another origin aborts the call instead.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {status: 202}, do: poll, poll: {request: {url: '{header.Location}'}}}]"
        )
        snap = Snapshot.response(
            202, url="https://api.x/jobs", headers={"Location": location}
        )

        d = run(pol, snap)

        assert Abort is type(d)
        assert "another origin" in d.reason or "not the origin" in d.reason

    def test_poll_request_missing_field(self):
        """
        A template field the response lacks aborts with a reason naming it.
        """
        pol = policy(
            "policy: t\nrules: [{id: r, when: {status: 202}, do: poll, poll: {request: {url: '{header.Location}'}}}]"
        )

        d = run(pol, Snapshot.response(202, url="https://api.x/jobs"))

        assert Abort is type(d)
        assert "header.Location" in d.reason


class TestUnsafePoll:
    """
    The unsafe-method gate covers polls that send the request again.
    """

    POLL = policy(
        "policy: t\nrules: [{id: job, when: {status: 202}, do: poll}]"
    )
    LOCATION = policy(
        "policy: t\nrules: [{id: job, when: {status: 202}, do: poll, "
        "poll: {request: {url: '{header.Location}'}}}]"
    )

    @pytest.mark.parametrize("method", ["POST", "PATCH"])
    def test_poll_resending_an_unsafe_method_aborts(self, method):
        """
        A poll that would send POST or PATCH again aborts, naming the rule
        and saying why.
        """
        d = run(self.POLL, Snapshot.response(202, method=method))

        assert Abort is type(d)
        assert "job" == d.rule_id
        assert referee.Aborted is d.error
        assert (
            f"{method} got 202: rule 'job' would poll by sending the "
            f"{method} again, but {method} is not idempotent"
        ) in d.reason

    def test_the_rules_error(self):
        """
        The refused poll raises the rule's error:, as a refused retry does.
        """
        pol = policy(
            "policy: t\nrules: [{id: job, when: {status: 202}, do: poll, "
            "error: JobFailed}]"
        )

        d = run(pol, Snapshot.response(202, method="POST"))

        assert referee.JobFailed is d.error

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
    def test_idempotent_methods_poll(self, method):
        """
        Idempotent methods are polled as they are.
        """
        assert Poll is type(
            run(self.POLL, Snapshot.response(202, method=method))
        )

    def test_idempotency_key_opens_the_gate(self):
        """
        A POST that carries an Idempotency-Key may be polled again.
        """
        snap = Snapshot.response(
            202, method="POST", request_headers={"Idempotency-Key": "k1"}
        )

        assert Poll is type(run(self.POLL, snap))

    def test_a_built_request_may_go(self):
        """
        A poll that builds another request (the 202's Location: a GET) is
        no re-send.
        """
        snap = Snapshot.response(
            202,
            method="POST",
            url="https://api.x/jobs",
            headers={"Location": "/jobs/7"},
        )

        d = run(self.LOCATION, snap)

        assert referee.PollRequest("GET", "https://api.x/jobs/7") == d.request

    @pytest.mark.parametrize(
        "request_",
        ["{method: POST}", "{url: '{request.url}', method: POST}"],
        ids=["method-only", "own-url"],
    )
    def test_a_built_request_that_is_the_same_aborts(self, request_):
        """
        A poll request with the request's own method and URL is the same
        request sent again.
        """
        pol = policy(
            "policy: t\nrules: [{id: job, when: {status: 202}, do: poll, "
            f"poll: {{request: {request_}}}}}]"
        )
        snap = Snapshot.response(202, method="POST", url="https://api.x/j")

        assert Abort is type(run(pol, snap))

    def test_a_later_poll_of_the_built_get_goes(self):
        """
        After a poll built a GET, the outcome decided is the GET's: polling
        it again is safe, whatever the call's first method was.
        """
        snap = Snapshot.response(202, method="GET", url="https://api.x/j/7")
        state = AttemptState(started=NOW, polls=1, poll_started=NOW - 2)

        assert Poll is type(run(self.POLL, snap, state))


class TestSideEffects:
    def test_alert_and_breaker_ride_on_the_decision(self):
        """
        A rule's alert is rendered and its breaker passed along.
        """
        pol = policy(
            """
policy: credits
rules:
  - id: out
    when: {status: 402}
    do: abort
    alert: {kind: topup, severity: critical, dedupe: 1h, message: "{status}: {body.reason} ({body.nope})"}
    breaker: {name: credits, open_for: 10m}
"""
        )

        d = run(
            pol,
            Snapshot.response(402, body='{"reason": "Insufficient credits"}'),
        )

        assert referee.InsufficientCredits is d.error
        assert (
            referee.AlertNotice(
                kind="topup",
                severity="critical",
                message="402: Insufficient credits (?)",
                key="credits:topup",
                dedupe=3600.0,
            )
            == d.alert
        )
        assert referee.BreakerSpec("credits", 600.0) == d.breaker

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (400, referee.BadRequest),
            (401, referee.AuthenticationError),
            (402, referee.InsufficientCredits),
            (403, referee.PermissionDenied),
            (404, referee.NotFound),
            (429, referee.RateLimited),
            (503, referee.ServerError),
            (418, referee.Aborted),
        ],
        ids=str,
    )
    def test_abort_default_error_by_status(self, status, error):
        """
        An abort without error: raises the status's default error.
        """
        pol = policy("policy: t\nrules: [{id: r, do: abort}]")

        assert error is run(pol, Snapshot.response(status)).error


class TestExtends:
    def test_child_rules_first_and_defaults_merge(self, tmp_path):
        """
        The extending policy's rules come first; defaults merge key by key.
        """
        (tmp_path / "base.yaml").write_text(
            """
policy: base
defaults:
  retry: {attempts: 5, backoff: {initial: 3s, multiplier: 1, jitter: none}}
rules: [{id: base-503, when: {status: 503}, do: retry}, {id: base-500, when: {status: 500}, do: abort}]
"""
        )
        (tmp_path / "child.yaml").write_text(
            """
policy: child
extends: base.yaml
defaults: {retry: {attempts: 2}}
rules: [{id: child-500, when: {status: 500}, do: retry}]
"""
        )

        pol = referee.load_policy(tmp_path / "child.yaml")

        assert ["child-500", "base-503", "base-500"] == [
            r.id for r in pol.rules
        ]
        d = run(pol, Snapshot.response(503))
        assert (3.0, 2) == (d.delay, pol.rule("base-503").retry.attempts)


class TestState:
    def test_advance_keeps_history(self):
        """
        advance() appends one record per decided outcome.
        """
        snap = Snapshot.response(503)
        state = AttemptState(started=NOW)
        d = run(RETRY_503, snap, state)

        after = advance(state, snap, d, now=NOW + 1)

        assert (
            referee.AttemptRecord(
                503, None, "unavailable", "retry", 1.0, NOW + 1
            ),
        ) == after.history


class TestOnePathWalker:
    BODY = b'{"results": [{"id": "a"}, {"id": "z"}], "map": {"0": "zero"}}'
    POLICY = """
policy: paths
rules:
  - id: {name}
    when: {{status: 400, body: {{{path}: {value}}}}}
    do: abort
    alert: {{kind: x, message: "found {{body.{path}}}"}}
"""

    @pytest.mark.parametrize(
        ("path", "value"),
        [("results.0.id", "a"), ("results.-1.id", "z"), ("map.0", "zero")],
        ids=["index", "negative-index", "digit-key"],
    )
    def test_conditions_and_templates_agree(self, path, value):
        """
        A dotted path reaches the same value in a condition and in an
        alert template: indexes, negative indexes and digit keys alike.
        """
        policy = referee.load_policy_text(
            self.POLICY.format(name="r", path=path, value=value)
        )
        snap = referee.Snapshot.response(400, body=self.BODY)

        decision = referee.decide(policy, snap, referee.AttemptState(), now=0)

        assert "r" == decision.rule_id
        assert f"found {value}" == decision.alert.message
