"""
referee.testing.FakeEnrow over real HTTP, with httpx and requests.

Search durations and the rate limit's window run on a clock the tests move
by hand, so nothing sleeps and nothing depends on timing.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid

import httpx
import pytest
import requests

import referee
from referee.httpx import PolicyTransport
from referee.testing import FakeEnrow, FakeEnrowStats


FINDER = "/email/find/single"
VERIFIER = "/email/verify/single"
PERSON = {"fullname": "Ada Lovelace", "company_domain": "Acme.io"}

# Every httpx client would load the CA bundle (a fifth of a second) for
# the plain-HTTP loopback server; they share one context instead.
TLS = ssl.create_default_context()


def client_for(fake, **kwargs):
    """
    An httpx client for *fake*, with its key unless headers are given.
    """
    kwargs.setdefault("headers", {"x-api-key": fake.api_key})
    return httpx.Client(base_url=fake.url, verify=TLS, **kwargs)


def request(method, url, **kwargs):
    """
    One request from a client of its own, as httpx.request sends it.
    """
    with httpx.Client(verify=TLS) as client:
        return client.request(method, url, **kwargs)


class Clock:
    """
    A monotonic clock that moves only when told.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    """
    The fake's clock.
    """
    return Clock()


@pytest.fixture
def make(clock):
    """
    Start a FakeEnrow (ongoing for exactly 1 s on the test's clock, no
    faults) and an httpx client with its key; both stop after the test.
    """
    started: list[tuple[FakeEnrow, httpx.Client]] = []

    def make(**kwargs):
        kwargs.setdefault("ongoing", (1.0, 1.0))
        kwargs.setdefault("clock", clock)
        fake = FakeEnrow(**kwargs).start()
        client = client_for(fake)
        started.append((fake, client))
        return fake, client

    yield make
    for fake, client in started:
        client.close()
        fake.stop()


def start(client, path=FINDER, payload=None):
    """
    POST a search and return its id.
    """
    if payload is None:
        payload = PERSON if path == FINDER else {"email": "ada@acme.io"}
    response = client.post(path, json=payload)

    assert 200 == response.status_code
    return response.json()["id"]


class TestLifecycle:
    def test_url(self):
        """
        url and base_url are the loopback address and the port.
        """
        with FakeEnrow() as fake:
            expected = f"http://127.0.0.1:{fake.port}"

            assert (expected, expected) == (fake.url, fake.base_url)

    def test_stop_closes_the_port(self):
        """
        After the block, nothing listens on the port any more.
        """
        with FakeEnrow() as fake:
            url = fake.url

        with pytest.raises(httpx.ConnectError):
            request("GET", url + "/account/info")

    def test_bad_ongoing(self):
        """
        An ongoing range that is not a range is refused.
        """
        with pytest.raises(ValueError, match="ongoing must be a range"):
            FakeEnrow(ongoing=(1.0, 0.5))

    def test_no_keys(self):
        """
        A fake without any key is refused.
        """
        with pytest.raises(ValueError, match="at least one API key"):
            FakeEnrow(api_keys=())

    def test_unknown_route(self, make):
        """
        A path Enrow does not serve is a 404 saying so.
        """
        _fake, client = make()
        response = client.get("/email/find/bulk")

        assert (404, {"message": "Cannot GET /email/find/bulk"}) == (
            response.status_code,
            response.json(),
        )


