"""
The bundled ``enrow`` policy, case by case: every row of the status-code and
qualification tables of seed 000 and every row (E1-E14) of the decision table
in shared/reference/apis.md §1, each decided on the vendor's host, on a local
fake and behind a path-prefixing proxy.
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
    Accept,
    AttemptState,
    AuthenticationError,
    BadRequest,
    DeadlineExceeded,
    InsufficientCredits,
    JobFailed,
    NotFound,
    Poll,
    RateLimited,
    Retry,
    ServerError,
    Snapshot,
)
from referee._files.load import policies_folder


POLICY = referee.load_policy("enrow")

# A fixed Unix time, so that epoch reset headers give exact delays.
NOW = 1_700_000_000.0

# The same API reached directly, through a local fake, and through a proxy
# that prefixes the paths: the decisions must not change.
BASES = [
    "https://api.enrow.io",
    "http://127.0.0.1:8080",
    "http://proxy.internal:3128/enrow",
]
BASE_IDS = ["vendor", "local-fake", "proxy"]

SEARCH_ID = "4f9c2a3e-5b1d-4e7a-9c0f-2d8e6b1a7c35"
API_KEY = {"x-api-key": "sk_live_0123456789abcdef"}

# The first backoff delays before full jitter: 1 s, 2 s, 4 s.
BACKOFF = [1.0, 2.0, 4.0, 8.0]


@dataclass(frozen=True)
class Case:
    """
    One outcome of an Enrow call and what the policy must make of it.

    *delay* is an exact delay, ``(low, high)`` bounds, or None when there is
    none to check.
    """

    id: str
    status: int
    method: str
    path: str
    expected: Outcome
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    request_headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1
    polls: int = 0
    delay: float | tuple[float, float] | None = None


def state(attempt: int = 1, polls: int = 0) -> AttemptState:
    """
    A call that started now, on *attempt*, after *polls* polls.
    """
    return AttemptState(
        attempt=attempt,
        polls=polls,
        started=NOW,
        poll_started=NOW if polls else None,
    )


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
        request_headers={**API_KEY, **case.request_headers},
        body=body,
    )


def decide(snap: Snapshot, st: AttemptState | None = None) -> referee.Decision:
    """
    The enrow policy's decision on *snap* at NOW, with reproducible jitter.
    """
    return referee.decide(
        POLICY, snap, st or state(), now=NOW, rng=random.Random(0)
    )


def get(path: str) -> str:
    """
    *path* with the search id in the query, as every result GET has it.
    """
    return f"{path}?id={SEARCH_ID}"


ACCEPT = Outcome("accept", None)
TOPUP = ("topup", "critical")
CONFIG = ("config", "critical")
CREDITS = Outcome(
    "abort", "out-of-credits", InsufficientCredits, TOPUP, "credits"
)
UNAUTHORIZED = Outcome("abort", "unauthorized", AuthenticationError, CONFIG)
BAD_REQUEST = Outcome("abort", "bad-request", BadRequest)
RATE_LIMITED = Outcome("retry", "rate-limited")
SERVER_ERROR_RETRY = Outcome("retry", "server-unavailable")
SERVER_ERROR_ABORT = Outcome("abort", "server-unavailable", ServerError)
SEARCH_ONGOING = Outcome("poll", "search-ongoing")
BULK_ONGOING = Outcome("poll", "bulk-ongoing")
BULK_FAILED = Outcome("abort", "bulk-failed", JobFailed)
# E5/E6 answers pass through: no rule names them (see enrow.yaml).
SEARCH_FINISHED = ACCEPT
BULK_COMPLETED = ACCEPT
UNKNOWN_BULK_ID = Outcome("abort", "unknown-bulk-id", NotFound)
UNKNOWN_SINGLE_ID = Outcome("retry", "unknown-single-id")

FOUND_EMAIL = {
    "email": "jane.doe@acme.com",
    "qualification": "valid",
    "info": {"first_name": "Jane", "last_name": "Doe"},
    "custom": {},
}
NOT_FOUND_EMAIL = {"email": None, "qualification": "invalid", "custom": {}}
VERIFIED = {"email": "jane.doe@acme.com", "qualification": "valid"}
UNDELIVERABLE = {"email": "john@acme.com", "qualification": "invalid"}
PHONE_FOUND = {
    "params": {"linkedin_url": "https://www.linkedin.com/in/janedoe"},
    "custom": {},
    "number": "+33612345678",
    "country": "FR",
    "qualification": "found",
}
PHONE_NOT_FOUND = {"params": {}, "custom": {}, "qualification": "not_found"}
ONGOING = {"qualification": "ongoing"}


def bulk(status: str) -> dict[str, Any]:
    """
    A bulk results body whose batch is *status*.
    """
    return {
        "general": {"id": SEARCH_ID, "status": status, "custom": {}},
        "stats": {
            "finished": 2,
            "requested": 3,
            "valid": 1,
            "credits_cost": {"initial": 3, "refunded": 1, "final": 2},
        },
        "results": [
            {"index": 0, "qualification": "valid", "email": "a@acme.com"},
            {"index": 1, "qualification": "invalid", "email": None},
        ],
    }


# Seed 000: the status-code tables and the qualification tables.
SEED_CASES = [
    Case(
        "seed000-200-ok",
        200,
        "POST",
        "/email/find/single",
        ACCEPT,
        body={
            "message": "Single search operating",
            "id": SEARCH_ID,
            "credits_used": 1,
        },
    ),
    Case(
        "seed000-201-bulk-created",
        201,
        "POST",
        "/email/find/bulk",
        ACCEPT,
        body={
            "message": "Bulk search operating",
            "id": SEARCH_ID,
            "credits_used": 100,
            "estimated_duration": 3,
        },
    ),
    Case(
        "seed000-202-accepted-ongoing",
        202,
        "GET",
        get("/email/find/single"),
        SEARCH_ONGOING,
        body=ONGOING,
        delay=2.0,
    ),
    Case(
        "seed000-400-bad-request",
        400,
        "POST",
        "/email/find/single",
        BAD_REQUEST,
        body={"message": "Missing payload"},
    ),
    Case(
        "seed000-401-unauthorized",
        401,
        "POST",
        "/email/find/single",
        UNAUTHORIZED,
        body={"message": "This apikey is not valid"},
    ),
    Case(
        "seed000-402-payment-required",
        402,
        "POST",
        "/email/find/single",
        CREDITS,
        body={"reason": "Insufficient credits", "success": False},
    ),
    Case(
        "seed000-429-too-many-requests",
        429,
        "POST",
        "/email/find/single",
        RATE_LIMITED,
        body={"message": "Too Many Requests"},
        delay=(0.0, 1.0),
    ),
    Case(
        "seed000-500-get-retried",
        500,
        "GET",
        get("/email/find/bulk"),
        SERVER_ERROR_RETRY,
        body={"message": "Internal server error"},
        delay=(0.0, 1.0),
    ),
    Case(
        "seed000-500-post-not-retried",
        500,
        "POST",
        "/email/find/single",
        SERVER_ERROR_ABORT,
        body={"message": "Internal server error"},
    ),
    Case(
        "seed000-unknown-id-bulk-400",
        400,
        "GET",
        get("/phone/bulk"),
        UNKNOWN_BULK_ID,
        body={"message": "Could not retrieve bulk search results"},
    ),
    Case(
        "seed000-unknown-id-single-500",
        500,
        "GET",
        get("/email/verify/single"),
        UNKNOWN_SINGLE_ID,
        body={"message": "Could not retrieve single verification results"},
        delay=(0.0, 1.0),
    ),
    Case(
        "seed000-finder-valid",
        200,
        "GET",
        get("/email/find/single"),
        SEARCH_FINISHED,
        body=FOUND_EMAIL,
    ),
    Case(
        "seed000-finder-invalid",
        200,
        "GET",
        get("/email/find/single"),
        SEARCH_FINISHED,
        body=NOT_FOUND_EMAIL,
    ),
    Case(
        "seed000-finder-ongoing",
        202,
        "GET",
        get("/email/find/single"),
        SEARCH_ONGOING,
        body=ONGOING,
        delay=2.0,
    ),
    Case(
        "seed000-verifier-valid",
        200,
        "GET",
        get("/email/verify/single"),
        SEARCH_FINISHED,
        body=VERIFIED,
    ),
    Case(
        "seed000-verifier-invalid",
        200,
        "GET",
        get("/email/verify/single"),
        SEARCH_FINISHED,
        body=UNDELIVERABLE,
    ),
    Case(
        "seed000-verifier-ongoing",
        202,
        "GET",
        get("/email/verify/single"),
        SEARCH_ONGOING,
        body=ONGOING,
        delay=2.0,
    ),
    Case(
        "seed000-phone-found",
        200,
        "GET",
        get("/phone/single"),
        SEARCH_FINISHED,
        body=PHONE_FOUND,
    ),
    Case(
        "seed000-phone-not-found",
        200,
        "GET",
        get("/phone/single"),
        SEARCH_FINISHED,
        body=PHONE_NOT_FOUND,
    ),
    Case(
        "seed000-phone-ongoing",
        202,
        "GET",
        get("/phone/single"),
        SEARCH_ONGOING,
        body={"params": {}, "custom": {}, "qualification": "ongoing"},
        delay=2.0,
    ),
    Case(
        "seed000-bulk-ongoing",
        200,
        "GET",
        get("/phone/bulk"),
        BULK_ONGOING,
        body=bulk("ongoing"),
        delay=10.0,
    ),
    Case(
        "seed000-bulk-completed",
        200,
        "GET",
        get("/email/verify/bulk"),
        BULK_COMPLETED,
        body=bulk("completed"),
    ),
    Case(
        "seed000-bulk-failed",
        200,
        "GET",
        get("/email/find/bulk"),
        BULK_FAILED,
        body=bulk("failed"),
    ),
]

# shared/reference/apis.md §1: the proposed decision table E1-E14.
TABLE_CASES = [
    Case(
        "E1-post-200-single-id",
        200,
        "POST",
        "/email/verify/single",
        ACCEPT,
        body={
            "message": "Single verification operating",
            "id": SEARCH_ID,
            "credits_used": 0.25,
            "credits": {"amount": 0.25, "source": "sub"},
        },
    ),
    Case(
        "E1-post-201-phone-id",
        201,
        "POST",
        "/phone/single",
        ACCEPT,
        body={"credits_used": 50, "id": SEARCH_ID, "message": "ok"},
    ),
    Case(
        "E2-202-single-ongoing",
        202,
        "GET",
        get("/email/find/single"),
        SEARCH_ONGOING,
        body=ONGOING,
        delay=2.0,
    ),
    Case(
        "E2-200-single-ongoing",
        200,
        "GET",
        get("/email/verify/single"),
        SEARCH_ONGOING,
        body=ONGOING,
        delay=2.0,
    ),
    Case(
        "E2-202-single-ongoing-third-poll",
        202,
        "GET",
        get("/phone/single"),
        SEARCH_ONGOING,
        body=ONGOING,
        polls=3,
        delay=6.75,
    ),
    Case(
        "E3-200-phone-bulk-ongoing",
        200,
        "GET",
        get("/phone/bulk"),
        BULK_ONGOING,
        body=bulk("ongoing"),
        delay=10.0,
    ),
    Case(
        "E3-202-email-bulk-ongoing",
        202,
        "GET",
        get("/email/find/bulk"),
        BULK_ONGOING,
        body=bulk("ongoing"),
        delay=10.0,
    ),
    Case(
        "E4-bulk-failed",
        200,
        "GET",
        get("/email/verify/bulk"),
        BULK_FAILED,
        body=bulk("failed"),
    ),
    Case(
        "E5-valid",
        200,
        "GET",
        get("/email/find/single"),
        SEARCH_FINISHED,
        body=FOUND_EMAIL,
    ),
    Case(
        "E5-found",
        200,
        "GET",
        get("/phone/single"),
        SEARCH_FINISHED,
        body=PHONE_FOUND,
    ),
    Case(
        "E5-bulk-completed",
        200,
        "GET",
        get("/phone/bulk"),
        BULK_COMPLETED,
        body=bulk("completed"),
    ),
    Case(
        "E6-invalid",
        200,
        "GET",
        get("/email/verify/single"),
        SEARCH_FINISHED,
        body=UNDELIVERABLE,
    ),
    Case(
        "E6-not-found",
        200,
        "GET",
        get("/phone/single"),
        SEARCH_FINISHED,
        body=PHONE_NOT_FOUND,
    ),
    Case(
        "E7-400-bulk-unknown-id",
        400,
        "GET",
        get("/email/find/bulk"),
        UNKNOWN_BULK_ID,
        body={"message": "Could not retrieve bulk search results"},
    ),
    Case(
        "E8-500-single-unknown-id-first",
        500,
        "GET",
        get("/email/verify/single"),
        UNKNOWN_SINGLE_ID,
        body={"message": "Could not retrieve single verification results"},
        delay=(0.0, 1.0),
    ),
    Case(
        "E8-500-single-unknown-id-second",
        500,
        "GET",
        get("/email/find/single"),
        UNKNOWN_SINGLE_ID,
        body={"message": "Could not retrieve single search results"},
        attempt=2,
        delay=(0.0, 2.0),
    ),
    Case(
        "E8-500-single-unknown-id-exhausted",
        500,
        "GET",
        get("/email/verify/single"),
        Outcome("abort", "unknown-single-id", NotFound),
        body={"message": "Could not retrieve single verification results"},
        attempt=3,
    ),
    Case(
        "E9-400-invalid-json",
        400,
        "POST",
        "/email/find/bulk",
        BAD_REQUEST,
        body={"message": "Invalid JSON input"},
    ),
    Case(
        "E9-400-too-many-searches",
        400,
        "POST",
        "/email/verify/bulk",
        BAD_REQUEST,
        body={
            "message": "Too many searches. Limit is currently at 5000 per batch."
        },
    ),
    Case(
        "E9-400-missing-id",
        400,
        "GET",
        "/email/find/single",
        BAD_REQUEST,
        body={"message": "Missing id in the query params"},
    ),
    Case(
        "E9-400-not-json",
        400,
        "POST",
        "/email/find/single",
        BAD_REQUEST,
        body="<html><body>Bad Request</body></html>",
    ),
    Case(
        "E10-401-no-key",
        401,
        "GET",
        "/account/info",
        UNAUTHORIZED,
        body={"message": "No apikey found in the x-api-key headers"},
    ),
    Case(
        "E10-401-invalid-key",
        401,
        "POST",
        "/phone/single",
        UNAUTHORIZED,
        body={"message": "This apikey is not valid"},
    ),
    Case(
        "E11-402-single",
        402,
        "POST",
        "/email/find/single",
        CREDITS,
        body={"reason": "Insufficient credits", "success": False},
    ),
    Case(
        "E11-402-bulk",
        402,
        "POST",
        "/phone/bulk",
        CREDITS,
        body={"message": "Insufficient credits"},
    ),
    Case(
        "E11-402-no-body",
        402,
        "POST",
        "/email/verify/single",
        CREDITS,
    ),
    Case(
        "E11-422-insufficient-balance",
        422,
        "POST",
        "/email/verify/single",
        CREDITS,
        body={"message": "Insufficient balance"},
    ),
    Case(
        "E11-422-other-passes-through",
        422,
        "POST",
        "/email/verify/single",
        ACCEPT,
        body={"message": "Unprocessable entity"},
    ),
    Case(
        "E12-429-post-backoff",
        429,
        "POST",
        "/email/find/single",
        RATE_LIMITED,
        body={"message": "Too Many Requests"},
        delay=(0.0, 1.0),
    ),
    Case(
        "E12-429-post-backoff-third",
        429,
        "POST",
        "/phone/single",
        RATE_LIMITED,
        body={"message": "Too Many Requests"},
        attempt=3,
        delay=(0.0, 4.0),
    ),
    Case(
        "E12-429-reset-epoch",
        429,
        "POST",
        "/email/find/bulk",
        RATE_LIMITED,
        body={"message": "Too Many Requests"},
        headers={
            "X-RateLimit-Limit": "10",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(NOW) + 30),
        },
        delay=30.0,
    ),
    Case(
        "E12-429-reset-delta",
        429,
        "POST",
        "/email/find/single",
        RATE_LIMITED,
        body={"message": "Too Many Requests"},
        headers={"X-RateLimit-Reset": "7"},
        delay=7.0,
    ),
    Case(
        "E12-429-retry-after-first",
        429,
        "POST",
        "/email/find/single",
        RATE_LIMITED,
        body={"message": "Too Many Requests"},
        headers={"Retry-After": "5", "X-RateLimit-Reset": str(int(NOW) + 30)},
        delay=5.0,
    ),
    Case(
        "E12-429-retry-after-ms",
        429,
        "POST",
        "/email/find/single",
        RATE_LIMITED,
        body={"message": "Too Many Requests"},
        headers={"retry-after-ms": "1500"},
        delay=1.5,
    ),
    Case(
        "E12-429-reset-in-the-past",
        429,
        "POST",
        "/email/find/single",
        RATE_LIMITED,
        body={"message": "Too Many Requests"},
        headers={"X-RateLimit-Reset": str(int(NOW) - 30)},
        delay=(0.0, 1.0),
    ),
    Case(
        "E12-429-reset-beyond-ceiling",
        429,
        "POST",
        "/email/find/single",
        Outcome("abort", "rate-limited", RateLimited),
        body={"message": "Too Many Requests"},
        headers={"X-RateLimit-Reset": str(int(NOW) + 600)},
    ),
    Case(
        "E12-429-exhausted",
        429,
        "POST",
        "/email/find/single",
        Outcome("abort", "rate-limited", RateLimited),
        body={"message": "Too Many Requests"},
        attempt=4,
    ),
    Case(
        "E13-500-post-aborts",
        500,
        "POST",
        "/email/find/single",
        SERVER_ERROR_ABORT,
        body={"message": "Internal server error"},
    ),
    Case(
        "E13-500-post-bulk-aborts",
        500,
        "POST",
        "/phone/bulk",
        SERVER_ERROR_ABORT,
    ),
    Case(
        "E13-500-post-idempotency-key",
        500,
        "POST",
        "/email/find/single",
        SERVER_ERROR_RETRY,
        body={"message": "Internal server error"},
        request_headers={"Idempotency-Key": "b1946ac9-2f5e"},
        delay=(0.0, 1.0),
    ),
    Case(
        "E13-502-post-aborts",
        502,
        "POST",
        "/email/verify/bulk",
        SERVER_ERROR_ABORT,
        body="<html>Bad Gateway</html>",
    ),
    Case(
        "E13-500-get-retried",
        500,
        "GET",
        get("/email/find/bulk"),
        SERVER_ERROR_RETRY,
        attempt=2,
        delay=(0.0, 2.0),
    ),
    Case(
        "E13-503-get-retried",
        503,
        "GET",
        "/account/info",
        SERVER_ERROR_RETRY,
        attempt=3,
        delay=(0.0, 4.0),
    ),
    Case(
        "E13-500-get-exhausted",
        500,
        "GET",
        get("/email/find/bulk"),
        SERVER_ERROR_ABORT,
        attempt=4,
    ),
    Case(
        "E14-404-not-found",
        404,
        "GET",
        get("/email/find/bulk"),
        Outcome("abort", "not-found", NotFound),
        body={"message": "Bulk search not found"},
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

        decision = decide(snap, state(case.attempt, case.polls))

        assert case.expected == outcome(decision)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case",
        [c for c in CASES if c.delay is not None],
        ids=[c.id for c in CASES if c.delay is not None],
    )
    def test_delay(self, case, base):
        """
        Retries and polls wait what the hint or the schedule says.
        """
        snap = snapshot(case, base)

        decision = decide(snap, state(case.attempt, case.polls))

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

    @pytest.mark.parametrize("row", [f"E{n}" for n in range(1, 15)], ids=str)
    def test_every_table_row_is_covered(self, row):
        """
        Every row of the decision table has at least one case.
        """
        ids = {c.id.split("-", 1)[0] for c in TABLE_CASES}

        assert row in ids


class TestRetryAndPoll:
    def test_post_429_is_retried(self):
        """
        A 429 on a paid POST is retried: the request was not processed.
        """
        snap = Snapshot.response(
            429,
            method="POST",
            url="http://127.0.0.1:8080/email/find/single",
            body='{"message":"Too Many Requests"}',
        )

        expected = (2, "backoff")

        decision = decide(snap)

        assert isinstance(decision, Retry)
        assert expected == (decision.attempt, decision.delay_source)

    def test_post_500_is_not_retried(self):
        """
        A 500 on a paid POST aborts: a retry could spend credits twice.
        """
        snap = Snapshot.response(
            500,
            method="POST",
            url="http://127.0.0.1:8080/email/find/single",
            body='{"message":"Internal server error"}',
        )

        decision = decide(snap)

        assert isinstance(decision, Abort)
        assert ServerError is decision.error
        assert "not idempotent" in decision.reason

    def test_epoch_reset_is_the_delay_source(self):
        """
        The delay of a 429 comes from X-RateLimit-Reset when it is there.
        """
        snap = Snapshot.response(
            429,
            method="POST",
            url="http://127.0.0.1:8080/email/find/single",
            headers={"X-RateLimit-Reset": str(int(NOW) + 30)},
        )

        expected = (30.0, "X-RateLimit-Reset")

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
            url="http://127.0.0.1:8080/email/find/single",
            headers={"X-RateLimit-Reset": str(int(NOW) + 30)},
        )
        st = AttemptState(attempt=2, started=NOW - 100)

        decision = decide(snap, st)

        assert isinstance(decision, Abort)
        assert DeadlineExceeded is decision.error

    def test_unknown_single_id_sequence(self):
        """
        A single GET that keeps answering 500 "Could not retrieve" is sent
        three times in all, then raises NotFound.
        """
        snap = Snapshot.response(
            500,
            url=f"http://127.0.0.1:8080/email/verify/single?id={SEARCH_ID}",
            body='{"message":"Could not retrieve single verification results"}',
        )
        expected = ["Retry", "Retry", "Abort"]
        st = state()
        actions = []
        for _ in range(5):
            decision = decide(snap, st)
            actions.append(type(decision).__name__)
            if isinstance(decision, Abort):
                break
            st = referee.advance(st, snap, decision, now=NOW)

        assert expected == actions
        assert NotFound is decision.error

    def test_polling_spends_no_attempts(self):
        """
        An ongoing search is polled without spending retry attempts, and
        its answer is accepted.
        """
        url = f"http://127.0.0.1:8080/email/find/single?id={SEARCH_ID}"
        bodies = [ONGOING, ONGOING, ONGOING, FOUND_EMAIL]
        expected = ([2.0, 3.0, 4.5], 1, 3)
        st = state()
        delays = []
        for body in bodies:
            snap = Snapshot.response(
                202 if body is ONGOING else 200, url=url, body=json.dumps(body)
            )
            decision = decide(snap, st)
            if isinstance(decision, Poll):
                assert decision.request is None  # the same GET again
                delays.append(decision.delay)
            st = referee.advance(st, snap, decision, now=NOW)

        assert isinstance(decision, Accept)
        assert expected == (delays, st.attempt, st.polls)

    def test_poll_deadline(self):
        """
        A single search still ongoing after 10 minutes of polling gives up.
        """
        snap = Snapshot.response(
            202,
            url=f"http://127.0.0.1:8080/phone/single?id={SEARCH_ID}",
            body=json.dumps(ONGOING),
        )
        st = AttemptState(polls=30, started=NOW - 600, poll_started=NOW - 599)

        decision = decide(snap, st)

        assert isinstance(decision, Abort)
        assert DeadlineExceeded is decision.error

    def test_bulk_polls_longer(self):
        """
        A batch still ongoing after 20 minutes is polled again.
        """
        snap = Snapshot.response(
            200,
            url=f"http://127.0.0.1:8080/email/find/bulk?id={SEARCH_ID}",
            body=json.dumps(bulk("ongoing")),
        )
        st = AttemptState(
            polls=40, started=NOW - 1200, poll_started=NOW - 1200
        )

        expected = 30.0

        decision = decide(snap, st)

        assert isinstance(decision, Poll)
        assert expected == decision.delay

    def test_ongoing_post_body_is_not_polled(self):
        """
        Only GETs poll: a POST is never re-sent as a poll.
        """
        snap = Snapshot.response(
            200,
            method="POST",
            url="http://127.0.0.1:8080/email/find/single",
            body=json.dumps(ONGOING),
        )

        expected = ACCEPT

        assert expected == outcome(decide(snap))

    @pytest.mark.parametrize(
        ("failure", "method", "expected"),
        [
            ("connect", "POST", Outcome("retry", "connect-failed")),
            ("connect", "GET", Outcome("retry", "connect-failed")),
            ("timeout", "GET", Outcome("retry", "transport-failed")),
            (
                "timeout",
                "POST",
                Outcome("abort", "transport-failed", referee.Aborted),
            ),
            (
                "read",
                "POST",
                Outcome("abort", "transport-failed", referee.Aborted),
            ),
        ],
        ids=[
            "connect-post",
            "connect-get",
            "timeout-get",
            "timeout-post",
            "read-post",
        ],
    )
    def test_transport_failures_come_from_http_default(
        self, failure, method, expected
    ):
        """
        Transport failures are handled by http-default's rules: a POST is
        re-sent only when it never left.
        """
        snap = Snapshot.failed(
            failure,
            method=method,
            url="http://127.0.0.1:8080/email/find/single",
        )

        assert expected == outcome(decide(snap))


class TestPolicyFile:
    def test_extends_http_default(self):
        """
        The policy extends http-default, whose rules come after its own.
        """
        origins = [r.origin for r in POLICY.rules]
        expected = (
            ("enrow", "http-default"),
            sorted(origins, key=lambda o: o != "enrow"),
        )

        assert expected == (POLICY.sources, origins)

    def test_defaults(self):
        """
        The defaults are the documented choices.
        """
        expected = (4, (1.0, 2.0, 4.0, 8.0), "full", 120.0, 120.0, "fail")

        assert expected == (
            POLICY.retry.attempts,
            POLICY.retry.schedule[:4],
            POLICY.retry.jitter,
            POLICY.deadline,
            POLICY.server_delay_max,
            POLICY.on_exceed,
        )

    def test_no_rule_names_a_host(self):
        """
        No rule matches on the vendor's host name.
        """
        expected: list[str] = []

        assert expected == [r.id for r in POLICY.rules if hosts(r.doc.when)]

    @pytest.mark.parametrize(
        "cite",
        ["seed 000", "apis.md", *[f"E{n}" for n in range(1, 15)]],
        ids=str,
    )
    def test_comments_cite_sources(self, cite):
        """
        The file says where its facts come from, row by row.
        """
        text = (policies_folder() / "enrow.yaml").read_text(encoding="utf-8")

        assert re.search(rf"{re.escape(cite)}\b", text) is not None
