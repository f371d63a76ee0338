"""
The bundled ``experian-phone`` policy, case by case: every row of seed 003's
status-code table (each 400 and 403 scenario on its own) and every row
(X1-X14) of the decision table in shared/reference/apis.md §2, each decided
on the vendor's host, on a local fake and behind a path-prefixing proxy.
"""

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.policy_helpers import Outcome, hosts, outcome

import referee
from referee import (
    Abort,
    AttemptState,
    AuthenticationError,
    BadRequest,
    DeadlineExceeded,
    InsufficientCredits,
    PermissionDenied,
    Poll,
    RateLimited,
    RetriesExhausted,
    Retry,
    ServerError,
    Snapshot,
)
from referee._files.load import policies_folder


POLICY = referee.load_policy("experian-phone")

# A fixed Unix time, so that X-Rate-Limit-Reset gives exact delays.
NOW = 1_700_000_000.0

# The same API reached directly, through a local fake, and through a proxy
# that prefixes the paths: the decisions must not change.
BASES = [
    "https://api.experianaperture.io",
    "http://127.0.0.1:8080",
    "http://proxy.internal:3128/experian",
]
BASE_IDS = ["vendor", "local-fake", "proxy"]

VALIDATE = "/phone/validate/v2"
VALIDATION = "/phone/validation/v2"

REQUEST_HEADERS = {
    "Auth-Token": "0f3b6c1e-9a2d-4c57-8e41-7b5d2a9c6f10",
    "Timeout-Seconds": "5",
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Reference-Id": "crm-lead-42",
}


@dataclass(frozen=True)
class Case:
    """
    One outcome of a validation and what the policy must make of it.

    *delay* is an exact delay, ``(low, high)`` bounds, or None when there is
    none to check.
    """

    id: str
    status: int
    expected: Outcome
    body: Any = None
    path: str = VALIDATE
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1
    delay: float | tuple[float, float] | None = None


def state(attempt: int = 1) -> AttemptState:
    """
    A call that started now, on *attempt*.
    """
    return AttemptState(attempt=attempt, started=NOW)


def snapshot(case: Case, base: str) -> Snapshot:
    """
    The response of *case*, as received from *base*.
    """
    body = case.body
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    return Snapshot.response(
        case.status,
        method=case.method,
        url=base + case.path,
        headers={"Content-Type": "application/json", **case.headers},
        request_headers=REQUEST_HEADERS,
        body=body,
    )


def decide(snap: Snapshot, st: AttemptState | None = None) -> referee.Decision:
    """
    The experian-phone policy's decision on *snap* at NOW, with
    reproducible jitter.
    """
    return referee.decide(
        POLICY, snap, st or state(), now=NOW, rng=random.Random(0)
    )


def error(status: int, title: str, detail: str) -> dict[str, Any]:
    """
    Experian's error object.
    """
    slug = title.lower().replace(" ", "-")
    return {
        "error": {
            "type": f"https://docs.experianaperture.io/errors/{slug}",
            "title": title,
            "detail": detail,
            "instance": VALIDATE,
        }
    }


def result(confidence: str, phone_type: str = "Mobile") -> dict[str, Any]:
    """
    A successful validation with *confidence*.
    """
    return {
        "result": {
            "number": "+447700900123",
            "validated_phone_number": "447700900123",
            "formatted_phone_number": "07700 900123",
            "phone_type": phone_type,
            "confidence": confidence,
        },
        "metadata": {
            "phone_detail": {
                "operator_name": "EE",
                "network_status": "Active",
                "country_iso": "GBR",
            }
        },
    }


ACCEPT = Outcome("accept", None)
CONFIG = ("config", "critical")
BAD_REQUEST = Outcome("abort", "bad-request", BadRequest)
TOKEN_MISSING = Outcome("abort", "token-missing", AuthenticationError, CONFIG)
UNAUTHORIZED = Outcome("abort", "unauthorized", AuthenticationError, CONFIG)
CREDITS = Outcome(
    "abort",
    "out-of-credits",
    InsufficientCredits,
    ("topup", "critical"),
    "credits",
)
DISABLED = Outcome("abort", "token-disabled", PermissionDenied, CONFIG)
NOT_WHITELISTED = Outcome("abort", "not-whitelisted", PermissionDenied, CONFIG)
FORBIDDEN = Outcome("abort", "forbidden", PermissionDenied, CONFIG)
MISCONFIGURED = Outcome(
    "abort", "client-misconfigured", BadRequest, ("config", "error")
)
TIMED_OUT = Outcome("retry", "request-timeout")
RATE_LIMITED = Outcome("retry", "rate-limited")
SERVER_ERROR = Outcome("retry", "server-error")

