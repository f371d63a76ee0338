import textwrap

import pytest

import referee
from referee._tools.check import check_policy


def load(text):
    """
    A policy from dedented YAML.
    """
    return referee.load_policy_text(textwrap.dedent(text))


def messages(policy):
    """
    The warnings' messages.
    """
    return [p.message for p in check_policy(policy)]


def paths(policy):
    """
    The warnings' paths.
    """
    return [p.path for p in check_policy(policy)]


class TestClean:
    def test_http_default(self):
        """
        The bundled http-default policy draws no warning.
        """
        expected = []

        assert expected == check_policy(referee.load_policy("http-default"))

    def test_simple_policy(self):
        """
        A plain policy draws no warning.
        """
        policy = load(
            """
            policy: plain
            rules:
              - {id: a, when: {status: 429}, do: retry}
              - {id: b, when: {status: 5xx}, do: retry}
              - {id: c, when: {status: 402}, do: abort}
            """
        )

        assert not check_policy(policy)

    def test_severity_is_warning(self):
        """
        Every problem found is a warning.
        """
        policy = load(
            """
            policy: p
            rules:
              - {id: a, when: {status: 500, failure: connect}, do: abort}
            """
        )
        expected = ["warning"]

        assert expected == [p.severity for p in check_policy(policy)]


class TestNeverMatches:
    def test_status_and_failure(self):
        """
        A rule asking for a status and a transport failure at once never
        matches.
        """
        policy = load(
            """
            policy: p
            rules:
              - {id: a, when: {status: 500, failure: connect}, do: abort}
            """
        )
        expected = (
            [
                (
                    "rule 'a' can never match: no status or transport failure "
                    "satisfies all of its conditions (a status together with a "
                    "failure, or status lists that do not overlap)"
                )
            ],
            ["$.rules[0].when"],
        )

        assert expected == (messages(policy), paths(policy))

    def test_disjoint_statuses(self):
        """
        A rule whose `all` branches name disjoint statuses never matches.
        """
        policy = load(
            """
            policy: p
            rules:
              - id: a
                when: {all: [{status: 500}, {status: 502}]}
                do: abort
            """
        )
        expected = ["$.rules[0].when"]

        assert expected == paths(policy)

    def test_shadowed_by_wider_status(self):
        """
        A rule whose statuses an earlier unconditional rule covers is
        shadowed.
        """
        policy = load(
            """
            policy: p
            rules:
              - {id: all-5xx, when: {status: 5xx}, do: retry}
              - {id: late-503, when: {status: 503}, do: abort}
            """
        )
        expected = (
            [
                (
                    "rule 'late-503' can never match: 'all-5xx' above already "
                    "catches every outcome it could; move it up or narrow 'all-5xx'"
                )
            ],
            ["$.rules[1]"],
        )

        assert expected == (messages(policy), paths(policy))

    def test_shadowed_by_rule_without_when(self):
        """
        A rule without `when` shadows every rule after it.
        """
        policy = load(
            """
            policy: p
            rules:
              - {id: everything, do: accept}
              - {id: later, when: {method: GET}, do: abort}
            """
        )
        expected = ["$.rules[1]"]

        assert expected == paths(policy)

    @pytest.mark.parametrize(
        "earlier",
        [
            "{status: 503, method: GET}",
            "{status: 503, body: {x: 1}}",
            "{status: 502}",
            "{status: 5xx, attempt: {gte: 2}}",
        ],
        ids=["method", "body", "other-status", "attempt"],
    )
    def test_narrower_rule_does_not_shadow(self, earlier):
        """
        An earlier rule with further conditions, or other statuses, does
        not shadow.
        """
        policy = load(
            f"""
            policy: p
            rules:
              - {{id: a, when: {earlier}, do: retry}}
              - {{id: b, when: {{status: 503}}, do: abort}}
            """
        )

        assert not check_policy(policy)

    def test_keyed_rule_does_not_shadow_any_status(self):
        """
        A rule naming statuses does not shadow a rule that matches any.
        """
        policy = load(
            """
            policy: p
            rules:
              - {id: a, when: {status: 5xx}, do: retry}
              - {id: b, when: {method: POST}, do: abort}
            """
        )

        assert not check_policy(policy)

    def test_inherited_rules_may_be_replaced_by_id(self):
        """
        A child rule with the id of the inherited rule it covers replaces
        it: that is what extending is for, and nothing is reported.
        """
        policy = load(
            """
            policy: child
            extends: http-default
            rules:
              - {id: server-unavailable, when: {status: 5xx}, do: abort}
            """
        )

        assert not check_policy(policy)

    def test_reported_once(self):
        """
        A rule that never matches is reported once, not also as shadowed.
        """
        policy = load(
            """
            policy: p
            rules:
              - {id: a, do: accept}
              - {id: b, when: {status: 500, failure: read}, do: abort}
            """
        )
        expected = ["$.rules[1].when"]

        assert expected == paths(policy)


