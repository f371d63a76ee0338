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
    max for a scheduled delay, server_delay.max for a server hint (the
    rule's own, when it has one), and never less than the rule's floor
    (``delay_min``, itself capped by that server_delay.max).
    """
    rule = policy.rule(decision.rule_id)
    settings = rule.retry if isinstance(decision, referee.Retry) else rule.poll
    hints = policy.server_delay_max
    floor = 0.0
    if isinstance(decision, referee.Retry):
        if settings.server_delay_max is not None:
            hints = settings.server_delay_max
        floor = min(settings.delay_min, hints)
    if decision.delay_source in SCHEDULES:
        return max(settings.max, floor)
    return max(hints, floor)


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


#: Unparsable URLs: the request's own, or one a server sent.
BAD_URLS = [
    pytest.param(202, "http://[::1", None, id="request-url"),
    pytest.param(
        203, "https://api.example.com/x", "http://[::1", id="location"
    ),
]


class TestDecideCrashes:
    @pytest.mark.parametrize(("status", "url", "location"), BAD_URLS)
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

    @pytest.mark.parametrize(
        ("status", "url", "location", "expected"),
        [
            pytest.param(
                202,
                "http://[::1",
                None,
                "GET got 202: rule 'same-url' cannot build its poll request: "
                "the request's URL 'http://[::1' is not a URL",
                id="request-url",
            ),
            pytest.param(
                203,
                "https://api.example.com/x",
                "http://[::1",
                "GET got 203: rule 'follow' cannot build its poll request: "
                "'http://[::1' is not a URL",
                id="location",
            ),
        ],
    )
    def test_bad_url_reason(self, status, url, location, expected):
        """
        The abort names the URL that cannot be parsed.
        """
        policy = referee.load_policy_text(POLL_TEMPLATES)
        snap = referee.Snapshot.response(
            status,
            url=url,
            headers={"Location": location} if location else None,
        )
        d = referee.decide(policy, snap, referee.AttemptState(), now=0.0)

        assert expected == d.reason


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


def _core_bug(reason):
    return pytest.mark.xfail(
        reason=f"core bug: {reason} (proposed wording)",
        raises=AssertionError,
        strict=True,
    )


_INT_LIMIT = "an integer of 5000 digits; at most 4300 are allowed"
#: Inputs on which the parsers choke (the loader once let their exceptions
#: out), and the problem each is.
LOADER_CRASHES = [
    pytest.param(
        "yaml",
        "policy: 2001-02-30\n",
        "<string>:1: $.policy: this value cannot be read: ValueError: day "
        "is out of range for month",
        id="an invalid YAML date",
    ),
    pytest.param(
        "yaml",
        "policy: 0x_\n",
        "<string>:1: $.policy: this value cannot be read: '0x_' is not a "
        "valid integer (quote it to make it a string)",
        id="a YAML int without digits",
    ),
    pytest.param(
        "yaml",
        "policy: !!bool maybe\n",
        "<string>:1: $.policy: this value cannot be read: 'maybe' is not a "
        "valid !!bool; expected true or false",
        id="a bad !!bool",
    ),
    pytest.param(
        "yaml",
        "policy: !!float abc\n",
        "<string>:1: $.policy: this value cannot be read: ValueError: could "
        "not convert string to float: 'abc'",
        id="a bad !!float",
    ),
    pytest.param(
        "yaml",
        "policy: x\n? !!int abc\n: 1\n",
        "<string>:2: $: this key cannot be read: 'abc' is not a valid !!int; "
        "expected a whole number",
        id="a bad tagged key",
    ),
    pytest.param(
        "yaml",
        'policy: !!int "abc"\n',
        "<string>:1: $.policy: this value cannot be read: 'abc' is not a "
        "valid !!int; expected a whole number",
        id="a quoted !!int",
    ),
    pytest.param(
        "yaml",
        "policy: x\n<<: 1\n",
        "<string>:2: $: this mapping cannot be read: while constructing a "
        "mapping, expected a mapping or list of mappings for merging, but "
        "found scalar",
        id="a merge key on a scalar",
    ),
    pytest.param(
        "yaml",
        "policy: " + "1" * 5000 + "\n",
        f"<string>:1: $.policy: this value cannot be read: {_INT_LIMIT}",
        id="a 5000-digit YAML int",
    ),
    pytest.param(
        "json",
        '{"policy": ' + "1" * 5000 + "}",
        f"<string>: this document cannot be read: {_INT_LIMIT}",
        id="a 5000-digit JSON int",
    ),
    pytest.param(
        "toml",
        "policy = " + "1" * 5000 + "\n",
        f"<string>: this document cannot be read: {_INT_LIMIT}",
        id="a 5000-digit TOML int",
    ),
    pytest.param(
        "toml",
        "a = " + "[" * 2000 + "]" * 2000,
        "<string>: the document is nested too deeply",
        id="2000 nested TOML arrays",
    ),
    pytest.param(
        "json",
        "[" * 100_000 + "]" * 100_000,
        "<string>: the document is nested too deeply",
        id="100000 nested JSON arrays",
    ),
]


class TestLoaderCrashes:
    @pytest.mark.parametrize(
        ("fmt", "text"),
        [p.values[:2] for p in LOADER_CRASHES],
        ids=[p.id for p in LOADER_CRASHES],
    )
    def test_raises_policy_error(self, fmt, text):
        """
        Text that the parsers choke on is a PolicyError like any other.
        """
        with pytest.raises(referee.PolicyError):
            referee.load_policy_text(text, fmt=fmt)

    @pytest.mark.parametrize(("fmt", "text", "expected"), LOADER_CRASHES)
    def test_problem(self, fmt, text, expected):
        """
        The problem says what cannot be read, and where.
        """
        with pytest.raises(referee.PolicyError) as exc_info:
            referee.load_policy_text(text, fmt=fmt)

        assert [expected] == [str(p) for p in exc_info.value.problems]

    def test_deep_yaml_does_not_crash_the_interpreter(self):
        """
        Deeply nested YAML is a PolicyError, not a crash.
        """
        # In a child process: a crash would take pytest down with it.
        code = (
            "import referee\n"
            "try:\n"
            "    referee.load_policy_text('[' * 30000 + ']' * 30000)\n"
            "except referee.PolicyError as exc:\n"
            "    print(*exc.problems, sep='\\n')\n"
        )
        proc = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        expected = (0, "<string>: the document is nested too deeply\n")

        assert expected == (proc.returncode, proc.stdout), proc.stderr


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