class TestAuth:
    @pytest.mark.parametrize(
        ("method", "path"),
        [("POST", FINDER), ("GET", VERIFIER), ("GET", "/account/info")],
        ids=["finder", "verifier", "account"],
    )
    def test_missing_key(self, make, method, path):
        """
        Without an x-api-key header, every endpoint answers 401 with
        Enrow's message.
        """
        fake, _client = make()
        response = request(method, fake.url + path, json=PERSON)

        assert (
            401,
            {"message": "No apikey found in the x-api-key headers"},
        ) == (response.status_code, response.json())

    def test_wrong_key(self, make):
        """
        An unknown key is a 401 saying it is not valid.
        """
        fake, _client = make()
        response = request(
            "POST",
            fake.url + FINDER,
            json=PERSON,
            headers={"x-api-key": "nope"},
        )

        assert (401, {"message": "This apikey is not valid"}) == (
            response.status_code,
            response.json(),
        )

    def test_other_keys(self, make):
        """
        Every key in api_keys is accepted; the first is api_key.
        """
        fake, _client = make(api_keys=("first", "second"))
        response = request(
            "GET", fake.url + "/account/info", headers={"x-api-key": "second"}
        )

        assert ("first", 200) == (fake.api_key, response.status_code)

    def test_requests(self, make):
        """
        requests gets the same 401 as httpx.
        """
        fake, _client = make()
        response = requests.post(fake.url + FINDER, json=PERSON, timeout=5)

        assert 401 == response.status_code
        assert "No apikey found" in response.json()["message"]


class TestFinder:
    def test_start(self, make):
        """
        A POST starts a search: 200, Enrow's message, a UUID and 1 credit.
        """
        _fake, client = make()
        response = client.post(FINDER, json=PERSON)
        body = response.json()

        assert 200 == response.status_code
        assert "application/json" in response.headers["content-type"]
        assert {"message", "id", "credits_used"} == set(body)
        assert ("Single search operating", 1) == (
            body["message"],
            body["credits_used"],
        )
        assert 4 == uuid.UUID(body["id"]).version

    def test_ongoing_then_valid(self, make, clock):
        """
        The GET answers 202 ongoing until the search's time is up, then 200
        with the email, the qualification and the info.
        """
        _fake, client = make(valid_rate=1.0)
        search_id = start(client)
        first = client.get(FINDER, params={"id": search_id})
        clock.now += 1.0
        done = client.get(FINDER, params={"id": search_id})

        assert (202, {"qualification": "ongoing"}) == (
            first.status_code,
            first.json(),
        )
        assert 200 == done.status_code
        assert {
            "id": search_id,
            "email": "ada.lovelace@acme.io",
            "qualification": "valid",
            "info": {"fullname": "Ada Lovelace", "company_domain": "Acme.io"},
        } == done.json()

    def test_invalid(self, make, clock):
        """
        A search that finds nothing ends invalid, without an email.
        """
        _fake, client = make(valid_rate=0.0)
        search_id = start(client)
        clock.now += 1.0
        body = client.get(FINDER, params={"id": search_id}).json()

        assert ("invalid", None) == (body["qualification"], body["email"])

    def test_custom(self, make, clock):
        """
        The custom field of the POST comes back with the result.
        """
        _fake, client = make()
        search_id = start(client, payload={**PERSON, "custom": {"row": 7}})
        clock.now += 1.0
        body = client.get(FINDER, params={"id": search_id}).json()

        assert {"row": 7} == body["custom"]

    def test_requests(self, make, clock):
        """
        requests sees the same 202, then 200.
        """
        fake, _client = make()
        with requests.Session() as session:
            session.headers["x-api-key"] = fake.api_key
            started = session.post(fake.url + FINDER, json=PERSON, timeout=5)
            url = fake.url + FINDER
            params = {"id": started.json()["id"]}
            first = session.get(url, params=params, timeout=5)
            clock.now += 1.0
            done = session.get(url, params=params, timeout=5)

        assert (202, 200) == (first.status_code, done.status_code)
        assert done.json()["qualification"] in ("valid", "invalid")


