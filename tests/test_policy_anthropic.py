"""
The bundled anthropic policy, case by case, with the vendor guidance of
shared/reference/sdks-and-standards.md and Anthropic's errors page (the
facts A1-A9 below, cited in the policy's comments).

Every case is decided on a local address and behind a path-prefixing
proxy, never on the vendor's host: no rule may depend on it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.policy_helpers import (
    ACCEPT,
    BASE_IDS,
    BASES,
    CONFIG,
    NOW,
    TOPUP,
    Case,
    Outcome,
    check_decision,
    check_delay,
    decide,
    ids,
    rows,
    with_delay,
)

import referee
from referee import (
    Abort,
    AttemptState,
    AuthenticationError,
    BadRequest,
    InsufficientCredits,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetriesExhausted,
    ServerError,
    Snapshot,
)
from referee.testing import simulate


# The facts, numbered for the cases:
# A1 400 invalid_request_error "credit balance is too low": abort
#    InsufficientCredits, top-up alert, credits breaker; never retried;
# A2 429 enforced_spend_limit_reached: abort InsufficientCredits, top-up
#    alert; never retried;
# A3 429 rate_limit_error: retried, POST included, after retry-after;
# A4 529 overloaded_error: retried, POST included; runs out as Overloaded;
# A5 500 api_error: retried, POST included;
# A6 other 400s, 413: BadRequest;
# A7 401 AuthenticationError + config alert; 403 PermissionDenied; 404
#    NotFound;
# A8 x-should-retry false / true, as the SDK reads it;
# A9 502, 503, 504 (undocumented): http-default's, idempotent requests only.

ANTHROPIC = referee.load_policy("anthropic")
OVERLOADED = ANTHROPIC.errors["Overloaded"]
AUTH = {
    "x-api-key": "sk-ant-api03-0123456789abcdef",
    "anthropic-version": "2023-06-01",
}
MESSAGES = "/v1/messages"
BATCH = "/v1/messages/batches/msgbatch_01abc"
# The SDK's first delay, 0.5 s, with equal jitter.
FIRST = (0.25, 0.5)
CREDITS = Outcome(
    "abort", "credit-balance-too-low", InsufficientCredits, TOPUP, "credits"
)
SPEND = Outcome(
    "abort", "spend-limit-reached", InsufficientCredits, TOPUP, "credits"
)
RATE = Outcome("retry", "rate-limited")
OVERLOAD = Outcome("retry", "overloaded")
API_ERROR = Outcome("retry", "api-error")


def anthropic_error(kind: str, message: str, **details: Any) -> dict[str, Any]:
    """
    An Anthropic error body.
    """
    error: dict[str, Any] = {"type": kind, "message": message}
    if details:
        error["details"] = details
    return {"type": "error", "error": error, "request_id": "req_011CSHoEeqs"}


LOW_CREDIT = anthropic_error(
    "invalid_request_error",
    "Your credit balance is too low to access the Anthropic API. Please go "
    "to Plans & Billing to upgrade or purchase credits.",
)
RATE_LIMIT = anthropic_error(
    "rate_limit_error",
    "This request would exceed the rate limit for your organization of "
    "50 requests per minute.",
)
SPEND_LIMIT = anthropic_error(
    "rate_limit_error",
    "You have reached your monthly spend limit.",
    error_code="enforced_spend_limit_reached",
)
OVERLOADED_BODY = anthropic_error("overloaded_error", "Overloaded")
API_ERROR_BODY = anthropic_error("api_error", "Internal server error")
BAD = anthropic_error("invalid_request_error", "max_tokens: Field required")

CASES = [
    Case("A1-credit-balance-post", 400, "POST", MESSAGES, CREDITS, LOW_CREDIT),
    Case(
        "A1-credit-balance-any-case",
        400,
        "POST",
        MESSAGES,
        CREDITS,
        anthropic_error("invalid_request_error", "Credit balance is too low"),
    ),
    Case(
        "A1-credit-balance-despite-should-retry",
        400,
        "POST",
        MESSAGES,
        CREDITS,
        LOW_CREDIT,
        headers={"x-should-retry": "true"},
    ),
    Case(
        "A2-spend-limit",
        429,
        "POST",
        MESSAGES,
        SPEND,
        SPEND_LIMIT,
        headers={"retry-after": "30"},
    ),
    Case(
        "A3-429-retry-after",
        429,
        "POST",
        MESSAGES,
        RATE,
        RATE_LIMIT,
        headers={"retry-after": "7"},
        delay=7.0,
    ),
    Case(
        "A3-429-retry-after-ms-first",
        429,
        "POST",
        MESSAGES,
        RATE,
        RATE_LIMIT,
        headers={"retry-after-ms": "1500", "retry-after": "7"},
        delay=1.5,
    ),
    Case(
        "A3-429-backoff", 429, "POST", MESSAGES, RATE, RATE_LIMIT, delay=FIRST
    ),
    Case(
        "A3-429-above-ceiling",
        429,
        "POST",
        MESSAGES,
        Outcome("abort", "rate-limited", RateLimited),
        RATE_LIMIT,
        headers={"retry-after": "600"},
    ),
    Case(
        "A3-429-exhausted",
        429,
        "POST",
        MESSAGES,
        Outcome("abort", "rate-limited", RateLimited),
        RATE_LIMIT,
        attempt=3,
    ),
    Case(
        "A4-529-post",
        529,
        "POST",
        MESSAGES,
        OVERLOAD,
        OVERLOADED_BODY,
        delay=FIRST,
    ),
    Case(
        "A4-529-second-attempt",
        529,
        "POST",
        MESSAGES,
        OVERLOAD,
        OVERLOADED_BODY,
        attempt=2,
        delay=(0.5, 1.0),
    ),
    Case(
        "A4-529-retry-after",
        529,
        "POST",
        MESSAGES,
        OVERLOAD,
        OVERLOADED_BODY,
        headers={"retry-after": "4"},
        delay=4.0,
    ),
    Case(
        "A4-529-exhausted",
        529,
        "POST",
        MESSAGES,
        Outcome("abort", "overloaded", OVERLOADED),
        OVERLOADED_BODY,
        attempt=3,
    ),
    Case(
        "A5-500-post",
        500,
        "POST",
        MESSAGES,
        API_ERROR,
        API_ERROR_BODY,
        delay=FIRST,
    ),
    Case(
        "A5-500-exhausted",
        500,
        "POST",
        MESSAGES,
        Outcome("abort", "api-error", ServerError),
        API_ERROR_BODY,
        attempt=3,
    ),
    Case(
        "A6-400",
        400,
        "POST",
        MESSAGES,
        Outcome("abort", "bad-request", BadRequest),
        BAD,
    ),
    Case(
        "A6-413",
        413,
        "POST",
        MESSAGES,
        Outcome("abort", "bad-request", BadRequest),
        anthropic_error(
            "request_too_large", "Request exceeds the maximum size"
        ),
    ),
    Case(
        "A6-400-not-json",
        400,
        "POST",
        MESSAGES,
        Outcome("abort", "bad-request", BadRequest),
        "<html>Bad Request</html>",
    ),
    Case(
        "A7-401",
        401,
        "POST",
        MESSAGES,
        Outcome("abort", "unauthorized", AuthenticationError, CONFIG),
        anthropic_error("authentication_error", "invalid x-api-key"),
    ),
    Case(
        "A7-403",
        403,
        "POST",
        MESSAGES,
        Outcome("abort", "permission-denied", PermissionDenied),
        anthropic_error(
            "permission_error",
            "Your API key does not have permission to use this resource.",
        ),
    ),
    Case(
        "A7-404",
        404,
        "GET",
        BATCH,
        Outcome("abort", "not-found", NotFound),
        anthropic_error("not_found_error", "model: claude-9"),
    ),
    Case(
        "A8-should-not-retry-529",
        529,
        "POST",
        MESSAGES,
        Outcome("abort", "server-says-no-retry", ServerError),
        OVERLOADED_BODY,
        headers={"x-should-retry": "false"},
    ),
    Case(
        "A8-should-not-retry-429",
        429,
        "POST",
        MESSAGES,
        Outcome("abort", "server-says-no-retry", RateLimited),
        RATE_LIMIT,
        headers={"x-should-retry": "false", "retry-after": "1"},
    ),
    Case(
        "A8-should-retry-400",
        400,
        "POST",
        MESSAGES,
        Outcome("retry", "server-says-retry"),
        BAD,
        headers={"x-should-retry": "true"},
        delay=FIRST,
    ),
    Case(
        "A8-should-retry-exhausted",
        503,
        "POST",
        MESSAGES,
        Outcome("abort", "server-says-retry", RetriesExhausted),
        headers={"x-should-retry": "true"},
        attempt=3,
    ),
    Case(
        "A9-503-get",
        503,
        "GET",
        BATCH,
        Outcome("retry", "server-unavailable"),
        delay=FIRST,
    ),
    Case(
        "A9-502-post-not-retried",
        502,
        "POST",
        MESSAGES,
        Outcome("abort", "server-unavailable", ServerError),
    ),
    Case(
        "A9-504-post-not-retried",
        504,
        "POST",
        MESSAGES,
        Outcome("abort", "server-unavailable", ServerError),
    ),
    Case(
        "200-accepted",
        200,
        "POST",
        MESSAGES,
        ACCEPT,
        {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello."}],
            "stop_reason": "end_turn",
        },
    ),
]
CASES = [
    Case(**{**c.__dict__, "request_headers": {**AUTH, **c.request_headers}})
    for c in CASES
]


class TestAnthropic:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize("case", CASES, ids=ids(CASES))
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(ANTHROPIC, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", with_delay(CASES), ids=ids(with_delay(CASES))
    )
    def test_delay(self, case, base):
        """
        Retries wait what retry-after-ms, retry-after or the backoff says.
        """
        check_delay(ANTHROPIC, case, base)

    @pytest.mark.parametrize("row", [f"A{n}" for n in range(1, 10)], ids=str)
    def test_every_fact_is_covered(self, row):
        """
        Every fact A1-A9 has a case.
        """
        assert row in rows(CASES)

    @pytest.mark.parametrize(
        ("headers", "source"),
        [
            ({"retry-after": "7"}, "Retry-After"),
            ({"retry-after-ms": "1500", "retry-after": "7"}, "retry-after-ms"),
            ({}, "backoff"),
        ],
        ids=["retry-after", "retry-after-ms", "backoff"],
    )
    def test_rate_limit_delay_source(self, headers, source):
        """
        A 429's delay comes from the first hint present, else the backoff.
        """
        snap = Snapshot.response(
            429,
            method="POST",
            url="http://127.0.0.1:8080" + MESSAGES,
            headers=headers,
            body=json.dumps(RATE_LIMIT),
        )

        decision = decide(ANTHROPIC, snap, AttemptState(started=NOW))

        assert isinstance(decision, referee.Retry)
        assert source == decision.delay_source

    def test_credit_alert_message(self):
        """
        The top-up alert carries Anthropic's message.
        """
        snap = Snapshot.response(
            400,
            method="POST",
            url="http://127.0.0.1:8080" + MESSAGES,
            body=json.dumps(LOW_CREDIT),
        )

        decision = decide(ANTHROPIC, snap, AttemptState(started=NOW))

        assert decision.alert is not None
        assert decision.alert.message.startswith(
            "Anthropic credits exhausted: Your credit balance is too low"
        )

    def test_overloaded_is_a_server_error(self):
        """
        Overloaded is declared in the file, under ServerError: a caller
        that catches ServerError catches it.
        """
        assert issubclass(OVERLOADED, ServerError)

    def test_overloaded_twice_then_answered(self):
        """
        A Messages POST met by two 529s is sent a third time and answered.
        """
        run = simulate(
            ANTHROPIC,
            [
                {"status": 529, "body": OVERLOADED_BODY},
                {"status": 529, "body": OVERLOADED_BODY},
                200,
            ],
            method="POST",
            url="http://127.0.0.1:8080" + MESSAGES,
        )
        expected = (["retry", "retry", "accept"], True)

        assert expected == (
            [type(s.decision).__name__.lower() for s in run.steps],
            run.finished,
        )

    def test_overloaded_through_every_attempt(self):
        """
        Three 529s in a row end the call with Overloaded.
        """
        run = simulate(
            ANTHROPIC,
            [529, 529, 529],
            method="POST",
            url="http://127.0.0.1:8080" + MESSAGES,
        )

        assert isinstance(run.decision, Abort)
        assert OVERLOADED is run.decision.error

    def test_defaults(self):
        """
        The defaults are the SDK's: three sends, 0.5 s doubling to 8 s, a
        120 s ceiling on server hints that fails rather than waits.
        """
        expected = (3, (0.5, 1.0), "equal", 600.0, 120.0, "fail")

        assert expected == (
            ANTHROPIC.retry.attempts,
            ANTHROPIC.retry.schedule[:2],
            ANTHROPIC.retry.jitter,
            ANTHROPIC.deadline,
            ANTHROPIC.server_delay_max,
            ANTHROPIC.on_exceed,
        )

    def test_stream_error_rule_is_left_to_the_lead(self):
        """
        The place of the streaming `event: error` rule is marked, and no
        rule matches a 200 yet: a stream is never read for it.
        """
        expected = ()

        assert expected == tuple(ANTHROPIC.candidates(200, "POST"))
