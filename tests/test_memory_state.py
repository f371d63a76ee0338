"""
MemoryState: breakers, retry budgets, rate limits and alert gates, driven
by explicit clocks (nothing here sleeps).
"""

from __future__ import annotations

import heapq
import inspect
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referee._core.backend import (
    BreakerSettings,
    BreakerState,
    BudgetSettings,
    PauseState,
    RateLimitSettings,
    StateBackend,
)
from referee._run.memory import (
    HELD_FOR,
    PACING_MARGIN,
    RATIO_BREAKER,
    SWEEP_EVERY,
    MemoryState,
    interval,
)


FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Trips at 4 outcomes of which half failed, within 10 s; open for 30 s.
RATIO = BreakerSettings(
    failure_ratio=0.5, window=10.0, min_calls=4, open_for=30.0
)
BUDGET = BudgetSettings(tokens=10.0, refill=0.5)


def limit(requests: int, per: float) -> RateLimitSettings:
    return RateLimitSettings(
        requests=requests, per=per, methods=None, by_path=False
    )


def trip(state: MemoryState, now: float, policy: str = "p") -> BreakerState:
    """
    Open the ratio breaker of *policy* at *now* with four failures.
    """
    for _ in range(3):
        state.record_outcome(policy, True, now, RATIO)
    opened = state.record_outcome(policy, True, now, RATIO)
    assert opened is not None
    return opened


#: A window with the pacing margin, less what float sums may lose at
#: Unix times (an ulp there is about 2.4e-7 s).
def padded(per: float) -> float:
    return per * (1 + PACING_MARGIN) - 1e-5


def in_one_window(times: list[float], requests: int, per: float) -> bool:
    """
    Whether some window [t, t + per) holds more than *requests* of *times*.
    """
    ordered = sorted(times)
    return any(
        b < a + per for a, b in zip(ordered, ordered[requests:], strict=False)
    )


class TestProtocol:
    @pytest.mark.parametrize(
        "name",
        [n for n in vars(StateBackend) if not n.startswith("_")],
    )
    def test_signatures_match_the_protocol(self, name):
        """
        Every StateBackend method exists with the protocol's signature.
        """
        expected = inspect.signature(getattr(StateBackend, name))

        assert expected == inspect.signature(getattr(MemoryState, name))


class TestNamedBreakers:
    def test_open_breaker_stops_calls(self):
        """
        An open breaker is returned with its until and rule.
        """
        state = MemoryState()
        state.open_breaker("p", "credits", 100.0, "out-of-credits")

        assert BreakerState("credits", 100.0, "out-of-credits") == (
            state.check_breakers("p", 50.0)
        )

    def test_none_when_nothing_is_open(self):
        """
        A policy without open breakers gets None.
        """
        assert None is MemoryState().check_breakers("p", 0.0)

    @pytest.mark.parametrize(
        ("second", "expected"),
        [(200.0, 200.0), (50.0, 100.0)],
        ids=["later-extends", "earlier-is-ignored"],
    )
    def test_keeps_the_later_until(self, second, expected):
        """
        Opening an open breaker keeps whichever until is later.
        """
        state = MemoryState()
        state.open_breaker("p", "credits", 100.0, "a")
        state.open_breaker("p", "credits", second, "b")

        assert expected == state.check_breakers("p", 10.0).until

    def test_expires_at_until(self):
        """
        A breaker no longer stops calls from its until on, and is dropped.
        """
        state = MemoryState()
        state.open_breaker("p", "credits", 100.0, "r")

        assert None is state.check_breakers("p", 100.0)
        assert {} == state._breakers

    def test_latest_of_several(self):
        """
        Of several open breakers, the one that closes last is returned.
        """
        state = MemoryState()
        state.open_breaker("p", "a", 100.0, "ra")
        state.open_breaker("p", "b", 300.0, "rb")
        state.open_breaker("p", "c", 200.0, "rc")

        assert "b" == state.check_breakers("p", 0.0).name
        assert "b" == state.check_breakers("p", 250.0).name
        assert None is state.check_breakers("p", 300.0)

    def test_policies_are_separate(self):
        """
        A breaker of one policy does not stop another's calls.
        """
        state = MemoryState()
        state.open_breaker("p", "credits", 100.0, "r")

        assert None is state.check_breakers("q", 0.0)


