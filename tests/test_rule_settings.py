"""
A rule's own settings (issue 13, item 2): ``retry: {attempts, deadline,
server_delay}`` on one rule, and what a rule's attempt count means when
rules take turns on one call.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

import referee
from referee import (
    Abort,
    AttemptState,
    DeadlineExceeded,
    RateLimited,
    RetriesExhausted,
    Retry,
    Snapshot,
    advance,
    decide,
)
from referee._core.flow import Reply, Send, Sleep, call_flow
from referee._tools.check import check_policy
from referee._tools.table import retry_text
from referee.testing import simulate


NOW = 1_700_000_000.0
DOCS = Path(__file__).resolve().parent.parent / "docs"

# The GitHub shape: a call has a minute, but the primary rate limit's reset
# may be an hour away, so that rule alone may wait up to 65 minutes (and
# honours a hint of up to an hour); any other retry keeps the call's
# minute.  Flaky reads and 503s each have their own count of retries; the
# call makes at most five sends in all.
GITHUB = """
policy: gh
defaults:
  retry: {attempts: 5, backoff: {initial: 1s, multiplier: 2, max: 8s, jitter: none}}
  deadline: 1m
  server_delay: {max: 120s, on_exceed: fail}
rules:
  - id: primary-rate-limit
    when: {status: 403, headers: {x-ratelimit-remaining: "0"}}
    do: retry
    error: RateLimited
    retry:
      attempts: 2
      deadline: 65m
      server_delay: {max: 1h}
      delay_from: ["x-ratelimit-reset:epoch"]
  - id: unavailable
    when: {status: 503}
    do: retry
    retry: {attempts: 3}
  - id: flaky
    when: {failure: read}
    do: retry
    retry: {attempts: 3}
