"""
The twilio SDK (9.x) on referee, built as docs/sdks/twilio.md says — the
page's own code is what runs here (tests.recipes) — against a loopback fake
of Lookup v2 that counts what it was sent.  The policy is the bundled
``twilio-lookup``.  twilio retries nothing by default, and nothing here
changes that: the sends are the policy's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from tests.recipes import recipe
from tests.server import RESET, Reply, ScriptedServer


twilio = pytest.importorskip("twilio")

from twilio.base.exceptions import TwilioRestException  # noqa: E402

import referee  # noqa: E402
from referee.testing import AlertCollector, no_sleep  # noqa: E402


if TYPE_CHECKING:
    from collections.abc import Iterator


NUMBER = "+14155552671"
PATH = f"/v2/PhoneNumbers/{NUMBER}"

FOUND = {
    "calling_country_code": "1",
    "country_code": "US",
    "phone_number": NUMBER,
    "national_format": "(415) 555-2671",
    "valid": True,
    "validation_errors": [],
    "url": f"https://lookups.twilio.com{PATH}",
}


def error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


TOO_MANY = error(429, 20429, "Too Many Requests")
NOT_ACTIVE = error(401, 20005, "Account not active")
REFUSED = error(401, 20003, "Authenticate")
BOOM = error(503, 20500, "Service Unavailable")


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def alerts() -> AlertCollector:
    return AlertCollector()


@pytest.fixture
def policy(alerts: AlertCollector) -> referee.Policy:
    return referee.load_policy("twilio-lookup", alert_sinks=[alerts])


@pytest.fixture
def client(server: ScriptedServer, policy: referee.Policy) -> Iterator[Any]:
    """
    The client as the page builds it, its Lookup domain at the fake.
    """
    built = recipe("twilio.md", 0)["twilio_client"](
        "AC123", "token", policy, server.url("")
    )
    yield built
    built.http_client.session.close()


def look_up(client: Any) -> Any:
    return client.lookups.v2.phone_numbers(NUMBER).fetch()


class TestLookup:
    def test_success(self, server, client):
        """
        A number is looked up: one send, with twilio's Basic auth, and
        twilio's instance.
        """
        server.script(PATH, [Reply(200, body=FOUND)])

        got = look_up(client)

        assert NUMBER == got.phone_number
        assert got.valid is True
        assert 1 == server.count(PATH)
        assert server.requests[0].headers["authorization"].startswith("Basic ")

    def test_rate_limit_with_a_hint_is_retried_by_the_policy(
        self, server, client
    ):
        """
        A 429 (20429) with Retry-After is retried after the hinted delay:
        two sends, the instance.
        """
        server.script(
            PATH,
            [
                Reply(429, {"Retry-After": "3"}, TOO_MANY),
                Reply(200, body=FOUND),
            ],
        )

        with no_sleep() as slept:
            got = look_up(client)

        assert NUMBER == got.phone_number
        assert 2 == server.count(PATH)
        assert [3.0] == slept.delays

    def test_rate_limit_forever_costs_the_policys_attempts(
        self, server, client
    ):
        """
        A 429 that never ends: the policy's four sends, then twilio's own
        exception with Twilio's code.
        """
        server.script(PATH, [Reply(429, {"Retry-After": "1"}, TOO_MANY)])

        with no_sleep() as slept, pytest.raises(TwilioRestException) as caught:
            look_up(client)

        assert 4 == server.count(PATH)
        assert [1.0, 1.0, 1.0] == slept.delays
        assert (429, 20429) == (caught.value.status, caught.value.code)

    def test_server_error_forever_costs_the_policys_attempts(
        self, server, client
    ):
        """
        A 503 that never ends: four sends, twilio's exception with
        Twilio's message.
        """
        server.script(PATH, [Reply(503, body=BOOM)])

        with no_sleep(), pytest.raises(TwilioRestException) as caught:
            look_up(client)

        assert 4 == server.count(PATH)
        assert 503 == caught.value.status
        assert "Service Unavailable" in caught.value.msg

    def test_refused_credentials_are_one_send_and_one_alert(
        self, server, client, alerts
    ):
        """
        401 (20003): one send, twilio's exception, one config alert.
        """
        server.script(PATH, [Reply(401, body=REFUSED)])

        with pytest.raises(TwilioRestException) as caught:
            look_up(client)

        assert 1 == server.count(PATH)
        assert 20003 == caught.value.code
        assert ["config"] == [a.kind for a in alerts.alerts]

    def test_dropped_connections_raise_referees_error(self, server, client):
        """
        A GET whose connection drops every time: the policy's four sends,
        then referee's RetriesExhausted as it is (twilio does not wrap
        what its session raises).
        """
        server.script(PATH, [RESET])

        with no_sleep(), pytest.raises(referee.RetriesExhausted):
            look_up(client)

        assert 4 == server.settled_count(PATH, 4)


class TestAccountNotActive:
    def test_one_send_one_alert_and_the_breaker(self, server, client, alerts):
        """
        20005, the account is not active (out of funds): one send,
        twilio's exception with the code, exactly one top-up alert — and
        the credits breaker then stops the next look-ups with nothing
        sent, as referee's own CircuitOpen.
        """
        server.script(PATH, [Reply(401, body=NOT_ACTIVE)])

        with pytest.raises(TwilioRestException) as caught:
            look_up(client)
        for _ in range(2):
            with pytest.raises(referee.CircuitOpen):
                look_up(client)

        assert 1 == server.count(PATH)
        assert 20005 == caught.value.code
        assert ["topup"] == [a.kind for a in alerts.alerts]
        assert "critical" == alerts.alerts[0].severity

    def test_referees_error_is_read_in_a_response_hook(self, server, client):
        """
        The page's on_outcome: the session's response hook receives
        referee's outcome of the response twilio turns into its
        exception — the policy's AccountNotActive, an
        InsufficientCredits, decided by its rule in one attempt.
        """
        outcomes: list[referee.CallOutcome] = []
        recipe("twilio.md", 1)["on_outcome"](
            client.http_client.session, outcomes.append
        )
        server.script(PATH, [Reply(401, body=NOT_ACTIVE)])

        with pytest.raises(TwilioRestException):
            look_up(client)

        (outcome,) = outcomes
        assert "AccountNotActive" == type(outcome.error).__name__
        assert isinstance(outcome.error, referee.InsufficientCredits)
        assert "account-not-active" == outcome.error.rule_id
        assert 1 == len(outcome.trail)

    def test_without_sdk_mode_the_typed_error_is_raised(
        self, server, policy, alerts
    ):
        """
        The page's note: twilio retries nothing, so the adapter without
        sdk=True is sound too, and the caller gets referee's
        AccountNotActive itself, with Twilio's body — one send, one alert.
        """
        from referee.requests import PolicyAdapter

        client = recipe("twilio.md", 0)["twilio_client"](
            "AC123", "token", policy, server.url("")
        )
        client.http_client.session.mount("http://", PolicyAdapter(policy))
        server.script(PATH, [Reply(401, body=NOT_ACTIVE)])

        try:
            with pytest.raises(referee.InsufficientCredits) as caught:
                look_up(client)
        finally:
            client.http_client.session.close()

        assert "AccountNotActive" == type(caught.value).__name__
        assert b"20005" in (caught.value.body or b"")
        assert 1 == server.count(PATH)
        assert ["topup"] == [a.kind for a in alerts.alerts]


class TestThePage:
    def test_the_usage_example_runs(self, server, monkeypatch, capsys):
        """
        The page's ``main()``, with the recipe's default Lookup base
        pointed at the fake: the number and its validity are printed.
        """
        names = recipe("twilio.md", 0)
        build = names["twilio_client"]
        monkeypatch.setattr(build, "__defaults__", (server.url(""),))
        server.script(PATH, [Reply(200, body=FOUND)])

        names["main"]()

        assert f"{NUMBER} True\n" == capsys.readouterr().out

    def test_every_python_block_is_a_recipe_under_test(self):
        """
        The tests above run the page's two blocks; a block added to the
        page fails here until a test runs it.
        """
        from tests.test_sdk_docs import blocks

        assert 2 == len(blocks("twilio.md", "python"))
