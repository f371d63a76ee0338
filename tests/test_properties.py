"""
Properties: decide is total and keeps its delays in bounds; the loader
raises PolicyError or returns a Policy, whatever it is given; valid policies
always load.
"""

import json
import math
import random
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.strategies import (
    FEATURES,
    documents,
    mutated_policies,
    nows,
    policy_texts,
    raw_texts,
    snapshots,
    states,
    valid_policies,
)

import referee


FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: The loader properties load each example in two formats.
LOADS = settings(FAST, max_examples=120)

DECISIONS = (referee.Accept, referee.Retry, referee.Poll, referee.Abort)

POLICIES = {
    **{name: referee.load_policy(name) for name in referee.bundled_names()},
    "features": referee.load_policy_text(FEATURES, source="features"),
}

#: Delay sources that are not server hints.
SCHEDULES = {"backoff", "schedule"}


@st.composite
def outcomes(draw):
    """
    A snapshot, the state of its call, the clock and a seed.
    """
    now = draw(nows)
    return (
        draw(snapshots()),
        draw(states(now)),
        now,
        draw(st.integers(min_value=0, max_value=2**32)),
    )


def _all_decisions(snap, state, now, seed):
    for name, policy in POLICIES.items():
        yield (
            name,
            policy,
            referee.decide(
                policy, snap, state, now=now, rng=random.Random(seed)
            ),
        )


def _ceiling(policy, decision):
    """
    The largest delay *decision* may carry: the rule's backoff (or poll)
    max for a scheduled delay, server_delay.max for a server hint.
    """
    rule = policy.rule(decision.rule_id)
    settings = rule.retry if isinstance(decision, referee.Retry) else rule.poll
    if decision.delay_source in SCHEDULES:
        return settings.max
    return policy.server_delay_max


class TestDecideIsTotal:
    @FAST
    @given(outcomes())
    def test_never_raises(self, outcome):
        """
        Every policy decides every outcome, without raising.
        """
        for _name, policy, d in _all_decisions(*outcome):
            assert isinstance(d, DECISIONS)
            assert isinstance(d.reason, str)
            if d.rule_id is not None:
                assert d.rule_id == policy.rule(d.rule_id).id
            else:
                assert isinstance(d, referee.Accept | referee.Abort)
            if isinstance(d, referee.Abort):
                assert issubclass(d.error, referee.Aborted)


class TestDelays:
    @FAST
    @given(outcomes())
    def test_delays_in_bounds(self, outcome):
        """
        Every delay lies in [0, ceiling] and every count moves by one.
        """
        _snap, state, _now, _seed = outcome
        for name, policy, d in _all_decisions(*outcome):
            if isinstance(d, referee.Retry | referee.Poll):
                ceiling = _ceiling(policy, d)

                assert math.isfinite(d.delay), (name, d)
                assert 0.0 <= d.delay <= ceiling, (name, d, ceiling)
            if isinstance(d, referee.Retry):
                attempts = policy.rule(d.rule_id).retry.attempts

                assert state.attempt + 1 == d.attempt
                assert attempts is None or d.attempt <= attempts
            if isinstance(d, referee.Poll):
                assert state.polls + 1 == d.poll

    @FAST
    @given(outcomes())
    def test_deadlines_hold(self, outcome):
        """
        No retry overruns the call's deadline, no poll the poll deadline.
        """
        _snap, state, now, _seed = outcome
        for name, policy, d in _all_decisions(*outcome):
            if isinstance(d, referee.Retry) and state.poll_started is None:
                limit = state.started + policy.deadline
            elif isinstance(d, referee.Poll):
                # Counted from the first poll: this one, if there was none.
                first = (
                    now if state.poll_started is None else state.poll_started
                )
                limit = first + policy.rule(d.rule_id).poll.deadline
            else:
                continue

            assert now + d.delay <= limit + _slack(limit), (name, d)


def _slack(limit):
    """
    Rounding room: the engine compares delay with limit - now.
    """
    return 1e-9 * max(1.0, abs(limit)) if math.isfinite(limit) else 0.0


