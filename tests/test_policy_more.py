"""
The bundled policies for APIs like Enrow's, case by case: hunter,
zerobounce, neverbounce, dropcontact and twilio-lookup, with every row of
their decision tables in shared/reference/apis.md §3 (cited as H1-H5,
Z1-Z3, N1-N6, D1-D4 and T1-T4, in the order of each table), and openai,
with the SDK facts of shared/reference/peers-python.md and OpenAI's error
guide (O1-O10 below).

Every case is decided on a local address and behind a path-prefixing
proxy, never on the vendor's host: no rule may depend on it.
"""

import json
import re
from typing import Any

import httpx
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
    hosts,
    ids,
    outcome,
    rows,
    with_delay,
)

import referee
import referee.cli
from referee import (
    Abort,
    Aborted,
    AttemptState,
    AuthenticationError,
    BadRequest,
    CircuitOpen,
    DeadlineExceeded,
    InsufficientCredits,
    JobFailed,
    NotFound,
    PermissionDenied,
    Poll,
    RateLimited,
    Retry,
    ServerError,
    Snapshot,
)
from referee._files.load import policies_folder
from referee.httpx import PolicyTransport
from referee.testing import no_sleep


NAMES = [
    "hunter",
    "zerobounce",
    "neverbounce",
    "dropcontact",
    "twilio-lookup",
    "openai",
    "anthropic",
    "stripe",
    "github",
]

SCHEMA_LINE = "# yaml-language-server: $schema=../policy.schema.json"


# --- hunter --------------------------------------------------------------

HUNTER = referee.load_policy("hunter")
HUNTER_KEY = {"X-API-KEY": "f1d2d2f924e986ac86fdf7b36c94bcdf32beec15"}
VERIFIER = "/v2/email-verifier?email=jane.doe%40acme.com"
FINDER = "/v2/email-finder?domain=acme.com&first_name=Jane&last_name=Doe"
DOMAIN_SEARCH = "/v2/domain-search?domain=acme.com"
H_CREDITS = Outcome(
    "abort", "out-of-credits", InsufficientCredits, TOPUP, "credits"
)
H_THROTTLED = Outcome("retry", "rate-limited")
H_SERVER_RETRY = Outcome("retry", "server-unavailable")
H_PENDING = Outcome("poll", "verification-pending")


def hunter_errors(error_id: str, code: int, details: str) -> dict[str, Any]:
    """
    A Hunter error body.
    """
    return {"errors": [{"id": error_id, "code": code, "details": details}]}


H_RATE = hunter_errors(
    "too_many_requests", 403, "You have reached the rate limit."
)
H_USAGE = hunter_errors(
    "too_many_requests", 429, "You have reached your usage limit."
)

HUNTER_CASES = [
    Case(
        "H1-202-verifier-first-poll",
        202,
        "GET",
        VERIFIER,
        H_PENDING,
        delay=5.0,
    ),
    Case(
        "H1-202-verifier-second-poll",
        202,
        "GET",
        VERIFIER,
        H_PENDING,
        polls=1,
        delay=7.5,
    ),
    Case(
        "H1-202-verifier-poll-capped",
        202,
        "GET",
        VERIFIER,
        H_PENDING,
        polls=5,
        polling_for=40.0,
        delay=10.0,
    ),
    Case(
        "H1-202-verifier-past-two-minutes",
        202,
        "GET",
        VERIFIER,
        Outcome("abort", "verification-pending", DeadlineExceeded),
        polls=13,
        polling_for=115.0,
    ),
    Case(
        "H1-200-verifier-result",
        200,
        "GET",
        VERIFIER,
        ACCEPT,
        body={
            "data": {
                "status": "valid",
                "result": "deliverable",
                "score": 100,
                "email": "jane.doe@acme.com",
            },
            "meta": {"params": {"email": "jane.doe@acme.com"}},
        },
    ),
    Case("H1-202-finder-passes-through", 202, "GET", FINDER, ACCEPT),
    Case(
        "H2-403-backoff",
        403,
        "GET",
        DOMAIN_SEARCH,
        H_THROTTLED,
        body=H_RATE,
        delay=(0.0, 1.0),
    ),
    Case(
        "H2-403-third-attempt",
        403,
        "GET",
        VERIFIER,
        H_THROTTLED,
        body=H_RATE,
        attempt=3,
        delay=(0.0, 4.0),
    ),
    Case(
        "H2-403-retry-after",
        403,
        "GET",
        FINDER,
        H_THROTTLED,
        body=H_RATE,
        headers={"Retry-After": "3"},
        delay=3.0,
    ),
    Case(
        "H2-403-exhausted",
        403,
        "GET",
        FINDER,
        Outcome("abort", "rate-limited", RateLimited),
        body=H_RATE,
        attempt=4,
    ),
    Case(
        "H2-403-post-not-retried",
        403,
        "POST",
        "/v2/leads",
        Outcome("abort", "rate-limited", RateLimited),
        body=H_RATE,
    ),
    Case("H3-429-finder", 429, "GET", FINDER, H_CREDITS, body=H_USAGE),
    Case("H3-429-verifier", 429, "GET", VERIFIER, H_CREDITS, body=H_USAGE),
    Case("H3-429-no-body", 429, "GET", DOMAIN_SEARCH, H_CREDITS),
    Case(
        "H4-401",
        401,
        "GET",
        FINDER,
        Outcome("abort", "unauthorized", AuthenticationError, CONFIG),
        body=hunter_errors(
            "authentication_failed",
            401,
            "No user found for the API key supplied",
        ),
    ),
    Case(
        "H5-500-get",
        500,
        "GET",
        FINDER,
        H_SERVER_RETRY,
        delay=(0.0, 1.0),
    ),
    Case(
        "H5-503-get",
        503,
        "GET",
        VERIFIER,
        H_SERVER_RETRY,
        delay=(0.0, 1.0),
    ),
    Case(
        "H5-502-exhausted",
        502,
        "GET",
        DOMAIN_SEARCH,
        Outcome("abort", "server-unavailable", ServerError),
        attempt=4,
    ),
    Case(
        "H5-500-post-not-retried",
        500,
        "POST",
        "/v2/leads",
        Outcome("abort", "server-unavailable", ServerError),
    ),
]
HUNTER_CASES = [
    Case(**{**c.__dict__, "request_headers": HUNTER_KEY}) for c in HUNTER_CASES
]


