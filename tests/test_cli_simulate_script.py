"""
`referee simulate POLICY FILE`: a YAML or JSON script of outcomes (status
or failure, headers, body, request headers, the time each is seen at) run
on a virtual clock, printed as a trail, as text and as JSON; and the
errors of a bad script.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import referee
from referee.cli import main
from referee.testing import simulate


SEARCH = """\
# an Enrow search followed until it is done
request:
  method: GET
  url: https://api.enrow.io/email/find/single?id=s-1
outcomes:
  - status: 429
    headers: {Retry-After: 3}
  - failure: connect
  - status: 200
    body: {qualification: ongoing}
  - status: 200
    body: {qualification: ongoing}
  - status: 200
    at: 20s
    body: {qualification: found, email: ada@x.io}
"""


def write(tmp_path, text, name="script.yaml"):
    """
    Write a script; return its path as a string.
    """
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(capsys, *args):
    """
    Run `referee simulate ...`; return the exit code, stdout and stderr.
    """
    code = main(["simulate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *args):
    """
    Run `referee simulate ... --json` and return the parsed object.
    """
    code, out, err = run(capsys, *args, "--json")

    assert (0, "") == (code, err)
    return json.loads(out)


def rows(out):
    """
    The trail's rows, split on runs of two spaces or more.
    """
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "counters" in line)
    return [
        re.split(r" {2,}", line.strip())
        for line in lines[head + 1 :]
        if line.startswith("  ")
    ]


class TestText:
    def test_trail(self, capsys, tmp_path):
        """
        Each outcome gets its virtual time, the outcome, the action, the
        rule, the delay and where it came from, the counters and the
        reason: a 429's Retry-After, a connect failure's backoff, polls
        on the schedule until the job is done.
        """
        path = write(tmp_path, SEARCH)
        code, out, err = run(capsys, "enrow", path)
        lines = out.splitlines()

        assert (0, "") == (code, err)
        assert (
            "request     GET https://api.enrow.io/email/find/single?id=s-1"
            == lines[1]
        )
        assert (
            f"script      {path}, 5 outcomes; the clock starts at "
            "2026-01-01T00:00:00Z" == lines[2]
        )
        trail = rows(out)
        assert [
            "0s",
            "429",
            "retry",
            "rate-limited",
            "3s",
            "Retry-After",
            "attempt 1 of 4",
        ] == trail[0][:7]
        assert ["3s", "connect", "retry", "connect-failed"] == trail[1][:4]
        assert ("backoff", "attempt 2 of 4") == (trail[1][5], trail[1][6])
        assert [
            ["poll", "search-ongoing", "2s", "schedule", "attempt 3, poll 1"],
            ["poll", "search-ongoing", "3s", "schedule", "attempt 3, poll 2"],
        ] == [row[2:7] for row in trail[2:4]]
        assert ["20s", "200", "accept", "-", "-", "-"] == trail[4][:6]
        assert (
            "result      accept: the response is returned after 5 "
            "outcomes, at 20s" == lines[-1]
        )

    def test_script_option(self, capsys, tmp_path):
        """
        --script FILE is the same as the positional FILE.
        """
        path = write(tmp_path, SEARCH)

        assert run(capsys, "enrow", path) == run(
            capsys, "enrow", "--script", path
        )

    def test_request_headers(self, capsys, tmp_path):
        """
        The request's headers count: a POST that got a 503 is retried when
        it carries an Idempotency-Key (given for the request, or for one
        outcome), and aborted without one.
        """
        keyed = write(
            tmp_path,
            "request: {method: POST, headers: {Idempotency-Key: k-1}}\n"
            "outcomes: [503, 200]\n",
            "keyed.yaml",
        )
        bare = write(
            tmp_path,
            "request: {method: POST}\noutcomes: [503, 200]\n",
            "bare.yaml",
        )
        one = write(
            tmp_path,
            "request: {method: POST}\n"
            "outcomes:\n"
            "  - {status: 503, request_headers: {Idempotency-Key: k-1}}\n"
            "  - 200\n",
            "one.yaml",
        )
        _, keyed_out, _ = run(capsys, "enrow", keyed)
        _, bare_out, _ = run(capsys, "enrow", bare)
        _, one_out, _ = run(capsys, "enrow", one)

        assert (
            "request     POST https://api.example.com/ with Idempotency-Key"
            == keyed_out.splitlines()[1]
        )
        assert ["retry", "accept"] == [r[2] for r in rows(keyed_out)]
        assert ["abort"] == [r[2] for r in rows(bare_out)]
        assert "abort: raises ServerError" in bare_out
        assert ["retry", "accept"] == [r[2] for r in rows(one_out)]

    def test_body_condition(self, capsys, tmp_path):
        """
        A body (a JSON value in the script) meets the rules' body
        conditions: a 422 that says "insufficient" is out of credits; a
        body that is a plain string matches no body condition.
        """
        path = write(
            tmp_path,
            "request: {method: POST}\n"
            "outcomes:\n"
            "  - status: 422\n"
            "    body: {message: Insufficient credits}\n",
        )
        plain = write(
            tmp_path,
            "- {status: 422, body: Insufficient credits}\n",
            "plain.yaml",
        )
        _, out, _ = run(capsys, "enrow", path)
        _, plain_out, _ = run(capsys, "enrow", plain)

        assert ["abort", "out-of-credits"] == rows(out)[0][2:4]
        assert out.splitlines()[-1].startswith(
            "result      abort: raises InsufficientCredits after 1 outcome"
        )
        assert ["accept", "-"] == rows(plain_out)[0][2:4]

    def test_date_and_epoch_hints(self, capsys, tmp_path):
        """
        HTTP-date and epoch hints are read against the virtual clock,
        which starts at the script's start.
        """
        path = write(
            tmp_path,
            "start: 2026-03-01T12:00:00Z\n"
            "request: {method: POST}\n"
            "outcomes:\n"
            "  - status: 429\n"
            "    headers: {Retry-After: 'Sun, 01 Mar 2026 12:00:05 GMT'}\n"
            "  - status: 429\n"
            "    headers: {X-RateLimit-Reset: 1772366420}\n"
            "  - 200\n",
        )
        _, out, _ = run(capsys, "enrow", path)
        trail = rows(out)

        assert "the clock starts at 2026-03-01T12:00:00Z" in out
        assert [
            ("0s", "5s", "Retry-After"),
            ("5s", "15s", "X-RateLimit-Reset"),
        ] == [(r[0], r[4], r[5]) for r in trail[:2]]
        assert "20s" == trail[2][0]

    def test_at_and_deadline(self, capsys, tmp_path):
        """
        An outcome seen late moves the clock on, up to the call's
        deadline: a retry that would overrun it is not taken.  One
        scripted earlier than the policy sends it is seen when it is
        sent, and a note says so.
        """
        path = write(
            tmp_path,
            "- 503\n- {status: 503, at: 1ms}\n- {status: 503, at: 119s}\n",
        )
        _, out, _ = run(capsys, "enrow", path)
        trail = rows(out)
        lines = out.splitlines()

        assert "1m59s" == trail[2][0]
        assert ("abort", "server-unavailable") == (trail[2][2], trail[2][3])
        assert "would overrun the call's deadline of 2m" in trail[2][-1]
        assert (
            f"note        outcome 2 ({tmp_path / 'script.yaml'}:2) is "
            f"scripted at 1ms, but the policy sent it only at {trail[1][0]}: "
            f"it is seen then" == lines[-2]
        )
        assert lines[-1].startswith(
            "result      abort: raises DeadlineExceeded after 3 outcomes"
        )

    def test_bare_list_and_options(self, capsys, tmp_path):
        """
        A script may be a bare list of codes and words; --method and --url
        apply then, and override a script's request.
        """
        path = write(tmp_path, "- 429\n- connect\n- '200'\n")
        _, out, _ = run(
            capsys, "enrow", path, "--method", "post", "--url", "https://e/x"
        )

        assert "request     POST https://e/x" == out.splitlines()[1]
        assert ["429", "connect", "200"] == [r[1] for r in rows(out)]

    def test_unfinished(self, capsys, tmp_path):
        """
        A script that runs out first says so, in outcomes.
        """
        path = write(tmp_path, "- 503\n")
        _, out, _ = run(capsys, "enrow", path)

        assert out.splitlines()[-1].startswith(
            "result      unfinished: the outcomes ran out after 1 outcome"
        )


class TestJSON:
    def test_steps(self, capsys, tmp_path):
        """
        --json prints one object per step: the counters, the rule and its
        position in the policy, the delay and its source, the script's
        line; then the end.
        """
        path = write(tmp_path, SEARCH)
        data = run_json(capsys, "enrow", path)
        first, _, poll, _, last = data["steps"]

        assert (path, "GET", 1767225600.0, True, 20.0) == (
            data["script"],
            data["method"],
            data["start"],
            data["finished"],
            data["elapsed"],
        )
        assert {
            "step": 1,
            "line": 6,
            "at": 0.0,
            "scripted_at": None,
            "status": 429,
            "failure": None,
            "method": "GET",
            "url": "https://api.enrow.io/email/find/single?id=s-1",
            "rule": "rate-limited",
            "rule_index": 6,
            "origin": "enrow",
            "action": "retry",
            "delay": 3.0,
            "delay_source": "Retry-After",
            "attempt": 1,
            "attempts": 4,
            "next_attempt": 2,
            "polls": 0,
            "poll": None,
            "error": None,
            "alert": None,
            "reason": "GET got 429: rule 'rate-limited' retries in 3s "
            "(attempt 2 of 4, delay from Retry-After)",
        } == first
        assert ("poll", "schedule", 1, 0, 3) == (
            poll["action"],
            poll["delay_source"],
            poll["poll"],
            poll["polls"],
            poll["attempt"],
        )
        assert (13, 20.0, 20.0, 2) == (
            last["line"],
            last["at"],
            last["scripted_at"],
            last["polls"],
        )
        assert {"action": "accept", "rule": None, "error": None} == (
            data["result"]
        )

    def test_abort_names_the_error(self, capsys, tmp_path):
        """
        The end of an abort names the error class; a JSON script works as
        a YAML one does.
        """
        path = write(
            tmp_path,
            json.dumps(
                {
                    "request": {"method": "GET"},
                    "outcomes": [
                        {
                            "status": 200,
                            "body": {"general": {"status": "failed"}},
                        }
                    ],
                }
            ),
            "script.json",
        )
        data = run_json(capsys, "enrow", path)

        assert {
            "action": "abort",
            "rule": "bulk-failed",
            "error": "JobFailed",
        } == (data["result"])
        assert None is data["steps"][0]["line"]

    def test_matches_simulate(self, capsys, tmp_path):
        """
        The command reports what referee.testing.simulate computes from the
        same outcomes given as mappings.
        """
        path = write(tmp_path, SEARCH)
        data = run_json(capsys, "enrow", path, "--seed", "3")
        sim = simulate(
            referee.load_policy("enrow"),
            [
                {"status": 429, "headers": {"Retry-After": "3"}},
                {"failure": "connect"},
                {"status": 200, "body": {"qualification": "ongoing"}},
                {"status": 200, "body": {"qualification": "ongoing"}},
                {
                    "status": 200,
                    "at": "20s",
                    "body": {"qualification": "found"},
                },
            ],
            url="https://api.enrow.io/email/find/single?id=s-1",
            seed=3,
            start=1767225600.0,
        )

        assert [s.at for s in sim.steps] == [s["at"] for s in data["steps"]]
        assert [s.decision.reason for s in sim.steps] == [
            s["reason"] for s in data["steps"]
        ]


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "outcomes:\n  - {status: 200, header: {a: b}}\n",
                [
                    (
                        "script.yaml:2: $.outcomes[0].header: unknown key "
                        "'header'; expected status, failure, headers, body, "
                        "request_headers, method, url, at; did you mean "
                        "'headers'?"
                    )
                ],
            ),
            (
                "- 200\n- {status: 99}\n- {failure: dns}\n",
                [
                    (
                        "script.yaml:2: $[1].status: found 99 (an integer); "
                        "expected a status code from 100 to 599"
                    ),
                    (
                        "script.yaml:3: $[2].failure: found 'dns' (a string); "
                        "expected a failure word: connect, protocol, read, "
                        "timeout"
                    ),
                ],
            ),
            (
                "- {status: 200, failure: read}\n",
                [
                    (
                        "script.yaml:1: $[0]: give exactly one of status (a "
                        "response) and failure (a transport failure)"
                    )
                ],
            ),
            (
                "- failure: read\n  body: {a: 1}\n",
                [
                    (
                        "script.yaml:2: $[0].body: a transport failure has no "
                        "response body"
                    )
                ],
            ),
            (
                "- {status: 200, at: soon}\n",
                ["script.yaml:1: $[0].at: found 'soon'; expected a duration"],
            ),
            (
                "- status: 200\n  headers: {Retry-After: [1, 2]}\n",
                [
                    (
                        "script.yaml:2: $[0].headers['Retry-After']: found [1, 2] "
                        "(a list); a header's value is a string or a number"
                    )
                ],
            ),
            (
                "start: yesterday\noutcomes: [200]\n",
                [
                    (
                        "script.yaml:1: $.start: found 'yesterday' (a string); "
                        "expected a time"
                    )
                ],
            ),
            (
                "request: {verb: GET}\noutcomes: [200]\n",
                [
                    (
                        "script.yaml:1: $.request.verb: unknown key 'verb'; "
                        "expected method, url, headers"
                    )
                ],
            ),
            (
                "outcomes:\n  - 200\n bad: indent\n",
                ["script.yaml:3: this is not valid YAML"],
            ),
            (
                "- status: 200\n  body: {day: 2026-01-01}\n",
                ["script.yaml:2: $[0].body: found {'day': "],
            ),
            (
                "request: {method: GET}\n",
                ["script.yaml:1: $: the script has no outcomes"],
            ),
            ("", ["script.yaml: $: the script is empty"]),
            ("outcomes: 200\n", ["script.yaml:1: $.outcomes: found 200"]),
        ],
        ids=[
            "unknown-key",
            "bad-status-and-failure",
            "status-and-failure",
            "failure-with-body",
            "bad-at",
            "bad-header",
            "bad-start",
            "bad-request-key",
            "not-yaml",
            "body-not-json",
            "no-outcomes",
            "empty",
            "outcomes-not-a-list",
        ],
    )
    def test_bad_script(self, capsys, tmp_path, monkeypatch, text, expected):
        """
        A bad script is reported as policy files are, every problem at
        once, each with the file, the line and the path; nothing is
        simulated and the exit code is 1.
        """
        monkeypatch.chdir(tmp_path)
        write(tmp_path, text)
        code, out, err = run(capsys, "enrow", "script.yaml")
        lines = err.splitlines()

        assert (1, "") == (code, out)
        assert len(expected) == len(lines) - 1
        for want, got in zip(expected, lines, strict=False):
            assert got.startswith(want)
        assert lines[-1].startswith("script.yaml: ")
        assert lines[-1].endswith("; nothing was simulated")

    def test_bad_json(self, capsys, tmp_path, monkeypatch):
        """
        JSON syntax errors name their line.
        """
        monkeypatch.chdir(tmp_path)
        write(tmp_path, '[\n  {"status": 200,}\n]\n', "script.json")
        code, _, err = run(capsys, "enrow", "script.json")

        assert 1 == code
        assert err.startswith("script.json:2: this is not valid JSON")

    def test_missing_file(self, capsys, tmp_path):
        """
        A script that cannot be read says why.
        """
        path = str(tmp_path / "nope.yaml")
        code, _, err = run(capsys, "enrow", path)

        assert 1 == code
        assert err.startswith(f"{path}: cannot read the script: ")

    @pytest.mark.parametrize(
        "args",
        [
            ["s.yaml", "--responses", "200"],
            ["s.yaml", "--script", "t.yaml"],
            [],
        ],
        ids=["script-and-responses", "two-scripts", "none"],
    )
    def test_outcomes_once(self, capsys, args):
        """
        The outcomes come from one place: a usage error otherwise.
        """
        code, _, err = run(capsys, "enrow", *args)

        assert 2 == code
        assert "give the outcomes once" in err


class TestDocs:
    def test_sample_is_what_it_prints(self, capsys, tmp_path, monkeypatch):
        """
        The sample in docs/cli.md is what the command prints for the
        script shown beside it.
        """
        page = (
            Path(__file__).resolve().parent.parent / "docs" / "cli.md"
        ).read_text(encoding="utf-8")
        section = page[page.index("## `referee simulate") :]
        script = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
        sample = re.search(
            r"```console\n\$ (.*?)\n(.*?)```", section, re.DOTALL
        )
        assert script is not None
        assert sample is not None
        monkeypatch.chdir(tmp_path)
        write(tmp_path, script.group(1), "search.yaml")
        command = sample.group(1).split()
        assert ["referee", "simulate"] == command[:2]
        code = main(command[1:])

        assert 0 == code
        assert sample.group(2) == capsys.readouterr().out

    def test_tutorial_samples(self, capsys, tmp_path, monkeypatch):
        """
        The tutorial's simulate samples are what the command prints for
        its policy and script.
        """
        page = (
            Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
        ).read_text(encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        for block in re.findall(r"```yaml\n(.*?)```", page, re.DOTALL):
            if block.startswith("policy: transcribe"):
                write(tmp_path, block, "transcribe.yaml")
            elif block.startswith("# job.yaml"):
                write(tmp_path, block, "job.yaml")
        # The GitHub and Stripe runs are checked by tests/test_docs.py.
        samples = [
            (command, output)
            for command, output in re.findall(
                r"```console\n\$ (referee simulate .*?)\n(.*?)```",
                page,
                re.DOTALL,
            )
            if "transcribe.yaml" in command
        ]
        assert 2 == len(samples)
        for command, output in samples:
            code = main(shlex.split(command)[1:])

            assert 0 == code
            assert output == capsys.readouterr().out

    def test_json_sample(self, capsys, tmp_path, monkeypatch):
        """
        The --json sample in docs/cli.md is what the command prints, its
        later steps left out.
        """
        page = (
            Path(__file__).resolve().parent.parent / "docs" / "cli.md"
        ).read_text(encoding="utf-8")
        section = page[page.index("## `referee simulate") :]
        script = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
        sample = re.search(
            r"```console\n\$ referee simulate enrow search.yaml --json\n"
            r"(.*?)```",
            section,
            re.DOTALL,
        )
        assert script is not None
        assert sample is not None
        shown = json.loads(
            sample.group(1).replace("},\n    ...\n  ]", "}\n  ]")
        )
        monkeypatch.chdir(tmp_path)
        write(tmp_path, script.group(1), "search.yaml")
        data = run_json(capsys, "enrow", "search.yaml")
        data["steps"] = data["steps"][:1]

        assert shown == data