class TestVerifier:
    def test_start(self, make):
        """
        A verification costs 0.25 credits.
        """
        _fake, client = make()
        body = client.post(VERIFIER, json={"email": "ada@acme.io"}).json()

        assert ("Single verification operating", 0.25) == (
            body["message"],
            body["credits_used"],
        )

    @pytest.mark.parametrize(
        ("rate", "qualification"),
        [(1.0, "valid"), (0.0, "invalid")],
        ids=["valid", "invalid"],
    )
    def test_result(self, make, clock, rate, qualification):
        """
        After the ongoing phase, the result names the email and its
        qualification.
        """
        _fake, client = make(valid_rate=rate)
        search_id = start(client, VERIFIER)
        clock.now += 1.0
        body = client.get(VERIFIER, params={"id": search_id}).json()

        assert {
            "id": search_id,
            "email": "ada@acme.io",
            "qualification": qualification,
        } == body


class TestBadRequests:
    @pytest.mark.parametrize(
        ("path", "message"),
        [
            (FINDER, "Could not retrieve single search results"),
            (VERIFIER, "Could not retrieve single verification results"),
        ],
        ids=["finder", "verifier"],
    )
    def test_unknown_id(self, make, path, message):
        """
        An unknown id is a 500 (Enrow never answers 404 for ids).
        """
        _fake, client = make()
        response = client.get(path, params={"id": "no-such-id"})

        assert (500, {"message": message}) == (
            response.status_code,
            response.json(),
        )

    def test_id_of_the_other_endpoint(self, make):
        """
        A finder id is unknown to the verifier.
        """
        _fake, client = make()
        search_id = start(client)
        response = client.get(VERIFIER, params={"id": search_id})

        assert 500 == response.status_code

    def test_missing_id(self, make):
        """
        A GET without an id is a 400.
        """
        _fake, client = make()
        response = client.get(FINDER)

        assert (400, {"message": "Missing id in the query params"}) == (
            response.status_code,
            response.json(),
        )

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"", "Missing payload"),
            (b"{not json", "Invalid JSON input"),
            (b"[1, 2]", "Invalid JSON input"),
            (b'{"fullname": "Ada"}', "Missing payload"),
        ],
        ids=["empty", "not-json", "not-an-object", "no-domain"],
    )
    def test_bad_payload(self, make, content, message):
        """
        A POST without a usable payload is a 400 and costs nothing.
        """
        fake, client = make()
        response = client.post(FINDER, content=content)

        assert (400, {"message": message}) == (
            response.status_code,
            response.json(),
        )
        assert 0 == fake.stats().searches_started


class TestRateLimit:
    def test_eleventh_post(self, make):
        """
        The 11th POST within a second is a 429 with Enrow's body and an
        X-RateLimit-Reset in whole epoch seconds, no earlier than now.
        """
        _fake, client = make()
        statuses = [client.post(FINDER, json=PERSON) for _ in range(11)]
        refused = statuses[-1]

        assert [200] * 10 + [429] == [r.status_code for r in statuses]
        assert {"message": "Too Many Requests"} == refused.json()
        assert int(refused.headers["X-RateLimit-Reset"]) >= int(time.time())

    def test_no_reset_header(self, make):
        """
        With reset_header=False, a 429 carries no X-RateLimit-Reset.
        """
        _fake, client = make(rate_limit=1, reset_header=False)
        client.post(FINDER, json=PERSON)
        refused = client.post(FINDER, json=PERSON)

        assert 429 == refused.status_code
        assert "X-RateLimit-Reset" not in refused.headers

    def test_window_slides(self, make, clock):
        """
        A second after the first POST, one more is admitted; refused POSTs
        do not count.
        """
        _fake, client = make(rate_limit=2)
        client.post(FINDER, json=PERSON)
        clock.now += 0.5
        client.post(FINDER, json=PERSON)
        refused = client.post(FINDER, json=PERSON).status_code
        clock.now += 0.5
        statuses = [client.post(FINDER, json=PERSON).status_code]
        statuses.append(client.post(FINDER, json=PERSON).status_code)

        assert (429, [200, 429]) == (refused, statuses)

    def test_per_endpoint(self, make):
        """
        The limit counts each endpoint apart, as Enrow documents.
        """
        _fake, client = make(rate_limit=1)
        client.post(FINDER, json=PERSON)
        response = client.post(VERIFIER, json={"email": "ada@acme.io"})

        assert 200 == response.status_code

    def test_per_key(self, make):
        """
        The limit counts each key apart.
        """
        fake, client = make(rate_limit=1, api_keys=("a", "b"))
        client.post(FINDER, json=PERSON)
        response = request(
            "POST", fake.url + FINDER, json=PERSON, headers={"x-api-key": "b"}
        )

        assert 200 == response.status_code

    def test_gets_are_not_limited(self, make):
        """
        GETs are never refused with 429.
        """
        _fake, client = make(rate_limit=1)
        search_id = start(client)
        statuses = {
            client.get(FINDER, params={"id": search_id}).status_code
            for _ in range(15)
        }

        assert {202} == statuses

    def test_no_limit(self, make):
        """
        With rate_limit=None, nothing is refused.
        """
        _fake, client = make(rate_limit=None)
        statuses = {
            client.post(FINDER, json=PERSON).status_code for _ in range(15)
        }

        assert {200} == statuses


