"""
Delay floors (``retry.delay_min``): a retry waits max(hint or backoff,
floor), the floor capped by ``server_delay.max`` and never past the
deadline; the reason says where the delay came from.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import textwrap
from pathlib import Path

import pytest

import referee
from referee import (
    Abort,
    AttemptState,
    DeadlineExceeded,
    Retry,
    Snapshot,
    decide,
    load_policy_text,
)
from referee._tools.check import check_policy
from referee._tools.table import retry_text
from referee.testing import simulate


NOW = 1_700_000_000.0
DOCS = Path(__file__).resolve().parent.parent / "docs" / "policy-language.md"


def policy(text: str) -> referee.Policy:
    return load_policy_text(textwrap.dedent(text))


def run(
    pol: referee.Policy,
    snap: Snapshot,
    *,
    attempt: int = 1,
    elapsed: float = 0.0,
) -> referee.Decision:
    state = AttemptState(started=NOW - elapsed, attempt=attempt)
    return decide(pol, snap, state, now=NOW, rng=random.Random(0))


def floored(
    floor: str = "60s",
    *,
    deadline: str = "10m",
    server_delay: str = "{max: 120s, on_exceed: fail}",
) -> referee.Policy:
    """
    A 429 rule with the floor *floor* and a 1s, 2s, 4s... backoff without
    jitter.
    """
    return policy(
        f"""
        policy: t
        defaults:
          deadline: {deadline}
          server_delay: {server_delay}
          retry: {{attempts: 5, backoff: {{initial: 1s, jitter: none}}}}
        rules:
          - id: limited
            when: {{status: 429}}
            do: retry
            retry: {{delay_min: {floor}}}
        """
    )


def limited(retry_after: str | None = None) -> Snapshot:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Snapshot.response(429, headers=headers)


class TestEngine:
    def test_hint_below_the_floor_is_raised(self):
        """
        Retry-After: 5 under a 60s floor waits 60s, and says so.
        """
        d = run(floored(), limited("5"))

        assert Retry is type(d)
        assert 60.0 == d.delay
        assert "Retry-After 5s, raised to the 1m floor" == d.delay_source
        assert d.reason.endswith(
            "retries in 1m (attempt 2 of 5, delay from Retry-After 5s, "
            "raised to the 1m floor)"
        )

    def test_zero_hint_is_raised(self):
        """
        Retry-After: 0 ("now") is raised to the floor as well.
        """
        d = run(floored(), limited("0"))

        assert 60.0 == d.delay
        assert "Retry-After 0s, raised to the 1m floor" == d.delay_source

    @pytest.mark.parametrize("hint", ["60", "90"], ids=["equal", "above"])
    def test_hint_at_or_above_the_floor_stands(self, hint):
        """
        A hint the floor does not raise is taken as it is, and the reason
        names only the header.
        """
        d = run(floored(), limited(hint))

        assert float(hint) == d.delay
        assert "Retry-After" == d.delay_source

    def test_backoff_below_the_floor_is_raised(self):
        """
        Without a hint, the backoff delay (2s before attempt 3) is raised
        to the floor.
        """
        d = run(floored(), limited(), attempt=2)

        assert 60.0 == d.delay
        assert "backoff 2s, raised to the 1m floor" == d.delay_source

    def test_backoff_above_the_floor_stands(self):
        """
        A backoff delay above a small floor is untouched.
        """
        d = run(floored("500ms"), limited(), attempt=2)

        assert 2.0 == d.delay
        assert "backoff" == d.delay_source

    def test_hint_above_server_delay_max_still_fails(self):
        """
        The floor changes nothing for a hint above the ceiling: on_exceed
        fail aborts, as without a floor.
        """
        d = run(floored(), limited("600"))

        assert Abort is type(d)
        assert "above server_delay.max 2m" in d.reason

    def test_hint_above_server_delay_max_is_capped(self):
        """
        With on_exceed cap, a long hint waits the ceiling, which is above
        the floor.
        """
        pol = floored(server_delay="{max: 120s, on_exceed: cap}")

        d = run(pol, limited("600"))

        assert 120.0 == d.delay
        assert "Retry-After (capped)" == d.delay_source

    def test_server_delay_max_caps_the_floor(self):
        """
        A floor above server_delay.max waits the ceiling instead, and the
        reason says why.
        """
        pol = floored("5m", server_delay="{max: 2m, on_exceed: fail}")

        d = run(pol, limited("5"))

        assert 120.0 == d.delay
        assert (
            "Retry-After 5s, raised to the 2m floor (delay_min 5m, capped "
            "by server_delay.max)" == d.delay_source
        )

    def test_floor_past_the_deadline_aborts(self):
        """
        A floor longer than the time left is not waited out: the call
        aborts with DeadlineExceeded, as any over-long delay does.
        """
        pol = floored(deadline="2m")

        d = run(pol, limited("5"), elapsed=90.0)

        assert Abort is type(d)
        assert DeadlineExceeded is d.error
        assert (
            "a retry in 1m would overrun the call's deadline of 2m "
            "(30s left)" in d.reason
        )

    def test_floor_within_the_deadline_is_taken(self):
        """
        The same floor with time enough left is waited.
        """
        d = run(floored(deadline="2m"), limited("5"), elapsed=30.0)

        assert Retry is type(d)
        assert 60.0 == d.delay

    def test_defaults_floor_every_retry_rule(self):
        """
        A floor in defaults.retry applies to every retry rule; a rule's
        ``delay_min: 0`` takes it away.
        """
        pol = policy(
            """
            policy: t
            defaults:
              retry: {delay_min: 30s, backoff: {jitter: none}}
            rules:
              - id: limited
                when: {status: 429}
                do: retry
              - id: unavailable
                when: {status: 503}
                do: retry
                retry: {delay_min: 0}
            """
        )

        assert 30.0 == run(pol, limited("1")).delay
        assert 1.0 == run(pol, Snapshot.response(503)).delay

    def test_no_floor_by_default(self):
        """
        Without delay_min, a short hint is taken as it is.
        """
        pol = policy(
            """
            policy: t
            rules:
              - id: limited
                when: {status: 429}
                do: retry
            """
        )

        assert 5.0 == run(pol, limited("5")).delay


class TestLoading:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [("60s", 60.0), ("1m", 60.0), (90, 90.0), ("250ms", 0.25)],
        ids=["60s", "1m", "number", "ms"],
    )
    def test_durations(self, value, seconds):
        """
        delay_min takes any duration.
        """
        pol = floored(value)

        assert seconds == pol.rule("limited").retry.delay_min

    def test_error_names_the_path(self):
        """
        A delay_min that is not a duration is a PolicyError at its path.
        """
        with pytest.raises(referee.PolicyError) as ei:
            floored("soon")

        (problem,) = ei.value.problems
        assert "$.rules[0].retry.delay_min" == problem.path
        assert "found 'soon'" in problem.message


class TestTools:
    def test_table_shows_the_floor(self):
        """
        ``referee table`` lists the floor with the retry's settings.
        """
        text = retry_text(floored().rule("limited").retry)

        assert "at least 1m" in text

    def test_check_is_quiet_about_a_sane_floor(self):
        """
        A floor under the ceiling and the deadline draws no warning.
        """
        assert [] == check_policy(floored())

    def test_check_warns_about_a_floor_above_the_ceiling(self):
        """
        A floor above server_delay.max is capped: check says so, at the
        rule's delay_min.
        """
        pol = floored("5m", server_delay="{max: 2m, on_exceed: fail}")

        (warning,) = check_policy(pol)

        assert "$.rules[0].retry.delay_min" == warning.path
        assert (
            "waits at least 5m (delay_min), above server_delay.max 2m"
            in warning.message
        )

    def test_check_warns_about_a_floor_as_long_as_the_deadline(self):
        """
        A floor that no retry can fit in the deadline is reported.
        """
        pol = floored("2m", deadline="2m")

        (warning,) = check_policy(pol)

        assert "no such wait fits in the call's deadline of 2m" in (
            warning.message
        )


class TestSimulate:
    def test_github_secondary_rate_limit(self):
        """
        GitHub's secondary rate limit, max(Retry-After, 60s), on a virtual
        clock: the short hint and the missing one wait a minute, the long
        hint stands.
        """
        pol = policy(
            """
            policy: github-secondary
            rules:
              - id: secondary-rate-limit
                when: {status: [403, 429]}
                do: retry
                retry: {attempts: 4, delay_from: [Retry-After], delay_min: 60s}
            """
        )

        sim = simulate(pol, [limited("5"), limited(), limited("90"), 200])

        assert [0.0, 60.0, 120.0, 210.0] == [s.at for s in sim.steps]
        assert sim.finished

    def test_docs_example_prints_what_the_docs_show(
        self, tmp_path, monkeypatch
    ):
        """
        The simulate example of docs/policy-language.md, run on its own
        policy block, prints the output shown under it.
        """
        text = DOCS.read_text(encoding="utf-8")
        yaml = re.search(
            r"```yaml\n(policy: github-secondary\n.*?)```", text, re.DOTALL
        )
        # The python block that loads github.yaml (the page has other
        # simulate examples): no fence inside the match.
        code = re.search(
            r"```python\n(import referee\n(?:(?!```).)*?github\.yaml"
            r"(?:(?!```).)*?)```\s*```text\n(.*?)```",
            text,
            re.DOTALL,
        )
        assert yaml is not None
        assert code is not None
        (tmp_path / "github.yaml").write_text(yaml.group(1), encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        out = io.StringIO()

        with contextlib.redirect_stdout(out):
            exec(code.group(1), {})  # noqa: S102 - the docs' own example

        assert code.group(2) == out.getvalue()
