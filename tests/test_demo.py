"""
`referee demo`, end to end: the fake Enrow on loopback, a real httpx client,
the enrow policy with the demo's timings, real sleeps (short ones).
"""

from __future__ import annotations

import io
import re
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
import structlog

from referee._tools.demo import _Job, default_credits, run_demo
from referee.cli import main


def field(out, label):
    """
    The number and the text of a summary row.
    """
    match = re.search(
        rf"^{re.escape(label)} +(\S+)(?: +(.*))?$", out, re.MULTILINE
    )

    assert match is not None, f"no row {label!r} in:\n{out}"
    return match.group(1), match.group(2) or ""


def counts(text):
    """
    ``{"ok": 9, "aborted": 3}`` from ``ok 9, aborted 3``.
    """
    pairs = (item.rsplit(" ", 1) for item in text.split(", "))
    return {name: int(n) for name, n in pairs}


class TTY(io.StringIO):
    """
    A stream that says it is a terminal.
    """

    def isatty(self):
        return True


@pytest.fixture(scope="module")
def demo():
    """
    One run of `referee demo --calls 12 --seed 3 --no-progress`: its exit
    code, stdout and stderr.
    """
    # capsys is function-scoped; the run is shared by the tests below.
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["demo", "--calls", "12", "--seed", "3", "--no-progress"])
    return code, out.getvalue(), err.getvalue()


class TestDemo:
    def test_exit_code(self, demo):
        """
        The demo exits 0 and writes nothing to stderr without a progress
        line.
        """
        code, _out, err = demo

        assert (0, "") == (code, err)

    def test_header(self, demo):
        """
        The header says which policy ran, honestly: with the demo's
        timings.
        """
        _code, out, _err = demo

        assert out.startswith(
            "referee demo: enrow policy with demo timings (polls from "
            "200ms, retry backoff from 200ms)\n"
        )
        assert "fake Enrow API: http://127.0.0.1:" in out
        assert "client: httpx, 12 calls from 8 workers, seed 3" in out

    def test_sections(self, demo):
        """
        The summary has a row for each part of the story.
        """
        _code, out, _err = demo
        labels = [
            "calls",
            "requests sent",
            "retries",
            "polls",
            "aborts",
            "alerts raised",
            "server answered",
            "credits spent",
            "log events",
            "wall time",
        ]

        for label in labels:
            field(out, label)

    def test_calls_accounted_for(self, demo):
        """
        ok + aborted == calls, and the finder and verifier rows add up to
        the calls.
        """
        _code, out, _err = demo
        n, text = field(out, "calls")
        split = counts(text)
        finder = int(field(out, "  email finder")[0])
        verifier = int(field(out, "  email verifier")[0])

        assert 12 == int(n) == split["ok"] + split["aborted"]
        assert 12 == finder + verifier

    def test_requests_match_the_server(self, demo):
        """
        The client's count of requests sent is the server's count of
        requests answered; every call sent at least one.
        """
        _code, out, _err = demo
        sent = int(field(out, "requests sent")[0])
        answered = int(field(out, "server answered")[0])

        assert sent == answered >= 12

    def test_polls(self, demo):
        """
        The GETs were polled by the search-ongoing rule: every search
        starts ongoing.
        """
        _code, out, _err = demo
        polls = int(field(out, "polls")[0])

        assert polls >= 1
        assert polls == int(field(out, "  search-ongoing")[0])

    def test_out_of_credits(self, demo):
        """
        The balance runs out near the end: 402s become InsufficientCredits
        aborts, each raising a topup alert.
        """
        _code, out, _err = demo
        aborted = int(field(out, "  InsufficientCredits")[0])
        alerts = int(field(out, "alerts raised")[0])
        topup, text = field(out, "  topup (critical)")

        assert aborted >= 1
        assert aborted == alerts == int(topup)
        assert "Enrow is out of credits: 402" in text
        assert "dedupe 1h" in text

    def test_credits_spent(self, demo):
        """
        The fake spent its balance down to less than one search's price:
        the 402s came when the account could not pay.
        """
        _code, out, _err = demo
        spent, text = field(out, "credits spent")
        balance = float(re.match(r"of ([\d.]+);", text).group(1))

        assert 0 <= balance - float(spent) < 1

    def test_structlog_restored(self):
        """
        The demo configures structlog for its run only.
        """
        before = structlog.get_config()
        run_demo(calls=2, seed=1, credits=0, progress=False, out=io.StringIO())

        assert before == structlog.get_config()