class TestCredits:
    def test_runs_out(self, make):
        """
        A POST the balance cannot pay for is a 402 with the body of single
        endpoints; a cheaper one still goes through.
        """
        fake, client = make(credits=1.5)
        first = client.post(FINDER, json=PERSON)
        refused = client.post(FINDER, json=PERSON)
        cheaper = client.post(VERIFIER, json={"email": "ada@acme.io"})

        assert (200, 402, 200) == (
            first.status_code,
            refused.status_code,
            cheaper.status_code,
        )
        assert {"reason": "Insufficient credits", "success": False} == (
            refused.json()
        )
        assert 0.25 == fake.credits

    def test_account_info(self, make):
        """
        GET /account/info shows the balance.
        """
        _fake, client = make(credits=2)
        start(client, VERIFIER)
        body = client.get("/account/info").json()

        assert {"credits": 1.75, "webhooks": []} == body

    def test_top_up(self, make):
        """
        top_up adds credits: a refused search then goes through.
        """
        fake, client = make(credits=0)
        refused = client.post(FINDER, json=PERSON).status_code
        fake.top_up(1)
        accepted = client.post(FINDER, json=PERSON).status_code

        assert (402, 200) == (refused, accepted)


class TestFaults:
    def test_every_request(self, make):
        """
        At fault_rate=1, every authenticated request fails with one of the
        fault statuses, and nothing is started or charged.
        """
        fake, client = make(fault_rate=1.0, credits=5)
        responses = [client.post(FINDER, json=PERSON) for _ in range(8)]
        responses.append(client.get("/account/info"))

        assert {500, 503} >= {r.status_code for r in responses}
        assert {
            "Internal Server Error",
            "Service Unavailable",
        } >= {r.json()["message"] for r in responses}
        assert (0, 5.0) == (fake.stats().searches_started, fake.credits)

    def test_statuses(self, make):
        """
        fault_statuses chooses the statuses.
        """
        _fake, client = make(fault_rate=1.0, fault_statuses=(503,))
        response = client.get("/account/info")

        assert 503 == response.status_code

    def test_auth_first(self, make):
        """
        Faults strike authenticated requests only: a missing key is still
        a 401.
        """
        fake, _client = make(fault_rate=1.0)
        response = request("GET", fake.url + "/account/info")

        assert 401 == response.status_code

    def test_rate(self, make):
        """
        A fault rate of 0.5 fails some requests, not all.
        """
        _fake, client = make(fault_rate=0.5, seed=3)
        statuses = [client.get("/account/info").status_code for _ in range(40)]

        assert 0 < statuses.count(200) < 40


