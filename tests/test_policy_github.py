"""
The bundled github policy, case by case, with the facts of GitHub's "Rate
limits for the REST API" and "Repository statistics" pages (G1-G8 below,
cited in the policy's comments).

Every case is decided on a local address and behind a path-prefixing
proxy, never on the vendor's host: no rule may depend on it.
"""

from __future__ import annotations

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
    ids,
    rows,
    with_delay,
)

import referee
from referee import (
    AuthenticationError,
    BadRequest,
    DeadlineExceeded,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    Snapshot,
)
from referee.testing import simulate


# The facts, numbered for the cases:
# G1 primary rate limit: 403 or 429 with x-ratelimit-remaining 0: wait
#    until x-ratelimit-reset (epoch seconds), up to an hour, POSTs too;
# G2 secondary rate limit: 403 or 429 saying so or with retry-after:
#    retry-after, else at least a minute, growing; then give up;
# G3 a /stats/ endpoint's 202: the statistics are being computed: ask
#    again;
# G4 401 AuthenticationError + config alert;
# G5 any other 403: PermissionDenied, never retried;
# G6 404 NotFound; G7 422 BadRequest;
# G8 5xx (http-default): idempotent requests only.

GITHUB = referee.load_policy("github")
AUTH = {
    "Authorization": "Bearer ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "X-GitHub-Api-Version": "2022-11-28",
}
ISSUES = "/repos/octocat/hello-world/issues"
REPO = "/repos/octocat/hello-world"
STATS = "/repos/octocat/hello-world/stats/contributors"
PRIMARY = Outcome("retry", "primary-rate-limit")
PRIMARY_ABORT = Outcome("abort", "primary-rate-limit", RateLimited)
SECONDARY = Outcome("retry", "secondary-rate-limit")
SECONDARY_ABORT = Outcome("abort", "secondary-rate-limit", RateLimited)
POLL = Outcome("poll", "stats-computing")
LIMIT_BODY = {
    "message": "API rate limit exceeded for user ID 1.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits",
}
SECONDARY_BODY = {
    "message": "You have exceeded a secondary rate limit. Please wait a "
    "few minutes before you try again.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits",
}


def spent(reset_in: float) -> dict[str, str]:
    """
    The primary limit's headers when it is spent and resets *reset_in*
    seconds after NOW.
    """
    return {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-used": "5000",
        "x-ratelimit-reset": str(int(NOW + reset_in)),
        "x-ratelimit-resource": "core",
    }


LEFT = {"x-ratelimit-remaining": "4999", "x-ratelimit-reset": str(int(NOW))}

