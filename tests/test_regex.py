"""
``matches:`` runs on RE2: linear time, patterns it cannot run refused at
load, and the bundled policies' patterns matching as they did under
Python's ``re``.
"""

import re
from pathlib import Path

import pytest
import yaml

import referee
from referee._core.matchers import REGEX_INPUT_LIMIT, compile_regex
from referee._files.load import bundled_names


BROKEN = Path(__file__).parent / "broken"


def _patterns_of(cond):
    """
    Every ``matches`` pattern in a condition document.
    """
    if cond is None:
        return
    for table in (cond.headers, cond.body):
        for vm in (table or {}).values():
            if vm.matches is not None:
                yield vm.matches
    for sub in [*(cond.any or ()), *(cond.all or ())]:
        yield from _patterns_of(sub)
    yield from _patterns_of(cond.not_)


def _bundled_patterns():
    found = set()
    for name in bundled_names():
        for rule in referee.load_policy(name).rules:
            found.update(_patterns_of(rule.doc.when))
    return sorted(found)


BUNDLED = _bundled_patterns()

#: Texts of the kind the bundled patterns look at: API error messages, in
#: several cases, with and without the words they look for.
TEXTS = [
    "",
    "ok",
    "Insufficient credits",
    "INSUFFICIENT balance on the account",
    "You have run out of credits.",
    "Out Of Credits",
    "Could not retrieve the email for this contact",
    "could NOT retrieve",
    "Token expired",
    "invalid_token",
    "Request from a domain that is not whitelisted",
    "Your IP is not on the allow list",
    "your IPs",
    "ZIP code",
    "Account disabled",
    "The key was deactivated",
    "inactive",
    "Result not ready, try again",
    "NOT READY",
    "No clicks left",
    "Quota exceeded",
    "Your credit balance is too low to access the Anthropic API.",
    "CREDIT BALANCE IS TOO LOW",
    "credit balance is fine",
    "You have exceeded a secondary rate limit.",
    "Secondary Rate Limit",
    "API rate limit exceeded for user ID 1.",
    "line one\nline two: insufficient",
    "Crédit épuisé",
    "残高不足 credit",
]


class TestBundledPatterns:
    def test_there_are_patterns(self):
        """
        The bundled policies do use matches: (the test below is not
        vacuous).
        """
        assert len(BUNDLED) >= 5

    @pytest.mark.parametrize("pattern", BUNDLED, ids=BUNDLED)
    def test_same_as_python_re(self, pattern):
        """
        On the texts such patterns meet, RE2 finds what Python's re.search
        found: the bundled policies decide as before.
        """
        expected = [re.search(pattern, t) is not None for t in TEXTS]

        assert expected == [compile_regex(pattern)(t) for t in TEXTS]
        assert any(expected)


class TestSemantics:
    @pytest.mark.parametrize(
        ("pattern", "text", "expected"),
        [
            ("(?i)insufficient", "You have INSUFFICIENT credits", True),
            ("credits", "no Credits", False),
            ("^quota", "the quota", False),
            ("quota$", "over quota", True),
            (
                "/problems/account-suspended$",
                "x/problems/account-suspended",
                True,
            ),
            ("(?s)a.b", "a\nb", True),
            ("a.b", "a\nb", False),
            ("(?m)^b$", "a\nb\nc", True),
            (r"\d{3}", "code 429", True),
            ("(?i)é", "CAFÉ", True),
        ],
    )
    def test_search(self, pattern, text, expected):
        """
        A pattern is searched for anywhere in the value, as re.search
        does; flags (?i), (?s), (?m) keep their meaning.
        """
        assert expected == compile_regex(pattern)(text)

    @pytest.mark.parametrize("value", [None, 3, 2.5, True, ["a"], {"a": 1}])
    def test_only_strings_match(self, value):
        """
        A value that is not a string never matches, even '.*'.
        """
        assert not compile_regex(".*")(value)

    def test_lone_surrogate(self):
        """
        A string no UTF-8 can spell (a lone surrogate) is searched, not
        raised on.
        """
        assert compile_regex("(?i)credit")("\ud800 CREDIT \udfff")

    def test_input_limit(self):
        """
        Only the first REGEX_INPUT_LIMIT characters are searched.
        """
        value = "a" * REGEX_INPUT_LIMIT + "needle"

        assert not compile_regex("needle")(value)

    def test_errors_are_not_printed(self, capfd):
        """
        A refused pattern is a load error, and nothing else: RE2 writes
        nothing to stderr.
        """
        with pytest.raises(referee.PolicyError):
            referee.load_policy_text(
                "policy: p\nrules:\n"
                "  - {when: {body: {m: {matches: 'a(?=b)'}}}, do: abort}\n"
            )

        assert ("", "") == capfd.readouterr()


def _corpus_patterns():
    doc = yaml.safe_load((BROKEN / "regex-not-re2.yaml").read_text())
    out = []
    for rule in doc["rules"]:
        when = rule["when"]
        table = when.get("body") or when.get("headers")
        ((_key, matcher),) = table.items()
        out.append(pytest.param(matcher["matches"], id=rule["id"]))
    return out


class TestRefused:
    @pytest.mark.parametrize("pattern", _corpus_patterns())
    def test_python_accepts_what_re2_refuses(self, pattern):
        """
        Each pattern of tests/broken/regex-not-re2.yaml is valid for
        Python's re: the load error there is RE2's refusal, not a typo.
        """
        re.compile(pattern)

        with pytest.raises(ValueError, match="is not supported"):
            compile_regex(pattern)

    @pytest.mark.parametrize(
        ("pattern", "construct"),
        [
            ("a*+", "possessive quantifier *+"),
            ("a?+", "possessive quantifier ?+"),
            ("a{2,3}+", "possessive quantifier {m,n}+"),
            ("(?#note)a", "comment (?#...)"),
            ("(?a)\\w", "the ASCII flag (?a)"),
            ("(?u)\\w", "the Unicode flag (?u)"),
            ("\\u00e9", "the escape \\u"),
            ("[(?=]x(?=y)", "lookahead (?=...)"),
        ],
    )
    def test_construct_named(self, pattern, construct):
        """
        The load error names the construct, not an escape inside a
        character class.
        """
        with pytest.raises(ValueError, match=re.escape(f": {construct} is")):
            compile_regex(pattern)

    def test_other_errors_say_what_re2_says(self):
        """
        A pattern that no engine accepts says why, without repeating the
        pattern.
        """
        with pytest.raises(ValueError) as exc:
            compile_regex("a{1001}")

        assert str(exc.value) == (
            "'matches' has an invalid regular expression 'a{1001}': "
            "invalid repetition size: {1001}"
        )

    @pytest.mark.parametrize(
        "pattern", ["(?P<word>a)", "(?i:Quota)", "\\bIP\\b", "\\z", "\\pL+"]
    )
    def test_re2_syntax_loads(self, pattern):
        """
        Named groups, scoped flags, word boundaries, \\z and Unicode
        classes load.
        """
        assert compile_regex(pattern)("IP a Quota") in {True, False}