class TestHunter:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize("case", HUNTER_CASES, ids=ids(HUNTER_CASES))
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(HUNTER, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", with_delay(HUNTER_CASES), ids=ids(with_delay(HUNTER_CASES))
    )
    def test_delay(self, case, base):
        """
        Retries and polls wait what the hint or the schedule says.
        """
        check_delay(HUNTER, case, base)

    @pytest.mark.parametrize("row", ["H1", "H2", "H3", "H4", "H5"], ids=str)
    def test_every_table_row_is_covered(self, row):
        """
        Every row of the decision table in apis.md §3a has a case.
        """
        assert row in rows(HUNTER_CASES)

    def test_rate_limit(self):
        """
        Sends are paced at the verifier's 10/s, each path on its own.
        """
        expected = (10, 1.0, None, True)

        limit = HUNTER.rate_limit

        assert limit is not None
        assert expected == (
            limit.requests,
            limit.per,
            limit.methods,
            limit.by_path,
        )

    def test_credits_alert_message(self):
        """
        The top-up alert names the path that met the usage limit.
        """
        snap = Snapshot.response(
            429, url="http://127.0.0.1:8080" + FINDER, body=json.dumps(H_USAGE)
        )

        decision = decide(HUNTER, snap, AttemptState(started=NOW))

        assert decision.alert is not None
        assert (
            "Hunter is out of credits: 429 on /v2/email-finder"
            == decision.alert.message
        )


# --- zerobounce ----------------------------------------------------------

ZEROBOUNCE = referee.load_policy("zerobounce")
ZB_KEY = "api_key=7d0e5b8a3c1f4e2d9b6a0c8e1f3d5b7a"
VALIDATE = f"/v2/validate?{ZB_KEY}&email=jane.doe%40acme.com&ip_address="
GETCREDITS = f"/v2/getcredits?{ZB_KEY}"
ZB_NO_CREDITS = {"error": "Invalid API Key or your account ran out of credits"}
Z_CREDITS = Outcome(
    "abort", "out-of-credits", InsufficientCredits, TOPUP, "credits"
)


def zb_result(status: str, sub_status: str = "") -> dict[str, Any]:
    """
    A ZeroBounce validation result.
    """
    return {
        "address": "jane.doe@acme.com",
        "status": status,
        "sub_status": sub_status,
        "free_email": False,
        "did_you_mean": None,
        "account": "jane.doe",
        "domain": "acme.com",
        "domain_age_days": "9692",
        "smtp_provider": "g-suite",
        "mx_found": "true",
        "mx_record": "aspmx.l.google.com",
        "processed_at": "2024-11-14 22:13:20.070",
    }


ZEROBOUNCE_CASES = [
    Case(
        "Z1-200-out-of-credits", 200, "GET", VALIDATE, Z_CREDITS, ZB_NO_CREDITS
    ),
    Case(
        "Z1-400-out-of-credits", 400, "GET", VALIDATE, Z_CREDITS, ZB_NO_CREDITS
    ),
    Case(
        "Z1-getcredits-invalid-key-string",
        200,
        "GET",
        GETCREDITS,
        Outcome("abort", "invalid-key", AuthenticationError, CONFIG),
        {"Credits": "-1"},
    ),
    Case(
        "Z1-getcredits-invalid-key-number",
        200,
        "GET",
        GETCREDITS,
        Outcome("abort", "invalid-key", AuthenticationError, CONFIG),
        {"Credits": -1},
    ),
    Case(
        "Z1-getcredits-zero",
        200,
        "GET",
        GETCREDITS,
        Outcome("abort", "no-credits", InsufficientCredits, TOPUP),
        {"Credits": "0"},
    ),
    Case(
        "Z1-getcredits-balance",
        200,
        "GET",
        GETCREDITS,
        ACCEPT,
        {"Credits": "2375323"},
    ),
    Case(
        "Z2-200-unknown",
        200,
        "GET",
        VALIDATE,
        ACCEPT,
        zb_result("unknown", "mail_server_temporary_error"),
    ),
    Case("Z2-200-valid", 200, "GET", VALIDATE, ACCEPT, zb_result("valid")),
    Case(
        "Z2-200-invalid",
        200,
        "GET",
        VALIDATE,
        ACCEPT,
        zb_result("invalid", "mailbox_not_found"),
    ),
    Case(
        "Z2-200-catch-all",
        200,
        "GET",
        VALIDATE,
        ACCEPT,
        zb_result("catch-all"),
    ),
    Case(
        "Z3-500-retried",
        500,
        "GET",
        VALIDATE,
        Outcome("retry", "server-unavailable"),
        delay=(0.0, 1.0),
    ),
    Case(
        "Z3-429-retried",
        429,
        "GET",
        VALIDATE,
        Outcome("retry", "rate-limited"),
        delay=(0.0, 1.0),
    ),
    Case(
        "Z3-400-bad-request-passes-through",
        400,
        "GET",
        "/v2/validate?email=jane.doe%40acme.com",
        ACCEPT,
        {"error": "Missing parameter: api_key"},
    ),
]