class TestSeed:
    def test_same_seed_same_answers(self, clock):
        """
        Two fakes with the same seed give the same ids and results to the
        same requests.
        """

        def run():
            with FakeEnrow(seed=7, ongoing=(0.0, 0.0), clock=clock) as fake:
                client = client_for(fake)
                with client:
                    ids = [start(client) for _ in range(5)]
                    return [
                        client.get(FINDER, params={"id": i}).json()
                        for i in ids
                    ]

        assert run() == run()

    def test_one_stream_per_endpoint(self, clock):
        """
        The n-th request to an endpoint draws the same numbers whatever
        requests to other endpoints come in between.
        """

        def finder_ids(verifications):
            with FakeEnrow(seed=7, clock=clock) as fake, client_for(fake) as c:
                ids = []
                for _ in range(3):
                    ids.append(start(c))
                    for _ in range(verifications):
                        start(c, VERIFIER)
                return ids

        assert finder_ids(0) == finder_ids(2)


class TestStats:
    def test_counters(self, make, clock):
        """
        stats() counts requests by endpoint and status, searches started
        and finished, and credits spent.
        """
        fake, client = make(credits=1.25)
        finder = start(client)
        verifier = start(client, VERIFIER)
        client.post(FINDER, json=PERSON)  # 402
        client.get(FINDER, params={"id": finder})  # 202
        clock.now += 1.0
        client.get(FINDER, params={"id": finder})  # 200
        client.get(FINDER, params={"id": finder})  # 200 again
        client.get(VERIFIER, params={"id": "nope"})  # 500
        stats = fake.stats()

        assert (
            FakeEnrowStats(
                requests={
                    ("POST /email/find/single", 200): 1,
                    ("POST /email/verify/single", 200): 1,
                    ("POST /email/find/single", 402): 1,
                    ("GET /email/find/single", 202): 1,
                    ("GET /email/find/single", 200): 2,
                    ("GET /email/verify/single", 500): 1,
                },
                searches_started=2,
                searches_finished=1,
                credits_spent=1.25,
                credits_left=0.0,
            )
            == stats
        )
        assert 7 == stats.total
        assert (4, 3, 1) == (
            stats.count(status=200),
            stats.count("GET /email/find/single"),
            stats.count("POST /email/find/single", 402),
        )
        assert verifier != finder

    def test_thread_safe(self, make):
        """
        Concurrent POSTs from many threads are all counted and charged.
        """
        fake, _client = make(rate_limit=None, credits=1000)

        def post_many():
            with client_for(fake) as client:
                for _ in range(10):
                    client.post(VERIFIER, json={"email": "a@b.io"})

        threads = [threading.Thread(target=post_many) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = fake.stats()

        assert (80, 80, 20.0, 980.0) == (
            stats.count("POST /email/verify/single", 200),
            stats.searches_started,
            stats.credits_spent,
            fake.credits,
        )


class TestWithPolicy:
    def test_enrow_policy_polls_and_retries(self, make):
        """
        Through the enrow policy (with short delays), one GET returns the
        final result: the policy polled; and a POST refused by the rate
        limit is retried, then admitted.
        """
        policy = referee.load_policy_text(
            """
            policy: quick-enrow
            extends: enrow
            defaults:
              retry: {backoff: {initial: 0.5s, jitter: none}}
              poll: {initial: 0.02s}
            """
        )
        fake, _client = make(
            ongoing=(0.02, 0.05),
            clock=time.monotonic,
            rate_limit=1,
            rate_window=0.5,
            reset_header=False,
        )
        inner = httpx.HTTPTransport(verify=TLS)
        with client_for(
            fake, transport=PolicyTransport(policy, inner)
        ) as client:
            ids = [start(client) for _ in range(2)]
            done = client.get(FINDER, params={"id": ids[-1]})
        stats = fake.stats()

        assert done.json()["qualification"] in ("valid", "invalid")
        assert 1 <= stats.count("GET /email/find/single", 202)
        assert 1 <= stats.count("POST /email/find/single", 429)
        assert 2 == stats.searches_started