class TestHidesInherited:
    def test_5xx_rule_hides_server_unavailable(self):
        """
        A child's 5xx rule above http-default's server-unavailable is
        reported on the child's rule, naming the rule it hides.
        """
        policy = load(
            """
            policy: child
            extends: http-default
            rules:
              - {id: no-5xx-retries, when: {status: 5xx}, do: abort}
            """
        )
        (problem,) = check_policy(policy)

        assert (
            "<string>",
            5,
            "$.rules[0]",
            (
                "rule 'no-5xx-retries' hides the inherited rule "
                "'server-unavailable' of http-default: it catches every outcome "
                "it could match, so it never applies; narrow its when, or give "
                "it the id of the rule it replaces"
            ),
        ) == (problem.file, problem.line, problem.path, problem.message)

    def test_catch_all_names_every_rule_it_hides(self):
        """
        A when-less rule hides every inherited rule, and names them all,
        once.
        """
        policy = load(
            """
            policy: child
            extends: http-default
            rules:
              - {id: everything, do: accept}
            """
        )
        (message,) = messages(policy)

        assert message.startswith(
            "rule 'everything' hides the inherited rules 'connect-failed', "
            "'transport-failed', 'request-timeout', 'rate-limited', "
            "'server-unavailable' of http-default: it catches every outcome "
            "they could match, so they never apply"
        )

    def test_across_two_levels(self, tmp_path):
        """
        Rules of every policy up the extends chain are named, each with
        its file.
        """
        (tmp_path / "base.yaml").write_text(
            "policy: base\n"
            "extends: http-default\n"
            "rules:\n"
            "  - {id: gone, when: {status: 410}, do: abort}\n"
        )
        child = tmp_path / "child.yaml"
        child.write_text(
            "policy: child\n"
            "extends: base.yaml\n"
            "rules:\n"
            "  - {id: client-errors, when: {status: 4xx}, do: abort}\n"
        )
        (problem,) = check_policy(referee.load_policy(child))

        assert (
            str(child),
            (
                f"'gone' of {tmp_path / 'base.yaml'}; 'request-timeout', "
                f"'rate-limited' of http-default"
            ),
        ) == (problem.file, problem.message.split("rules ")[1].split(":")[0])

    @pytest.mark.parametrize(
        "when",
        [
            "{status: 503}",
            "{status: 5xx, method: GET}",
            "{status: 5xx, body: {error: {exists: true}}}",
            "{failure: [timeout, read]}",
        ],
        ids=["narrower-status", "method", "body", "some-failures"],
    )
    def test_partial_cover_is_not_reported(self, when):
        """
        A child rule that leaves some outcomes to the inherited rule (a
        narrower status set, a method, a body condition) hides nothing.
        """
        policy = load(
            f"""
            policy: child
            extends: http-default
            rules:
              - {{id: mine, when: {when}, do: abort}}
            """
        )

        assert [] == messages(policy)


