import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from referee._core.hints import FORMATS, default_format, parse_hint


# Sun, 06 Nov 1994 08:49:37 GMT: the example date of RFC 9110.
T = 784111777.0

IMF_FIXDATE = "Sun, 06 Nov 1994 08:49:37 GMT"
RFC_850 = "Sunday, 06-Nov-94 08:49:37 GMT"
ASCTIME = "Sun Nov  6 08:49:37 1994"
DATES = [IMF_FIXDATE, RFC_850, ASCTIME]
DATE_IDS = ["imf-fixdate", "rfc-850", "asctime"]

YEAR_9999 = "Fri, 31 Dec 9999 23:59:59 GMT"
YEAR_9999_TIMESTAMP = 253402300799.0
YEAR_1970 = "Thu, 01 Jan 1970 00:00:00 GMT"

# A valid value and the delay it yields at `T`, for every format.
SAMPLES = {
    "retry-after": ("120", 120.0),
    "ms": ("1500", 1.5),
    "ratelimit": ('"default";r=0;t=10', 10.0),
    "delta": ("2.5", 2.5),
    "epoch": ("784111897", 120.0),
    "date": (IMF_FIXDATE, 0.0),
    "duration": ("6m0s", 360.0),
    "auto": ("1h2m3s", 3723.0),
}

UNUSABLE = [
    "",
    "   ",
    "garbage",
    "-5",
    "+5",
    "1e400",
    "1e3",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1_000",
    "0x10",
    "12abc",
]


class TestFormats:
    def test_names(self):
        """
        FORMATS holds exactly the documented format names.
        """
        assert {
            "retry-after",
            "ms",
            "ratelimit",
            "delta",
            "epoch",
            "date",
            "duration",
            "auto",
        } == FORMATS

    @pytest.mark.parametrize("fmt", sorted(FORMATS), ids=sorted(FORMATS))
    def test_every_format_parses_its_sample(self, fmt):
        """
        Every format reads a valid value of its own.
        """
        value, expected = SAMPLES[fmt]

        assert expected == parse_hint(value, fmt, T)

    @pytest.mark.parametrize(
        "fmt", ["", "seconds", "RETRY-AFTER", "Auto"], ids=str
    )
    def test_unknown_format(self, fmt):
        """
        An unknown format name yields None, even for a plain number.
        """
        assert None is parse_hint("120", fmt, T)