class TestZeroBounce:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", ZEROBOUNCE_CASES, ids=ids(ZEROBOUNCE_CASES)
    )
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(ZEROBOUNCE, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case",
        with_delay(ZEROBOUNCE_CASES),
        ids=ids(with_delay(ZEROBOUNCE_CASES)),
    )
    def test_delay(self, case, base):
        """
        Retries wait what the backoff says.
        """
        check_delay(ZEROBOUNCE, case, base)

    @pytest.mark.parametrize("row", ["Z1", "Z2", "Z3"], ids=str)
    def test_every_table_row_is_covered(self, row):
        """
        Every row of the decision table in apis.md §3b has a case.
        """
        assert row in rows(ZEROBOUNCE_CASES)

    def test_alert_says_it_may_be_the_key(self):
        """
        The top-up alert says that the key may be bad, and how to tell.
        """
        snap = Snapshot.response(
            200,
            url="http://127.0.0.1:8080" + VALIDATE,
            body=json.dumps(ZB_NO_CREDITS),
        )

        decision = decide(ZEROBOUNCE, snap, AttemptState(started=NOW))

        assert decision.alert is not None
        assert "the API key is invalid" in decision.alert.message
        assert "getcredits" in decision.alert.message

    def test_ratio_breaker_settings(self):
        """
        The ratio breaker stops the fleet for validate's 1 minute block.
        """
        expected = (0.5, 60.0, 20, 60.0)

        breaker = ZEROBOUNCE.breaker

        assert breaker is not None
        assert expected == (
            breaker.failure_ratio,
            breaker.window,
            breaker.min_calls,
            breaker.open_for,
        )

    def test_burst_of_errors_opens_the_ratio_breaker(self):
        """
        A burst of 503s opens the ratio breaker: the next call fails fast
        and nothing is sent.
        """
        policy = referee.load_policy("zerobounce")
        sent = []

        def handler(request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            return httpx.Response(503, json={"error": "Service Unavailable"})

        transport = PolicyTransport(policy, httpx.MockTransport(handler))
        url = "http://127.0.0.1:8080" + VALIDATE
        with no_sleep(), httpx.Client(transport=transport) as client:
            # Three sends a call (http-default retries GETs twice), each
            # a failure: six calls make 18, and the seventh call's second
            # 503 is the 20th (min_calls), which opens the breaker before
            # its third send.
            for _ in range(6):
                with pytest.raises(ServerError):
                    client.get(url)
            with pytest.raises(CircuitOpen):
                client.get(url)
            count = len(sent)
            with pytest.raises(CircuitOpen):
                client.get(url)

        assert (20, 20) == (count, len(sent))


# --- neverbounce ---------------------------------------------------------

NEVERBOUNCE = referee.load_policy("neverbounce")
NB_KEY = "key=secret_nvrbnc_0123456789abcdef"
CHECK = f"/v4/single/check?{NB_KEY}&email=jane.doe%40acme.com"
JOB_CREATE = "/v4/jobs/create"
JOB_STATUS = f"/v4/jobs/status?{NB_KEY}&job_id=277461"
N_JOB_RUNNING = Outcome("poll", "job-running")


def nb(status: str, message: str | None = None) -> dict[str, Any]:
    """
    A NeverBounce response body with *status*.
    """
    body: dict[str, Any] = {"status": status, "execution_time": 12}
    if message is not None:
        body["message"] = message
    return body


def nb_job(job_status: str) -> dict[str, Any]:
    """
    A jobs/status answer for a job in *job_status*.
    """
    return {
        "status": "success",
        "id": 277461,
        "job_status": job_status,
        "filename": "customers.csv",
        "created_at": "2024-10-18 11:28:05",
        "started_at": "2024-10-18 11:28:24",
        "finished_at": None,
        "total": {"records": 1000, "billable": 0, "processed": 520},
        "bounce_estimate": 0,
        "percent_complete": 52,
        "execution_time": 33,
    }


NB_THROTTLE = nb(
    "throttle_triggered", "Too many requests in a short amount of time"
)
NB_UNAVAILABLE = nb("temp_unavail", "The service is temporarily unavailable")

NEVERBOUNCE_CASES = [
    Case(
        "N1-throttle-get",
        200,
        "GET",
        CHECK,
        Outcome("retry", "throttled"),
        NB_THROTTLE,
        delay=(0.0, 1.0),
    ),
    Case(
        "N1-throttle-post",
        200,
        "POST",
        JOB_CREATE,
        Outcome("retry", "throttled"),
        NB_THROTTLE,
        delay=(0.0, 1.0),
    ),
    Case(
        "N1-throttle-exhausted",
        200,
        "GET",
        CHECK,
        Outcome("abort", "throttled", RateLimited),
        NB_THROTTLE,
        attempt=4,
    ),
    Case(
        "N2-temp-unavail-get",
        200,
        "GET",
        CHECK,
        Outcome("retry", "temporarily-unavailable"),
        NB_UNAVAILABLE,
        delay=(0.0, 1.0),
    ),
    Case(
        "N2-temp-unavail-post",
        200,
        "POST",
        JOB_CREATE,
        Outcome("retry", "temporarily-unavailable"),
        NB_UNAVAILABLE,
        attempt=2,
        delay=(0.0, 2.0),
    ),
    Case(
        "N2-503-get",
        503,
        "GET",
        JOB_STATUS,
        Outcome("retry", "server-unavailable"),
        delay=(0.0, 1.0),
    ),
    Case(
        "N2-502-get", 502, "GET", CHECK, Outcome("retry", "server-unavailable")
    ),
    Case(
        "N2-500-post-not-retried",
        500,
        "POST",
        JOB_CREATE,
        Outcome("abort", "server-unavailable", ServerError),
    ),
    Case(
        "N3-auth-failure",
        200,
        "GET",
        CHECK,
        Outcome("abort", "auth-failure", AuthenticationError, CONFIG),
        nb("auth_failure", "Invalid API key 'secret_nvrbnc_0123'"),
    ),
    Case(
        "N3-bad-referrer",
        200,
        "POST",
        JOB_CREATE,
        Outcome("abort", "bad-referrer", PermissionDenied, CONFIG),
        nb("bad_referrer", "The referrer for this request is not trusted"),
    ),
    Case(
        "N4-general-failure-credits",
        200,
        "POST",
        JOB_CREATE,
        Outcome(
            "abort", "out-of-credits", InsufficientCredits, TOPUP, "credits"
        ),
        nb("general_failure", "Insufficient credit balance to run this job"),
    ),
    Case(
        "N4-general-failure-other",
        200,
        "GET",
        CHECK,
        Outcome("abort", "general-failure", Aborted),
        nb("general_failure", "Missing required parameter 'email'"),
    ),
    *[
        Case(
            f"N5-{job_status.replace('_', '-')}",
            200,
            "GET",
            JOB_STATUS,
            N_JOB_RUNNING,
            nb_job(job_status),
            delay=5.0,
        )
        for job_status in [
            "under_review",
            "queued",
            "parsing",
            "waiting",
            "running",
            "uploading",
        ]
    ],
    Case(
        "N5-running-third-poll",
        200,
        "GET",
        JOB_STATUS,
        N_JOB_RUNNING,
        nb_job("running"),
        polls=2,
        delay=11.25,
    ),
    Case(
        "N5-running-poll-capped",
        200,
        "GET",
        JOB_STATUS,
        N_JOB_RUNNING,
        nb_job("running"),
        polls=12,
        polling_for=600.0,
        delay=60.0,
    ),
    Case(
        "N5-running-past-the-deadline",
        200,
        "GET",
        JOB_STATUS,
        Outcome("abort", "job-running", DeadlineExceeded),
        nb_job("running"),
        polls=40,
        polling_for=1790.0,
    ),
    Case(
        "N5-waiting-analyzed-passes-through",
        200,
        "GET",
        JOB_STATUS,
        ACCEPT,
        nb_job("waiting_analyzed"),
    ),
    Case(
        "N5-post-is-not-polled",
        200,
        "POST",
        "/v4/jobs/status",
        ACCEPT,
        nb_job("running"),
    ),
    Case(
        "N6-failed",
        200,
        "GET",
        JOB_STATUS,
        Outcome("abort", "job-failed", JobFailed),
        nb_job("failed"),
    ),
    Case("N6-complete", 200, "GET", JOB_STATUS, ACCEPT, nb_job("complete")),
    Case(
        "413-payload-too-large",
        413,
        "POST",
        JOB_CREATE,
        Outcome("abort", "payload-too-large", BadRequest),
        "<html><body><h1>413 Request Entity Too Large</h1></body></html>",
    ),
    Case(
        "success-single-check",
        200,
        "GET",
        CHECK,
        ACCEPT,
        {
            "status": "success",
            "result": "valid",
            "flags": ["has_dns", "has_dns_mx"],
            "suggested_correction": "",
            "execution_time": 499,
        },
    ),
]


class TestNeverBounce:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", NEVERBOUNCE_CASES, ids=ids(NEVERBOUNCE_CASES)
    )
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(NEVERBOUNCE, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case",
        with_delay(NEVERBOUNCE_CASES),
        ids=ids(with_delay(NEVERBOUNCE_CASES)),
    )
    def test_delay(self, case, base):
        """
        Retries and polls wait what the backoff or the schedule says.
        """
        check_delay(NEVERBOUNCE, case, base)

    @pytest.mark.parametrize(
        "row", ["N1", "N2", "N3", "N4", "N5", "N6"], ids=str
    )
    def test_every_table_row_is_covered(self, row):
        """
        Every row of the decision table in apis.md §3c has a case.
        """
        assert row in rows(NEVERBOUNCE_CASES)

    def test_poll_resends_the_status_request(self):
        """
        A running job is polled by sending the same jobs/status GET again.
        """
        snap = Snapshot.response(
            200,
            url="http://127.0.0.1:8080" + JOB_STATUS,
            body=json.dumps(nb_job("running")),
        )

        decision = decide(NEVERBOUNCE, snap, AttemptState(started=NOW))

        assert isinstance(decision, Poll)
        assert decision.request is None