class TestRatioBreaker:
    def test_not_below_min_calls(self):
        """
        Failures fewer than min_calls do not trip it, whatever the ratio.
        """
        state = MemoryState()

        assert [None, None, None] == [
            state.record_outcome("p", True, 0.0, RATIO) for _ in range(3)
        ]
        assert None is state.check_breakers("p", 0.0)

    def test_trips_at_min_calls_and_ratio(self):
        """
        The outcome that brings the window to min_calls at the ratio opens
        it for open_for seconds.
        """
        state = MemoryState()
        state.record_outcome("p", False, 1.0, RATIO)
        state.record_outcome("p", True, 2.0, RATIO)
        state.record_outcome("p", False, 3.0, RATIO)
        opened = state.record_outcome("p", True, 4.0, RATIO)

        assert BreakerState(RATIO_BREAKER, 34.0, None) == opened
        assert opened == state.check_breakers("p", 5.0)

    def test_not_below_the_ratio(self):
        """
        A window with fewer failures than the ratio stays closed.
        """
        state = MemoryState()
        outcomes = [False, True, False, False, True, False, False]

        assert [None] * 7 == [
            state.record_outcome("p", f, float(i), RATIO)
            for i, f in enumerate(outcomes)
        ]

    def test_successes_alone_never_trip(self):
        """
        A ratio of 0 does not open on a window without failures.
        """
        state = MemoryState()
        zero = BreakerSettings(
            failure_ratio=0.0, window=10.0, min_calls=1, open_for=5.0
        )

        assert None is state.record_outcome("p", False, 0.0, zero)

    def test_old_outcomes_slide_out(self):
        """
        Outcomes older than the window no longer count.
        """
        state = MemoryState()
        for _ in range(3):
            state.record_outcome("p", True, 0.0, RATIO)

        assert None is state.record_outcome("p", True, 10.0, RATIO)
        assert None is state.check_breakers("p", 10.0)

    def test_outcomes_while_open_are_ignored(self):
        """
        Calls that were under way when it opened do not change it.
        """
        state = MemoryState()
        opened = trip(state, 0.0)

        assert None is state.record_outcome("p", True, 5.0, RATIO)
        assert None is state.record_outcome("p", False, 6.0, RATIO)
        assert opened == state.check_breakers("p", 7.0)

    def test_half_open_lets_one_probe_through(self):
        """
        When its time is up, the first caller is the probe; the others fail
        fast until the probe could be given up.
        """
        state = MemoryState()
        trip(state, 0.0)

        assert None is state.check_breakers("p", 30.0)
        assert BreakerState(RATIO_BREAKER, 60.0, None) == (
            state.check_breakers("p", 31.0)
        )

    def test_probe_success_closes_with_an_empty_window(self):
        """
        A successful probe closes it, and the old failures are forgotten.
        """
        state = MemoryState()
        trip(state, 0.0)
        state.check_breakers("p", 30.0)

        assert None is state.record_outcome("p", False, 31.0, RATIO)
        assert None is state.check_breakers("p", 32.0)
        assert [None, None, None] == [
            state.record_outcome("p", True, 33.0, RATIO) for _ in range(3)
        ]

    def test_probe_failure_reopens(self):
        """
        A failed probe opens it again for open_for and returns the state.
        """
        state = MemoryState()
        trip(state, 0.0)
        state.check_breakers("p", 30.0)
        reopened = state.record_outcome("p", True, 31.0, RATIO)

        assert BreakerState(RATIO_BREAKER, 61.0, None) == reopened
        assert reopened == state.check_breakers("p", 60.0)
        assert None is state.check_breakers("p", 61.0)

    def test_lost_probe_is_replaced(self):
        """
        A probe that never reports back within open_for lets another go.
        """
        state = MemoryState()
        trip(state, 0.0)
        state.check_breakers("p", 30.0)

        assert None is not state.check_breakers("p", 59.0)
        assert None is state.check_breakers("p", 60.0)
        assert None is not state.check_breakers("p", 60.5)

    def test_named_breaker_does_not_spend_the_probe(self):
        """
        A call a named breaker stops is not taken as the probe.
        """
        state = MemoryState()
        trip(state, 0.0)
        state.open_breaker("p", "credits", 40.0, "r")

        assert "credits" == state.check_breakers("p", 35.0).name
        assert None is state.check_breakers("p", 40.0)

    def test_the_breaker_closing_last_wins(self):
        """
        With the ratio breaker and a named one open, the later is returned.
        """
        state = MemoryState()
        trip(state, 0.0)
        state.open_breaker("p", "short", 10.0, "r")

        assert RATIO_BREAKER == state.check_breakers("p", 5.0).name

        state.open_breaker("p", "long", 100.0, "r")

        assert "long" == state.check_breakers("p", 5.0).name

    def test_concurrent_checkers_get_one_probe(self):
        """
        Of many threads checking a half-open breaker at once, one probes.
        """
        state = MemoryState()
        trip(state, 0.0)
        barrier = threading.Barrier(8)
        results: list[BreakerState | None] = []

        def check():
            barrier.wait()
            results.append(state.check_breakers("p", 30.0))

        threads = [threading.Thread(target=check) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert 1 == results.count(None)
        assert {BreakerState(RATIO_BREAKER, 60.0, None)} == {
            r for r in results if r is not None
        }


class TestBudget:
    def test_throttles_at_half(self):
        """
        Ten tokens allow five retries: the sixth finds only half left.
        """
        state = MemoryState()

        assert [True] * 5 + [False, False] == [
            state.take_retry_token("p", "h", BUDGET) for _ in range(7)
        ]

    def test_fractional_half(self):
        """
        Three tokens allow two retries (1 is at or below 1.5).
        """
        state = MemoryState()
        three = BudgetSettings(tokens=3.0, refill=0.1)

        assert [True, True, False] == [
            state.take_retry_token("p", "h", three) for _ in range(3)
        ]

    def test_refund_reopens_the_budget(self):
        """
        A success refunds refill tokens, enough for one more retry here.
        """
        state = MemoryState()
        for _ in range(5):
            state.take_retry_token("p", "h", BUDGET)
        state.refund("p", "h", BUDGET)

        assert [True, False] == [
            state.take_retry_token("p", "h", BUDGET) for _ in range(2)
        ]

    def test_refund_stops_at_the_maximum(self):
        """
        Refunds never fill the bucket above tokens.
        """
        state = MemoryState()
        state.take_retry_token("p", "h", BUDGET)
        for _ in range(10):
            state.refund("p", "h", BUDGET)

        assert [True] * 5 + [False] == [
            state.take_retry_token("p", "h", BUDGET) for _ in range(6)
        ]
        assert {("p", "h"): 5.0} == state._tokens

    def test_full_bucket_is_not_stored(self):
        """
        A budget back at its maximum leaves no entry behind.
        """
        state = MemoryState()
        state.take_retry_token("p", "h", BUDGET)
        state.refund("p", "h", BUDGET)
        state.refund("p", "h", BUDGET)

        assert {} == state._tokens

    def test_hosts_and_policies_are_separate(self):
        """
        Each policy and host has its own bucket.
        """
        state = MemoryState()
        for _ in range(5):
            state.take_retry_token("p", "a", BUDGET)

        assert [False, True, True] == [
            state.take_retry_token("p", "a", BUDGET),
            state.take_retry_token("p", "b", BUDGET),
            state.take_retry_token("q", "a", BUDGET),
        ]


class TestRateLimit:
    def test_sends_are_spaced_an_interval_apart(self):
        """
        The first send goes at once; each next one an interval later
        (per * 1.05 / requests), and a refusal takes nothing.
        """
        state = MemoryState()
        lim = limit(4, 1.0)  # an interval of 0.2625 s

        assert pytest.approx([0.0, 0.2625, 0.0, 0.1, 0.0]) == [
            state.acquire("p", "b", 0.0, lim),
            state.acquire("p", "b", 0.0, lim),
            state.acquire("p", "b", 0.2625, lim),
            state.acquire("p", "b", 0.425, lim),
            state.acquire("p", "b", 0.525, lim),
        ]

    def test_interval_keeps_the_margin(self):
        """
        requests + 1 sends an interval apart span per and its margin.
        """
        lim = limit(10, 1.0)

        assert 1.0 + PACING_MARGIN == pytest.approx(10 * interval(lim))

    def test_granted_after_the_wait(self):
        """
        Asking again after the returned wait is granted.
        """
        state = MemoryState()
        lim = limit(1, 1.0)
        state.acquire("p", "b", 0.0, lim)
        wait = state.acquire("p", "b", 0.3, lim)

        assert 0.0 == state.acquire("p", "b", 0.3 + wait, lim)

    def test_buckets_are_separate(self):
        """
        Each policy and bucket has its own limit.
        """
        state = MemoryState()
        lim = limit(1, 1.0)

        assert [0.0, 0.0, 0.0] == [
            state.acquire("p", "a", 0.0, lim),
            state.acquire("p", "b", 0.0, lim),
            state.acquire("q", "a", 0.0, lim),
        ]

    def test_a_lagging_clock_waits(self):
        """
        A caller whose clock was read before the last grant waits for the
        next slot after it: grants never go back in time.
        """
        state = MemoryState()
        lim = limit(2, 1.0)
        state.acquire("p", "b", 1.0, lim)

        assert pytest.approx([1.525 - 0.9, 0.0]) == [
            state.acquire("p", "b", 0.9, lim),
            state.acquire("p", "b", 1.525, lim),
        ]

    def test_no_burst_after_a_pause(self):
        """
        After a long pause the first send goes at once and the second
        waits an interval: the idle time is not saved up.
        """
        state = MemoryState()
        lim = limit(5, 1.0)
        state.acquire("p", "b", 0.0, lim)

        assert pytest.approx([0.0, 0.21]) == [
            state.acquire("p", "b", 100.0, lim),
            state.acquire("p", "b", 100.0, lim),
        ]

    def test_one_time_per_bucket(self):
        """
        A bucket's whole state is the time its next send may go.
        """
        state = MemoryState()
        lim = limit(5, 1.0)
        for i in range(50):
            state.acquire("p", "b", i * 0.5, lim)

        assert {("p", "b"): pytest.approx(49 * 0.5 + 0.21)} == state._paces

    @FAST
    @given(
        requests=st.integers(1, 5),
        per=st.sampled_from([0.001, 0.3, 1.0, 2.5, 60.0]),
        start=st.sampled_from([0.0, 1_700_000_000.0]),
        arrivals=st.lists(
            st.floats(0, 30, allow_nan=False), min_size=1, max_size=30
        ),
    )
    def test_no_window_overflows_and_all_get_through(
        self, requests, per, start, arrivals
    ):
        """
        Callers who ask again after the returned wait all get through, and
        no window of per seconds, margin included, holds more than
        requests sends.
        """
        state = MemoryState()
        lim = limit(requests, per)
        queue = [(start + t, i) for i, t in enumerate(arrivals)]
        heapq.heapify(queue)
        granted: list[float] = []
        for _ in range(20_000):
            if not queue:
                break
            now, who = heapq.heappop(queue)
            wait = state.acquire("p", "b", now, lim)
            if wait == 0.0:
                granted.append(now)
            else:
                assert wait > 0.0
                heapq.heappush(queue, (now + wait, who))

        assert len(arrivals) == len(granted)
        assert not in_one_window(granted, requests, padded(per))

    @FAST
    @given(
        requests=st.integers(1, 4),
        per=st.sampled_from([0.3, 1.0, 2.5]),
        callers=st.lists(
            st.tuples(
                st.floats(0, 10, allow_nan=False),
                st.floats(0, 3, allow_nan=False),
            ),
            min_size=1,
            max_size=25,
        ),
    )
    def test_lagging_clocks_never_overflow(self, requests, per, callers):
        """
        Callers whose clocks lag behind (by up to three windows) never
        overfill a window, and all get through.
        """
        state = MemoryState()
        lim = limit(requests, per)
        # (the true time, who, the caller's clock): a caller's clock lags
        # the true time by its own share of per.
        queue = [(t, i, t - lag * per) for i, (t, lag) in enumerate(callers)]
        heapq.heapify(queue)
        granted: list[float] = []
        for _ in range(20_000):
            if not queue:
                break
            _, who, now = heapq.heappop(queue)
            wait = state.acquire("p", "b", now, lim)
            if wait == 0.0:
                granted.append(now)
            else:
                assert wait > 0.0
                lag = callers[who][1] * per
                heapq.heappush(queue, (now + wait + lag, who, now + wait))

        assert len(callers) == len(granted)
        assert not in_one_window(granted, requests, padded(per))

    def test_threads_sharing_a_clock_never_overflow(self):
        """
        Eight threads hammering one limit with a shared fake clock never put
        more than requests sends in a window.
        """
        # Switch threads often, so that clocks are read out of order.
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)
        state = MemoryState()
        lim = limit(5, 0.05)
        clock_lock = threading.Lock()
        clock = [0.0]
        granted: list[float] = []
        barrier = threading.Barrier(8)

        def tick() -> float:
            with clock_lock:
                clock[0] += 0.001
                return clock[0]

        def hammer():
            barrier.wait()
            mine = 0
            while mine < 20:
                now = tick()
                if state.acquire("p", "b", now, lim) == 0.0:
                    granted.append(now)
                    mine += 1

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(old)

        assert 160 == len(granted)
        assert not in_one_window(granted, 5, 0.05)


