"""
The bundled stripe policy, case by case, with the facts of Stripe's API
reference and of the Idempotency-Key draft (S1-S9 below, cited in the
policy's comments), and its idempotency keys over loopback.

Every case is decided on a local address and behind a path-prefixing
proxy, never on the vendor's host: no rule may depend on it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from tests.policy_helpers import (
    ACCEPT,
    BASE_IDS,
    BASES,
    CONFIG,
    NOW,
    Case,
    Outcome,
    check_decision,
    check_delay,
    decide,
    ids,
    outcome,
    rows,
    with_delay,
)

import referee
from referee import (
    Aborted,
    AttemptState,
    AuthenticationError,
    BadRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetriesExhausted,
    ServerError,
    Snapshot,
)
from referee.httpx import PolicyTransport
from referee.testing import Reply, ScriptedServer, no_sleep, simulate


# The facts, numbered for the cases:
# S1 Stripe-Should-Retry: false: no retry, whatever the status that would
#    be retried (409, 429, 5xx); a 402 stays a CardError;
# S2 Stripe-Should-Retry: true: retry, whatever the status;
# S3 idempotency: a keyed 409 is retried with the same key; the key reused
#    with other parameters (idempotency_error, 422) aborts;
# S4 402 card_error: CardError; any other 402: Aborted, never
#    InsufficientCredits;
# S5 429 (lock_timeout included): retried with exponential backoff,
#    Retry-After under the 60 s ceiling;
# S6 5xx: retried, a POST with its key; without a key a POST is not;
# S7 401 AuthenticationError + config alert;
# S8 400 BadRequest, 403 PermissionDenied, 404 NotFound;
# S9 transport failures (http-default): a keyed POST is re-sent.

STRIPE = referee.load_policy("stripe")
CARD_ERROR = STRIPE.errors["CardError"]
IDEMPOTENCY_ERROR = STRIPE.errors["IdempotencyError"]
AUTH = {"Authorization": "Bearer sk_test_4eC39HqLyjWDarjtT1zdp7dc"}
KEY = {"Idempotency-Key": "0b3d4cde-5a4f-4e53-9b8e-2f5b8a6f2d11"}
CHARGES = "/v1/payment_intents"
CONFIRM = "/v1/payment_intents/pi_3MtwBwLkdIwHu7ix28a3tqPa/confirm"
CUSTOMER = "/v1/customers/cus_NffrFeUfNV2Hib"
# The first backoff delay, 0.5 s, with equal jitter.
FIRST = (0.25, 0.5)
SAYS_NO = "stripe-says-no-retry"
SERVER_RETRY = Outcome("retry", "server-unavailable")
RATE = Outcome("retry", "rate-limited")


def stripe_error(
    kind: str, message: str, code: str | None = None, **more: Any
) -> dict[str, Any]:
    """
    A Stripe error body.
    """
    error: dict[str, Any] = {"type": kind, "message": message, **more}
    if code is not None:
        error["code"] = code
    return {"error": error}


DECLINED = stripe_error(
    "card_error",
    "Your card was declined.",
    "card_declined",
    decline_code="insufficient_funds",
    param="payment_method",
)
LOCK = stripe_error(
    "invalid_request_error",
    "This object cannot be accessed right now because another API request "
    "or Stripe process is currently accessing it.",
    "lock_timeout",
)
TOO_MANY = stripe_error(
    "invalid_request_error",
    "Request rate limit exceeded.",
    "rate_limit",
)
API_ERROR = stripe_error("api_error", "An unknown error occurred")
KEY_REUSED = stripe_error(
    "idempotency_error",
    "Keys for idempotent requests can only be used with the same "
    "parameters they were first used with.",
)

CASES = [
    Case(
        "S1-no-retry-500",
        500,
        "POST",
        CHARGES,
        Outcome("abort", SAYS_NO, ServerError),
        API_ERROR,
        headers={"Stripe-Should-Retry": "false"},
        request_headers=KEY,
    ),
    Case(
        "S1-no-retry-429",
        429,
        "POST",
        CHARGES,
        Outcome("abort", SAYS_NO, RateLimited),
        TOO_MANY,
        headers={"Stripe-Should-Retry": "false"},
        request_headers=KEY,
    ),
    Case(
        "S1-no-retry-409-before-the-key-rule",
        409,
        "POST",
        CHARGES,
        Outcome("abort", SAYS_NO, Aborted),
        headers={"Stripe-Should-Retry": "false"},
        request_headers=KEY,
    ),
    Case(
        "S1-no-retry-402-still-a-card-error",
        402,
        "POST",
        CONFIRM,
        Outcome("abort", "card-error", CARD_ERROR),
        DECLINED,
        headers={"Stripe-Should-Retry": "false"},
        request_headers=KEY,
    ),
    Case(
        "S2-should-retry-400",
        400,
        "POST",
        CHARGES,
        Outcome("retry", "stripe-says-retry"),
        stripe_error("invalid_request_error", "Try again."),
        headers={"Stripe-Should-Retry": "true"},
        request_headers=KEY,
        delay=FIRST,
    ),
    Case(
        "S2-should-retry-get",
        503,
        "GET",
        CUSTOMER,
        Outcome("retry", "stripe-says-retry"),
        headers={"Stripe-Should-Retry": "true"},
        delay=FIRST,
    ),
    Case(
        "S2-should-retry-exhausted",
        500,
        "POST",
        CHARGES,
        Outcome("abort", "stripe-says-retry", RetriesExhausted),
        headers={"Stripe-Should-Retry": "true"},
        request_headers=KEY,
        attempt=3,
    ),
    Case(
        "S3-keyed-409",
        409,
        "POST",
        CHARGES,
        Outcome("retry", "idempotency-conflict"),
        stripe_error(
            "invalid_request_error",
            "There is currently another in-progress request using this "
            "Stripe token.",
        ),
        request_headers=KEY,
        delay=FIRST,
    ),
    Case(
        "S3-unkeyed-409-passes-through",
        409,
        "GET",
        CUSTOMER,
        ACCEPT,
    ),
    Case(
        "S3-key-reused-400",
        400,
        "POST",
        CHARGES,
        Outcome("abort", "idempotency-mismatch", IDEMPOTENCY_ERROR),
        KEY_REUSED,
        request_headers=KEY,
    ),
    Case(
        "S3-key-reused-422",
        422,
        "POST",
        CHARGES,
        Outcome("abort", "idempotency-mismatch", IDEMPOTENCY_ERROR),
        request_headers=KEY,
    ),
    Case(
        "S4-402-card-declined",
        402,
        "POST",
        CONFIRM,
        Outcome("abort", "card-error", CARD_ERROR),
        DECLINED,
        request_headers=KEY,
    ),
    Case(
        "S4-402-expired-card",
        402,
        "POST",
        CONFIRM,
        Outcome("abort", "card-error", CARD_ERROR),
        stripe_error("card_error", "Your card has expired.", "expired_card"),
        request_headers=KEY,
    ),
    Case(
        "S4-402-not-a-card-error",
        402,
        "POST",
        CHARGES,
        Outcome("abort", "request-failed", Aborted),
        stripe_error("invalid_request_error", "The request failed."),
        request_headers=KEY,
    ),
    Case(
        "S5-lock-timeout",
        429,
        "POST",
        CONFIRM,
        Outcome("retry", "lock-timeout"),
        LOCK,
        request_headers=KEY,
        delay=FIRST,
    ),
    Case(
        "S5-lock-timeout-exhausted",
        429,
        "POST",
        CONFIRM,
        Outcome("abort", "lock-timeout", RateLimited),
        LOCK,
        request_headers=KEY,
        attempt=3,
    ),
    Case(
        "S5-429-backoff",
        429,
        "POST",
        CHARGES,
        RATE,
        TOO_MANY,
        request_headers=KEY,
        delay=FIRST,
    ),
    Case(
        "S5-429-second-attempt",
        429,
        "GET",
        CUSTOMER,
        RATE,
        TOO_MANY,
        attempt=2,
        delay=(0.5, 1.0),
    ),
    Case(
        "S5-429-retry-after",
        429,
        "POST",
        CHARGES,
        RATE,
        TOO_MANY,
        headers={"Retry-After": "3"},
        request_headers=KEY,
        delay=3.0,
    ),
    Case(
        "S5-429-retry-after-above-ceiling",
        429,
        "POST",
        CHARGES,
        Outcome("abort", "rate-limited", RateLimited),
        TOO_MANY,
        headers={"Retry-After": "90"},
        request_headers=KEY,
    ),
    Case(
        "S6-500-keyed-post",
        500,
        "POST",
        CHARGES,
        SERVER_RETRY,
        API_ERROR,
        request_headers=KEY,
        delay=FIRST,
    ),
    Case(
        "S6-503-get",
        503,
        "GET",
        CUSTOMER,
        SERVER_RETRY,
        delay=FIRST,
    ),
    Case(
        "S6-500-unkeyed-post-not-retried",
        500,
        "POST",
        CHARGES,
        Outcome("abort", "server-unavailable", ServerError),
        API_ERROR,
    ),
    Case(
        "S6-502-exhausted",
        502,
        "POST",
        CHARGES,
        Outcome("abort", "server-unavailable", ServerError),
        request_headers=KEY,
        attempt=3,
    ),
    Case(
        "S7-401",
        401,
        "GET",
        CUSTOMER,
        Outcome("abort", "unauthorized", AuthenticationError, CONFIG),
        stripe_error(
            "invalid_request_error", "Invalid API Key provided: sk_test_****"
        ),
    ),
    Case(
        "S8-400",
        400,
        "POST",
        CHARGES,
        Outcome("abort", "bad-request", BadRequest),
        stripe_error(
            "invalid_request_error",
            "Missing required param: amount.",
            "parameter_missing",
            param="amount",
        ),
        request_headers=KEY,
    ),
    Case(
        "S8-403",
        403,
        "POST",
        CHARGES,
        Outcome("abort", "permission-denied", PermissionDenied),
        stripe_error(
            "invalid_request_error",
            "The provided key does not have the required permissions.",
        ),
        request_headers=KEY,
    ),
    Case(
        "S8-404",
        404,
        "GET",
        CUSTOMER,
        Outcome("abort", "not-found", NotFound),
        stripe_error(
            "invalid_request_error",
            "No such customer: 'cus_NffrFeUfNV2Hib'",
            "resource_missing",
        ),
    ),
    Case(
        "200-accepted",
        200,
        "POST",
        CHARGES,
        ACCEPT,
        {"id": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "object": "payment_intent"},
        headers={"Stripe-Should-Retry": "false"},
        request_headers=KEY,
    ),
]
CASES = [
    Case(**{**c.__dict__, "request_headers": {**AUTH, **c.request_headers}})
    for c in CASES
]


def key_of(headers: dict[str, str]) -> str | None:
    """
    The Idempotency-Key among *headers*, whatever the case of its name.
    """
    return {k.lower(): v for k, v in headers.items()}.get("idempotency-key")


class TestStripe:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize("case", CASES, ids=ids(CASES))
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(STRIPE, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", with_delay(CASES), ids=ids(with_delay(CASES))
    )
    def test_delay(self, case, base):
        """
        Retries wait what Retry-After or the backoff says.
        """
        check_delay(STRIPE, case, base)

    @pytest.mark.parametrize("row", [f"S{n}" for n in range(1, 9)], ids=str)
    def test_every_fact_is_covered(self, row):
        """
        Every fact S1-S8 has a case (S9, transport failures, has its own
        test).
        """
        assert row in rows(CASES)

    @pytest.mark.parametrize(
        ("failure", "request_headers", "expected"),
        [
            ("timeout", KEY, Outcome("retry", "transport-failed")),
            (
                "timeout",
                {},
                Outcome("abort", "transport-failed", Aborted),
            ),
            ("connect", {}, Outcome("retry", "connect-failed")),
        ],
        ids=["timeout-keyed", "timeout-unkeyed", "connect-unkeyed"],
    )
    def test_s9_transport_failures(self, failure, request_headers, expected):
        """
        S9: a POST that timed out is re-sent only with its key, which
        makes Stripe answer the second send from the first.
        """
        snap = Snapshot.failed(
            failure,
            method="POST",
            url="http://127.0.0.1:8080" + CHARGES,
            request_headers=request_headers,
        )

        decision = decide(STRIPE, snap, AttemptState(started=NOW))

        assert expected == outcome(decision)

    def test_declared_errors(self):
        """
        CardError and IdempotencyError are declared in the file, under
        BadRequest.
        """
        expected = (True, True)

        assert expected == (
            issubclass(CARD_ERROR, BadRequest),
            issubclass(IDEMPOTENCY_ERROR, BadRequest),
        )

    def test_keys_for_posts_only(self):
        """
        A key is minted for POSTs, in Idempotency-Key, as uuid4.
        """
        idem = STRIPE.idempotency
        expected = ("Idempotency-Key", "uuid4", frozenset({"POST"}))

        assert idem is not None
        assert expected == (idem.header, idem.mint, idem.methods)

    def test_one_key_through_a_lock_and_an_outage(self):
        """
        A POST met by a lock timeout and a 500 is sent three times with
        one key, minted before the first send.
        """
        run = simulate(
            STRIPE,
            [{"status": 429, "body": LOCK}, {"status": 500}, 200],
            method="POST",
            url="http://127.0.0.1:8080" + CHARGES,
        )
        keys = {key_of(dict(s.snapshot.request_headers)) for s in run.steps}

        assert (["lock-timeout", "server-unavailable", None], True) == (
            [s.decision.rule_id for s in run.steps],
            run.finished,
        )
        assert 1 == len(keys)
        assert None not in keys


class TestOverLoopback:
    def test_retried_post_carries_one_key_per_call(self):
        """
        Over a real socket: a POST answered 500 then 200 is sent twice
        with the same minted key; the next call gets another key; a GET
        gets none.
        """
        with ScriptedServer() as srv, no_sleep():
            srv.script(
                CHARGES,
                [Reply(500, body=API_ERROR), Reply(200, body={"id": "pi_1"})],
            )
            srv.script(CUSTOMER, [Reply(200, body={"id": "cus_1"})])
            with httpx.Client(transport=PolicyTransport(STRIPE)) as client:
                first = client.post(srv.url(CHARGES), data={"amount": "2000"})
                srv.script(CHARGES, [Reply(200, body={"id": "pi_2"})])
                second = client.post(srv.url(CHARGES), data={"amount": "2000"})
                got = client.get(srv.url(CUSTOMER))
            keys = [key_of(r.headers) for r in srv.requests]

        assert [200, 200, 200] == [
            first.status_code,
            second.status_code,
            got.status_code,
        ]
        assert keys[0] == keys[1]
        assert keys[2] != keys[0]
        assert 4 == uuid.UUID(keys[0] or "").version
        assert keys[3] is None

    def test_card_error_raises_the_declared_class(self):
        """
        Over a real socket: a declined card raises CardError, which
        carries Stripe's message, after one send.
        """
        with ScriptedServer() as srv:
            srv.script(CONFIRM, [Reply(402, body=DECLINED)])
            with (
                httpx.Client(transport=PolicyTransport(STRIPE)) as client,
                pytest.raises(CARD_ERROR) as info,
            ):
                client.post(srv.url(CONFIRM))
            sent = srv.count(CONFIRM)

        assert 1 == sent
        assert json.loads(info.value.body or b"{}") == DECLINED