RESET_IN_30S = {
    "X-Rate-Limit-Limit": "150",
    "X-Rate-Limit-Remaining": "0",
    "X-Rate-Limit-Reset": str(int(NOW) + 30),
}


def bad(detail: str) -> dict[str, Any]:
    """
    A 400 error body.
    """
    return error(400, "Bad Request", detail)


def forbidden(detail: str) -> dict[str, Any]:
    """
    A 403 error body.
    """
    return error(403, "Forbidden", detail)


# Seed 003: every status code, and every scenario of 400 and 403.
SEED_CASES = [
    Case("seed003-200-success", 200, ACCEPT, body=result("Verified")),
    Case(
        "seed003-400-number-missing",
        400,
        BAD_REQUEST,
        body=bad("The request body must contain the number field."),
    ),
    Case(
        "seed003-400-timeout-seconds",
        400,
        BAD_REQUEST,
        body=bad("Timeout-Seconds must be a value between 2 and 15."),
    ),
    Case(
        "seed003-400-cache-value-days",
        400,
        BAD_REQUEST,
        body=bad("cache_value_days must be a value between 0 and 30."),
    ),
    Case(
        "seed003-400-no-token",
        400,
        TOKEN_MISSING,
        body=bad("You didn't provide an authentication token."),
    ),
    Case(
        "seed003-400-malformed-body",
        400,
        BAD_REQUEST,
        body=bad("The request body is malformed."),
    ),
    Case(
        "seed003-400-empty-body",
        400,
        BAD_REQUEST,
        body=bad("The request body is empty."),
    ),
    Case(
        "seed003-400-reference-id",
        400,
        BAD_REQUEST,
        body=bad("The Reference-ID header is invalid."),
    ),
    Case(
        "seed003-400-add-metadata",
        400,
        BAD_REQUEST,
        body=bad("The Add-Metadata header is invalid."),
    ),
    Case(
        "seed003-400-live-status-iso",
        400,
        BAD_REQUEST,
        body=bad(
            "Unsupported country ISO code 'XYZ' in "
            "supplementary_live_status.mobile."
        ),
    ),
    Case(
        "seed003-401-wrong-token",
        401,
        UNAUTHORIZED,
        body=error(401, "Unauthorized", "The token provided is incorrect."),
    ),
    Case(
        "seed003-403-credits-or-product",
        403,
        CREDITS,
        body=forbidden(
            "The authentication token is valid, but it is associated with "
            "another product or you have insufficient credits."
        ),
    ),
    Case(
        "seed003-403-other-product",
        403,
        FORBIDDEN,
        body=forbidden(
            "The authentication token is associated with another product."
        ),
    ),
    Case(
        "seed003-403-disabled",
        403,
        DISABLED,
        body=forbidden("The authentication token provided is disabled."),
    ),
    Case(
        "seed003-403-domain",
        403,
        NOT_WHITELISTED,
        body=forbidden(
            "The domain you've sent the request from does not have access "
            "to your integration."
        ),
    ),
    Case(
        "seed003-403-ip",
        403,
        NOT_WHITELISTED,
        body=forbidden(
            "The IP address you've sent the request from does not have "
            "access to your integration."
        ),
    ),
    Case(
        "seed003-404",
        404,
        MISCONFIGURED,
        body=error(404, "Not Found", "The resource could not be found."),
        path="/phone/validat/v2",
    ),
    Case(
        "seed003-406",
        406,
        MISCONFIGURED,
        body=error(406, "Not Acceptable", "Invalid Accept header."),
    ),
    Case(
        "seed003-408",
        408,
        TIMED_OUT,
        body=error(
            408,
            "Request Timeout",
            "Response was not returned within the timeout allowance.",
        ),
        delay=(0.0, 1.0),
    ),
    Case(
        "seed003-415",
        415,
        MISCONFIGURED,
        body=error(415, "Unsupported Media Type", "Invalid Content-Type."),
    ),
    Case(
        "seed003-429",
        429,
        RATE_LIMITED,
        body=error(429, "Too Many Requests", "Too many requests."),
        headers=RESET_IN_30S,
        delay=30.0,
    ),
    Case(
        "seed003-500",
        500,
        SERVER_ERROR,
        body=error(
            500,
            "Internal Server Error",
            "An unexpected server error was encountered.",
        ),
        delay=(0.0, 1.0),
    ),
    Case(
        "seed003-503",
        503,
        SERVER_ERROR,
        body="<html><body>Service Unavailable</body></html>",
        delay=(0.0, 1.0),
    ),
]