class TestUnbounded:
    def test_unlimited_attempts_without_deadline(self):
        """
        Unlimited attempts without a deadline draw a warning at the
        attempts key.
        """
        policy = load(
            """
            policy: p
            rules:
              - id: forever
                when: {status: 503}
                do: retry
                retry: {attempts: unlimited}
            """
        )
        expected = (
            [
                (
                    "rule 'forever' retries without a bound: attempts is "
                    "unlimited and the policy has no deadline, so one call may "
                    "retry forever; set attempts, or a deadline in defaults"
                )
            ],
            ["$.rules[0].retry.attempts"],
        )

        assert expected == (messages(policy), paths(policy))

    def test_unlimited_from_defaults(self):
        """
        Unlimited attempts inherited from the defaults are reported on the
        rule.
        """
        policy = load(
            """
            policy: p
            defaults: {retry: {attempts: unlimited}}
            rules:
              - {id: forever, when: {status: 503}, do: retry}
            """
        )
        expected = ["$.rules[0]"]

        assert expected == paths(policy)

    def test_deadline_bounds_unlimited_attempts(self):
        """
        A deadline is a bound: unlimited attempts under it are fine.
        """
        policy = load(
            """
            policy: p
            defaults: {deadline: 2m}
            rules:
              - id: forever
                when: {status: 503}
                do: retry
                retry: {attempts: unlimited}
            """
        )

        assert not check_policy(policy)

    def test_poll_without_deadline(self):
        """
        A poll whose deadline is none draws a warning.
        """
        policy = load(
            """
            policy: p
            rules:
              - id: job
                when: {method: GET, status: 202}
                do: poll
                poll: {deadline: none}
            """
        )
        expected = ["$.rules[0].poll.deadline"]

        assert expected == paths(policy)


class TestUnsafe:
    def test_without_description(self):
        """
        unsafe_methods without a description draws a warning.
        """
        policy = load(
            """
            policy: p
            rules:
              - id: r
                when: {status: 429}
                do: retry
                retry: {unsafe_methods: true}
            """
        )
        expected = (
            [
                (
                    "rule 'r' retries POST/PATCH (unsafe_methods: true) without a "
                    "description saying why that is safe; a retried paid call can "
                    "spend credits twice"
                )
            ],
            ["$.rules[0].retry.unsafe_methods"],
        )

        assert expected == (messages(policy), paths(policy))

    def test_with_description(self):
        """
        A description acknowledges the unsafe retry.
        """
        policy = load(
            """
            policy: p
            rules:
              - id: r
                description: the API documents that a 429 is not processed
                when: {status: 429}
                do: retry
                retry: {unsafe_methods: true}
            """
        )

        assert not check_policy(policy)

    def test_from_defaults(self):
        """
        unsafe_methods from the defaults is reported on each rule that
        retries.
        """
        policy = load(
            """
            policy: p
            defaults: {retry: {unsafe_methods: true}}
            rules:
              - {id: a, when: {status: 429}, do: retry}
              - {id: b, when: {status: 503}, do: retry}
            """
        )
        expected = ["$.rules[0]", "$.rules[1]"]

        assert expected == paths(policy)

    @pytest.mark.parametrize(
        "when",
        ["{status: 429, method: [GET, PUT]}", "{failure: connect}"],
        ids=["idempotent-methods", "connect"],
    )
    def test_moot(self, when):
        """
        A rule that only matches idempotent methods, or connect failures,
        needs no acknowledgement.
        """
        policy = load(
            f"""
            policy: p
            rules:
              - id: r
                when: {when}
                do: retry
                retry: {{unsafe_methods: true}}
            """
        )

        assert not check_policy(policy)


class TestUnsafePoll:
    @pytest.mark.parametrize(
        "when",
        [
            "{method: POST, status: 202}",
            "{status: 202}",
            "{method: [GET, PATCH], status: 202}",
        ],
        ids=["post", "any-method", "patch-listed"],
    )
    def test_poll_resending_an_unsafe_method(self, when):
        """
        A poll rule that can match POST or PATCH and has no poll request
        would send that request again: a warning at its when.
        """
        policy = load(
            f"""
            policy: p
            rules:
              - id: job
                when: {when}
                do: poll
            """
        )
        expected = (
            [
                (
                    "rule 'job' polls by sending the request again, and it "
                    "can match POST or PATCH: such a poll is refused (the "
                    "call aborts) unless the request carries an "
                    "Idempotency-Key, since each send may start the work "
                    "anew; add method: GET to its when, or a poll request "
                    "that reads the job's status (poll: {request: {url: "
                    "...}})"
                )
            ],
            ["$.rules[0].when"],
        )

        assert expected == (messages(policy), paths(policy))

    @pytest.mark.parametrize(
        "request_",
        ["{method: POST}", "{url: '{request.url}'}"],
        ids=["same-method", "same-url"],
    )
    def test_poll_request_that_is_the_same_request(self, request_):
        """
        A poll request with the request's own URL and an unsafe (or
        unchanged) method is still a re-send.
        """
        policy = load(
            f"""
            policy: p
            rules:
              - id: job
                when: {{method: POST, status: 202}}
                do: poll
                poll: {{request: {request_}}}
            """
        )

        assert ["$.rules[0].when"] == paths(policy)

    @pytest.mark.parametrize(
        ("when", "poll"),
        [
            ("{method: GET, status: 202}", "{}"),
            ("{method: [GET, PUT], status: 202}", "{}"),
            ("{status: 202}", "{request: {url: '{header.Location}'}}"),
            ("{method: POST, status: 202}", "{request: {method: GET}}"),
        ],
        ids=["get", "idempotent-methods", "location", "get-same-url"],
    )
    def test_moot(self, when, poll):
        """
        A poll rule that only matches idempotent methods, or that builds
        another request, draws no warning.
        """
        policy = load(
            f"""
            policy: p
            rules:
              - id: job
                when: {when}
                do: poll
                poll: {poll}
            """
        )

        assert not check_policy(policy)


