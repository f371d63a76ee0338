"""
`referee simulate POLICY --responses ...`: the attempt loop over scripted
outcomes on a virtual clock, as text and as JSON.
"""

from __future__ import annotations

import itertools
import json

import pytest

import referee
from referee.cli import main
from referee.testing import simulate


def run(capsys, *args):
    """
    Run `referee simulate ...`; return the exit code and stdout.
    """
    code = main(["simulate", *args])
    return code, capsys.readouterr().out


def run_json(capsys, *args):
    """
    Run `referee simulate ... --json` and return the parsed object.
    """
    code, out = run(capsys, *args, "--json")

    assert 0 == code
    return json.loads(out)


class TestText:
    def test_one_line_per_step(self, capsys):
        """
        Each outcome gets a line with its virtual time, outcome, action,
        rule, delay and reason; the result follows.
        """
        code, out = run(
            capsys, "enrow", "--responses", "429,503,200", "--method", "POST"
        )
        lines = out.splitlines()

        assert 0 == code
        assert "policy      enrow (enrow → http-default)" == lines[0]
        assert "request     POST https://api.example.com/" == lines[1]
        assert [
            "at",
            "outcome",
            "action",
            "rule",
            "delay",
            "from",
            "counters",
            "reason",
        ] == lines[2].split()
        assert ["0s", "429", "retry", "rate-limited"] == lines[3].split()[:4]
        assert "POST got 429: rule 'rate-limited' retries in" in lines[3]
        assert ["503", "abort", "server-unavailable", "-"] == lines[4].split()[
            1:5
        ]
        assert lines[5].startswith("result      abort: raises ServerError")
        assert "after 2 outcomes" in lines[5]
        assert "(1 response left unused)" in lines[5]
        assert 6 == len(lines)

    def test_accept(self, capsys):
        """
        A call the policy lets through ends with the response returned.
        """
        _code, out = run(capsys, "http-default", "--responses", "503,200")
        last = out.splitlines()[-1]

        assert last.startswith(
            "result      accept: the response is returned after 2 outcomes, at "
        )

    def test_failure_propagates(self, capsys):
        """
        A transport failure no rule matches propagates.
        """
        _code, out = run(capsys, "enrow", "--responses", "protocol,protocol")
        text = out.splitlines()

        assert "protocol" == text[3].split()[1]

    def test_unfinished(self, capsys):
        """
        When the responses run out first, the result says so and when the
        policy would send again.
        """
        code, out = run(capsys, "enrow", "--responses", "503")
        last = out.splitlines()[-1]

        assert 0 == code
        assert last.startswith(
            "result      unfinished: the responses ran out after 1 outcome "
            "(the last was a retry); the policy would send again at "
        )

    def test_failure_words(self, capsys):
        """
        Failure words are outcomes: connect is retried even for a POST.
        """
        _code, out = run(
            capsys,
            "enrow",
            "--responses",
            "connect, 200",
            "--method",
            "post",
        )
        lines = out.splitlines()

        assert "request     POST https://api.example.com/" == lines[1]
        assert ["connect", "retry", "connect-failed"] == lines[3].split()[1:4]


