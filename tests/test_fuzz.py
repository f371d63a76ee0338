"""
Fuzzing with hypothesis: the loader over random and mutated documents in
all three formats (YAML, TOML and JSON text), and decide over any status,
any headers and any body.

tests/test_properties.py covers JSON and YAML documents and the statuses
100-599; this file adds TOML, text-level mutations of valid files, statuses
outside 100-599, hostile header names and values, and raw body bytes.  Each
property runs inside a plain test that asserts examples were run; their
numbers are kept in ``COUNTS`` (SECURITY.md quotes them).
"""

import json
import math
import random
import tomllib
from collections import Counter

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.strategies import (
    FEATURES,
    documents,
    mutated_policies,
    valid_policies,
)

import referee


#: Examples run, per property.
COUNTS: Counter[str] = Counter()

#: A generous per-example time bound: a hang or a blow-up fails.
FUZZ = settings(
    max_examples=250,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
)

DECISIONS = (referee.Accept, referee.Retry, referee.Poll, referee.Abort)


# --- A small TOML writer ----------------------------------------------------

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(s):
    """
    *s* as a TOML basic string.
    """
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v):
    """
    *v* as an inline TOML value; None has no TOML form (the caller drops
    it).
    """
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        items = [toml_value(x) for x in v if x is not None]
        return "[" + ", ".join(items) + "]"
    if isinstance(v, dict):
        items = [
            f"{toml_string(str(k))} = {toml_value(x)}"
            for k, x in v.items()
            if x is not None
        ]
        return "{" + ", ".join(items) + "}"
    msg = f"no TOML form for {v!r}"
    raise TypeError(msg)


def _is_table_list(v):
    return isinstance(v, list) and v and all(isinstance(x, dict) for x in v)


def to_toml(doc, prefix=()):
    """
    *doc* (a dict) as a TOML document: scalars and arrays inline, nested
    mappings as ``[tables]``, lists of mappings as ``[[arrays of tables]]``.
    """
    lines = []
    nested = []
    for k, v in doc.items():
        if v is None:
            continue
        if isinstance(v, dict) or _is_table_list(v):
            nested.append((k, v))
        else:
            lines.append(f"{toml_string(str(k))} = {toml_value(v)}")
    for k, v in nested:
        path = (*prefix, toml_string(str(k)))
        name = ".".join(path)
        if isinstance(v, dict):
            lines.append(f"\n[{name}]")
            lines.append(to_toml(v, path))
        else:
            for item in v:
                lines.append(f"\n[[{name}]]")
                lines.append(to_toml(item, path))
    return "\n".join(lines)


def texts(doc):
    """
    *doc* as (format, text) pairs in all three formats; TOML only for a
    mapping (a TOML document is a table).
    """
    pairs = [
        ("json", json.dumps(doc)),
        ("yaml", yaml.safe_dump(doc, allow_unicode=True)),
    ]
    if isinstance(doc, dict):
        pairs.append(("toml", to_toml(doc)))
    return pairs


# --- Loader -----------------------------------------------------------------


def _load(fmt, text):
    """
    A Policy or a PolicyError with problems; anything else propagates.
    """
    try:
        result = referee.load_policy_text(text, fmt=fmt)
    except referee.PolicyError as exc:
        result = exc
    if isinstance(result, referee.PolicyError):
        assert result.problems
        assert str(result)
    else:
        assert isinstance(result, referee.Policy)
    return result


@st.composite
def mutated_texts(draw):
    """
    A valid policy in one of the formats, then edited as text: characters
    deleted, inserted, replaced or a span duplicated.
    """
    doc = draw(valid_policies())
    fmt, text = draw(st.sampled_from(texts(doc)))
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "repeat"]))
        i = draw(st.integers(0, max(len(chars) - 1, 0)))
        if op == "delete" and chars:
            del chars[i]
        elif op == "insert":
            chars.insert(i, draw(st.characters()))
        elif op == "replace" and chars:
            chars[i] = draw(st.sampled_from('[]{}:,="\n -#&*!|>0'))
        elif op == "repeat":
            j = draw(st.integers(i, min(i + 40, len(chars))))
            chars[i:i] = chars[i:j] * draw(st.integers(1, 50))
    return fmt, "".join(chars)


class TestTomlWriter:
    def test_round_trip(self):
        """
        The writer's output reads back as the document it wrote.
        """
        doc = {
            "policy": "p",
            "n": 1.5,
            "flags": [True, 1, "x\n\u00e9\x01"],
            "defaults": {"retry": {"backoff": {"initial": "1s"}}},
            "rules": [{"id": "a", "when": {"status": [429]}, "do": "retry"}],
        }

        assert doc == tomllib.loads(to_toml(doc))