POLL_TEMPLATES = """\
policy: poll-templates
rules:
  - id: same-url
    when: {status: 202}
    do: poll
    poll: {request: {url: "/jobs/1"}}
  - id: follow
    when: {status: 203}
    do: poll
    poll: {request: {url: "{header.Location}"}}
"""


class TestDecideCrashes:
    @pytest.mark.xfail(
        reason=(
            "core bug: _engine._poll_request calls urljoin unguarded, which "
            "raises ValueError('Invalid IPv6 URL') for an unbalanced '[' in "
            "the request URL or in the built poll URL (e.g. from a Location "
            "header a server sent)"
        ),
        raises=ValueError,
        strict=True,
    )
    @pytest.mark.parametrize(
        ("status", "url", "location"),
        [
            (202, "http://[::1", None),
            (203, "https://api.example.com/x", "http://[::1"),
        ],
        ids=["request-url", "location-header"],
    )
    def test_bad_urls_do_not_raise(self, status, url, location):
        """
        A poll whose URL cannot be parsed aborts instead of raising.
        """
        policy = referee.load_policy_text(POLL_TEMPLATES)
        snap = referee.Snapshot.response(
            status,
            url=url,
            headers={"Location": location} if location else None,
        )
        d = referee.decide(policy, snap, referee.AttemptState(), now=0.0)

        assert isinstance(d, referee.Abort)


def _load(fmt, text):
    """
    Load *text*: a Policy, or the PolicyError it raised.  Anything else
    propagates and fails the test.
    """
    try:
        return referee.load_policy_text(text, fmt=fmt)
    except referee.PolicyError as exc:
        return exc


def _is_a_result(result):
    """
    A Policy, or a PolicyError that lists its problems.
    """
    if isinstance(result, referee.PolicyError):
        return (
            bool(result.problems)
            and all(isinstance(p, referee.Problem) for p in result.problems)
            and bool(str(result))
        )
    return isinstance(result, referee.Policy)


FORMATS = ["yaml", "toml", "json"]


class TestLoaderIsTotal:
    @LOADS
    @given(documents)
    def test_any_document(self, doc):
        """
        Any document, as JSON or YAML, loads or raises PolicyError.
        """
        for fmt, text in policy_texts(doc):
            assert _is_a_result(_load(fmt, text))

    @LOADS
    @given(documents.map(lambda d: {"policy": "p", "rules": [d]}))
    def test_any_rule(self, doc):
        """
        A policy with any one rule loads or raises PolicyError.
        """
        for fmt, text in policy_texts(doc):
            assert _is_a_result(_load(fmt, text))

    @LOADS
    @given(mutated_policies())
    def test_mutated_policy(self, doc):
        """
        A mutated valid policy loads or raises PolicyError.
        """
        for fmt, text in policy_texts(doc):
            assert _is_a_result(_load(fmt, text))

    @LOADS
    @given(raw_texts, st.sampled_from(FORMATS))
    def test_raw_text(self, text, fmt):
        """
        Any text in any format loads or raises PolicyError.
        """
        assert _is_a_result(_load(fmt, text))

    @LOADS
    @given(mutated_policies())
    def test_problems_point_into_the_document(self, doc):
        """
        Every problem of a JSON document names the source and a path under $.
        """
        result = _load("json", json.dumps(doc))
        if isinstance(result, referee.PolicyError):
            for p in result.problems:
                assert "<string>" == p.file
                assert p.path.startswith("$") or p.path == ""


# Inputs on which the loader raises something else than PolicyError today.
LOADER_CRASHES = [
    ("yaml", "policy: 2001-02-30\n", "an invalid YAML date"),
    ("yaml", "policy: 0x_\n", "a YAML int without digits"),
    ("yaml", "policy: !!bool maybe\n", "a bad !!bool"),
    ("yaml", "policy: !!float abc\n", "a bad !!float"),
    ("yaml", "policy: x\n? !!int abc\n: 1\n", "a bad tagged key"),
    ("yaml", "policy: x\n<<: 1\n", "a merge key on a scalar"),
    ("yaml", "policy: " + "1" * 5000 + "\n", "a 5000-digit YAML int"),
    ("json", '{"policy": ' + "1" * 5000 + "}", "a 5000-digit JSON int"),
    ("toml", "policy = " + "1" * 5000 + "\n", "a 5000-digit TOML int"),
    ("toml", "a = " + "[" * 2000 + "]" * 2000, "2000 nested TOML arrays"),
]


