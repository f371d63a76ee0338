"""
Loading policies: bundled names, paths in three formats, text, extends,
default rule ids and the values with units.
"""

import json
import math
import random
import tomllib
from pathlib import Path

import pytest
import yaml

import referee


# One policy, written three times.
POLICY_YAML = """\
policy: formats
description: the same policy in every format
defaults:
  retry:
    attempts: 4
    backoff: {initial: 250ms, multiplier: 3, max: 1m30s, jitter: none}
  deadline: 2m
  server_delay: {max: 90s, on_exceed: cap}
  body_limit: 64KiB
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    alert: {kind: topup, severity: critical, dedupe: 1h}
  - id: rate-limited
    when: {status: 429}
    do: retry
    retry: {unsafe_methods: true, delay_from: [Retry-After]}
  - id: ongoing
    when: {method: GET, body: {status: ongoing}}
    do: poll
    poll: {initial: 2s, multiplier: 1, jitter: none}
  - id: unavailable
    when: {status: "5xx", not: {status: 501}}
    do: retry
"""

POLICY_TOML = """\
policy = "formats"
description = "the same policy in every format"

[defaults]
deadline = "2m"
body_limit = "64KiB"
server_delay = { max = "90s", on_exceed = "cap" }

[defaults.retry]
attempts = 4
backoff = { initial = "250ms", multiplier = 3, max = "1m30s", jitter = "none" }

[[rules]]
id = "out-of-credits"
when = { status = 402 }
do = "abort"
error = "InsufficientCredits"
alert = { kind = "topup", severity = "critical", dedupe = "1h" }

[[rules]]
id = "rate-limited"
when = { status = 429 }
do = "retry"
retry = { unsafe_methods = true, delay_from = ["Retry-After"] }

[[rules]]
id = "ongoing"
when = { method = "GET", body = { status = "ongoing" } }
do = "poll"
poll = { initial = "2s", multiplier = 1, jitter = "none" }

[[rules]]
id = "unavailable"
when = { status = "5xx", not = { status = 501 } }
do = "retry"
"""

POLICY_DICT = yaml.safe_load(POLICY_YAML)
POLICY_JSON = json.dumps(POLICY_DICT, indent=2)

SNAPSHOTS = [
    referee.Snapshot.response(200),
    referee.Snapshot.response(402, method="POST"),
    referee.Snapshot.response(429, method="POST"),
    referee.Snapshot.response(429, headers={"Retry-After": "7"}),
    referee.Snapshot.response(429, headers={"Retry-After": "600"}),
    referee.Snapshot.response(200, body=b'{"status": "ongoing"}'),
    referee.Snapshot.response(200, body=b'{"status": "done"}'),
    referee.Snapshot.response(501),
    referee.Snapshot.response(503),
    referee.Snapshot.response(503, method="PATCH"),
    referee.Snapshot.failed("connect"),
    referee.Snapshot.failed("timeout", method="POST"),
]
SNAPSHOT_IDS = [
    "200",
    "402-post",
    "429-post",
    "429-retry-after",
    "429-retry-after-capped",
    "ongoing",
    "done",
    "501",
    "503",
    "503-patch",
    "connect",
    "timeout-post",
]
STATES = [
    referee.AttemptState(),
    referee.AttemptState(attempt=3, started=0.0),
    referee.AttemptState(attempt=4, polls=2, started=0.0, poll_started=5.0),
]


def _decisions(policy):
    out = []
    for snap in SNAPSHOTS:
        for state in STATES:
            d = referee.decide(
                policy, snap, state, now=10.0, rng=random.Random(7)
            )
            out.append((type(d).__name__, d.rule_id, d.reason))
    return out


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class TestBundled:
    def test_names(self):
        """
        bundled_names lists http-default, sorted.
        """
        names = referee.bundled_names()

        assert "http-default" in names
        assert sorted(names) == names

    @pytest.mark.parametrize(
        "name", referee.bundled_names(), ids=referee.bundled_names()
    )
    def test_every_bundled_policy_loads(self, name):
        """
        Every bundled policy loads under its own name.
        """
        policy = referee.load_policy(name)

        assert (name, name) == (policy.name, policy.sources[0])

    def test_http_default(self):
        """
        http-default retries the transient outcomes of RFC 9110.
        """
        policy = referee.load_policy("http-default")
        expected = {
            "connect": "connect-failed",
            "timeout": "transport-failed",
            408: "request-timeout",
            429: "rate-limited",
            503: "server-unavailable",
        }

        assert expected == {
            key: policy.candidates(key)[0].id for key in expected
        }
        assert not policy.candidates(404)