class TestServerDelay:
    def test_no_ceiling(self):
        """
        server_delay max none, with a rule honouring hints, draws a warning
        at the setting.
        """
        policy = load(
            """
            policy: p
            defaults:
              server_delay: {max: none}
            rules:
              - {id: r, when: {status: 429}, do: retry}
            """
        )
        (problem,) = check_policy(policy)
        expected = "$.defaults.server_delay.max"

        assert expected == problem.path
        assert problem.message.startswith(
            "server hints have no ceiling (server_delay: {max: none}) and "
            "rule 'r' honours them"
        )

    def test_no_hints_honoured(self):
        """
        Without a rule honouring hints, no ceiling is needed.
        """
        policy = load(
            """
            policy: p
            defaults:
              server_delay: {max: none}
            rules:
              - id: r
                when: {status: 429}
                do: retry
                retry: {delay_from: []}
            """
        )

        assert not check_policy(policy)

    def test_many_rules_are_summed_up(self):
        """
        The message names three rules and counts the rest.
        """
        policy = load(
            """
            policy: p
            extends: http-default
            defaults:
              server_delay: {max: none}
            """
        )
        (message,) = messages(policy)

        assert (
            "rules 'connect-failed', 'transport-failed', 'request-timeout' "
            "and 2 more honour them"
        ) in message


class TestBackoff:
    def test_rule_max_below_initial(self):
        """
        A rule's backoff max below its initial draws a warning.
        """
        policy = load(
            """
            policy: p
            rules:
              - id: r
                when: {status: 503}
                do: retry
                retry: {backoff: {initial: 10s, max: 1s}}
            """
        )
        expected = (
            [
                (
                    "rule 'r' has a backoff max (1s) below its initial delay (10s): "
                    "every delay is 1s; raise max or lower initial"
                )
            ],
            ["$.rules[0].retry.backoff"],
        )

        assert expected == (messages(policy), paths(policy))

    def test_defaults_reported_once(self):
        """
        A bad default backoff is reported once, at the defaults, however
        many rules inherit it.
        """
        policy = load(
            """
            policy: p
            defaults:
              retry: {backoff: {initial: 1m}}
            rules:
              - {id: a, when: {status: 503}, do: retry}
              - {id: b, when: {status: 429}, do: retry}
            """
        )
        expected = ["$.defaults.retry.backoff"]

        assert expected == paths(policy)

    def test_poll(self):
        """
        A poll's max below its initial draws a warning.
        """
        policy = load(
            """
            policy: p
            rules:
              - id: job
                when: {method: GET, status: 202}
                do: poll
                poll: {initial: 5s, max: 2s}
            """
        )
        expected = ["$.rules[0].poll"]

        assert expected == paths(policy)


NESTED = [
    "(a+)+$",
    "(.*)*",
    r"(\w+\s?)*",
    "(?:x{2,})+",
    "^(a|b+){1,10}$",
]


class TestPatterns:
    @pytest.mark.parametrize("pattern", NESTED, ids=NESTED)
    def test_nested_quantifiers_are_not_warned_about(self, pattern):
        """
        A pattern with nested quantifiers loads and draws no warning: RE2
        matches it in linear time, so it cannot backtrack.
        """
        policy = load(
            f"""
            policy: p
            rules:
              - id: r
                when: {{status: 422, body: {{m: {{matches: '{pattern}'}}}}}}
                do: abort
            """
        )

        assert [] == check_policy(policy)