class TestOptions:
    def test_no_credits(self, capsys):
        """
        With --credits 0 every call is aborted with InsufficientCredits.
        """
        code = main(["demo", "--calls", "4", "--credits", "0"])
        out = capsys.readouterr().out

        assert 0 == code
        assert {"ok": 0, "aborted": 4} == counts(field(out, "calls")[1])
        # The first 402 opens the credits breaker: the calls after it fail
        # fast (CircuitOpen) without spending a request.
        found = re.search(r"^  CircuitOpen +(\d+)", out, re.MULTILINE)
        stopped = int(found.group(1)) if found else 0
        assert 4 == int(field(out, "  InsufficientCredits")[0]) + stopped

    def test_other_policy(self, capsys):
        """
        --policy http-default runs without the enrow rules: nobody polls,
        so the calls return while their searches are still ongoing.
        """
        args = ["--calls", "3", "--credits", "100", "--policy", "http-default"]
        code = main(["demo", *args])
        out = capsys.readouterr().out

        assert 0 == code
        assert out.startswith("referee demo: http-default policy with demo")
        assert "0" == field(out, "polls")[0]
        assert "ongoing" in out

    def test_bad_policy(self, capsys):
        """
        A policy that does not load is reported on stderr; exit 1.
        """
        code = main(["demo", "--policy", "no-such-policy"])
        err = capsys.readouterr().err

        assert 1 == code
        assert "no bundled policy named 'no-such-policy'" in err

    @pytest.mark.parametrize(
        "args",
        [["--calls", "0"], ["--credits", "-1"], ["--workers", "x"]],
        ids=["calls", "credits", "workers"],
    )
    def test_usage_errors(self, capsys, args):
        """
        Bad option values are usage errors.
        """
        code = main(["demo", *args])

        assert 2 == code
        assert "referee demo: error:" in capsys.readouterr().err

    def test_without_httpx(self, capsys, monkeypatch):
        """
        Without httpx, the demo says how to install it and exits 1.
        """
        monkeypatch.setitem(sys.modules, "httpx", None)
        monkeypatch.setitem(sys.modules, "referee.httpx", None)
        code = main(["demo", "--calls", "1"])
        captured = capsys.readouterr()

        assert (1, "") == (code, captured.out)
        assert "pip install referee[httpx]" in captured.err


class TestProgress:
    def test_on_a_terminal(self):
        """
        On a terminal, a progress line is redrawn with carriage returns and
        ends with the final count and a newline.
        """
        err = TTY()
        run_demo(calls=3, seed=2, credits=0, out=io.StringIO(), err=err)
        text = err.getvalue()

        assert text.startswith("\rreferee demo: ")
        assert text.endswith("\n")
        assert "3/3 calls" in text.rsplit("\r", 1)[-1]

    def test_turned_off(self):
        """
        progress=False keeps a terminal quiet.
        """
        err = TTY()
        run_demo(
            calls=2,
            seed=2,
            credits=0,
            progress=False,
            out=io.StringIO(),
            err=err,
        )

        assert "" == err.getvalue()

    def test_not_a_terminal(self):
        """
        A stderr that is not a terminal gets no progress line.
        """
        err = io.StringIO()
        run_demo(calls=2, seed=2, credits=0, out=io.StringIO(), err=err)

        assert "" == err.getvalue()


class TestDefaultCredits:
    def test_all_but_the_last_fifth(self):
        """
        The default balance pays for all but the last fifth of the calls
        (at least three).
        """
        jobs = [_Job(n, "/email/find/single", {}) for n in range(20)]

        assert (16.0, 0.0) == (
            default_credits(jobs),
            default_credits(jobs[:2]),
        )