class TestFormats:
    @pytest.mark.parametrize(
        ("filename", "text"),
        [
            ("p.yaml", POLICY_YAML),
            ("p.yml", POLICY_YAML),
            ("p.toml", POLICY_TOML),
            ("p.json", POLICY_JSON),
        ],
        ids=["yaml", "yml", "toml", "json"],
    )
    def test_paths_decide_alike(self, tmp_path, filename, text):
        """
        The same policy decides alike from a YAML, YML, TOML or JSON file.
        """
        expected = _decisions(referee.load_policy_text(POLICY_YAML))
        path = _write(tmp_path / filename, text)

        assert expected == _decisions(referee.load_policy(path))
        assert expected == _decisions(referee.load_policy(str(path)))

    @pytest.mark.parametrize(
        ("fmt", "text"),
        [("toml", POLICY_TOML), ("json", POLICY_JSON)],
        ids=["toml", "json"],
    )
    def test_texts_decide_alike(self, fmt, text):
        """
        load_policy_text reads TOML and JSON as it reads YAML.
        """
        expected = _decisions(referee.load_policy_text(POLICY_YAML))

        assert expected == _decisions(referee.load_policy_text(text, fmt=fmt))

    def test_toml_is_the_same_document(self):
        """
        The TOML and YAML texts of the test hold the same document.
        """
        expected = POLICY_DICT

        assert expected == tomllib.loads(POLICY_TOML)

    def test_decisions_differ_across_snapshots(self):
        """
        The snapshots draw all four decisions, so equality means something.
        """
        kinds = {
            kind
            for kind, _rule, _reason in _decisions(
                referee.load_policy_text(POLICY_YAML)
            )
        }

        assert {"Accept", "Retry", "Poll", "Abort"} == kinds

    def test_sources(self, tmp_path):
        """
        A policy loaded from a path names the path as its source.
        """
        path = _write(tmp_path / "p.yaml", POLICY_YAML)

        assert (str(path),) == referee.load_policy(path).sources

    def test_text_source(self):
        """
        A policy loaded from text names the given source, or <string>.
        """
        named = referee.load_policy_text(POLICY_YAML, source="inline")
        unnamed = referee.load_policy_text(POLICY_YAML)
        expected = (("inline",), ("<string>",))

        assert expected == (named.sources, unnamed.sources)

    def test_description(self):
        """
        The description is kept.
        """
        policy = referee.load_policy_text(POLICY_YAML)
        expected = "the same policy in every format"

        assert expected == policy.description


PARENT = """\
policy: parent
defaults:
  retry:
    attempts: 2
    backoff: {initial: 3s, multiplier: 1.5, max: 20s, jitter: equal}
  deadline: 1m
  server_delay: {max: 45s, on_exceed: cap}
rules:
  - id: parent-unavailable
    when: {status: 503}
    do: retry
  - when: {status: 404}
    do: abort
"""

CHILD = """\
policy: child
extends: {parent}
defaults:
  retry: {{attempts: 6}}
  server_delay: {{on_exceed: fail}}
rules:
  - id: child-unavailable
    when: {{status: [502, 503]}}
    do: retry
  - when: {{status: 402}}
    do: abort
"""