# shared/reference/apis.md §2: the proposed decision table X1-X14.
TABLE_CASES = [
    Case("X1-200-verified", 200, ACCEPT, body=result("Verified")),
    Case("X2-200-unverified", 200, ACCEPT, body=result("Unverified")),
    Case("X2-200-dead", 200, ACCEPT, body=result("Dead")),
    Case(
        "X2-200-teleservice-not-provisioned",
        200,
        ACCEPT,
        body=result("Teleservice not provisioned"),
    ),
    Case("X3-200-absent", 200, ACCEPT, body=result("Absent")),
    Case("X4-200-unknown", 200, ACCEPT, body=result("Unknown")),
    Case(
        "X4-200-no-coverage",
        200,
        ACCEPT,
        body=result("No coverage", "Landline"),
    ),
    Case(
        "X5-400-number-missing",
        400,
        BAD_REQUEST,
        body=bad("The number field is required."),
    ),
    Case("X5-400-not-json", 400, BAD_REQUEST, body="Bad Request"),
    Case(
        "X6-401",
        401,
        UNAUTHORIZED,
        body=error(401, "Unauthorized", "Invalid token."),
    ),
    Case(
        "X7-403-insufficient-credits",
        403,
        CREDITS,
        body=forbidden("You have insufficient credits."),
    ),
    Case(
        "X7-403-clicks-in-title",
        403,
        CREDITS,
        body={"error": {"title": "Insufficient clicks"}},
    ),
    Case(
        "X8-403-disabled",
        403,
        DISABLED,
        body=forbidden("This token has been disabled."),
    ),
    Case(
        "X8-403-disabled-in-title",
        403,
        DISABLED,
        body={"error": {"title": "Token disabled", "instance": VALIDATE}},
    ),
    Case(
        "X9-403-domain",
        403,
        NOT_WHITELISTED,
        body=forbidden("Domain is not whitelisted."),
    ),
    Case(
        "X9-403-ip",
        403,
        NOT_WHITELISTED,
        body=forbidden("IP 203.0.113.7 is not allowed."),
    ),
    Case(
        "X10-403-other",
        403,
        FORBIDDEN,
        body=forbidden("The token cannot be used with this product."),
    ),
    Case("X10-403-no-body", 403, FORBIDDEN),
    Case(
        "X11-404",
        404,
        MISCONFIGURED,
        body=error(404, "Not Found", "Not found."),
        path="/phone/validate/v3",
    ),
    Case(
        "X11-406",
        406,
        MISCONFIGURED,
        body=error(406, "Not Acceptable", "Not acceptable."),
    ),
    Case(
        "X11-415",
        415,
        MISCONFIGURED,
        body=error(415, "Unsupported Media Type", "Unsupported."),
    ),
    Case("X12-408-first", 408, TIMED_OUT, delay=(0.0, 1.0)),
    Case("X12-408-second", 408, TIMED_OUT, attempt=2, delay=(0.0, 2.0)),
    Case(
        "X12-408-old-path",
        408,
        TIMED_OUT,
        path=VALIDATION,
        delay=(0.0, 1.0),
    ),
    Case(
        "X12-408-exhausted",
        408,
        Outcome("abort", "request-timeout", RetriesExhausted),
        attempt=3,
    ),
    Case(
        "X13-429-reset-epoch",
        429,
        RATE_LIMITED,
        headers=RESET_IN_30S,
        delay=30.0,
    ),
    Case(
        "X13-429-retry-after",
        429,
        RATE_LIMITED,
        headers={"Retry-After": "12"},
        delay=12.0,
    ),
    Case(
        "X13-429-reset-before-retry-after",
        429,
        RATE_LIMITED,
        headers={**RESET_IN_30S, "Retry-After": "12"},
        delay=30.0,
    ),
    Case(
        "X13-429-no-hint",
        429,
        RATE_LIMITED,
        attempt=2,
        delay=(0.0, 2.0),
    ),
    Case(
        "X13-429-reset-in-the-past",
        429,
        RATE_LIMITED,
        headers={"X-Rate-Limit-Reset": str(int(NOW) - 5)},
        delay=(0.0, 1.0),
    ),
    Case(
        "X13-429-other-endpoint",
        429,
        RATE_LIMITED,
        path="/address/search/v1",
        headers=RESET_IN_30S,
        delay=30.0,
    ),
    Case(
        "X13-429-reset-beyond-ceiling",
        429,
        Outcome("abort", "rate-limited", RateLimited),
        headers={"X-Rate-Limit-Reset": str(int(NOW) + 3600)},
    ),
    Case(
        "X13-429-exhausted",
        429,
        Outcome("abort", "rate-limited", RateLimited),
        headers=RESET_IN_30S,
        attempt=4,
    ),
    Case("X14-500", 500, SERVER_ERROR, delay=(0.0, 1.0)),
    Case("X14-503", 503, SERVER_ERROR, attempt=3, delay=(0.0, 4.0)),
    Case(
        "X14-500-old-path",
        500,
        SERVER_ERROR,
        path=VALIDATION,
        attempt=2,
        delay=(0.0, 2.0),
    ),
    Case(
        "X14-503-exhausted",
        503,
        Outcome("abort", "server-error", ServerError),
        attempt=4,
    ),
    Case(
        "X14-502-gateway-not-retried",
        502,
        Outcome("abort", "server-unavailable", ServerError),
    ),
    Case(
        "X14-500-other-endpoint-not-retried",
        500,
        Outcome("abort", "server-unavailable", ServerError),
        path="/address/search/v1",
    ),
]