# --- dropcontact ---------------------------------------------------------

DROPCONTACT = referee.load_policy("dropcontact")
DC_TOKEN = {"X-Access-Token": "dc_0123456789abcdef0123456789abcdef"}
ENRICH = "/v1/enrich/all"
REQUEST_ID = "r7q2m9x4k1"
RESULT = f"/v1/enrich/all/{REQUEST_ID}"
DC_NOT_READY = {
    "error": False,
    "success": False,
    "reason": "Request not ready yet, try again in 30 seconds",
}
D_NOT_READY = Outcome("poll", "not-ready")
D_CREDITS = Outcome(
    "abort", "out-of-credits", InsufficientCredits, TOPUP, "credits"
)

DROPCONTACT_CASES = [
    Case(
        "D1-not-ready-first-poll",
        200,
        "GET",
        RESULT,
        D_NOT_READY,
        DC_NOT_READY,
        delay=3.0,
    ),
    Case(
        "D1-not-ready-second-poll",
        200,
        "GET",
        RESULT,
        D_NOT_READY,
        DC_NOT_READY,
        polls=1,
        delay=4.5,
    ),
    Case(
        "D1-not-ready-poll-capped",
        200,
        "GET",
        RESULT,
        D_NOT_READY,
        DC_NOT_READY,
        polls=6,
        polling_for=60.0,
        delay=15.0,
    ),
    Case(
        "D1-not-ready-past-four-minutes",
        200,
        "GET",
        RESULT,
        Outcome("abort", "not-ready", DeadlineExceeded),
        DC_NOT_READY,
        polls=20,
        polling_for=230.0,
    ),
    Case(
        "D1-done",
        200,
        "GET",
        RESULT,
        ACCEPT,
        {
            "error": False,
            "success": True,
            "data": [
                {
                    "civility": "Mme",
                    "first_name": "Jane",
                    "last_name": "Doe",
                    "email": [
                        {
                            "email": "jane.doe@acme.com",
                            "qualification": "nominative@pro",
                        }
                    ],
                }
            ],
        },
    ),
    Case(
        "D1-post-accepted",
        200,
        "POST",
        ENRICH,
        ACCEPT,
        {
            "error": False,
            "success": True,
            "request_id": REQUEST_ID,
            "credits_left": 1000,
        },
    ),
    Case("D1-post-is-not-polled", 200, "POST", ENRICH, ACCEPT, DC_NOT_READY),
    Case(
        "D2-error-true-400",
        400,
        "GET",
        "/v1/enrich/all/unknown",
        Outcome("abort", "provider-error", Aborted),
        {"error": True, "success": False, "reason": "Request id not found"},
    ),
    Case(
        "D2-error-true-200",
        200,
        "POST",
        ENRICH,
        Outcome("abort", "provider-error", Aborted),
        {"error": True, "reason": "Too many contacts: 250 at most"},
    ),
    Case(
        "D2-error-true-500-is-retried",
        500,
        "GET",
        RESULT,
        Outcome("retry", "server-unavailable"),
        {"error": True, "reason": "Internal error"},
        delay=(0.0, 1.0),
    ),
    Case(
        "D3-403-post",
        403,
        "POST",
        ENRICH,
        D_CREDITS,
        {"error": True, "reason": "You don't have enough credits"},
    ),
    Case("D3-403-get", 403, "GET", RESULT, D_CREDITS),
    Case(
        "D4-401",
        401,
        "POST",
        ENRICH,
        Outcome("abort", "unauthorized", AuthenticationError, CONFIG),
        {"error": True, "reason": "Invalid token"},
    ),
    Case(
        "429-post-retried",
        429,
        "POST",
        ENRICH,
        Outcome("retry", "rate-limited"),
        headers={"Retry-After": "4"},
        delay=4.0,
    ),
    Case(
        "500-post-not-retried",
        500,
        "POST",
        ENRICH,
        Outcome("abort", "server-unavailable", ServerError),
    ),
]
DROPCONTACT_CASES = [
    Case(**{**c.__dict__, "request_headers": DC_TOKEN})
    for c in DROPCONTACT_CASES
]


class TestDropcontact:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", DROPCONTACT_CASES, ids=ids(DROPCONTACT_CASES)
    )
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(DROPCONTACT, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case",
        with_delay(DROPCONTACT_CASES),
        ids=ids(with_delay(DROPCONTACT_CASES)),
    )
    def test_delay(self, case, base):
        """
        Retries and polls wait what the hint or the schedule says.
        """
        check_delay(DROPCONTACT, case, base)

    @pytest.mark.parametrize("row", ["D1", "D2", "D3", "D4"], ids=str)
    def test_every_table_row_is_covered(self, row):
        """
        Every row of the decision table in apis.md §3d has a case.
        """
        assert row in rows(DROPCONTACT_CASES)

    def test_credits_breaker_stops_only_posts(self):
        """
        The credits breaker stops the paid POSTs, not the free GETs.
        """
        expected = {"credits": frozenset({"POST"})}

        assert expected == dict(DROPCONTACT.breaker_scopes)


# --- twilio-lookup -------------------------------------------------------

TWILIO = referee.load_policy("twilio-lookup")
LOOKUP = "/v2/PhoneNumbers/%2B14155552671?Fields=line_type_intelligence"
TWILIO_AUTH = {"Authorization": "Basic QUMxMjM0NTY3ODkwOnNlY3JldA=="}
T_RATE = Outcome("retry", "rate-limited")
T_SERVER = Outcome("retry", "server-unavailable")
T_NOT_ACTIVE = Outcome(
    "abort",
    "account-not-active",
    TWILIO.errors["AccountNotActive"],
    TOPUP,
    "credits",
)


def twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    """
    A Twilio error body.
    """
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def lookup(valid: bool, errors: list[str]) -> dict[str, Any]:
    """
    A Lookup v2 answer.
    """
    return {
        "calling_country_code": "1",
        "country_code": "US",
        "phone_number": "+14155552671",
        "national_format": "(415) 555-2671",
        "valid": valid,
        "validation_errors": errors,
        "caller_name": None,
        "line_type_intelligence": None,
        "url": "https://lookups.twilio.com/v2/PhoneNumbers/+14155552671",
    }


T_429 = twilio_error(20429, "Too Many Requests", 429)

TWILIO_CASES = [
    Case(
        "T1-valid-false",
        200,
        "GET",
        LOOKUP,
        ACCEPT,
        lookup(valid=False, errors=["TOO_SHORT"]),
    ),
    Case(
        "T1-valid-false-not-a-number",
        200,
        "GET",
        "/v2/PhoneNumbers/abc",
        ACCEPT,
        lookup(valid=False, errors=["NOT_A_NUMBER"]),
    ),
    Case("T1-valid-true", 200, "GET", LOOKUP, ACCEPT, lookup(True, [])),
    Case(
        "T2-429-backoff",
        429,
        "GET",
        LOOKUP,
        T_RATE,
        T_429,
        headers={"Twilio-Concurrent-Requests": "101"},
        delay=(0.0, 1.0),
    ),
    Case(
        "T2-429-retry-after",
        429,
        "GET",
        LOOKUP,
        T_RATE,
        T_429,
        headers={"Retry-After": "2"},
        delay=2.0,
    ),
    Case(
        "T2-20429-under-503",
        503,
        "GET",
        LOOKUP,
        T_RATE,
        twilio_error(20429, "Too Many Requests", 503),
        delay=(0.0, 1.0),
    ),
    Case(
        "T2-429-retry-after-above-ceiling",
        429,
        "GET",
        LOOKUP,
        Outcome("abort", "rate-limited", RateLimited),
        T_429,
        headers={"Retry-After": "600"},
    ),
    Case(
        "T2-429-exhausted",
        429,
        "GET",
        LOOKUP,
        Outcome("abort", "rate-limited", RateLimited),
        T_429,
        attempt=4,
    ),
    Case(
        "T3-401",
        401,
        "GET",
        LOOKUP,
        Outcome("abort", "unauthorized", AuthenticationError, CONFIG),
        twilio_error(20003, "Authenticate", 401),
    ),
    Case(
        "T4-500",
        500,
        "GET",
        LOOKUP,
        T_SERVER,
        twilio_error(20500, "Internal Server Error", 500),
        delay=(0.0, 1.0),
    ),
    Case(
        "T4-503-second-attempt",
        503,
        "GET",
        LOOKUP,
        T_SERVER,
        attempt=2,
        delay=(0.0, 2.0),
    ),
    Case(
        "T4-502-exhausted",
        502,
        "GET",
        LOOKUP,
        Outcome("abort", "server-unavailable", ServerError),
        attempt=4,
    ),
    Case(
        "T5-20005-not-active",
        401,
        "GET",
        LOOKUP,
        T_NOT_ACTIVE,
        twilio_error(20005, "Account not active", 401),
    ),
    Case(
        "T5-10001-balance-reached-zero",
        403,
        "GET",
        LOOKUP,
        T_NOT_ACTIVE,
        twilio_error(10001, "Account is not active", 403),
    ),
    Case(
        "T5-20005-under-400",
        400,
        "GET",
        LOOKUP,
        T_NOT_ACTIVE,
        twilio_error(20005, "Account not active", 400),
    ),
    Case(
        "T6-20403-suspended",
        403,
        "GET",
        LOOKUP,
        Outcome(
            "abort",
            "account-suspended",
            TWILIO.errors["AccountSuspended"],
            ("account", "critical"),
        ),
        twilio_error(20403, "403 Forbidden", 403),
    ),
    Case(
        "T6-other-403-passes-through",
        403,
        "GET",
        LOOKUP,
        ACCEPT,
        twilio_error(20008, "Test Account Credentials", 403),
    ),
    Case(
        "T7-60606-package-not-enabled",
        403,
        "GET",
        LOOKUP,
        Outcome(
            "abort",
            "package-not-enabled",
            PermissionDenied,
            ("config", "error"),
        ),
        twilio_error(60606, "Lookup Package is Not Enabled", 403),
    ),
]
TWILIO_CASES = [
    Case(**{**c.__dict__, "request_headers": TWILIO_AUTH})
    for c in TWILIO_CASES
]


class TestTwilioLookup:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize("case", TWILIO_CASES, ids=ids(TWILIO_CASES))
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(TWILIO, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", with_delay(TWILIO_CASES), ids=ids(with_delay(TWILIO_CASES))
    )
    def test_delay(self, case, base):
        """
        Retries wait what Retry-After or the backoff says.
        """
        check_delay(TWILIO, case, base)

    @pytest.mark.parametrize("row", [f"T{n}" for n in range(1, 8)], ids=str)
    def test_every_table_row_is_covered(self, row):
        """
        Every row of the decision table in apis.md §3e, and every account
        error taken from Twilio's error dictionary (T5-T7), has a case.
        """
        assert row in rows(TWILIO_CASES)

    @pytest.mark.parametrize(
        ("name", "base"),
        [
            ("AccountNotActive", InsufficientCredits),
            ("AccountSuspended", PermissionDenied),
        ],
        ids=["not-active", "suspended"],
    )
    def test_account_errors_are_declared(self, name, base):
        """
        The account errors are declared in the file, each under the
        built-in error a caller may already catch.
        """
        assert issubclass(TWILIO.errors[name], base)

    def test_not_active_alert_carries_twilio_message(self):
        """
        The top-up alert says what Twilio said, and to add funds.
        """
        snap = Snapshot.response(
            401,
            url="http://127.0.0.1:8080" + LOOKUP,
            body=json.dumps(twilio_error(20005, "Account not active", 401)),
        )

        decision = decide(TWILIO, snap, AttemptState(started=NOW))

        assert decision.alert is not None
        assert (
            "Twilio account not active: Account not active; add funds"
            == decision.alert.message
        )

    def test_200_needs_no_rule(self):
        """
        No rule can match a 200: a negative answer is accepted after one
        look-up, without parsing its body.
        """
        expected = ()

        assert expected == tuple(TWILIO.candidates(200, "GET"))


# --- openai --------------------------------------------------------------