class TestDefaultFormat:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("Retry-After", "retry-after"),
            ("retry-after", "retry-after"),
            ("RETRY-AFTER", "retry-after"),
            ("retry-after-ms", "ms"),
            ("Retry-After-Ms", "ms"),
            ("RateLimit", "ratelimit"),
            ("ratelimit", "ratelimit"),
            ("RATELIMIT", "ratelimit"),
        ],
        ids=[
            "retry-after",
            "retry-after-lower",
            "retry-after-upper",
            "ms",
            "ms-mixed",
            "ratelimit",
            "ratelimit-lower",
            "ratelimit-upper",
        ],
    )
    def test_known_headers(self, header, expected):
        """
        Known headers map to their format, whatever the case of their name.
        """
        assert expected == default_format(header)

    @pytest.mark.parametrize(
        "header",
        [
            "X-RateLimit-Reset",
            "x-ratelimit-reset-requests",
            "RateLimit-Reset",
            "RateLimit-Policy",
            "",
        ],
        ids=str,
    )
    def test_other_headers_are_auto(self, header):
        """
        Every other header is read by shape.
        """
        expected = "auto"

        assert expected == default_format(header)

    def test_defaults_are_formats(self):
        """
        Every default is a known format.
        """
        names = ["Retry-After", "retry-after-ms", "RateLimit", "X-Other"]

        assert {default_format(n) for n in names} <= FORMATS


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("120", 120.0), ("0", 0.0), ("007", 7.0), ("1", 1.0)],
        ids=["120", "zero", "leading-zeros", "one"],
    )
    def test_delay_seconds(self, value, expected):
        """
        delay-seconds is a whole number of seconds.
        """
        assert expected == parse_hint(value, "retry-after", T)

    def test_delay_seconds_ignore_now(self):
        """
        delay-seconds are relative: the clock does not matter.
        """
        expected = 120.0

        assert expected == parse_hint("120", "retry-after", 0.0)

    @pytest.mark.parametrize("value", DATES, ids=DATE_IDS)
    def test_date_in_the_future(self, value):
        """
        An HTTP-date in any of its three forms is a delay from now.
        """
        expected = 120.0

        assert expected == parse_hint(value, "retry-after", T - 120)

    @pytest.mark.parametrize("value", DATES, ids=DATE_IDS)
    def test_date_in_the_past(self, value):
        """
        An HTTP-date in the past yields a negative delay, not clamped.
        """
        expected = -60.0

        assert expected == parse_hint(value, "retry-after", T + 60)

    def test_date_without_zone_is_utc(self):
        """
        A date whose zone is unknown ("-0000") is read as UTC.
        """
        value = "Sun, 06 Nov 1994 08:49:37 -0000"
        expected = 5.0

        assert expected == parse_hint(value, "retry-after", T - 5)

    def test_huge(self):
        """
        A huge delay is returned as it is; capping is the caller's job.
        """
        expected = 99999999999.0

        assert expected == parse_hint("99999999999", "retry-after", T)

    def test_64_digits(self):
        """
        The longest accepted number still converts to a finite float.
        """
        expected = 1e64

        assert expected == parse_hint("9" * 64, "retry-after", T)

    def test_year_9999(self):
        """
        A date in year 9999 is just a very long delay.
        """
        expected = YEAR_9999_TIMESTAMP - T

        assert expected == parse_hint(YEAR_9999, "retry-after", T)

    def test_year_1970(self):
        """
        A date at the Unix epoch lies in the past.
        """
        expected = -T

        assert expected == parse_hint(YEAR_1970, "retry-after", T)

    @pytest.mark.parametrize(
        "value",
        ["1.5", "-5", "+5", "1e3", "12 0", "Sun, 99 Nov 1994 08:49:37 GMT"],
        ids=["fraction", "negative", "plus", "exponent", "space", "bad-day"],
    )
    def test_invalid(self, value):
        """
        Neither delay-seconds nor an HTTP-date is unusable.
        """
        assert None is parse_hint(value, "retry-after", T)

    def test_zone_offset_out_of_range(self):
        """
        A zone offset of a day or more yields None instead of raising.
        """
        value = "Sun, 06 Nov 1994 08:49:37 +9999"

        assert None is parse_hint(value, "retry-after", T)


class TestMs:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("1500", 1.5), ("1500.5", 1.5005), ("0", 0.0), ("20", 0.02)],
        ids=["1500", "decimal", "zero", "20"],
    )
    def test_milliseconds(self, value, expected):
        """
        Milliseconds, whole or decimal, become seconds.
        """
        assert expected == parse_hint(value, "ms", T)

    @pytest.mark.parametrize(
        "value",
        ["-1500", "1500ms", "1.5e3", IMF_FIXDATE, ".5", "5."],
        ids=["negative", "unit", "exponent", "date", "no-whole", "no-frac"],
    )
    def test_invalid(self, value):
        """
        Anything but a non-negative decimal number is unusable.
        """
        assert None is parse_hint(value, "ms", T)


class TestDelta:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("2", 2.0), ("2.5", 2.5), ("0", 0.0), ("0.25", 0.25)],
        ids=["2", "2.5", "zero", "fraction"],
    )
    def test_seconds(self, value, expected):
        """
        Seconds, whole or decimal, are returned as they are.
        """
        assert expected == parse_hint(value, "delta", T)

    def test_huge_is_not_epoch(self):
        """
        A number above 10**9 is still a delay, not a Unix time.
        """
        expected = 1700000000.0

        assert expected == parse_hint("1700000000", "delta", T)

    @pytest.mark.parametrize(
        "value",
        ["-2", "2s", IMF_FIXDATE],
        ids=["negative", "unit", "date"],
    )
    def test_invalid(self, value):
        """
        Anything but a non-negative decimal number is unusable.
        """
        assert None is parse_hint(value, "delta", T)