class TestExtends:
    def test_bundled_parent(self):
        """
        A child of http-default puts its rules before the parent's.
        """
        parent = referee.load_policy("http-default")
        child = referee.load_policy_text(
            "policy: child\n"
            "extends: http-default\n"
            "rules:\n"
            "  - {id: mine, when: {status: 503}, do: abort}\n"
        )

        assert ["mine", *(r.id for r in parent.rules)] == [
            r.id for r in child.rules
        ]
        assert ["child"] + ["http-default"] * len(parent.rules) == [
            r.origin for r in child.rules
        ]
        assert parent.deadline == child.deadline
        assert ["mine"] == [r.id for r in child.candidates(503)][:1]
        assert parent.sources == child.sources[1:]

    def test_child_rule_wins(self):
        """
        The child's rule for a status decides before the parent's.
        """
        child = referee.load_policy_text(
            "policy: child\n"
            "extends: http-default\n"
            "rules:\n"
            "  - {id: mine, when: {status: 503}, do: abort}\n"
        )
        d = referee.decide(
            child,
            referee.Snapshot.response(503),
            referee.AttemptState(),
            now=0.0,
        )

        assert (referee.Abort, "mine") == (type(d), d.rule_id)

    def test_relative_path(self, tmp_path, monkeypatch):
        """
        A relative extends is resolved against the extending file.
        """
        _write(tmp_path / "base" / "parent.yaml", PARENT)
        child_path = _write(
            tmp_path / "apis" / "child.yaml",
            CHILD.format(parent="../base/parent.yaml"),
        )
        # Wherever the current directory is.
        monkeypatch.chdir(tmp_path / "base")
        policy = referee.load_policy(child_path)
        sources = (
            str(child_path),
            str(tmp_path / "apis" / ".." / "base" / "parent.yaml"),
        )

        assert sources == policy.sources
        assert "parent" == policy.rule("parent-unavailable").origin

    def test_same_id_replaces_the_inherited_rule(self, tmp_path):
        """
        A rule with an inherited rule's id replaces it, in the child's place.
        """
        _write(tmp_path / "parent.yaml", PARENT)
        child = referee.load_policy_text(
            "policy: child\n"
            f"extends: {tmp_path / 'parent.yaml'}\n"
            "rules:\n"
            "  - {id: first, when: {status: 500}, do: abort}\n"
            "  - {id: parent-unavailable, when: {status: 503}, do: abort}\n"
        )
        d = referee.decide(
            child,
            referee.Snapshot.response(503),
            referee.AttemptState(),
            now=0.0,
        )
        expected = (
            [
                ("first", "child", 0),
                ("parent-unavailable", "child", 1),
                ("parent/rule-2", "parent", 2),
            ],
            (referee.Abort, "parent-unavailable"),
        )

        assert expected == (
            [(r.id, r.origin, r.index) for r in child.rules],
            (type(d), d.rule_id),
        )

    def test_default_ids_replace_nothing(self, tmp_path):
        """
        Unnamed rules never replace inherited ones: both files' rules run.
        """
        _write(tmp_path / "parent.yaml", PARENT)
        child = referee.load_policy(
            _write(tmp_path / "child.yaml", CHILD.format(parent="parent.yaml"))
        )
        d = referee.decide(
            child,
            referee.Snapshot.response(404),
            referee.AttemptState(),
            now=0.0,
        )
        expected = (
            [
                ("child-unavailable", "child"),
                ("rule-2", "child"),
                ("parent-unavailable", "parent"),
                ("parent/rule-2", "parent"),
            ],
            (referee.Abort, "parent/rule-2"),
        )

        assert expected == (
            [(r.id, r.origin) for r in child.rules],
            (type(d), d.rule_id),
        )

    def test_defaults_merge_key_by_key(self, tmp_path):
        """
        Defaults merge key by key: the child's keys win, the rest inherit.
        """
        _write(tmp_path / "parent.yaml", PARENT)
        child = referee.load_policy(
            _write(tmp_path / "child.yaml", CHILD.format(parent="parent.yaml"))
        )
        retry = child.retry
        # attempts and on_exceed are the child's; the rest is the parent's.
        expected = (6, 3.0, 1.5, 20.0, "equal", 60.0, 45.0, "fail")

        assert expected == (
            retry.attempts,
            retry.initial,
            retry.multiplier,
            retry.max,
            retry.jitter,
            child.deadline,
            child.server_delay_max,
            child.on_exceed,
        )

    def test_rules_resolve_against_merged_defaults(self, tmp_path):
        """
        The parent's own rules use the merged defaults too.
        """
        _write(tmp_path / "parent.yaml", PARENT)
        child = referee.load_policy(
            _write(tmp_path / "child.yaml", CHILD.format(parent="parent.yaml"))
        )
        settings = child.rule("parent-unavailable").retry
        expected = (6, 3.0)

        assert expected == (settings.attempts, settings.initial)

    def test_text_extends_relative_to_cwd(self, tmp_path, monkeypatch):
        """
        Text resolves a relative extends against the current directory.
        """
        _write(tmp_path / "parent.yaml", PARENT)
        monkeypatch.chdir(tmp_path)
        policy = referee.load_policy_text(CHILD.format(parent="parent.yaml"))
        expected = ["child-unavailable", "rule-2", "parent-unavailable"]

        assert expected == [r.id for r in policy.rules[:3]]

    def test_grandparent(self, tmp_path):
        """
        extends chains: grandchild, child, parent, in that order.
        """
        _write(tmp_path / "parent.yaml", PARENT)
        _write(tmp_path / "child.yaml", CHILD.format(parent="parent.yaml"))
        grandchild = referee.load_policy(
            _write(
                tmp_path / "grandchild.json",
                json.dumps(
                    {
                        "policy": "grandchild",
                        "extends": "child.yaml",
                        "defaults": {"retry": {"backoff": {"max": "1m"}}},
                    }
                ),
            )
        )

        sources = ["grandchild.json", "child.yaml", "parent.yaml"]
        retry = (6, 3.0, 60.0)

        assert sources == [Path(s).name for s in grandchild.sources]
        assert retry == (
            grandchild.retry.attempts,
            grandchild.retry.initial,
            grandchild.retry.max,
        )

    def test_extends_across_formats(self, tmp_path):
        """
        A TOML file may extend a YAML one.
        """
        _write(tmp_path / "parent.yaml", PARENT)
        policy = referee.load_policy(
            _write(
                tmp_path / "child.toml",
                'policy = "toml-child"\nextends = "parent.yaml"\n',
            )
        )

        expected = ("toml-child", 2)

        assert expected == (policy.name, policy.retry.attempts)