class TestAlertGate:
    def test_no_window_always_sends(self):
        """
        Without a window every alert goes out and nothing is held.
        """
        state = MemoryState()

        assert [(True, 0)] * 3 == [
            state.alert_gate("k", None, float(i)) for i in range(3)
        ]

    def test_one_per_window_with_the_held_count(self):
        """
        The first goes out, repeats in the window are held and counted, and
        the first after the window reports them.
        """
        state = MemoryState()

        assert [
            (True, 0),
            (False, 1),
            (False, 2),
            (False, 3),
            (True, 3),
            (False, 1),
            (True, 1),
            (True, 0),
        ] == [
            state.alert_gate("k", 60.0, 0.0),
            state.alert_gate("k", 60.0, 1.0),
            state.alert_gate("k", 60.0, 30.0),
            state.alert_gate("k", 60.0, 59.9),
            state.alert_gate("k", 60.0, 60.0),
            state.alert_gate("k", 60.0, 100.0),
            state.alert_gate("k", 60.0, 120.0),
            state.alert_gate("k", 60.0, 500.0),
        ]

    def test_keys_are_separate(self):
        """
        Each key has its own window.
        """
        state = MemoryState()
        state.alert_gate("a", 60.0, 0.0)

        assert (True, 0) == state.alert_gate("b", 60.0, 1.0)

    def test_threads_send_one_and_count_the_rest(self):
        """
        Of many threads alerting at once, one sends; the rest are counted.
        """
        state = MemoryState()
        results: list[tuple[bool, int]] = []

        def alert():
            results.extend(state.alert_gate("k", 60.0, 1.0) for _ in range(50))

        threads = [threading.Thread(target=alert) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert [(True, 0)] == [r for r in results if r[0]]
        assert (True, 399) == state.alert_gate("k", 60.0, 61.0)


class TestHousekeeping:
    def test_stale_entries_are_swept(self):
        """
        Expired breakers, idle logs, closed ratio windows and spent gates
        are dropped by a later sweep.
        """
        state = MemoryState()
        state.open_breaker("p", "a", 10.0, "r")
        state.acquire("p", "path-1", 0.0, limit(1, 1.0))
        state.record_outcome("p", True, 0.0, RATIO)
        state.alert_gate("k", 5.0, 0.0)
        state.check_breakers("q", 0.0)  # the first sweep

        state.check_breakers("q", SWEEP_EVERY)

        assert (0, 0, 0, 0) == (
            len(state._breakers),
            len(state._paces),
            len(state._ratios),
            len(state._gates),
        )

    def test_held_counts_survive_sweeps_for_a_day(self):
        """
        A gate holding repeats is kept for its next alert, up to a day.
        """
        state = MemoryState()
        state.alert_gate("k", 60.0, 0.0)
        state.alert_gate("k", 60.0, 1.0)
        state.check_breakers("q", 0.0)
        state.check_breakers("q", 60.0 + HELD_FOR - 1)

        assert (True, 1) == state.alert_gate("k", 60.0, 60.0 + HELD_FOR)

    def test_open_ratio_breaker_survives_sweeps(self):
        """
        A sweep keeps an open ratio breaker.
        """
        state = MemoryState()
        opened = trip(state, 0.0)
        state.check_breakers("q", 0.0)
        state.check_breakers("q", SWEEP_EVERY)

        assert opened == state.check_breakers("p", 25.0)

    def test_repr_counts_entries(self):
        """
        The repr says how much state is held.
        """
        state = MemoryState()
        state.open_breaker("p", "a", 10.0, "r")
        state.set_pause("p", PauseState("*", 10.0, "r", "wait"))

        assert (
            "<MemoryState breakers=1 budgets=0 rate_limits=0 alert_gates=0"
            " pauses=1>" == repr(state)
        )