# The facts of peers-python.md (§2 "OpenAI SDK", §1b, §3 items 14 and 16,
# §4 gap 4), numbered for the cases:
# O1 429 insufficient_quota: abort, top-up alert, credits breaker, never
#    retried (not even with x-should-retry: true);
# O2 other 429s: retried, POST included, honouring retry-after-ms, then
#    Retry-After, then the x-ratelimit-reset-* durations;
# O3 x-should-retry: false: no retry;
# O4 x-should-retry: true: retry;
# O5 408, 409 and the 5xx OpenAI does not document (502, 504): retried for
#    idempotent requests (the SDK retries every method; this policy does
#    not retry a POST without an Idempotency-Key);
# O6 401 AuthenticationError; O7 403 PermissionDenied; O8 404 NotFound;
# O9 400 (and 422) BadRequest;
# O10 500 and 503: "retry your request after a brief wait" (OpenAI's error
#    guide, sdks-and-standards.md), for every method, POST included.

OPENAI = referee.load_policy("openai")
OPENAI_AUTH = {
    "Authorization": "Bearer sk-proj-0123456789abcdef",
    "x-stainless-retry-count": "0",
}
COMPLETIONS = "/v1/chat/completions"
MODEL = "/v1/models/gpt-4o-mini"
BATCH = "/v1/batches/batch_abc123"
O_RATE = Outcome("retry", "rate-limited")
O_TOKENS = Outcome("retry", "rate-limited-tokens")
O_RATE_ABORT = Outcome("abort", "rate-limited", RateLimited)
O_QUOTA = Outcome(
    "abort", "insufficient-quota", InsufficientCredits, TOPUP, "credits"
)
O_SAYS_RETRY = Outcome("retry", "server-says-retry")
O_SERVER_RETRY = Outcome("retry", "server-unavailable")
O_SERVER_ABORT = Outcome("abort", "server-unavailable", ServerError)
O_DOCUMENTED_RETRY = Outcome("retry", "server-failed-or-overloaded")
O_DOCUMENTED_ABORT = Outcome(
    "abort", "server-failed-or-overloaded", ServerError
)
# The SDK's first delay, 0.5 s, with equal jitter.
FIRST = (0.25, 0.5)


def openai_error(
    message: str, kind: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """
    An OpenAI error body.
    """
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code,
        }
    }


QUOTA = openai_error(
    "You exceeded your current quota, please check your plan and billing "
    "details. For more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors.",
    "insufficient_quota",
    "insufficient_quota",
)
RPM = openai_error(
    "Rate limit reached for gpt-4o-mini in organization org-abc on requests "
    "per min (RPM): Limit 500, Used 500, Requested 1. Please try again in "
    "120ms.",
    "requests",
    "rate_limit_exceeded",
)
TPM = openai_error(
    "Rate limit reached for gpt-4o-mini in organization org-abc on tokens "
    "per min (TPM): Limit 200000, Used 199500, Requested 1200.",
    "tokens",
    "rate_limit_exceeded",
)
SERVER = openai_error(
    "The server had an error while processing your request. Sorry about that!",
    "server_error",
    None,
)
REQUESTS_SPENT = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-limit-tokens": "200000",
    "x-ratelimit-remaining-tokens": "199500",
}
TOKENS_SPENT = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-limit-tokens": "200000",
    "x-ratelimit-remaining-tokens": "0",
}