class TestJSON:
    def test_shape(self, capsys):
        """
        --json prints one object: the request, the steps, whether the
        policy finished, the virtual time and the result.
        """
        data = run_json(
            capsys, "enrow", "--responses", "429,200", "--method", "POST"
        )

        assert {
            "policy",
            "script",
            "method",
            "url",
            "request_headers",
            "start",
            "seed",
            "steps",
            "finished",
            "elapsed",
            "unused",
            "result",
        } == set(data)
        assert ("enrow", "POST", 0, True, 0) == (
            data["policy"],
            data["method"],
            data["seed"],
            data["finished"],
            data["unused"],
        )
        assert {"action": "accept", "rule": None, "error": None} == (
            data["result"]
        )

    def test_times_add_up(self, capsys):
        """
        Each step's virtual time is the sum of the delays before it.
        """
        data = run_json(capsys, "enrow", "--responses", "503,503,503,200")
        steps = data["steps"]

        for before, after in itertools.pairwise(steps):
            assert pytest.approx(before["at"] + before["delay"]) == after["at"]

    def test_steps(self, capsys):
        """
        Each step carries at, status, failure, rule, action, delay, error,
        alert and reason.
        """
        data = run_json(
            capsys, "enrow", "--responses", "429,402", "--method", "POST"
        )
        retry, abort = data["steps"]

        assert {
            "step": 1,
            "line": None,
            "at": 0.0,
            "scripted_at": None,
            "status": 429,
            "failure": None,
            "method": "POST",
            "url": "https://api.example.com/",
            "rule": "rate-limited",
            "rule_index": 6,
            "origin": "enrow",
            "action": "retry",
            "delay_source": "backoff",
            "attempt": 1,
            "attempts": 4,
            "next_attempt": 2,
            "polls": 0,
            "poll": None,
            "error": None,
            "alert": None,
            "pause": None,
            "paused": 0.0,
            "sent": True,
        } == {k: retry[k] for k in retry if k not in ("delay", "reason")}
        assert retry["delay"] > 0
        assert (
            "abort",
            "out-of-credits",
            "InsufficientCredits",
            None,
            retry["delay"],
        ) == (
            abort["action"],
            abort["rule"],
            abort["error"],
            abort["delay"],
            abort["at"],
        )
        assert {
            "kind": "topup",
            "severity": "critical",
            "message": "Enrow is out of credits: 402 on /",
            "key": "enrow:topup",
            "dedupe": 3600.0,
        } == abort["alert"]

    def test_unfinished(self, capsys):
        """
        When the responses run out first, finished is false and there is
        no result.
        """
        data = run_json(capsys, "enrow", "--responses", "503,503")

        assert (False, None, 2) == (
            data["finished"],
            data["result"],
            len(data["steps"]),
        )
        assert (
            pytest.approx(sum(s["delay"] for s in data["steps"]))
            == (data["elapsed"])
        )

    def test_matches_simulate(self, capsys):
        """
        The CLI reports what referee.testing.simulate computes, with the
        same seed.
        """
        data = run_json(
            capsys, "enrow", "--responses", "500,502,504,200", "--seed", "9"
        )
        sim = simulate(
            referee.load_policy("enrow"), [500, 502, 504, 200], seed=9
        )

        assert [s.at for s in sim.steps] == [s["at"] for s in data["steps"]]
        assert sim.elapsed == data["elapsed"]
        assert [type(s.decision).__name__.lower() for s in sim.steps] == [
            s["action"] for s in data["steps"]
        ]

    def test_seed(self, capsys):
        """
        The seed decides the jitter: the same seed, the same delays.
        """
        args = ("enrow", "--responses", "503,503,503", "--seed", "4")
        first = run_json(capsys, *args)
        second = run_json(capsys, *args)

        assert first == second

    def test_url(self, capsys):
        """
        --url sets the request's URL, which alert messages may show.
        """
        data = run_json(
            capsys,
            "enrow",
            "--responses",
            "402",
            "--url",
            "https://api.enrow.io/email/find/single",
        )

        assert (
            "Enrow is out of credits: 402 on /email/find/single"
            == (data["steps"][0]["alert"]["message"])
        )


class TestErrors:
    @pytest.mark.parametrize(
        "responses",
        ["42", "200,nope", "", "200,,200"],
        ids=["status-out-of-range", "unknown-word", "empty", "empty-item"],
    )
    def test_bad_responses(self, capsys, responses):
        """
        Anything but status codes and failure words is a usage error that
        names it.
        """
        code = main(["simulate", "enrow", "--responses", responses])
        err = capsys.readouterr().err

        assert 2 == code
        assert "argument --responses: expected status codes" in err

    def test_outcomes_required(self, capsys):
        """
        The outcomes are required: a script or --responses.
        """
        code = main(["simulate", "enrow"])

        assert 2 == code
        assert "--responses" in capsys.readouterr().err

    def test_bad_policy(self, capsys, tmp_path):
        """
        A policy with errors is reported on stderr; exit 1.
        """
        path = tmp_path / "bad.yaml"
        path.write_text("policy: bad\nrules:\n  - {do: retri}\n")
        code = main(["simulate", str(path), "--responses", "200"])
        captured = capsys.readouterr()

        assert (1, "") == (code, captured.out)
        assert "retri" in captured.err