class TestLocation:
    def test_lines_from_yaml(self, tmp_path):
        """
        Warnings carry the file and the line of the rule.
        """
        path = tmp_path / "p.yaml"
        path.write_text(
            "policy: p\n"
            "rules:\n"
            "  - {id: a, do: accept}\n"
            "  - id: b\n"
            "    when: {status: 500}\n"
            "    do: abort\n"
        )
        (problem,) = check_policy(referee.load_policy(path))

        assert (str(path), 4, "$.rules[1]") == (
            problem.file,
            problem.line,
            problem.path,
        )

    def test_inherited_rule_reported_in_its_file(self, tmp_path):
        """
        A warning about an extended policy's rule names that file and the
        rule's position in it.
        """
        (tmp_path / "base.yaml").write_text(
            "policy: base\n"
            "rules:\n"
            "  - id: impossible\n"
            "    when: {status: 500, failure: read}\n"
            "    do: abort\n"
        )
        child = tmp_path / "child.yaml"
        child.write_text(
            "policy: child\n"
            "extends: base.yaml\n"
            "rules:\n"
            "  - {id: a, when: {status: 429}, do: retry}\n"
        )
        (problem,) = check_policy(referee.load_policy(child))

        assert (str(tmp_path / "base.yaml"), 4, "$.rules[0].when") == (
            problem.file,
            problem.line,
            problem.path,
        )

    def test_defaults_reported_where_set(self, tmp_path):
        """
        A warning about a default names the file and line that set it.
        """
        path = tmp_path / "p.yaml"
        path.write_text(
            "policy: p\n"
            "extends: http-default\n"
            "defaults:\n"
            "  server_delay:\n"
            "    max: none\n"
        )
        (problem,) = check_policy(referee.load_policy(path))

        assert (str(path), 5) == (problem.file, problem.line)

    def test_defaults_reported_where_set_in_json(self, tmp_path):
        """
        A default a JSON child sets over its YAML parent names the child.
        """
        (tmp_path / "parent.yaml").write_text(
            "policy: parent\n"
            "defaults:\n"
            "  server_delay:\n"
            "    max: 60s\n"
            "rules:\n"
            "  - {id: a, when: {status: 503}, do: retry}\n"
        )
        path = tmp_path / "child.json"
        path.write_text(
            '{"policy": "child", "extends": "parent.yaml",'
            ' "defaults": {"server_delay": {"max": "none"}}}'
        )
        (problem,) = check_policy(referee.load_policy(path))

        assert (str(path), None, "$.defaults.server_delay.max") == (
            problem.file,
            problem.line,
            problem.path,
        )

    def test_lines_are_those_loaded(self, tmp_path):
        """
        Lines come from the text that was loaded, not from the file now.
        """
        path = tmp_path / "p.yaml"
        text = (
            "policy: p\n"
            "rules:\n"
            "  - {id: a, do: accept}\n"
            "  - {id: b, when: {status: 500}, do: abort}\n"
        )
        path.write_text(text)
        policy = referee.load_policy(path)
        path.write_text("# edited\n# since\n" + text)
        (problem,) = check_policy(policy)

        assert (str(path), 4) == (problem.file, problem.line)

    def test_json_has_no_lines(self, tmp_path):
        """
        A JSON policy's warnings have paths but no lines.
        """
        path = tmp_path / "p.json"
        path.write_text(
            '{"policy": "p", "rules": [{"id": "a", "do": "accept"},'
            ' {"id": "b", "when": {"status": 500}, "do": "abort"}]}'
        )
        (problem,) = check_policy(referee.load_policy(path))

        assert (str(path), None, "$.rules[1]") == (
            problem.file,
            problem.line,
            problem.path,
        )

    def test_string_policy(self):
        """
        A policy loaded from a string is reported as <string>, at the line
        of its text.
        """
        policy = load(
            """
            policy: p
            rules:
              - {id: a, do: accept}
              - {id: b, when: {status: 500}, do: abort}
            """
        )
        (problem,) = check_policy(policy)
        # Line 5: dedent keeps the text's first, empty line.
        expected = ("<string>", 5, "$.rules[1]")

        assert expected == (
            problem.file,
            problem.line,
            problem.path,
        )