class TestLoaderCrashes:
    @pytest.mark.xfail(
        reason=(
            "core bug: _load lets ValueError, KeyError, ConstructorError "
            "and RecursionError out of PyYAML's constructors (only YAMLError "
            "is caught, and flatten_mapping is outside the try), of int() "
            "past Python's 4300-digit limit in every format, and of the "
            "YAML and TOML parsers on deep nesting"
        ),
        raises=(ValueError, KeyError, RecursionError, yaml.YAMLError),
        strict=True,
    )
    @pytest.mark.parametrize(
        ("fmt", "text"),
        [(fmt, text) for fmt, text, _what in LOADER_CRASHES],
        ids=[what for _fmt, _text, what in LOADER_CRASHES],
    )
    def test_raises_policy_error(self, fmt, text):
        """
        Text that the parsers choke on is a PolicyError like any other.
        """
        with pytest.raises(referee.PolicyError):
            referee.load_policy_text(text, fmt=fmt)

    @pytest.mark.xfail(
        reason=(
            "core bug: _load parses with yaml.CSafeLoader, whose composer "
            "recurses in C: 30000 nested flow lists (60 kB, far under "
            "MAX_FILE) kill the interpreter with SIGSEGV"
        ),
        strict=True,
    )
    def test_deep_yaml_does_not_crash_the_interpreter(self):
        """
        Deeply nested YAML is a PolicyError, not a crash.
        """
        # In a child process: a crash would take pytest down with it.
        code = (
            "import referee\n"
            "try:\n"
            "    referee.load_policy_text('[' * 30000 + ']' * 30000)\n"
            "except referee.PolicyError:\n"
            "    pass\n"
        )
        proc = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code],
            capture_output=True,
            timeout=60,
            check=False,
        )

        assert 0 == proc.returncode, proc.stderr


class TestValidPolicies:
    @LOADS
    @given(valid_policies())
    def test_always_load(self, doc):
        """
        A small valid policy loads from JSON and from YAML.
        """
        for fmt, text in policy_texts(doc):
            policy = referee.load_policy_text(text, fmt=fmt)

            assert [r["id"] for r in doc["rules"]] == [
                r.id for r in policy.rules
            ]
            assert [r["do"] for r in doc["rules"]] == [
                r.action for r in policy.rules
            ]

    @LOADS
    @given(valid_policies(), outcomes())
    def test_formats_decide_alike(self, doc, outcome):
        """
        The same document decides alike as JSON and as YAML.
        """
        snap, state, now, seed = outcome
        decisions = [
            referee.decide(
                referee.load_policy_text(text, fmt=fmt),
                snap,
                state,
                now=now,
                rng=random.Random(seed),
            )
            for fmt, text in policy_texts(doc)
        ]

        assert decisions[0] == decisions[1]

    @LOADS
    @given(valid_policies())
    def test_status_rules_are_indexed(self, doc):
        """
        Each status a rule names selects that rule among its candidates.
        """
        policy = referee.load_policy_text(json.dumps(doc), fmt="json")
        for rule in policy.rules:
            status = rule.doc.when.status
            for code in status:
                assert rule in policy.candidates(code)

    @LOADS
    @given(valid_policies())
    def test_yaml_round_trip(self, doc):
        """
        yaml.safe_dump of the document is read back as the same policy.
        """
        a = referee.load_policy_text(yaml.safe_dump(doc))
        b = referee.load_policy_text(json.dumps(doc), fmt="json")

        assert (a.name, a.rules, a.deadline, a.server_delay_max) == (
            b.name,
            b.rules,
            b.deadline,
            b.server_delay_max,
        )