class TestEpoch:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("784111897", 120.0), ("784111777.5", 0.5)],
        ids=["integer", "decimal"],
    )
    def test_future(self, value, expected):
        """
        A Unix time in the future is a delay from now.
        """
        assert expected == parse_hint(value, "epoch", T)

    def test_past(self):
        """
        A Unix time in the past yields a negative delay, not clamped.
        """
        expected = -77.0

        assert expected == parse_hint("784111700", "epoch", T)

    def test_small_is_still_epoch(self):
        """
        A small number is still a Unix time, long past.
        """
        expected = 10.0 - T

        assert expected == parse_hint("10", "epoch", T)

    @pytest.mark.parametrize(
        "value", ["-1", IMF_FIXDATE, "6m0s"], ids=["negative", "date", "go"]
    )
    def test_invalid(self, value):
        """
        Anything but a non-negative decimal number is unusable.
        """
        assert None is parse_hint(value, "epoch", T)


class TestDate:
    @pytest.mark.parametrize("value", DATES, ids=DATE_IDS)
    def test_future(self, value):
        """
        An HTTP-date in any of its three forms is a delay from now.
        """
        expected = 30.0

        assert expected == parse_hint(value, "date", T - 30)

    @pytest.mark.parametrize("value", DATES, ids=DATE_IDS)
    def test_past(self, value):
        """
        An HTTP-date in the past yields a negative delay.
        """
        expected = -30.0

        assert expected == parse_hint(value, "date", T + 30)

    def test_year_9999(self):
        """
        A date in year 9999 is just a very long delay.
        """
        expected = YEAR_9999_TIMESTAMP - T

        assert expected == parse_hint(YEAR_9999, "date", T)

    def test_year_1970(self):
        """
        A date at the Unix epoch lies in the past.
        """
        expected = -T

        assert expected == parse_hint(YEAR_1970, "date", T)

    @pytest.mark.parametrize(
        "value", ["120", "1.5", "6m0s"], ids=["seconds", "decimal", "go"]
    )
    def test_numbers_are_not_dates(self, value):
        """
        Only an HTTP-date is accepted.
        """
        assert None is parse_hint(value, "date", T)


class TestDuration:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("6m0s", 360.0),
            ("1.5s", 1.5),
            ("20ms", 0.02),
            ("1h2m3s", 3723.0),
            ("500us", 0.0005),
            ("500\u00b5s", 0.0005),
            ("500\u03bcs", 0.0005),
            ("1000000ns", 0.001),
            ("1h", 3600.0),
            ("0s", 0.0),
            ("3s1h", 3603.0),
            (".5s", 0.5),
            ("30", 30.0),
            ("2.5", 2.5),
        ],
        ids=[
            "6m0s",
            "fraction",
            "ms",
            "h-m-s",
            "us",
            "micro-sign",
            "greek-mu",
            "ns",
            "hours",
            "zero",
            "any-order",
            "no-whole",
            "bare-seconds",
            "bare-decimal",
        ],
    )
    def test_durations(self, value, expected):
        """
        Go-style durations and bare numbers of seconds are read.
        """
        assert expected == pytest.approx(parse_hint(value, "duration", T))

    @pytest.mark.parametrize(
        "value",
        ["-1s", "1d", "1 s", "s", "1s2", "1.5.5s", "1e3s", IMF_FIXDATE],
        ids=[
            "negative",
            "days",
            "space",
            "no-number",
            "trailing-number",
            "two-dots",
            "exponent",
            "date",
        ],
    )
    def test_invalid(self, value):
        """
        Anything else is unusable.
        """
        assert None is parse_hint(value, "duration", T)