OPENAI_CASES = [
    Case(
        "O1-insufficient-quota-post",
        429,
        "POST",
        COMPLETIONS,
        O_QUOTA,
        QUOTA,
        headers={"retry-after-ms": "1500", "Retry-After": "2"},
    ),
    Case("O1-insufficient-quota-get", 429, "GET", MODEL, O_QUOTA, QUOTA),
    Case(
        "O1-insufficient-quota-despite-should-retry",
        429,
        "POST",
        COMPLETIONS,
        O_QUOTA,
        QUOTA,
        headers={"x-should-retry": "true"},
    ),
    Case(
        "O1-insufficient-quota-type-only",
        429,
        "POST",
        "/v1/embeddings",
        O_QUOTA,
        openai_error(
            "You exceeded your current quota.", "insufficient_quota", None
        ),
    ),
    Case(
        "O2-429-retry-after-ms",
        429,
        "POST",
        COMPLETIONS,
        O_RATE,
        RPM,
        headers={"retry-after-ms": "1500", "Retry-After": "2"},
        delay=1.5,
    ),
    Case(
        "O2-429-retry-after",
        429,
        "POST",
        COMPLETIONS,
        O_RATE,
        RPM,
        headers={"Retry-After": "2"},
        delay=2.0,
    ),
    Case(
        "O2-429-reset-requests",
        429,
        "POST",
        COMPLETIONS,
        O_RATE,
        RPM,
        headers={
            **REQUESTS_SPENT,
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "150ms",
        },
        delay=1.0,
    ),
    Case(
        "O2-429-reset-requests-6m0s-above-ceiling",
        429,
        "POST",
        COMPLETIONS,
        O_RATE_ABORT,
        RPM,
        headers={**REQUESTS_SPENT, "x-ratelimit-reset-requests": "6m0s"},
    ),
    Case(
        "O2-429-reset-tokens",
        429,
        "POST",
        COMPLETIONS,
        O_TOKENS,
        TPM,
        headers={
            **TOKENS_SPENT,
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-reset-tokens": "6.5s",
        },
        delay=6.5,
    ),
    Case(
        "O2-429-reset-tokens-6m0s-above-ceiling",
        429,
        "POST",
        COMPLETIONS,
        Outcome("abort", "rate-limited-tokens", RateLimited),
        TPM,
        headers={
            **TOKENS_SPENT,
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-reset-tokens": "6m0s",
        },
    ),
    Case(
        "O2-429-retry-after-ms-before-reset",
        429,
        "POST",
        COMPLETIONS,
        O_TOKENS,
        TPM,
        headers={
            **TOKENS_SPENT,
            "retry-after-ms": "2500",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        delay=2.5,
    ),
    Case("O2-429-backoff", 429, "POST", COMPLETIONS, O_RATE, RPM, delay=FIRST),
    Case(
        "O2-429-exhausted",
        429,
        "POST",
        COMPLETIONS,
        O_RATE_ABORT,
        RPM,
        attempt=3,
    ),
    Case(
        "O3-should-not-retry-429",
        429,
        "POST",
        COMPLETIONS,
        Outcome("abort", "server-says-no-retry", RateLimited),
        RPM,
        headers={"x-should-retry": "false", "retry-after-ms": "100"},
    ),
    Case(
        "O3-should-not-retry-500",
        500,
        "GET",
        BATCH,
        Outcome("abort", "server-says-no-retry", ServerError),
        SERVER,
        headers={"x-should-retry": "false"},
    ),
    Case(
        "O3-should-not-retry-409",
        409,
        "GET",
        BATCH,
        Outcome("abort", "server-says-no-retry", Aborted),
        headers={"x-should-retry": "false"},
    ),
    Case(
        "O4-should-retry-500-post",
        500,
        "POST",
        COMPLETIONS,
        O_SAYS_RETRY,
        SERVER,
        headers={"x-should-retry": "true"},
        delay=FIRST,
    ),
    Case(
        "O4-should-retry-retry-after-ms",
        503,
        "POST",
        COMPLETIONS,
        O_SAYS_RETRY,
        SERVER,
        headers={"x-should-retry": "true", "retry-after-ms": "250"},
        delay=0.25,
    ),
    Case(
        "O4-should-retry-400",
        400,
        "POST",
        COMPLETIONS,
        O_SAYS_RETRY,
        openai_error("Try again.", "invalid_request_error", None),
        headers={"x-should-retry": "true"},
        delay=FIRST,
    ),
    Case(
        "O4-should-retry-exhausted",
        500,
        "POST",
        COMPLETIONS,
        Outcome("abort", "server-says-retry", referee.RetriesExhausted),
        SERVER,
        headers={"x-should-retry": "true"},
        attempt=3,
    ),
    Case(
        "O5-408-get",
        408,
        "GET",
        BATCH,
        Outcome("retry", "request-timeout"),
        delay=FIRST,
    ),
    Case(
        "O5-408-post-not-retried",
        408,
        "POST",
        COMPLETIONS,
        Outcome("abort", "request-timeout", Aborted),
    ),
    Case(
        "O5-409-get",
        409,
        "GET",
        BATCH,
        Outcome("retry", "request-timeout"),
        delay=FIRST,
    ),
    Case(
        "O5-409-post-not-retried",
        409,
        "POST",
        "/v1/batches/batch_abc123/cancel",
        Outcome("abort", "request-timeout", Aborted),
    ),
    Case(
        "O10-500-get",
        500,
        "GET",
        MODEL,
        O_DOCUMENTED_RETRY,
        SERVER,
        delay=FIRST,
    ),
    Case(
        "O5-502-get-retry-after",
        502,
        "GET",
        MODEL,
        O_SERVER_RETRY,
        headers={"Retry-After": "3"},
        delay=3.0,
    ),
    Case(
        "O5-504-get-second-attempt",
        504,
        "GET",
        BATCH,
        O_SERVER_RETRY,
        attempt=2,
        delay=(0.5, 1.0),
    ),
    Case(
        "O5-502-get-exhausted",
        502,
        "GET",
        MODEL,
        O_SERVER_ABORT,
        attempt=3,
    ),
    Case(
        "O5-502-post-not-retried",
        502,
        "POST",
        COMPLETIONS,
        O_SERVER_ABORT,
    ),
    Case(
        "O5-504-post-not-retried",
        504,
        "POST",
        COMPLETIONS,
        O_SERVER_ABORT,
    ),
    Case(
        "O5-502-post-with-idempotency-key",
        502,
        "POST",
        COMPLETIONS,
        O_SERVER_RETRY,
        request_headers={"Idempotency-Key": "stainless-python-retry-7f3c"},
        delay=FIRST,
    ),
    Case(
        "O10-500-post-retried",
        500,
        "POST",
        COMPLETIONS,
        O_DOCUMENTED_RETRY,
        SERVER,
        delay=FIRST,
    ),
    Case(
        "O10-503-post-retry-after-ms",
        503,
        "POST",
        COMPLETIONS,
        O_DOCUMENTED_RETRY,
        openai_error(
            "The engine is currently overloaded, please try again later.",
            "server_error",
            None,
        ),
        headers={"retry-after-ms": "750"},
        delay=0.75,
    ),
    Case(
        "O10-503-get-second-attempt",
        503,
        "GET",
        BATCH,
        O_DOCUMENTED_RETRY,
        attempt=2,
        delay=(0.5, 1.0),
    ),
    Case(
        "O10-500-post-exhausted",
        500,
        "POST",
        COMPLETIONS,
        O_DOCUMENTED_ABORT,
        SERVER,
        attempt=3,
    ),
    Case(
        "O10-503-retry-after-above-ceiling",
        503,
        "POST",
        COMPLETIONS,
        O_DOCUMENTED_ABORT,
        headers={"Retry-After": "600"},
    ),
    Case(
        "O6-401",
        401,
        "POST",
        COMPLETIONS,
        Outcome("abort", "unauthorized", AuthenticationError, CONFIG),
        openai_error(
            "Incorrect API key provided: sk-proj-****cdef.",
            "invalid_request_error",
            "invalid_api_key",
        ),
    ),
    Case(
        "O7-403",
        403,
        "POST",
        COMPLETIONS,
        Outcome("abort", "permission-denied", PermissionDenied),
        openai_error(
            "Country, region, or territory not supported",
            "request_forbidden",
            "unsupported_country_region_territory",
        ),
    ),
    Case(
        "O8-404",
        404,
        "GET",
        MODEL,
        Outcome("abort", "not-found", NotFound),
        openai_error(
            "The model `gpt-9` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
    ),
    Case(
        "O9-400",
        400,
        "POST",
        COMPLETIONS,
        Outcome("abort", "bad-request", BadRequest),
        openai_error(
            "This model's maximum context length is 128000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        ),
    ),
    Case(
        "O9-422",
        422,
        "POST",
        COMPLETIONS,
        Outcome("abort", "bad-request", BadRequest),
        openai_error("Unprocessable entity", "invalid_request_error", None),
    ),
    Case(
        "200-accepted",
        200,
        "POST",
        COMPLETIONS,
        ACCEPT,
        {
            "id": "chatcmpl-abc123",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello."},
                    "finish_reason": "stop",
                }
            ],
        },
    ),
]
OPENAI_CASES = [
    Case(
        **{
            **c.__dict__,
            "request_headers": {**OPENAI_AUTH, **c.request_headers},
        }
    )
    for c in OPENAI_CASES
]


class TestOpenAI:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize("case", OPENAI_CASES, ids=ids(OPENAI_CASES))
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(OPENAI, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", with_delay(OPENAI_CASES), ids=ids(with_delay(OPENAI_CASES))
    )
    def test_delay(self, case, base):
        """
        Retries wait what the first usable hint or the backoff says.
        """
        check_delay(OPENAI, case, base)

    @pytest.mark.parametrize("row", [f"O{n}" for n in range(1, 11)], ids=str)
    def test_every_fact_is_covered(self, row):
        """
        Every fact O1-O10 has a case.
        """
        assert row in rows(OPENAI_CASES)

    @pytest.mark.parametrize(
        ("headers", "source"),
        [
            ({"retry-after-ms": "1500", "Retry-After": "2"}, "retry-after-ms"),
            (
                {"Retry-After": "2", "x-ratelimit-reset-requests": "1s"},
                "Retry-After",
            ),
            (
                {"x-ratelimit-reset-requests": "1s"},
                "x-ratelimit-reset-requests",
            ),
            ({"x-ratelimit-reset-tokens": "2s"}, "x-ratelimit-reset-tokens"),
        ],
        ids=["ms", "retry-after", "reset-requests", "reset-tokens"],
    )
    def test_delay_source(self, headers, source):
        """
        The delay of a 429 comes from the first hint present, in the SDK's
        order, then the reset durations.
        """
        snap = Snapshot.response(
            429,
            method="POST",
            url="http://127.0.0.1:8080" + COMPLETIONS,
            headers=headers,
            body=json.dumps(RPM),
        )

        decision = decide(OPENAI, snap, AttemptState(started=NOW))

        assert isinstance(decision, Retry)
        assert source == decision.delay_source

    def test_reset_above_ceiling_says_why(self):
        """
        A 6m0s reset is above server_delay.max: the call fails at once, and
        the reason says so.
        """
        snap = Snapshot.response(
            429,
            method="POST",
            url="http://127.0.0.1:8080" + COMPLETIONS,
            headers={"x-ratelimit-reset-requests": "6m0s"},
            body=json.dumps(RPM),
        )

        decision = decide(OPENAI, snap, AttemptState(started=NOW))

        assert isinstance(decision, Abort)
        assert "above server_delay.max" in decision.reason

    def test_quota_alert_message(self):
        """
        The top-up alert carries OpenAI's message.
        """
        snap = Snapshot.response(
            429,
            method="POST",
            url="http://127.0.0.1:8080" + COMPLETIONS,
            body=json.dumps(QUOTA),
        )

        decision = decide(OPENAI, snap, AttemptState(started=NOW))

        assert decision.alert is not None
        assert decision.alert.message.startswith(
            "OpenAI quota exhausted: You exceeded your current quota"
        )

    def test_defaults(self):
        """
        The defaults are the SDK's: three sends, 0.5 s doubling to 8 s, a
        120 s ceiling on server hints that fails rather than waits.
        """
        expected = (3, (0.5, 1.0), "equal", 600.0, 120.0, "fail")

        assert expected == (
            OPENAI.retry.attempts,
            OPENAI.retry.schedule[:2],
            OPENAI.retry.jitter,
            OPENAI.deadline,
            OPENAI.server_delay_max,
            OPENAI.on_exceed,
        )

    @pytest.mark.parametrize(
        ("failure", "method", "expected"),
        [
            ("connect", "POST", Outcome("retry", "connect-failed")),
            (
                "timeout",
                "POST",
                Outcome("abort", "transport-failed", Aborted),
            ),
            ("timeout", "GET", Outcome("retry", "transport-failed")),
        ],
        ids=["connect-post", "timeout-post", "timeout-get"],
    )
    def test_transport_failures_come_from_http_default(
        self, failure, method, expected
    ):
        """
        A POST that timed out is not re-sent: the completion may have run.
        """
        snap = Snapshot.failed(
            failure, method=method, url="http://127.0.0.1:8080" + COMPLETIONS
        )

        decision = decide(OPENAI, snap, AttemptState(started=NOW))

        assert expected == outcome(decision)


# --- Every file ----------------------------------------------------------

ROW_CITES = {
    "hunter": ["apis.md §3a", "H1", "H2", "H3", "H4", "H5"],
    "zerobounce": ["apis.md §3b", "Z1", "Z2", "Z3"],
    "neverbounce": ["apis.md §3c", "N1", "N2", "N3", "N4", "N5", "N6"],
    "dropcontact": ["apis.md §3d", "D1", "D2", "D3", "D4"],
    "twilio-lookup": [
        "apis.md §3e",
        "T1",
        "T2",
        "T3",
        "T4",
        "T5",
        "T6",
        "T7",
        "twilio.com/docs/api/errors",
        "20005",
        "10001",
        "20403",
        "60606",
    ],
    "openai": [
        "peers-python.md",
        "item 16",
        "insufficient_quota",
        "retry your request after a brief wait",
    ],
    "anthropic": [
        "sdks-and-standards.md",
        "overloaded_error",
        "credit balance is too low",
        "TODO(lead): the rule for an",
    ],
    "stripe": [
        "docs.stripe.com/api/errors",
        "Stripe-Should-Retry",
        "draft-ietf-httpapi-idempotency-key-header-07",
        "lock_timeout",
    ],
    "github": [
        "sdks-and-standards.md",
        "x-ratelimit-reset",
        "wait for at least one minute",
        "submit the request again",
        "the language has no such action yet",
    ],
}


def text_of(name: str) -> str:
    """
    The bundled policy file *name*.
    """
    return (policies_folder() / f"{name}.yaml").read_text(encoding="utf-8")


class TestBundledFiles:
    @pytest.mark.parametrize("name", NAMES, ids=NAMES)
    def test_check_strict_passes(self, name, capsys):
        """
        `referee check --strict` passes, with no warning.
        """
        code = referee.cli.main(["check", "--strict", name])
        out, err = capsys.readouterr()

        assert 0 == code
        assert "warning" not in (out + err).lower()

    @pytest.mark.parametrize("name", NAMES, ids=NAMES)
    def test_schema_comment_is_the_first_line(self, name):
        """
        The file starts with the yaml-language-server schema comment.
        """
        assert SCHEMA_LINE == text_of(name).splitlines()[0]

    @pytest.mark.parametrize("name", NAMES, ids=NAMES)
    def test_extends_http_default(self, name):
        """
        The policy extends http-default, whose rules come after its own.
        """
        policy = referee.load_policy(name)
        origins = [r.origin for r in policy.rules]
        expected = (
            (name, "http-default"),
            sorted(origins, key=lambda o: o != name),
        )

        assert expected == (policy.sources, origins)

    @pytest.mark.parametrize("name", NAMES, ids=NAMES)
    def test_no_rule_names_a_host(self, name):
        """
        No rule matches on the vendor's host name.
        """
        policy = referee.load_policy(name)
        expected: list[str] = []

        assert expected == [r.id for r in policy.rules if hosts(r.doc.when)]

    @pytest.mark.parametrize("name", NAMES, ids=NAMES)
    def test_every_rule_has_a_description(self, name):
        """
        Every rule of the file says what it is for.
        """
        policy = referee.load_policy(name)
        expected: list[str] = []

        assert expected == [
            r.id
            for r in policy.rules
            if r.origin == name and not r.doc.description
        ]

    @pytest.mark.parametrize(
        ("name", "cite"),
        [(name, cite) for name, cites in ROW_CITES.items() for cite in cites],
        ids=[
            f"{name}-{cite}"
            for name, cites in ROW_CITES.items()
            for cite in cites
        ],
    )
    def test_comments_cite_sources(self, name, cite):
        """
        The file says where its facts come from, row by row.
        """
        assert re.search(rf"{re.escape(cite)}\b", text_of(name)) is not None