class TestRuleIds:
    def test_default_ids_count_from_one(self):
        """
        Rules without an id are rule-N, N their place in the file.
        """
        policy = referee.load_policy_text(
            "policy: ids\n"
            "rules:\n"
            "  - {when: {status: 500}, do: retry}\n"
            "  - {id: named, when: {status: 501}, do: abort}\n"
            "  - {when: {status: 502}, do: abort}\n"
        )

        ids = ["rule-1", "named", "rule-3"]

        assert ids == [r.id for r in policy.rules]
        assert list(range(3)) == [r.index for r in policy.rules]

    def test_inherited_default_ids_name_their_policy(self, tmp_path):
        """
        An extended policy's unnamed rules are <policy>/rule-N, at any depth.
        """
        _write(tmp_path / "parent.yaml", PARENT)
        _write(tmp_path / "child.yaml", CHILD.format(parent="parent.yaml"))
        policy = referee.load_policy_text(
            "policy: grandchild\n"
            f"extends: {tmp_path / 'child.yaml'}\n"
            "rules:\n"
            "  - {when: {status: 418}, do: abort}\n"
        )
        ids = [
            "rule-1",
            "child-unavailable",
            "child/rule-2",
            "parent-unavailable",
            "parent/rule-2",
        ]

        assert ids == [r.id for r in policy.rules]
        assert "child/rule-2" == policy.rule("child/rule-2").id

    def test_rule_lookup(self):
        """
        Policy.rule finds a rule by id and raises KeyError for no rule.
        """
        policy = referee.load_policy("http-default")
        expected = "rate-limited"

        assert expected == policy.rule("rate-limited").id
        with pytest.raises(KeyError, match="no rule 'nope'"):
            policy.rule("nope")

    def test_no_rules(self):
        """
        A policy needs no rules: everything passes through.
        """
        policy = referee.load_policy_text("policy: empty")
        d = referee.decide(
            policy,
            referee.Snapshot.response(503),
            referee.AttemptState(),
            now=0.0,
        )

        assert ((), referee.Accept, None) == (
            policy.rules,
            type(d),
            d.rule_id,
        )


def _defaults(text):
    return referee.load_policy_text(f"policy: units\ndefaults:\n{text}")