class TestRatelimit:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ('"default";r=0;t=10', 10.0),
            ('"default";r=50;t=30', 30.0),
            ("default;t=10;r=0", 10.0),
            ('"default"; r=0; t=10', 10.0),
            ('"default";t=7', 7.0),
            ('"a";r=0;t=10;pk=:dXNlcjEyMw==:', 10.0),
            ("limit=100, remaining=0, reset=10", 10.0),
            ("limit=100,remaining=50,reset=25", 25.0),
            ("reset=10", 10.0),
        ],
        ids=[
            "item",
            "not-exhausted",
            "token-params-swapped",
            "spaces",
            "no-r",
            "partition-key",
            "old-dictionary",
            "old-dictionary-compact",
            "old-reset-only",
        ],
    )
    def test_single_policy(self, value, expected):
        """
        The t parameter, or the older reset member, is a delay in seconds.
        """
        assert expected == parse_hint(value, "ratelimit", T)

    def test_largest_exhausted_wins(self):
        """
        With several exhausted policies, the longest reset wins.
        """
        value = '"burst";r=5;t=1, "hour";r=0;t=60, "day";r=0;t=30'
        expected = 60.0

        assert expected == parse_hint(value, "ratelimit", T)

    def test_first_when_none_exhausted(self):
        """
        When no policy is exhausted, the first t is used.
        """
        value = '"burst";r=5;t=3, "hour";r=1;t=60'
        expected = 3.0

        assert expected == parse_hint(value, "ratelimit", T)

    def test_items_without_t_are_skipped(self):
        """
        The first item that has a t sets the delay.
        """
        value = '"a";r=0, "b";r=2;t=9'
        expected = 9.0

        assert expected == parse_hint(value, "ratelimit", T)

    @pytest.mark.parametrize(
        "value",
        [
            '"default";r=0',
            '"default";r=0;t=-1',
            '"default";t=soon',
            "10",
            "limit=100, remaining=0",
            "reset=-5",
            ",",
        ],
        ids=[
            "no-t",
            "negative-t",
            "garbage-t",
            "bare-number",
            "old-no-reset",
            "old-negative",
            "empty-members",
        ],
    )
    def test_invalid(self, value):
        """
        A field without a usable t or reset is unusable.
        """
        assert None is parse_hint(value, "ratelimit", T)


class TestAuto:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("120", 120.0),
            ("2.5", 2.5),
            ("1000000000", 1e9),
            ("784111897", 784111897.0),
        ],
        ids=["seconds", "decimal", "threshold", "below-threshold"],
    )
    def test_small_numbers_are_delays(self, value, expected):
        """
        A number up to 10**9 is a delay in seconds.
        """
        assert expected == parse_hint(value, "auto", T)

    @pytest.mark.parametrize(
        ("value", "now", "expected"),
        [
            ("1700000120", 1700000000.0, 120.0),
            ("1700000000.5", 1700000000.0, 0.5),
            ("1000000001", 1000000011.0, -10.0),
        ],
        ids=["integer", "decimal", "past"],
    )
    def test_large_numbers_are_epoch(self, value, now, expected):
        """
        A number above 10**9 is a Unix time.
        """
        assert expected == parse_hint(value, "auto", now)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("6m0s", 360.0), ("20ms", 0.02), ("500\u00b5s", 0.0005)],
        ids=["6m0s", "ms", "micro-sign"],
    )
    def test_durations(self, value, expected):
        """
        A Go-style duration is read as one.
        """
        assert expected == pytest.approx(parse_hint(value, "auto", T))

    @pytest.mark.parametrize("value", DATES, ids=DATE_IDS)
    def test_dates(self, value):
        """
        An HTTP-date is a delay from now.
        """
        expected = 120.0

        assert expected == parse_hint(value, "auto", T - 120)

    @pytest.mark.parametrize(
        "value",
        ['"default";r=0;t=10', "soon", "-5"],
        ids=["ratelimit", "word", "negative"],
    )
    def test_invalid(self, value):
        """
        A value of any other shape is unusable.
        """
        assert None is parse_hint(value, "auto", T)