"""


def load(text: str) -> referee.Policy:
    return referee.load_policy_text(text, source="t.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(referee.PolicyError) as info:
        load(text)
    return [str(p) for p in info.value.problems]


def limited(reset_in: float, now: float = NOW) -> Snapshot:
    """
    GitHub's primary rate limit: a 403 with the reset *reset_in* seconds
    after *now*.
    """
    return Snapshot.response(
        403,
        headers={
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(now + reset_in)),
        },
    )


def play(
    policy: referee.Policy,
    *outcomes: Snapshot | int | str,
    started: float = NOW,
) -> list[referee.Decision]:
    """
    Decide *outcomes* one after the other as one call, each at the time
    the delays before it add up to; the decisions.
    """
    state = AttemptState(started=started)
    now = started
    out: list[referee.Decision] = []
    for o in outcomes:
        snap = (
            o
            if isinstance(o, Snapshot)
            else Snapshot.failed(o)
            if isinstance(o, str)
            else Snapshot.response(o)
        )
        d = decide(policy, snap, state, now=now, rng=random.Random(0))
        out.append(d)
        state = advance(state, snap, d, now=now)
        if isinstance(d, Retry):
            now += d.delay
    return out


class TestLoading:
    def test_rule_settings_resolve(self):
        """
        A rule's attempts, deadline and server_delay resolve into its
        settings; the ceiling's on_exceed left out is the policy's.
        """
        policy = load(GITHUB)
        retry = policy.rule("primary-rate-limit").retry

        assert (2, 3900.0, 3600.0, None) == (
            retry.attempts,
            retry.deadline,
            retry.server_delay_max,
            retry.on_exceed,
        )
        assert {"primary-rate-limit": 3900.0} == dict(policy.rule_deadlines)

    def test_rules_without_them_keep_the_policys(self):
        """
        A rule that sets neither has no deadline or ceiling of its own.
        """
        retry = load(GITHUB).rule("unavailable").retry

        assert (None, None, None) == (
            retry.deadline,
            retry.server_delay_max,
            retry.on_exceed,
        )

    @pytest.mark.parametrize(
        ("setting", "path", "found"),
        [
            ("{deadline: soon}", "retry.deadline", "found 'soon'"),
            ("{deadline: -5s}", "retry.deadline", "found '-5s'"),
            ("{attempts: 0}", "retry.attempts", "found 0"),
            (
                "{server_delay: {max: forever}}",
                "retry.server_delay.max",
                "found 'forever'",
            ),
            (
                "{server_delay: {on_exceed: wait}}",
                "retry.server_delay.on_exceed",
                "found 'wait'",
            ),
            (
                "{server_delay: {maximum: 1h}}",
                "retry.server_delay.maximum",
                "unknown key 'maximum'",
            ),
        ],
        ids=[
            "deadline-word",
            "deadline-negative",
            "attempts-zero",
            "ceiling-word",
            "on-exceed-word",
            "ceiling-unknown-key",
        ],
    )
    def test_bad_values(self, setting, path, found):
        """
        A bad value of a rule's own setting is a problem at its path,
        naming what was found.
        """
        (problem,) = problems(
            "policy: t\n"
            "rules:\n"
            f"  - {{id: r, when: {{status: 503}}, do: retry, retry: {setting}}}\n"
        )

        assert f"$.rules[0].{path}: " in problem
        assert found in problem

    def test_on_a_rule_that_does_not_retry(self):
        """
        A deadline on an abort rule is retry settings on a rule that does
        not retry.
        """
        (problem,) = problems(
            "policy: t\n"
            "rules:\n"
            "  - {id: r, when: {status: 403}, do: abort, "
            "retry: {deadline: 1h}}\n"
        )

        assert (
            "t.yaml:3: $.rules[0].retry: retry settings on a rule that "
            "does not retry (do: abort); remove them or set do: retry"
        ) == problem

    @pytest.mark.parametrize("key", ["deadline", "server_delay"])
    def test_not_under_defaults_retry(self, key):
        """
        The policy's deadline and ceiling have one spelling each: under
        defaults.retry they are problems that say where they go.
        """
        value = "1h" if key == "deadline" else "{max: 1h}"
        (problem,) = problems(
            f"policy: t\ndefaults:\n  retry: {{{key}: {value}}}\n"
        )

        assert (
            f"$.defaults.retry.{key}: retry.{key} belongs on a rule (its "
            f"own {key}); the policy's is defaults.{key}: move it there"
        ) in problem

    def test_unknown_key_lists_them_only_on_a_rule(self):
        """
        A misspelt key under a rule's retry offers deadline and
        server_delay; under defaults.retry it does not.
        """
        on_rule, in_defaults = problems(
            "policy: t\n"
            "defaults:\n"
            "  retry: {deadlin: 1h}\n"
            "rules:\n"
            "  - {id: r, when: {status: 503}, do: retry, "
            "retry: {deadlin: 1h}}\n"
        )[::-1]

        assert "server_delay, delay_min; did you mean 'deadline'?" in on_rule
        assert "deadline" not in in_defaults.split("allowed here:")[1]


class TestAttempts:
    def test_a_rule_counts_only_its_own_retries(self):
        """
        Two read failures retried by 'flaky' spend none of 'unavailable''s
        attempts: the 503 on the third send is retried.
        """
        d = play(load(GITHUB), "read", "read", 503)[-1]

        assert Retry is type(d)
        assert "unavailable" == d.rule_id
        assert 4 == d.attempt
        assert "(attempt 4; its own retry 1 of 2, delay from backoff)" in (
            d.reason
        )

    def test_alternating_rules_each_run_out_on_their_own(self):
        """
        503 and read failures alternate: each rule gives up after its own
        retries, and the message says the rule's count ran out.
        """
        policy = load(GITHUB.replace("attempts: 5", "attempts: 10"))

        ds = play(policy, 503, "read", 503, "read", 503)

        assert ["retry"] * 4 == [type(d).__name__.lower() for d in ds[:4]]
        last = ds[-1]
        assert Abort is type(last)
        assert RetriesExhausted is last.error
        assert (
            "GET got 503: rule 'unavailable' gave up after its 2 retries "
            "(attempts: 3, the first send included)"
        ) == last.reason

    def test_the_calls_attempts_bound_the_call(self):
        """
        defaults.retry.attempts still bounds the whole call: after four
        sends under two rules, neither of which ran out, the call's count
        ran out, and the message says so.
        """
        policy = load(GITHUB.replace("attempts: 5", "attempts: 4"))

        ds = play(policy, 503, "read", 503, "read")

        last = ds[-1]
        assert Abort is type(last)
        assert RetriesExhausted is last.error
        assert (
            "GET failed (read): rule 'flaky' would retry, but the call's 4 "
            "attempts are spent (1 retry of its own; "
            "defaults.retry.attempts: 4)"
        ) == last.reason

    def test_a_rule_asking_for_more_extends_the_call_for_itself(self):
        """
        A rule whose attempts exceed the call's may use them; another
        rule still stops at the call's count.
        """
        policy = load(
            "policy: t\n"
            "defaults:\n"
            "  retry: {attempts: 2, backoff: {jitter: none}}\n"
            "rules:\n"
            "  - {id: busy, when: {status: 429}, do: retry, "
            "retry: {attempts: 4}}\n"
            "  - {id: down, when: {status: 503}, do: retry}\n"
        )

        busy = play(policy, 429, 429, 429, 429)
        down = play(policy, 429, 503)

        assert ["Retry", "Retry", "Retry", "Abort"] == [
            type(d).__name__ for d in busy
        ]
        assert "rule 'busy' gave up after its 3 retries" in busy[-1].reason
        assert "the call's 2 attempts are spent" in down[-1].reason

    def test_one_rule_alone_behaves_as_before(self):
        """
        A call retried by one rule only gives up where it always did:
        attempts: 3 makes three sends.
        """
        ds = play(load(GITHUB), 503, 503, 503)

        assert ["Retry", "Retry", "Abort"] == [type(d).__name__ for d in ds]
        assert "(attempt 3 of 3, delay from backoff)" in ds[1].reason
        assert "gave up after its 2 retries (attempts: 3" in ds[2].reason

    def test_a_bare_attempt_number_counts_as_the_rules(self):
        """
        A state without a trail (referee explain --attempt 3) takes the
        earlier sends to be the rule's own retries.
        """
        d = decide(
            load(GITHUB),
            Snapshot.response(503),
            AttemptState(attempt=3, started=NOW),
            now=NOW,
        )

        assert Abort is type(d)
        assert "gave up after its 2 retries" in d.reason

    def test_attempts_one_allows_no_retry(self):
        """
        attempts: 1 on a rule: the first send is all it makes.
        """
        (d,) = play(
            load(
                "policy: t\nrules:\n  - {id: once, when: {status: 503}, "
                "do: retry, retry: {attempts: 1}}\n"
            ),
            503,
        )

        assert "rule 'once' gave up after its 0 retries (attempts: 1" in (
            d.reason
        )


class TestDeadline:
    def test_a_rule_deadline_past_the_calls_lets_it_wait(self):
        """
        A reset 50 minutes away is waited for under the rule's 65 minutes,
        though the call has one.
        """
        (d,) = play(load(GITHUB), limited(3000))

        assert Retry is type(d)
        assert 3000.0 == d.delay
        assert "x-ratelimit-reset" == d.delay_source

    def test_past_the_rules_deadline_is_not_waited_for(self):
        """
        A reset beyond the rule's deadline aborts with DeadlineExceeded,
        naming the rule's deadline.
        """
        (d,) = play(
            load(
                GITHUB.replace(
                    "server_delay: {max: 1h}", "server_delay: {max: 2h}"
                )
            ),
            limited(4000),
        )

        assert Abort is type(d)
        assert DeadlineExceeded is d.error
        assert (
            "would overrun the rule 'primary-rate-limit' deadline of 1h5m"
            in (d.reason)
        )

    def test_other_rules_keep_the_calls_deadline(self):
        """
        The extension is the rule's only: after the long wait, a 503 finds
        the call's minute spent, and says so.
        """
        ds = play(load(GITHUB), limited(3000), 503)

        assert DeadlineExceeded is ds[-1].error
        assert "the call's deadline of 1m" in ds[-1].reason

    def test_a_shorter_rule_deadline_tightens(self):
        """
        A rule deadline shorter than the call's bounds that rule's sleeps.
        """
        policy = load(
            "policy: t\n"
            "defaults: {deadline: 10m}\n"
            "rules:\n"
            "  - {id: quick, when: {status: 503}, do: retry, "
            "retry: {deadline: 5s, backoff: {initial: 10s, jitter: none}}}\n"
        )

        (d,) = play(policy, 503)

        assert DeadlineExceeded is d.error
        assert "the rule 'quick' deadline of 5s" in d.reason

    def test_resend_timeout_follows_the_deadline_of_the_rule_that_slept(
        self,
    ):
        """
        The re-send after the rule's long wait is cut to the time the rule
        has left (65m - 50m), not to the call's spent minute; a re-send
        after another rule's retry to the call's.
        """
        policy = load(GITHUB)
        flow = call_flow(
            policy, method="GET", url="https://api.github.com/", started=NOW
        )
        script: list[Any] = [limited(3000), Snapshot.response(503), 200]
        sends: list[Send] = []
        now = NOW
        action = next(flow)
        while True:
            value: Any = None
            if isinstance(action, Send):
                sends.append(action)
                nxt = script.pop(0)
                value = (
                    nxt
                    if isinstance(nxt, Snapshot)
                    else Snapshot.response(nxt)
                )
            elif isinstance(action, Sleep):
                now += action.seconds
            try:
                action = flow.send(Reply(value, now))
            except StopIteration as stop:
                finished = stop.value
                break

        assert [None, 900.0] == [s.timeout for s in sends]
        assert DeadlineExceeded is finished.decision.error


class TestServerDelay:
    def test_the_rules_ceiling_lets_a_long_hint_through(self):
        """
        A 50-minute reset is above the policy's 120 s but under the rule's
        hour: it is honoured.
        """
        (d,) = play(load(GITHUB), limited(3000))

        assert 3000.0 == d.delay

    def test_the_rules_ceiling_fails_and_says_whose(self):
        """
        A hint above the rule's ceiling fails (on_exceed from the policy),
        and the reason names the rule's ceiling.
        """
        policy = load(GITHUB.replace("deadline: 65m", "deadline: 3h"))

        (d,) = play(policy, limited(7200))

        assert RateLimited is d.error
        assert (
            "above rule 'primary-rate-limit''s retry.server_delay.max 1h "
            "(on_exceed: fail)"
        ) in d.reason

    def test_the_rules_on_exceed_caps(self):
        """
        on_exceed: cap on the rule waits the rule's ceiling, whatever the
        policy says.
        """
        policy = load(
            GITHUB.replace(
                "server_delay: {max: 1h}",
                "server_delay: {max: 10m, on_exceed: cap}",
            )
        )

        (d,) = play(policy, limited(3000))

        assert (600.0, "x-ratelimit-reset (capped)") == (
            d.delay,
            d.delay_source,
        )

    def test_other_rules_keep_the_policys_ceiling(self):
        """
        A 503 whose Retry-After is above the policy's 120 s fails, though
        another rule's ceiling is an hour.
        """
        snap = Snapshot.response(503, headers={"Retry-After": "600"})

        (d,) = play(load(GITHUB), snap)

        assert Abort is type(d)
        assert "above server_delay.max 2m" in d.reason


class TestSimulate:
    def test_the_docs_example(self):
        """
        The simulation in docs/policy-language.md: a read failure, then the
        rate limit for 50 minutes, then success; every rule within its own
        counts and deadlines.
        """
        sim = simulate(
            load(GITHUB),
            ["read", limited(3000, now=NOW + 1), 200],
            start=NOW,
        )

        assert [
            (0.0, "flaky", 1.0),
            (1.0, "primary-rate-limit", 3000.0),
        ] == [
            (s.at, s.decision.rule_id, s.decision.delay) for s in sim.steps[:2]
        ]
        assert (True, 3001.0) == (sim.finished, sim.elapsed)

    def test_the_docs_page_prints_what_it_says(self):
        """
        The policy and the simulation of docs/policy-language.md's "A
        rule's own settings" load, run and print the lines the page shows.
        """
        page = (DOCS / "policy-language.md").read_text(encoding="utf-8")
        policy_text = re.search(
            r"^```yaml\n(policy: github\n.*?)^```",
            page,
            re.MULTILINE | re.DOTALL,
        ).group(1)
        code = re.search(
            r"^```python\n(.*?from referee\.testing import simulate.*?)^```",
            page,
            re.MULTILINE | re.DOTALL,
        ).group(1)
        shown = [
            line[2:]
            for line in code.splitlines()
            if line.startswith("# ") and line[2:3].isdigit()
        ]
        start = 1_700_000_000.0
        limited = Snapshot.response(
            403,
            headers={
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(int(start + 1 + 3000)),
            },
        )

        sim = simulate(load(policy_text), ["read", limited, 200], start=start)

        assert shown == [
            f"{s.at} {s.decision.rule_id} {s.decision.reason}"
            for s in sim.steps
        ]


class TestCheck:
    def test_a_rule_deadline_bounds_unlimited_attempts(self):
        """
        Unlimited attempts under a rule deadline draw no unbounded warning,
        though the policy has no deadline.
        """
        policy = load(
            "policy: t\n"
            "rules:\n"
            "  - {id: r, when: {status: 503}, do: retry, "
            "retry: {attempts: unlimited, deadline: 10m}}\n"
        )

        assert [] == check_policy(policy)

    def test_a_rule_deadline_of_none_is_unbounded(self):
        """
        A rule that sets its deadline to none with unlimited attempts is
        warned about, though the policy has a deadline.
        """
        policy = load(
            "policy: t\n"
            "defaults: {deadline: 1m}\n"
            "rules:\n"
            "  - {id: r, when: {status: 503}, do: retry, "
            "retry: {attempts: unlimited, deadline: none}}\n"
        )

        (problem,) = check_policy(policy)

        assert "attempts is unlimited and its own deadline is none" in (
            problem.message
        )

    def test_a_rule_ceiling_of_none_is_warned_about_at_the_rule(self):
        """
        A rule that honours hints with server_delay max none draws a
        warning at its own setting.
        """
        policy = load(
            "policy: t\n"
            "rules:\n"
            "  - {id: r, when: {status: 429}, do: retry, "
            "retry: {server_delay: {max: none}}}\n"
        )

        (problem,) = check_policy(policy)

        assert "$.rules[0].retry.server_delay.max" == problem.path
        assert "without a ceiling" in problem.message

    def test_a_rule_ceiling_answers_for_the_policys_none(self):
        """
        With no policy ceiling, only the rules without one of their own are
        named.
        """
        policy = load(
            "policy: t\n"
            "defaults: {server_delay: {max: none}}\n"
            "rules:\n"
            "  - {id: own, when: {status: 429}, do: retry, "
            "retry: {server_delay: {max: 1h}}}\n"
            "  - {id: bare, when: {status: 503}, do: retry}\n"
        )

        (problem,) = check_policy(policy)

        assert "rule 'bare' honours them" in problem.message


class TestTable:
    def test_the_rules_own_settings_are_shown(self):
        """
        referee table shows a rule's own hint ceiling and deadline beside
        its attempts.
        """
        text = retry_text(load(GITHUB).rule("primary-rate-limit").retry)

        assert text.startswith("2 attempts, ")
        assert text.endswith(", hint ceiling 1h, deadline 1h5m")