CASES = SEED_CASES + TABLE_CASES


class TestCases:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
    def test_decision(self, case, base):
        """
        Each documented outcome gets its rule, action, error and side effects.
        """
        snap = snapshot(case, base)

        decision = decide(snap, state(case.attempt))

        assert case.expected == outcome(decision)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case",
        [c for c in CASES if c.delay is not None],
        ids=[c.id for c in CASES if c.delay is not None],
    )
    def test_delay(self, case, base):
        """
        Retries wait what the reset header or the backoff schedule says.
        """
        snap = snapshot(case, base)

        decision = decide(snap, state(case.attempt))

        assert isinstance(decision, Retry | Poll)
        if isinstance(case.delay, tuple):
            low, high = case.delay
            assert low <= decision.delay <= high
        else:
            assert case.delay == decision.delay

    def test_case_ids_are_unique(self):
        """
        No two cases share an id.
        """
        ids = [c.id for c in CASES]

        assert sorted(set(ids)) == sorted(ids)

    @pytest.mark.parametrize("row", [f"X{n}" for n in range(1, 15)], ids=str)
    def test_every_table_row_is_covered(self, row):
        """
        Every row of the decision table has at least one case.
        """
        ids = {c.id.split("-", 1)[0] for c in TABLE_CASES}

        assert row in ids