class TestUnits:
    @pytest.mark.parametrize(
        ("written", "seconds"),
        [
            ("250ms", 0.25),
            ("2s", 2.0),
            ("10m", 600.0),
            ("1h", 3600.0),
            ("1d", 86400.0),
            ("1m30s", 90.0),
            ("1.5", 1.5),
            ("3", 3.0),
            ("'0.5s'", 0.5),
        ],
        ids=["ms", "s", "m", "h", "d", "m-and-s", "float", "int", "quoted"],
    )
    def test_durations(self, written, seconds):
        """
        Durations are numbers of seconds or strings with units.
        """
        policy = _defaults(f"  retry:\n    backoff: {{initial: {written}}}\n")

        assert seconds == policy.retry.initial

    def test_builtin_defaults(self):
        """
        A policy that sets nothing gets the documented defaults.
        """
        policy = referee.load_policy_text("policy: bare")
        expected = (
            3,
            1.0,
            2.0,
            30.0,
            "full",
            False,
            2.0,
            1.5,
            30.0,
            "none",
            600.0,
            math.inf,
            120.0,
            "fail",
            1024 * 1024,
        )

        assert expected == (
            policy.retry.attempts,
            policy.retry.initial,
            policy.retry.multiplier,
            policy.retry.max,
            policy.retry.jitter,
            policy.retry.unsafe_methods,
            policy.poll.initial,
            policy.poll.multiplier,
            policy.poll.max,
            policy.poll.jitter,
            policy.poll.deadline,
            policy.deadline,
            policy.server_delay_max,
            policy.on_exceed,
            policy.body_limit,
        )

    def test_schedule(self):
        """
        The backoff schedule grows by the multiplier up to max.
        """
        policy = _defaults(
            "  retry:\n    backoff: {initial: 250ms, multiplier: 2, max: 1s}\n"
        )

        expected = (0.25, 0.5, 1.0)

        assert expected == policy.retry.schedule

    def test_constant_schedule(self):
        """
        A multiplier of 1 keeps the delay constant.
        """
        policy = _defaults(
            "  retry:\n    backoff: {initial: 2s, multiplier: 1, max: 1m}\n"
        )

        assert {2.0} == set(policy.retry.schedule)

    def test_deadline_none(self):
        """
        deadline: none means no call deadline.
        """
        assert math.inf == _defaults("  deadline: none\n").deadline

    def test_deadline(self):
        """
        deadline takes a duration.
        """
        expected = 150.0

        assert expected == _defaults("  deadline: 2m30s\n").deadline

    def test_attempts_unlimited(self):
        """
        attempts: unlimited compiles to None.
        """
        policy = _defaults("  retry: {attempts: unlimited}\n")

        assert policy.retry.attempts is None

    def test_attempts(self):
        """
        attempts is a whole number of sends.
        """
        expected = 7

        assert expected == _defaults("  retry: {attempts: 7}\n").retry.attempts

    def test_server_delay_max_none(self):
        """
        server_delay.max: none honours any server hint.
        """
        policy = _defaults("  server_delay: {max: none, on_exceed: cap}\n")

        assert (math.inf, "cap") == (
            policy.server_delay_max,
            policy.on_exceed,
        )

    def test_poll_deadline_none(self):
        """
        poll.deadline: none lets a job be polled for ever.
        """
        assert (
            math.inf == _defaults("  poll: {deadline: none}\n").poll.deadline
        )

    @pytest.mark.parametrize(
        ("written", "size"),
        [
            ("64KiB", 65536),
            ("1MiB", 1048576),
            ("500kB", 500000),
            ("2048", 2048),
            ("0", 0),
        ],
        ids=["KiB", "MiB", "kB", "bytes", "zero"],
    )
    def test_body_limit(self, written, size):
        """
        body_limit takes a number of bytes or a size with units.
        """
        assert size == _defaults(f"  body_limit: {written}\n").body_limit

    def test_body_limit_applies(self):
        """
        Body conditions do not match a body larger than body_limit.
        """
        policy = referee.load_policy_text(
            "policy: limit\n"
            "defaults: {body_limit: 32}\n"
            "rules:\n"
            "  - {id: failed, when: {body: {status: failed}}, do: abort}\n"
        )
        small = b'{"status": "failed"}'
        large = b'{"status": "failed", "padding": "' + b"x" * 64 + b'"}'
        expected = ["failed", None]

        assert expected == [
            referee.decide(
                policy,
                referee.Snapshot.response(200, body=body),
                referee.AttemptState(),
                now=0.0,
            ).rule_id
            for body in (small, large)
        ]

    def test_rule_overrides(self):
        """
        A rule's retry settings override the defaults key by key.
        """
        policy = referee.load_policy_text(
            "policy: overrides\n"
            "defaults:\n"
            "  retry:\n"
            "    attempts: 5\n"
            "    backoff: {initial: 2s, jitter: none}\n"
            "rules:\n"
            "  - id: r\n"
            "    when: {status: 503}\n"
            "    do: retry\n"
            "    retry: {backoff: {initial: 100ms}}\n"
        )
        settings = policy.rule("r").retry
        expected = (5, 0.1, "none")

        assert expected == (
            settings.attempts,
            settings.initial,
            settings.jitter,
        )