class TestRobustness:
    @pytest.mark.parametrize("fmt", sorted(FORMATS), ids=sorted(FORMATS))
    @pytest.mark.parametrize("value", UNUSABLE, ids=repr)
    def test_unusable_in_every_format(self, value, fmt):
        """
        Empty, garbage, negative, exponent, NaN and infinite values yield
        None in every format.
        """
        assert None is parse_hint(value, fmt, T)

    @pytest.mark.parametrize("fmt", sorted(FORMATS), ids=sorted(FORMATS))
    @pytest.mark.parametrize(
        "padding", [" ", "\t", "  \t "], ids=["space", "tab", "mixed"]
    )
    def test_whitespace_is_ignored(self, fmt, padding):
        """
        Leading and trailing whitespace is ignored.
        """
        value, expected = SAMPLES[fmt]

        assert expected == parse_hint(padding + value + padding, fmt, T)

    @pytest.mark.parametrize("fmt", sorted(FORMATS), ids=sorted(FORMATS))
    @pytest.mark.parametrize(
        "value",
        ["\u00b2", "\u0661\u0662", "\uff11\uff12\uff10", "12\u00e9", "\u2009"],
        ids=["superscript", "arabic-digits", "fullwidth", "accent", "space"],
    )
    def test_non_ascii(self, value, fmt):
        """
        Non-ASCII digits and letters are unusable.
        """
        assert None is parse_hint(value, fmt, T)

    @pytest.mark.parametrize("fmt", sorted(FORMATS), ids=sorted(FORMATS))
    def test_too_long(self, fmt):
        """
        A value longer than 64 characters is refused, even a valid one.
        """
        assert None is parse_hint("1" * 65, fmt, T)
        assert None is parse_hint(" " * 62 + "120", fmt, T)

    @pytest.mark.parametrize(
        "fmt", ["ms", "delta", "duration", "auto"], ids=str
    )
    def test_huge_numbers_stay_finite(self, fmt):
        """
        The longest accepted numbers convert to finite floats.
        """
        actual = parse_hint("9" * 64, fmt, T)

        assert actual is not None
        assert math.isfinite(actual)

    @pytest.mark.parametrize(
        ("value", "fmt"),
        [("9" * 64, "epoch"), (YEAR_9999, "date"), ("9" * 64, "auto")],
        ids=["epoch", "date", "auto"],
    )
    def test_extreme_now(self, value, fmt):
        """
        Subtracting an extreme clock never yields an infinity.
        """
        actual = parse_hint(value, fmt, -1.7976931348623157e308)

        assert actual is not None
        assert math.isfinite(actual)


class TestTotality:
    @given(
        value=st.text(),
        fmt=st.sampled_from(sorted(FORMATS)),
        now=st.floats(allow_nan=False, allow_infinity=False),
    )
    def test_any_text(self, value, fmt, now):
        """
        Any text yields None or a finite float, and never raises.
        """
        actual = parse_hint(value, fmt, now)

        assert actual is None or (
            isinstance(actual, float) and math.isfinite(actual)
        )

    @given(
        value=st.text(alphabet='0123456789 .,:;=-+"trGMTSunNovhmsu'),
        fmt=st.sampled_from(sorted(FORMATS)),
        now=st.floats(allow_nan=False, allow_infinity=False),
    )
    def test_any_near_miss(self, value, fmt, now):
        """
        Text made of the characters of valid values yields None or a
        finite float, and never raises.
        """
        actual = parse_hint(value, fmt, now)

        assert actual is None or (
            isinstance(actual, float) and math.isfinite(actual)
        )