class TestLoaderFuzz:
    @FUZZ
    @given(documents)
    def _random(self, doc):
        COUNTS["loader: random documents"] += 1
        for fmt, text in texts(doc):
            _load(fmt, text)

    def test_random_documents(self):
        """
        Any document, as YAML, TOML or JSON text, loads or raises
        PolicyError, each within the deadline.
        """
        before = COUNTS["loader: random documents"]
        self._random()

        assert COUNTS["loader: random documents"] > before

    @FUZZ
    @given(mutated_policies())
    def _mutated(self, doc):
        COUNTS["loader: mutated documents"] += 1
        for fmt, text in texts(doc):
            _load(fmt, text)

    def test_mutated_documents(self):
        """
        A valid policy with a value changed, in all three formats, loads or
        raises PolicyError.
        """
        before = COUNTS["loader: mutated documents"]
        self._mutated()

        assert COUNTS["loader: mutated documents"] > before

    @FUZZ
    @given(mutated_texts())
    def _mutated_text(self, pair):
        COUNTS["loader: mutated texts"] += 1
        _load(*pair)

    def test_mutated_texts(self):
        """
        A valid policy file with its text edited at random loads or raises
        PolicyError.
        """
        before = COUNTS["loader: mutated texts"]
        self._mutated_text()

        assert COUNTS["loader: mutated texts"] > before

    @settings(FUZZ, max_examples=60)
    @given(valid_policies())
    def _valid_toml(self, doc):
        COUNTS["loader: valid TOML"] += 1
        policy = referee.load_policy_text(to_toml(doc), fmt="toml")

        assert [r["id"] for r in doc["rules"]] == [r.id for r in policy.rules]

    def test_valid_toml(self):
        """
        A valid policy written as TOML loads with the same rules.
        """
        before = COUNTS["loader: valid TOML"]
        self._valid_toml()

        assert COUNTS["loader: valid TOML"] > before


# --- decide -----------------------------------------------------------------

POLICIES = [
    *(referee.load_policy(name) for name in referee.bundled_names()),
    referee.load_policy_text(FEATURES, source="features"),
]

#: Header names the bundled policies read, and a few any server sends.
KNOWN_HEADERS = [
    "Retry-After",
    "retry-after-ms",
    "X-RateLimit-Reset",
    "X-Rate-Limit-Reset",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "RateLimit-Reset",
    "RateLimit",
    "Content-Length",
    "Content-Type",
    "Location",
    "Transfer-Encoding",
]

statuses = st.one_of(
    st.integers(100, 599),
    st.sampled_from([0, -1, 1, 99, 600, 999, 1000, 2**31, -(2**63)]),
    st.integers(),
)

_hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(max_codepoint=0x1F), max_size=20),
    st.sampled_from(
        [
            "",
            "99999999999",
            "-5",
            "1e400",
            "NaN",
            "inf",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "limit=10, remaining=0, reset=99999999999",
            "\u0665",
            "1" * 5000,
            "a" * 100_000,
            "application/json",
            "http://[::1",
            "//evil.test/x",
        ]
    ),
)

hostile_headers = st.dictionaries(
    st.one_of(st.sampled_from(KNOWN_HEADERS), st.text(max_size=30)),
    _hostile_text,
    max_size=6,
)

hostile_bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.sampled_from(
        [
            b'{"state": "running", "count": 1e309}',
            b"[" * 5000 + b"]" * 5000,
            b"\xff\xfe\xfd",
            b'{"error": {"code": "' + b"a" * 100_000 + b'!"}}',
        ]
    ),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8)).map(
        lambda d: json.dumps(d).encode()
    ),
)


def _ceiling(policy, d):
    rule = policy.rule(d.rule_id)
    if d.delay_source in {"backoff", "schedule"}:
        return (rule.retry if isinstance(d, referee.Retry) else rule.poll).max
    return policy.server_delay_max


class TestDecideFuzz:
    @FUZZ
    @given(
        statuses,
        hostile_headers,
        hostile_bodies,
        st.booleans(),
        st.floats(0, 4e9),
    )
    def _decide(self, status, headers, body, lazy, now):
        COUNTS["decide: hostile responses"] += 1
        snap = referee.Snapshot.response(
            status,
            url="https://api.example.com/v1/x",
            headers=headers,
            request_headers={"Authorization": "Bearer t"},
            body=None if lazy else body,
            load_body=(lambda: body) if lazy else None,
        )
        state = referee.AttemptState(started=now)
        for policy in POLICIES:
            d = referee.decide(
                policy, snap, state, now=now, rng=random.Random(0)
            )

            assert isinstance(d, DECISIONS)
            assert isinstance(d.reason, str)
            if isinstance(d, referee.Retry | referee.Poll):
                assert math.isfinite(d.delay), d
                assert 0.0 <= d.delay <= _ceiling(policy, d), d

    def test_hostile_responses(self):
        """
        Any status (in range or not), any headers and any body: decide
        returns a decision, with every delay in [0, ceiling].
        """
        before = COUNTS["decide: hostile responses"]
        self._decide()

        assert COUNTS["decide: hostile responses"] > before


# --- Found by fuzzing -------------------------------------------------------


class TestFoundByFuzzing:
    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("[" * 300 + "]" * 300 + "\x00", id="deep-brackets"),
            pytest.param(
                "policy: x\n" + " " * 300 + "# wide\n\x01\n", id="wide-indent"
            ),
        ],
    )
    def test_deep_yaml_with_a_control_character(self, text):
        """
        A deep YAML document holding a control character is a PolicyError
        (found by fuzz/atheris_loader.py).
        """
        with pytest.raises(referee.PolicyError) as info:
            referee.load_policy_text(text)

        assert "this is not valid YAML: unacceptable character" in str(
            info.value
        )
