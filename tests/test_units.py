"""
Numbers as referee renders them: one formatter for durations, one for
other numbers, and delays recorded to the microsecond.
"""

from __future__ import annotations

import math

import httpx
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

import referee
from referee import Snapshot
from referee._core.units import (
    format_duration,
    format_number,
    parse_duration,
    round_seconds,
)
from referee.httpx import PolicyTransport
from referee.testing import no_sleep


NOW = 1_700_000_000.0

#: 100ms times 3, 9, 27: 0.30000000000000004 and 2.7000000000000002 in
#: binary floating point.
NOISY = """
policy: noisy
defaults:
  deadline: 1h
  retry:
    attempts: 5
    backoff: {initial: 100ms, multiplier: 3, max: 1h, jitter: none}
rules:
  - {id: busy, when: {status: 503}, do: retry}
"""


class TestFormatDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "0s"),
            (4e-7, "0s"),
            (1e-6, "0.001ms"),
            (0.0005, "0.5ms"),
            (0.0123456, "12.3ms"),
            (0.25, "250ms"),
            (0.1 * 3, "300ms"),
            (0.9994, "999ms"),
            (0.9996, "1s"),
            (1, "1s"),
            (1.5, "1.5s"),
            (1.25, "1.25s"),
            (12.345, "12.3s"),
            (0.1 * 27, "2.7s"),
            (59.94, "59.9s"),
            (59.96, "1m"),
            (60, "1m"),
            (90, "1m30s"),
            (1500, "25m"),
            (3600, "1h"),
            (3725, "1h2m5s"),
            (5400, "1h30m"),
            (86400, "24h"),
            (2 * 86400, "2d"),
            (2.5 * 86400, "2d12h"),
            (1e9, "11574d2h"),
            (math.inf, "none"),
            (-2.5, "-2.5s"),
            (math.nan, "?"),
        ],
        ids=repr,
    )
    def test_table(self, seconds, text):
        """
        Three significant digits below a minute, whole seconds above,
        whole hours from two days; never an exponent or float noise.
        """
        assert text == format_duration(seconds)

    @given(st.floats(min_value=1e-3, max_value=1e9))
    def test_reads_back(self, seconds):
        """
        What is rendered is a duration a policy file may write, within
        the rounding: 0.5% below a minute, half a second below two days,
        half an hour above.
        """
        back = parse_duration(format_duration(seconds))

        if seconds < 60:
            assert back == pytest.approx(seconds, rel=5e-3)
        elif seconds < 2 * 86400:
            assert abs(back - seconds) <= 0.5
        else:
            assert abs(back - seconds) <= 1800


class TestFormatNumber:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (0, "0"),
            (2.0, "2"),
            (1.5, "1.5"),
            (0.1 + 0.2, "0.3"),
            (1 / 3, "0.333333"),
            (2.5e-5, "0.000025"),
            (1e-7, "0.0000001"),
            (-1.5e-7, "-0.00000015"),
            (1e6, "1000000"),
            (123456.7, "123457"),
            (1e20, "100000000000000000000"),
            (math.inf, "inf"),
        ],
        ids=repr,
    )
    def test_table(self, value, text):
        """
        Six significant digits, whole numbers written out, no exponent.
        """
        assert text == format_number(value)


class TestRoundSeconds:
    def test_noise_goes(self):
        """
        A delay is kept to the microsecond.
        """
        assert (0.3, 2.7, 1.234568) == (
            round_seconds(0.1 * 3),
            round_seconds(0.1 * 27),
            round_seconds(1.2345678),
        )


class TestRendered:
    def test_reason_of_a_long_wait(self):
        """
        A retry in 1,500 s reads "25m" in its reason, not "1.5e+03s".
        """
        pol = referee.load_policy_text(
            """
policy: t
defaults: {deadline: 1h, server_delay: {max: 1h}}
rules: [{id: busy, when: {status: 503}, do: retry}]
"""
        )
        snap = Snapshot.response(503, headers={"Retry-After": "1500"})

        d = referee.decide(
            pol, snap, referee.AttemptState(started=NOW), now=NOW
        )

        assert (
            "GET got 503: rule 'busy' retries in 25m (attempt 2 of 3, delay "
            "from Retry-After)"
        ) == d.reason

    def test_schedule_is_kept_to_the_microsecond(self):
        """
        The compiled schedule holds 0.3, not 0.30000000000000004.
        """
        pol = referee.load_policy_text(NOISY)

        assert (0.1, 0.3, 0.9, 2.7) == pol.rule("busy").retry.schedule[:4]

    def test_log_lines_trail_and_delays_carry_no_noise(self):
        """
        Through a real client, the delays slept, the trail's records and
        the referee.decision events hold 0.3 and 2.7, and the reasons
        read 300ms and 2.7s.
        """
        pol = referee.load_policy_text(NOISY)
        transport = PolicyTransport(
            pol, transport=httpx.MockTransport(lambda _r: httpx.Response(503))
        )

        with (
            no_sleep() as slept,
            structlog.testing.capture_logs() as logs,
            httpx.Client(transport=transport) as client,
            pytest.raises(referee.RetriesExhausted) as ei,
        ):
            client.get("https://api.example/jobs")
        events = [e for e in logs if e["event"] == "referee.decision"]

        assert [0.1, 0.3, 0.9, 2.7] == slept.delays
        assert [0.1, 0.3, 0.9, 2.7, None] == [r.delay for r in ei.value.trail]
        assert [0.1, 0.3, 0.9, 2.7, None] == [e["delay"] for e in events]
        assert [
            f"GET got 503: rule 'busy' retries in {text} (attempt {n} of 5, "
            f"delay from backoff)"
            for n, text in [
                (2, "100ms"),
                (3, "300ms"),
                (4, "900ms"),
                (5, "2.7s"),
            ]
        ] == [e["reason"] for e in events[:4]]