CASES = [
    Case(
        "G1-403-reset",
        403,
        "GET",
        REPO,
        PRIMARY,
        LIMIT_BODY,
        headers=spent(1800),
        delay=1800.0,
    ),
    Case(
        "G1-429-reset-post",
        429,
        "POST",
        ISSUES,
        PRIMARY,
        LIMIT_BODY,
        headers=spent(600),
        delay=600.0,
    ),
    Case(
        "G1-reset-an-hour-away",
        403,
        "GET",
        REPO,
        PRIMARY,
        LIMIT_BODY,
        headers=spent(3600),
        delay=3600.0,
    ),
    Case(
        "G1-retry-after-first",
        403,
        "GET",
        REPO,
        PRIMARY,
        LIMIT_BODY,
        headers={**spent(1800), "retry-after": "30"},
        delay=30.0,
    ),
    Case(
        "G1-reset-past-backoff",
        403,
        "GET",
        REPO,
        PRIMARY,
        LIMIT_BODY,
        headers=spent(-5),
        delay=(0.0, 1.0),
    ),
    Case(
        "G1-reset-three-hours-away",
        403,
        "GET",
        REPO,
        PRIMARY_ABORT,
        LIMIT_BODY,
        headers=spent(3 * 3600),
    ),
    Case(
        "G1-spent-again-after-the-wait",
        403,
        "GET",
        REPO,
        PRIMARY_ABORT,
        LIMIT_BODY,
        headers=spent(3000),
        attempt=2,
    ),
    Case(
        "G2-403-retry-after-floored",
        403,
        "POST",
        ISSUES,
        SECONDARY,
        SECONDARY_BODY,
        headers={**LEFT, "retry-after": "5"},
        delay=60.0,
    ),
    Case(
        "G2-403-retry-after-above-floor",
        403,
        "POST",
        ISSUES,
        SECONDARY,
        SECONDARY_BODY,
        headers={**LEFT, "retry-after": "90"},
        delay=90.0,
    ),
    Case(
        "G2-429-message-only",
        429,
        "GET",
        REPO,
        SECONDARY,
        SECONDARY_BODY,
        headers=LEFT,
        delay=60.0,
    ),
    Case(
        "G2-403-retry-after-only",
        403,
        "GET",
        REPO,
        SECONDARY,
        {"message": "Forbidden"},
        headers={"retry-after": "120"},
        delay=120.0,
    ),
    Case(
        "G2-second-time-longer",
        403,
        "GET",
        REPO,
        SECONDARY,
        SECONDARY_BODY,
        headers=LEFT,
        attempt=2,
        delay=120.0,
    ),
    Case(
        "G2-retry-after-above-ceiling",
        403,
        "GET",
        REPO,
        SECONDARY_ABORT,
        SECONDARY_BODY,
        headers={"retry-after": "900"},
    ),
    Case(
        "G2-exhausted",
        429,
        "GET",
        REPO,
        SECONDARY_ABORT,
        SECONDARY_BODY,
        attempt=4,
    ),
    Case("G3-202-stats", 202, "GET", STATS, POLL, delay=2.0),
    Case(
        "G3-202-stats-second-poll", 202, "GET", STATS, POLL, polls=1, delay=3.0
    ),
    Case(
        "G3-202-stats-enterprise-server",
        202,
        "GET",
        "/api/v3" + STATS,
        POLL,
        delay=2.0,
    ),
    Case(
        "G3-202-stats-past-deadline",
        202,
        "GET",
        STATS,
        Outcome("abort", "stats-computing", DeadlineExceeded),
        polls=12,
        polling_for=115.0,
    ),
    Case("G3-202-elsewhere-passes-through", 202, "GET", REPO, ACCEPT),
    Case(
        "G4-401",
        401,
        "GET",
        REPO,
        Outcome("abort", "unauthorized", AuthenticationError, CONFIG),
        {"message": "Bad credentials"},
    ),
    Case(
        "G5-403-permission",
        403,
        "POST",
        ISSUES,
        Outcome("abort", "forbidden", PermissionDenied),
        {"message": "Resource not accessible by integration"},
        headers=LEFT,
    ),
    Case(
        "G6-404",
        404,
        "GET",
        REPO,
        Outcome("abort", "not-found", NotFound),
        {"message": "Not Found"},
    ),
    Case(
        "G7-422",
        422,
        "POST",
        ISSUES,
        Outcome("abort", "validation-failed", BadRequest),
        {"message": "Validation Failed", "errors": [{"code": "missing"}]},
    ),
    Case(
        "G8-502-get",
        502,
        "GET",
        REPO,
        Outcome("retry", "server-unavailable"),
        delay=(0.0, 1.0),
    ),
    Case(
        "G8-502-post-not-retried",
        502,
        "POST",
        ISSUES,
        Outcome("abort", "server-unavailable", ServerError),
    ),
    Case(
        "200-remaining-0-accepted",
        200,
        "GET",
        REPO,
        ACCEPT,
        {"id": 1296269, "full_name": "octocat/Hello-World"},
        headers=spent(1800),
    ),
]
CASES = [
    Case(**{**c.__dict__, "request_headers": {**AUTH, **c.request_headers}})
    for c in CASES
]


class TestGitHub:
    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize("case", CASES, ids=ids(CASES))
    def test_decision(self, case, base):
        """
        Each outcome gets its rule, action, error and side effects.
        """
        check_decision(GITHUB, case, base)

    @pytest.mark.parametrize("base", BASES, ids=BASE_IDS)
    @pytest.mark.parametrize(
        "case", with_delay(CASES), ids=ids(with_delay(CASES))
    )
    def test_delay(self, case, base):
        """
        Retries wait what the reset, retry-after, the floor or the backoff
        says; polls follow the schedule.
        """
        check_delay(GITHUB, case, base)

    @pytest.mark.parametrize("row", [f"G{n}" for n in range(1, 9)], ids=str)
    def test_every_fact_is_covered(self, row):
        """
        Every fact G1-G8 has a case.
        """
        assert row in rows(CASES)

    def test_waits_out_a_reset_the_call_alone_could_not(self):
        """
        A reset 50 minutes away is waited for under the rule's own
        deadline and ceiling, though the policy's deadline is 2 minutes,
        and the call then succeeds.
        """
        limited = Snapshot.response(
            403, headers=spent(3000), body=b'{"message": "rate limit"}'
        )
        run = simulate(
            GITHUB,
            [limited, 200],
            url="https://api.github.com" + REPO,
            start=NOW,
        )
        expected = ([0.0, 3000.0], ["primary-rate-limit", None], True)

        assert 120.0 == GITHUB.deadline
        assert expected == (
            [s.at for s in run.steps],
            [s.decision.rule_id for s in run.steps],
            run.finished,
        )

    def test_secondary_limit_grows_then_gives_up(self):
        """
        Secondary limits without a hint wait 1, 2 and 4 minutes, then the
        call raises RateLimited, as GitHub asks.
        """
        limited = {"status": 403, "body": SECONDARY_BODY}
        run = simulate(
            GITHUB,
            [limited] * 4,
            method="POST",
            url="https://api.github.com" + ISSUES,
        )
        delays = [getattr(s.decision, "delay", None) for s in run.steps]

        assert [60.0, 120.0, 240.0, None] == delays
        assert RateLimited is getattr(run.decision, "error", None)

    def test_the_200_pause_is_not_expressed_yet(self):
        """
        No rule can match a 200, so a 200 that says the limit is spent
        pauses nothing (the comment at the top of the file says why).
        """
        expected = ()

        assert expected == tuple(GITHUB.candidates(200, "GET"))
