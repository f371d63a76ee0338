import errno
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

import referee
from referee.cli import main


CLEAN = """\
policy: clean
extends: http-default
rules:
  - {id: out-of-credits, when: {status: 402}, do: abort}
"""

WARNS = """\
policy: warns
rules:
  - {id: everything-5xx, when: {status: 5xx}, do: retry}
  - {id: late-503, when: {status: 503}, do: abort}
"""

BROKEN = """\
policy: broken
rules:
  - id: x
    when: {status: 99}
    do: retri
"""

SIDE_EFFECTS = """\
policy: side-effects
rules:
  - id: out-of-credits
    description: the account has no credits left
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    alert: {kind: topup, severity: critical, dedupe: 1h, message: "{status} on {request.path}"}
    breaker: {name: credits, open_for: 10m}
    log: error
  - id: job-running
    when: {status: 202, body: {state: running}}
    do: poll
    poll:
      initial: 2s
      multiplier: 2
      max: 8s
      deadline: 30s
      request: {method: GET, url: "/jobs/{body.id}"}
  - id: busy
    when: {status: 503}
    do: retry
    retry:
      attempts: 5
      backoff: {initial: 1s, multiplier: 2, max: 30s, jitter: equal}
"""


@pytest.fixture
def write(tmp_path):
    """
    Write a policy file into tmp_path and return its path as a string.
    """

    def write(text, name="policy.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def explain(capsys, *args):
    """
    Run `referee explain ... --json` and return the parsed object.
    """
    code = main(["explain", *args, "--json"])
    out = capsys.readouterr().out

    assert 0 == code
    return json.loads(out)


class TestMain:
    def test_version(self, capsys):
        """
        --version prints the installed version.
        """
        code = main(["--version"])
        expected = (0, f"referee {metadata.version('referee')}\n")

        assert expected == (code, capsys.readouterr().out)

    def test_no_command(self, capsys):
        """
        Without a command, the usage goes to stderr and the exit code is 2.
        """
        code = main([])
        captured = capsys.readouterr()

        assert 2 == code
        assert "usage: referee" in captured.err
        assert "" == captured.out

    def test_unknown_command(self, capsys):
        """
        An unknown command is a usage error.
        """
        # "!" is in no command's name, so this one stays unknown whatever
        # commands are added.
        code = main(["no-such-command!"])
        err = capsys.readouterr().err

        assert 2 == code
        assert "invalid choice: 'no-such-command!'" in err

    def test_python_m_referee(self):
        """
        `python -m referee` runs the command.

        In a subprocess: with referee's pytest plugin installed, pytest
        rewrites referee's modules, and runpy cannot run a module through
        its import hook.
        """
        proc = subprocess.run(
            [sys.executable, "-m", "referee", "check", "http-default"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        expected = (0, "http-default: ok, 5 rules\n")

        assert expected == (proc.returncode, proc.stdout)

    def test_subprocess(self):
        """
        `python -m referee.cli explain ... --json` prints one JSON object
        and exits 0.
        """
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "referee.cli",
                "explain",
                "http-default",
                "--status",
                "503",
                "--header",
                "Retry-After: 7",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        report = json.loads(proc.stdout)
        expected = (0, "", "server-unavailable", "retry", 7.0)

        assert expected == (
            proc.returncode,
            proc.stderr,
            report["rule"],
            report["action"],
            report["delay"],
        )


class TestCheck:
    def test_clean(self, capsys, write):
        """
        A clean policy exits 0 with a one-line summary.
        """
        path = write(CLEAN)
        code = main(["check", path])
        expected = (0, f"{path}: ok, 6 rules\n")

        assert expected == (code, capsys.readouterr().out)

    def test_bundled_names(self, capsys):
        """
        Bundled policies are checked by name.
        """
        code = main(["check", "http-default"])
        expected = (0, "http-default: ok, 5 rules\n")

        assert expected == (code, capsys.readouterr().out)

    def test_errors(self, capsys, write):
        """
        A broken policy exits 1; each problem is printed as
        file:line: path: message, in line order, then a summary.
        """
        path = write(BROKEN)
        code = main(["check", path])
        lines = capsys.readouterr().out.splitlines()

        assert 1 == code
        assert 3 == len(lines)
        assert lines[0].startswith(
            f"{path}:4: $.rules[0].when.status: found 99"
        )
        assert lines[1].startswith(f"{path}:5: $.rules[0].do: found 'retri'")
        assert f"{path}: 2 errors" == lines[-1]

    def test_missing_file(self, capsys, tmp_path):
        """
        A file that cannot be read is an error.
        """
        path = str(tmp_path / "nope.yaml")
        code = main(["check", path])
        out = capsys.readouterr().out

        assert 1 == code
        assert (
            f"{path}: cannot read the policy file {path!r}: "
            f"{os.strerror(errno.ENOENT)}\n"
        ) in out

    def test_warnings(self, capsys, write):
        """
        Warnings are printed as file:line: warning: path: message; without
        --strict the exit code is 0.
        """
        path = write(WARNS)
        code = main(["check", path])
        expected = (
            0,
            [
                (
                    f"{path}:4: warning: $.rules[1]: rule 'late-503' can never "
                    f"match: 'everything-5xx' above already catches every "
                    f"outcome it could; move it up or narrow 'everything-5xx'"
                ),
                f"{path}: 2 rules, 1 warning",
            ],
        )

        assert expected == (code, capsys.readouterr().out.splitlines())

    def test_strict_warnings(self, capsys, write):
        """
        With --strict, warnings exit 2.
        """
        expected = 2

        assert expected == main(["check", "--strict", write(WARNS)])

    def test_strict_clean(self, capsys, write):
        """
        With --strict, a clean policy still exits 0.
        """
        expected = 0

        assert expected == main(["check", "--strict", write(CLEAN)])

    def test_errors_win_over_warnings(self, capsys, write):
        """
        Errors in one file and warnings in another exit 1, even with
        --strict; every file is summed up.
        """
        broken = write(BROKEN, "broken.yaml")
        warns = write(WARNS, "warns.yaml")
        code = main(["check", "--strict", warns, broken])
        out = capsys.readouterr().out

        assert 1 == code
        assert f"{warns}: 2 rules, 1 warning\n" in out
        assert f"{broken}: 2 errors\n" in out

    def test_json(self, capsys, write):
        """
        --json prints one list of {file, severity, line, path, message},
        errors and warnings alike.
        """
        broken = write(BROKEN, "broken.yaml")
        warns = write(WARNS, "warns.yaml")
        code = main(["check", "--json", warns, broken])
        found = json.loads(capsys.readouterr().out)
        expected = (
            1,
            [
                (warns, "warning", 4, "$.rules[1]"),
                (broken, "error", 4, "$.rules[0].when.status"),
                (broken, "error", 5, "$.rules[0].do"),
            ],
        )

        assert expected == (
            code,
            [(p["file"], p["severity"], p["line"], p["path"]) for p in found],
        )
        assert all(
            {"file", "severity", "line", "path", "message"} == set(p)
            for p in found
        )

    def test_json_clean(self, capsys, write):
        """
        --json on a clean policy prints an empty list.
        """
        code = main(["check", "--json", write(CLEAN)])
        expected = (0, [])

        assert expected == (code, json.loads(capsys.readouterr().out))

    @pytest.mark.parametrize(
        ("text", "warning"),
        [
            (
                (
                    "policy: p\nrules:\n"
                    "  - {id: r, when: {status: 500, failure: read}, do: abort}\n"
                ),
                "can never match",
            ),
            (
                (
                    "policy: p\nrules:\n"
                    "  - {id: r, when: {status: 503}, do: retry,"
                    " retry: {attempts: unlimited}}\n"
                ),
                "retries without a bound",
            ),
            (
                (
                    "policy: p\nrules:\n"
                    "  - {id: r, when: {status: 429}, do: retry,"
                    " retry: {unsafe_methods: true}}\n"
                ),
                "without a description saying why that is safe",
            ),
            (
                (
                    "policy: p\ndefaults: {server_delay: {max: none}}\nrules:\n"
                    "  - {id: r, when: {status: 429}, do: retry}\n"
                ),
                "server hints have no ceiling",
            ),
            (
                (
                    "policy: p\nrules:\n"
                    "  - {id: r, when: {status: 503}, do: retry,"
                    " retry: {backoff: {initial: 5s, max: 1s}}}\n"
                ),
                "below its initial delay",
            ),
        ],
        ids=[
            "never-matches",
            "unbounded",
            "unsafe",
            "server-delay",
            "backoff",
        ],
    )
    def test_each_warning(self, capsys, write, text, warning):
        """
        Each kind of warning is reported, and fails --strict.
        """
        code = main(["check", "--strict", write(text)])
        out = capsys.readouterr().out

        assert 2 == code
        assert ": warning: " in out
        assert warning in out

    def test_needs_a_file(self, capsys):
        """
        check without a file is a usage error.
        """
        expected = 2

        assert expected == main(["check"])
        assert "FILE" in capsys.readouterr().err


class TestExplain:
    def test_retry_after(self, capsys):
        """
        A 503 with Retry-After: 7 is retried after exactly 7 seconds.
        """
        report = explain(
            capsys,
            "http-default",
            "--status",
            "503",
            "--header",
            "Retry-After: 7",
        )
        expected = {
            "rule": "server-unavailable",
            "action": "retry",
            "delay": 7.0,
            "delay_source": "Retry-After",
            "error": None,
            "alert": None,
            "breaker": None,
            "attempt": 1,
            "next_attempt": 2,
            "schedule": [2.0],
            "delay_range": None,
            "poll_request": None,
            "policy": "http-default",
        }

        assert expected == {k: report[k] for k in expected}
        assert report["reason"].startswith("GET got 503")

    def test_accept(self, capsys):
        """
        A 200 matches no rule of http-default: accept, rule null.
        """
        report = explain(capsys, "http-default", "--status", "200")
        expected = {
            "rule": None,
            "action": "accept",
            "delay": None,
            "error": None,
            "alert": None,
            "breaker": None,
            "schedule": None,
            "reason": "no rule matched",
        }

        assert expected == {k: report[k] for k in expected}

    def test_post_is_not_retried(self, capsys):
        """
        A POST that got a 503 aborts with ServerError: POST is not
        idempotent.
        """
        report = explain(
            capsys, "http-default", "--status", "503", "--method", "POST"
        )
        expected = ("server-unavailable", "abort", "ServerError", None)

        assert expected == (
            report["rule"],
            report["action"],
            report["error"],
            report["delay"],
        )
        assert "not idempotent" in report["reason"]

    def test_idempotency_key(self, capsys):
        """
        A POST carrying an Idempotency-Key request header is retried.
        """
        report = explain(
            capsys,
            "http-default",
            "--status",
            "503",
            "--method",
            "post",
            "--request-header",
            "Idempotency-Key: abc",
        )
        expected = ("retry", "POST")

        assert expected == (report["action"], report["outcome"]["method"])

    def test_connect_failure(self, capsys):
        """
        A connect failure is retried, whatever the method.
        """
        report = explain(
            capsys, "http-default", "--failure", "connect", "--method", "POST"
        )
        expected = ("connect-failed", "retry", "backoff", [0.0, 1.0], "full")

        assert expected == (
            report["rule"],
            report["action"],
            report["delay_source"],
            report["delay_range"],
            report["jitter"],
        )
        assert 0.0 <= report["delay"] <= 1.0

    def test_last_attempt_aborts(self, capsys):
        """
        A 500 on the third attempt of http-default (attempts: 3) aborts.
        """
        report = explain(
            capsys, "http-default", "--status", "500", "--attempt", "3"
        )
        expected = ("server-unavailable", "abort", "ServerError", 3)

        assert expected == (
            report["rule"],
            report["action"],
            report["error"],
            report["attempt"],
        )
        assert "gave up after its 2 retries" in report["reason"]

    def test_seed_reproduces_delay(self, capsys):
        """
        The same --seed draws the same jittered delay.
        """
        args = ("http-default", "--status", "503", "--seed", "42")
        first = explain(capsys, *args)["delay"]
        second = explain(capsys, *args)["delay"]

        assert first == second

    def test_schedule(self, capsys, write):
        """
        The schedule lists the upper bounds of the later retries, up to the
        rule's attempts; the delay range follows the jitter.
        """
        report = explain(
            capsys, write(SIDE_EFFECTS), "--status", "503", "--attempt", "2"
        )
        expected = (3, [4.0, 8.0], [1.0, 2.0], "equal", 5)

        assert expected == (
            report["next_attempt"],
            report["schedule"],
            report["delay_range"],
            report["jitter"],
            report["attempts"],
        )

    def test_alert_and_breaker(self, capsys, write):
        """
        An abort rule's error, alert and breaker are shown.
        """
        path = write(SIDE_EFFECTS)
        report = explain(
            capsys, path, "--status", "402", "--url", "https://x.test/v1/find"
        )
        expected = {
            "rule": "out-of-credits",
            "action": "abort",
            "error": "InsufficientCredits",
            "alert": {
                "kind": "topup",
                "severity": "critical",
                "message": "402 on /v1/find",
                "key": "side-effects:topup",
                "dedupe": 3600.0,
            },
            "breaker": {"name": "credits", "open_for": 600.0},
            "log": "error",
            "description": "the account has no credits left",
            "origin": "side-effects",
        }

        assert expected == {k: report[k] for k in expected}

    def test_poll(self, capsys, write):
        """
        A poll shows its request, its delay and the later polls that fit in
        its deadline.
        """
        report = explain(
            capsys,
            write(SIDE_EFFECTS),
            "--status",
            "202",
            "--url",
            "https://x.test/v1/jobs",
            "--body",
            '{"state": "running", "id": "j 1"}',
        )
        expected = {
            "rule": "job-running",
            "action": "poll",
            "delay": 2.0,
            "delay_source": "schedule",
            "poll": 1,
            "schedule": [4.0, 8.0, 8.0, 8.0],
            "deadline": 30.0,
            "poll_request": {
                "method": "GET",
                "url": "https://x.test/jobs/j%201",
            },
            "gives_up_with": "DeadlineExceeded",
        }

        assert expected == {k: report[k] for k in expected}

    def test_body_not_json(self, capsys, write):
        """
        A --body that is not JSON is still sent, with a note on stderr; body
        rules do not match it.
        """
        code = main(
            [
                "explain",
                write(SIDE_EFFECTS),
                "--status",
                "202",
                "--body",
                "{state: running",
                "--json",
            ]
        )
        captured = capsys.readouterr()

        assert 0 == code
        assert "accept" == json.loads(captured.out)["action"]
        assert "--body is not valid JSON" in captured.err

    def test_repeated_headers_combine(self, capsys, write):
        """
        Repeated --header fields are combined, comma-separated.
        """
        path = write(
            "policy: p\nrules:\n"
            "  - id: both\n"
            "    when: {status: 400, headers: {X-A: 'one, two'}}\n"
            "    do: abort\n"
        )
        report = explain(
            capsys,
            path,
            "--status",
            "400",
            "--header",
            "X-A: one",
            "--header",
            "x-a: two",
        )
        expected = "both"

        assert expected == report["rule"]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "one of the arguments --status --failure is required"),
            (
                ["--status", "503", "--failure", "connect"],
                "not allowed with argument",
            ),
            (["--status", "99"], "expected an HTTP status"),
            (["--status", "503", "--header", "nocolon"], "'Name: value'"),
            (["--failure", "dns"], "invalid choice"),
            (["--status", "503", "--attempt", "0"], "integer >= 1"),
            (
                ["--failure", "read", "--header", "Retry-After: 1"],
                "a transport failure (--failure) has neither",
            ),
        ],
        ids=[
            "neither",
            "both",
            "bad-status",
            "bad-header",
            "bad-failure",
            "bad-attempt",
            "failure-with-header",
        ],
    )
    def test_usage_errors(self, capsys, args, message):
        """
        Usage errors exit 2 with a message on stderr.
        """
        code = main(["explain", "http-default", *args])
        captured = capsys.readouterr()

        assert 2 == code
        assert message in captured.err
        assert "" == captured.out

    def test_policy_does_not_load(self, capsys, write):
        """
        A policy that does not load exits 1 and prints its problems to
        stderr.
        """
        path = write(BROKEN)
        code = main(["explain", path, "--status", "500"])
        captured = capsys.readouterr()

        assert 1 == code
        assert f"{path}:5: $.rules[0].do" in captured.err
        assert "" == captured.out

    def test_human_retry(self, capsys):
        """
        The human report names the rule, the delay and its source, the
        later retries and the reason.
        """
        code = main(
            [
                "explain",
                "http-default",
                "--status",
                "503",
                "--header",
                "Retry-After: 7",
            ]
        )
        out = capsys.readouterr().out

        assert 0 == code
        for line in [
            "policy      http-default",
            "rule        server-unavailable",
            "action      retry: send attempt 2 of 3",
            "delay       7s (from Retry-After)",
            "later       attempt 3 ≤2s (attempts: 3; deadline 5m)",
            "gives up    with ServerError",
            "alert       none",
            "breaker     none",
            "reason      GET got 503: rule 'server-unavailable' retries",
        ]:
            assert line in out

    def test_human_backoff(self, capsys):
        """
        A backoff delay is shown with its jitter range.
        """
        main(["explain", "http-default", "--failure", "timeout"])
        out = capsys.readouterr().out

        assert "(backoff, full jitter over [0s, 1s])" in out

    def test_human_abort(self, capsys, write):
        """
        The human report of an abort shows the error, alert and breaker.
        """
        code = main(["explain", write(SIDE_EFFECTS), "--status", "402"])
        out = capsys.readouterr().out

        assert 0 == code
        for line in [
            "action      abort",
            "error       InsufficientCredits",
            "alert       topup (critical, dedupe 1h)",
            "            402 on /",
            "breaker     opens 'credits' for 10m",
            "            the account has no credits left",
        ]:
            assert line in out

    def test_human_no_rule(self, capsys):
        """
        When no rule matches, the report says so.
        """
        main(["explain", "http-default", "--status", "404"])
        out = capsys.readouterr().out

        assert "rule        none matched" in out
        assert "action      accept: the response is returned" in out

    @pytest.mark.skipif(
        "enrow" not in referee.bundled_names(),
        reason="the bundled enrow policy is not there",
    )
    def test_enrow_out_of_credits(self, capsys):
        """
        Enrow's 402 aborts with InsufficientCredits and a topup alert.
        """
        report = explain(
            capsys,
            "enrow",
            "--status",
            "402",
            "--method",
            "POST",
            "--body",
            '{"reason": "Insufficient credits", "success": false}',
        )
        expected = ("abort", "InsufficientCredits", "topup")

        assert expected == (
            report["action"],
            report["error"],
            report["alert"]["kind"],
        )
