"""
The generated decision functions: they decide as the interpreted matcher
does, on generated policies and snapshots, and their source can be read.
"""

import json
import random

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.strategies import FEATURES, nows, snapshots, states

import referee
from referee._core import codegen
from referee._core.engine import _ACTIONS, interpret


FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

BUNDLED = [
    *(referee.load_policy(name) for name in referee.bundled_names()),
    referee.load_policy_text(FEATURES, source="features"),
]

_WORDS = ["ongoing", "failed", "done", "valid", "insufficient"]
_KEYS = ["qualification", "status", "message", "general.status", "items.0"]

_values = st.one_of(
    st.sampled_from(_WORDS),
    st.sampled_from(_WORDS).map(lambda w: {"equals": w}),
    st.lists(st.sampled_from([*_WORDS, True, None, 3]), min_size=1).map(
        lambda v: {"in": v}
    ),
    st.sampled_from(_WORDS).map(lambda w: {"contains": w[:4]}),
    st.sampled_from(["(?i)ongo", "^d", "fail"]).map(lambda p: {"matches": p}),
    st.integers(0, 5).map(lambda n: {"gt": n}),
    st.booleans().map(lambda b: {"exists": b}),
)


@st.composite
def conditions(draw, depth=0):
    """
    A ``when``: a status (or none), and any of a method, an attempt
    bound, body conditions, a header, and (at the top) an any/not.
    """
    when = {}
    if draw(st.integers(0, 4)):
        when["status"] = draw(
            st.one_of(
                st.sampled_from([200, 202, 422, 503]),
                st.lists(st.sampled_from([200, 202, 500]), min_size=1),
            )
        )
    if draw(st.booleans()):
        when["method"] = draw(
            st.one_of(
                st.just("GET"),
                st.lists(st.sampled_from(["GET", "POST", "PUT"]), min_size=1),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        when["attempt"] = draw(
            st.one_of(
                st.integers(1, 4).map(lambda n: {"gte": n}),
                st.integers(1, 4).map(lambda n: {"lt": n, "gt": 0}),
                st.integers(1, 4).map(lambda n: {"equals": n}),
            )
        )
    if draw(st.booleans()):
        when["body"] = draw(
            st.dictionaries(
                st.sampled_from(_KEYS), _values, min_size=1, max_size=2
            )
        )
    if draw(st.integers(0, 4)) == 0:
        when["headers"] = {"retry-after": {"exists": True}}
    if depth == 0 and draw(st.integers(0, 4)) == 0:
        when["any"] = draw(
            st.lists(conditions(depth=1), min_size=1, max_size=2)
        )
    if depth == 0 and draw(st.integers(0, 5)) == 0:
        when["not"] = draw(conditions(depth=1))
    return when


@st.composite
def policies(draw):
    """
    A policy of a few rules over generated conditions.
    """
    rules = [
        {
            "id": f"r{i}",
            "when": draw(conditions()),
            "do": draw(st.sampled_from(["accept", "abort", "poll", "retry"])),
        }
        for i in range(draw(st.integers(1, 7)))
    ]
    doc = {"policy": "gen", "rules": rules}
    return referee.load_policy_text(json.dumps(doc), fmt="json")


_bodies = st.one_of(
    st.builds(
        lambda k, w: json.dumps({k: w}).encode(),
        st.sampled_from(["qualification", "status", "message"]),
        st.sampled_from(_WORDS),
    ),
    st.sampled_from(_WORDS).map(
        lambda w: json.dumps({"general": {"status": w}, "items": [w]}).encode()
    ),
    # A needle spelled with an escape: the byte search cannot see it.
    st.just(b'{"qualification": "ongo\\u0069ng"}'),
    st.just(b'{"status": "fail\\u0065d"}'),
    st.just(b"not json"),
)


@st.composite
def outcomes(draw):
    """
    A snapshot (often one with a body the generated rules look for), a
    state, the clock and a seed.
    """
    now = draw(nows)
    snap = draw(snapshots())
    if snap.status is not None and draw(st.booleans()):
        body = draw(_bodies)
        snap = referee.Snapshot.response(
            draw(st.sampled_from([200, 202, 422, 500, 503])),
            method=snap.method,
            url=snap.url,
            request_headers=snap.request_headers,
            headers=draw(st.sampled_from([{}, {"Retry-After": "3"}])),
            **(
                {"body": body}
                if draw(st.booleans())
                else {"load_body": lambda: body}
            ),
        )
    return snap, draw(states(now)), now, draw(st.integers(0, 2**32))


def _both(policy, snap, state, now, seed):
    generated = referee.decide(
        policy, snap, state, now=now, rng=random.Random(seed)
    )
    interpreted = interpret(
        policy, snap, state, now=now, rng=random.Random(seed)
    )
    return generated, interpreted


class TestAgreement:
    @FAST
    @given(policies(), outcomes())
    def test_generated_policies(self, policy, outcome):
        """
        On a generated policy, the generated functions and the
        interpreted matcher decide alike.
        """
        generated, interpreted = _both(policy, *outcome)

        assert interpreted == generated

    @FAST
    @given(outcomes())
    def test_bundled_policies(self, outcome):
        """
        On every bundled policy (and one that uses every feature), the
        generated functions and the interpreted matcher decide alike.
        """
        for policy in BUNDLED:
            generated, interpreted = _both(policy, *outcome)

            assert interpreted == generated, policy.name

    def test_escaped_needle_still_matches(self):
        """
        A body that spells the value with a \\u escape is parsed, not
        skipped by the byte search, and the rule matches.
        """
        policy = referee.load_policy("enrow")
        snap = referee.Snapshot.response(
            200, body=b'{"qualification": "ongo\\u0069ng"}'
        )
        d = referee.decide(policy, snap, referee.AttemptState(), now=0.0)

        assert "search-ongoing" == d.rule_id

    def test_long_lists_are_interpreted(self):
        """
        A candidate list longer than codegen.MAX_RULES is tried by the
        interpreted matcher, and decides as it would.
        """
        n = codegen.MAX_RULES + 1
        rules = [
            {
                "id": f"r{i}",
                "when": {"attempt": {"equals": i + 1}},
                "do": "abort",
            }
            for i in range(n)
        ]
        doc = {"policy": "long", "rules": rules}
        policy = referee.load_policy_text(json.dumps(doc), fmt="json")
        snap = referee.Snapshot.response(500)
        state = referee.AttemptState(attempt=n)

        d = referee.decide(policy, snap, state, now=0.0)

        assert "(interpreted)" == policy.fallback.source
        assert f"r{n - 1}" == d.rule_id


class TestSource:
    def test_source_names_the_rules(self):
        """
        The dump shows one function per status, its rules named in
        comments, in order.
        """
        source = referee.load_policy("enrow").generated_source()

        assert "# policy 'enrow'" in source
        assert "def candidates_200_" in source
        at = [
            source.index(f"# rule {rid!r}")
            for rid in ("search-ongoing", "bulk-ongoing", "bulk-failed")
        ]
        assert sorted(at) == at

    def test_source_compiles_to_what_runs(self):
        """
        The source shown is the source of the function that runs.
        """
        bucket = referee.load_policy("enrow").index[200]
        made = bucket.generated()

        assert made.fn.__name__ in made.source
        assert made.fn is bucket.run

    @pytest.mark.parametrize(
        "rid",
        ["evil\nimport os", "q'uote", 'dq"x', "back\\slash"],
        ids=["newline", "quote", "double-quote", "backslash"],
    )
    def test_policy_text_is_never_code(self, rid):
        """
        A rule id with a newline or quotes (the loader refuses them; a
        compiled rule could carry one) shows in a comment, on one line,
        and changes nothing in the code.
        """
        policy = referee.load_policy("enrow")
        rule = attrs.evolve(policy.rule("not-found"), id=rid)
        made = codegen.generate([rule], policy.body_limit, "odd")
        snap = referee.Snapshot.response(404)

        d = made.fn(
            policy,
            snap,
            referee.AttemptState(),
            0.0,
            random.Random(),
            _ACTIONS,
        )

        assert rid == d.rule_id
        assert [f"    # rule {rid!r} ($.rules[4])".replace("\n", " ")] == [
            line for line in made.source.splitlines() if "# rule" in line
        ]

    def test_split_by_method_dispatches(self):
        """
        A status with many candidates dispatches on the method, and each
        method's function is in the dump.
        """
        rules = [
            {
                "id": f"r{i}",
                "when": {"status": 500, "method": m},
                "do": "abort",
            }
            for i, m in enumerate(["GET", "PUT", "POST", "PATCH", "DELETE"])
        ]
        doc = {"policy": "split", "rules": rules}
        policy = referee.load_policy_text(json.dumps(doc), fmt="json")
        snap = referee.Snapshot.response(500, method="PATCH")

        d = referee.decide(policy, snap, referee.AttemptState(), now=0.0)

        assert "r3" == d.rule_id
        assert "# method 'PATCH'" in policy.index[500].source