class TestRetries:
    def test_408_sequence(self):
        """
        A validation that keeps timing out is sent three times in all, then
        raises RetriesExhausted.
        """
        snap = Snapshot.response(
            408,
            method="POST",
            url="http://127.0.0.1:8080" + VALIDATE,
            request_headers=REQUEST_HEADERS,
        )
        expected = (["Retry", "Retry", "Abort"], RetriesExhausted)
        st = state()
        actions = []
        for _ in range(5):
            decision = decide(snap, st)
            actions.append(type(decision).__name__)
            if isinstance(decision, Abort):
                break
            st = referee.advance(st, snap, decision, now=NOW)

        assert expected == (actions, decision.error)

    def test_reset_is_the_delay_source(self):
        """
        The delay of a 429 comes from X-Rate-Limit-Reset, read as an epoch.
        """
        snap = Snapshot.response(
            429,
            method="POST",
            url="http://127.0.0.1:8080" + VALIDATE,
            headers=RESET_IN_30S,
        )
        expected = (30.0, "X-Rate-Limit-Reset")

        decision = decide(snap)

        assert isinstance(decision, Retry)
        assert expected == (decision.delay, decision.delay_source)

    def test_reset_past_the_deadline_aborts(self):
        """
        A reset that would overrun the call's 2 minute deadline is not
        waited for.
        """
        snap = Snapshot.response(
            429,
            method="POST",
            url="http://127.0.0.1:8080" + VALIDATE,
            headers=RESET_IN_30S,
        )
        st = AttemptState(attempt=2, started=NOW - 100)

        decision = decide(snap, st)

        assert isinstance(decision, Abort)
        assert DeadlineExceeded is decision.error

    @pytest.mark.parametrize(
        ("failure", "expected"),
        [
            ("connect", Outcome("retry", "connect-failed")),
            (
                "timeout",
                Outcome("abort", "transport-failed", referee.Aborted),
            ),
            ("read", Outcome("abort", "transport-failed", referee.Aborted)),
        ],
        ids=["connect", "timeout", "read"],
    )
    def test_transport_failures_come_from_http_default(
        self, failure, expected
    ):
        """
        A validation is re-sent after a transport failure only when it
        never left: after a timeout it may have run and been billed.
        """
        snap = Snapshot.failed(
            failure, method="POST", url="http://127.0.0.1:8080" + VALIDATE
        )

        assert expected == outcome(decide(snap))


class TestAlerts:
    def test_credits_alert_message(self):
        """
        The top-up alert quotes Experian's detail and is held for an hour.
        """
        snap = Snapshot.response(
            403,
            method="POST",
            url="http://127.0.0.1:8080" + VALIDATE,
            body=json.dumps(forbidden("You have insufficient credits.")),
        )
        expected = referee.AlertNotice(
            kind="topup",
            severity="critical",
            message="Experian Phone Validation: out of credits: You have "
            "insufficient credits.",
            key="experian-phone:topup",
            dedupe=3600.0,
        )

        decision = decide(snap)

        assert expected == decision.alert

    def test_credits_breaker(self):
        """
        Running out of credits opens the credits breaker for 10 minutes.
        """
        snap = Snapshot.response(
            403,
            method="POST",
            url="http://127.0.0.1:8080" + VALIDATE,
            body=json.dumps(forbidden("Insufficient credits.")),
        )
        expected = referee.BreakerSpec("credits", 600.0)

        assert expected == decide(snap).breaker


class TestPolicyFile:
    def test_extends_http_default(self):
        """
        The policy extends http-default, whose rules come after its own.
        """
        origins = [r.origin for r in POLICY.rules]
        expected = (
            ("experian-phone", "http-default"),
            sorted(origins, key=lambda o: o != "experian-phone"),
        )

        assert expected == (POLICY.sources, origins)

    def test_200_needs_no_rule(self):
        """
        A 200 is accepted after one look-up: no rule is a candidate.
        """
        expected = ()

        assert expected == POLICY.candidates(200)

    def test_no_rule_names_a_host(self):
        """
        No rule matches on the vendor's host name.
        """
        expected: list[str] = []

        assert expected == [r.id for r in POLICY.rules if hosts(r.doc.when)]

    @pytest.mark.parametrize(
        "cite",
        ["seed 003", "apis.md", *[f"X{n}" for n in range(1, 15)]],
        ids=str,
    )
    def test_comments_cite_sources(self, cite):
        """
        The file says where its facts come from, row by row.
        """
        text = (policies_folder() / "experian-phone.yaml").read_text(
            encoding="utf-8"
        )

        assert re.search(rf"{re.escape(cite)}\b", text) is not None
