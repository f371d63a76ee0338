"""
Conditions on the request's headers (``when: {request_headers: ...}``):
matched like response headers, by case-insensitive name and with the same
value operators, against the headers the attempt sent; through the engine,
the tools, and httpx over real HTTP.
"""

from __future__ import annotations

import asyncio
import random
import textwrap
import threading
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest
from tests.server import RESET, Reply, ScriptedServer

import referee
from referee import (
    Abort,
    AttemptState,
    Retry,
    ServerError,
    Snapshot,
    decide,
    load_policy_text,
)
from referee._tools.check import check_policy
from referee._tools.table import render_condition
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.testing import no_sleep


if TYPE_CHECKING:
    from collections.abc import Iterator


NOW = 1_700_000_000.0


def policy(text: str) -> referee.Policy:
    return load_policy_text(textwrap.dedent(text))


def run(pol: referee.Policy, snap: Snapshot) -> referee.Decision:
    return decide(
        pol, snap, AttemptState(started=NOW), now=NOW, rng=random.Random(0)
    )


#: A 503 is retried only for requests that say they may wait.
PATIENT = policy(
    """
    policy: patient
    defaults:
      retry: {attempts: 3, backoff: {initial: 1s, jitter: none}}
    rules:
      - id: patient
        when: {status: 503, request_headers: {X-Priority: batch}}
        do: retry
      - id: impatient
        when: {status: 503}
        do: abort
    """
)


def when(text: str) -> referee.Policy:
    """
    A policy whose one rule aborts on a 400 when *text* holds.
    """
    return policy(
        f"""
        policy: t
        rules:
          - id: r
            when: {{status: 400, request_headers: {text}}}
            do: abort
        """
    )


class TestEngine:
    def test_request_header_decides(self):
        """
        The same response is retried or aborted by what the request sent.
        """
        batch = Snapshot.response(503, request_headers={"X-Priority": "batch"})
        other = Snapshot.response(503, request_headers={"X-Priority": "now"})

        assert "patient" == run(PATIENT, batch).rule_id
        assert Retry is type(run(PATIENT, batch))
        assert "impatient" == run(PATIENT, other).rule_id
        assert "impatient" == run(PATIENT, Snapshot.response(503)).rule_id

    @pytest.mark.parametrize(
        "sent",
        ["x-priority", "X-PRIORITY", "X-Priority"],
        ids=["lower", "upper", "as-written"],
    )
    def test_names_are_case_insensitive(self, sent):
        """
        The header is found whatever the case of its name, in the policy or
        in the request.
        """
        pol = when("{x-PRIORITY: batch}")
        snap = Snapshot.response(400, request_headers={sent: "batch"})

        assert "r" == run(pol, snap).rule_id

    def test_response_headers_do_not_count(self):
        """
        A response header of the same name does not satisfy a request
        header condition, nor the other way round.
        """
        pol = when("{Idempotency-Key: {exists: true}}")
        echoed = Snapshot.response(400, headers={"Idempotency-Key": "k-1"})
        response_pol = policy(
            """
            policy: t
            rules:
              - id: r
                when: {status: 400, headers: {Idempotency-Key: {exists: true}}}
                do: abort
            """
        )
        sent = Snapshot.response(400, request_headers={"Idempotency-Key": "k"})

        assert run(pol, echoed).rule_id is None
        assert run(response_pol, sent).rule_id is None

    @pytest.mark.parametrize(
        ("matcher", "value", "matched"),
        [
            ("{Idempotency-Key: {exists: true}}", "k-1", True),
            ("{Idempotency-Key: {exists: true}}", None, False),
            ("{Idempotency-Key: {exists: false}}", None, True),
            ("{Idempotency-Key: {exists: false}}", "k-1", False),
            ("{Idempotency-Key: k-1}", "k-1", True),
            ("{Idempotency-Key: [k-1, k-2]}", "k-2", True),
            ("{Idempotency-Key: {in: [k-1, k-2]}}", "k-3", False),
            ("{Idempotency-Key: {contains: '-'}}", "k-1", True),
            ("{Idempotency-Key: {matches: '^[0-9a-f-]{36}$'}}", "k-1", False),
            (
                "{Idempotency-Key: {matches: '^[0-9a-f-]{36}$'}}",
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
                True,
            ),
            ("{Idempotency-Key: {gte: 2, lt: 5}}", "3", True),
            ("{Idempotency-Key: {gte: 2, lt: 5}}", "7", False),
            ("{Idempotency-Key: {gte: 2}}", "abc", False),
        ],
        ids=[
            "exists",
            "exists-absent",
            "absent",
            "absent-present",
            "equals",
            "one-of-list",
            "in-miss",
            "contains",
            "matches-miss",
            "matches",
            "range",
            "range-miss",
            "range-not-a-number",
        ],
    )
    def test_value_operators(self, matcher, value, matched):
        """
        Every value operator of response headers works on request headers.
        """
        pol = when(matcher)
        sent = {} if value is None else {"Idempotency-Key": value}

        d = run(pol, Snapshot.response(400, request_headers=sent))

        assert matched == (d.rule_id == "r")

    def test_transport_failures_carry_the_request(self):
        """
        A condition on the request holds for a transport failure too: the
        request was sent (or tried) all the same.
        """
        pol = policy(
            """
            policy: t
            rules:
              - id: keyed-timeout
                when: {failure: timeout, request_headers: {Idempotency-Key: {exists: true}}}
                do: retry
            """
        )
        keyed = Snapshot.failed(
            "timeout", method="POST", request_headers={"Idempotency-Key": "k"}
        )

        assert Retry is type(run(pol, keyed))
        assert (
            run(pol, Snapshot.failed("timeout", method="POST")).rule_id is None
        )

    def test_inside_any_and_not(self):
        """
        Request header conditions combine under any, all and not.
        """
        pol = policy(
            """
            policy: t
            rules:
              - id: unkeyed-post
                when:
                  status: 409
                  method: POST
                  not: {request_headers: {Idempotency-Key: {exists: true}}}
                do: abort
              - id: either
                when:
                  status: 409
                  any:
                    - {request_headers: {X-A: "1"}}
                    - {request_headers: {X-B: "1"}}
                do: retry
                retry: {unsafe_methods: true}
            """
        )
        post = Snapshot.response(409, method="POST")
        keyed = Snapshot.response(
            409,
            method="POST",
            request_headers={"Idempotency-Key": "k", "X-B": "1"},
        )

        assert "unkeyed-post" == run(pol, post).rule_id
        assert Abort is type(run(pol, post))
        assert "either" == run(pol, keyed).rule_id
        assert run(pol, Snapshot.response(409, method="GET")).rule_id is None


class TestTools:
    def test_table_renders_request_headers(self):
        """
        ``referee table`` tells request headers from response headers.
        """
        rule = when("{Idempotency-Key: {exists: true}}").rules[0]

        assert (
            "status 400 and request header Idempotency-Key exists"
            == render_condition(rule.doc.when)
        )

    def test_check_sees_a_narrower_rule(self):
        """
        A rule with a request header condition catches only some of its
        statuses' outcomes: a rule under it is not reported as shadowed.
        """
        assert [] == check_policy(PATIENT)

    def test_schema_describes_the_key(self):
        """
        The JSON Schema offers the key, with header names as property
        names.
        """
        from referee._tools.jsonschema import policy_schema

        cond = policy_schema()["$defs"]["ConditionDoc"]["properties"]
        frag = cond["request_headers"]["anyOf"][0]

        assert "request" in cond["request_headers"]["description"]
        assert (
            frag["propertyNames"]
            == cond["headers"]["anyOf"][0]["propertyNames"]
        )


# --- End to end: the adapters over real HTTP ---------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    srv._thread = threading.Thread(
        target=srv._httpd.serve_forever, args=(0.01,), daemon=True
    )
    with srv:
        yield srv


def _sync(pol: referee.Policy, method: str, url: str, **kw) -> httpx.Response:
    with httpx.Client(transport=PolicyTransport(pol), timeout=5.0) as client:
        return client.request(method, url, **kw)


def _async(pol: referee.Policy, method: str, url: str, **kw) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = AsyncPolicyTransport(pol)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as c:
            return await c.request(method, url, **kw)

    return asyncio.run(go())


def _requests(pol: referee.Policy, method: str, url: str, **kw) -> Answer:
    import requests

    from referee.requests import PolicyAdapter

    kw["data"] = kw.pop("content", None)
    with requests.Session() as s:
        s.mount("http://", PolicyAdapter(pol))
        r = s.request(method, url, timeout=5, **kw)
        return Answer(r.status_code, r.content)


def _aiohttp(pol: referee.Policy, method: str, url: str, **kw) -> Answer:
    import aiohttp

    from referee.aiohttp import PolicyMiddleware

    kw["data"] = kw.pop("content", None)

    async def go() -> Answer:
        async with (
            aiohttp.ClientSession(
                middlewares=[PolicyMiddleware(pol)],
                timeout=aiohttp.ClientTimeout(total=10, sock_read=5),
            ) as s,
            s.request(method, url, **kw) as r,
        ):
            return Answer(r.status, await r.read())

    return asyncio.run(go())


@attrs.frozen
class Answer:
    status_code: int
    content: bytes


@pytest.fixture(params=[_sync, _async], ids=["sync", "async"])
def call(request):
    return request.param


@pytest.fixture(
    params=[_sync, _async, _requests, _aiohttp],
    ids=["httpx", "httpx-async", "requests", "aiohttp"],
)
def any_client(request):
    return request.param


class TestOverHttp:
    def test_request_header_changes_the_decision(self, server, call):
        """
        Two calls meet the same 503: the one that sent ``X-Priority:
        batch`` is retried and gets the 200; the other aborts after one
        send.
        """
        server.script("/batch", [Reply(503), Reply(200, body=b"done")])
        server.script("/now", [Reply(503), Reply(200, body=b"done")])

        with no_sleep() as slept:
            response = call(
                PATIENT,
                "GET",
                server.url("/batch"),
                headers={"x-priority": "batch"},
            )
            with pytest.raises(ServerError) as ei:
                call(
                    PATIENT,
                    "GET",
                    server.url("/now"),
                    headers={"X-Priority": "now"},
                )

        assert 200 == response.status_code
        assert 2 == server.count("/batch")
        assert 1 == server.count("/now")
        assert [1.0] == slept.delays
        assert "impatient" == ei.value.rule_id

    def test_keyed_post_is_retried_after_a_broken_read(
        self, server, any_client
    ):
        """
        A POST whose connection breaks mid-answer is retried when it sent
        an Idempotency-Key: the failure's snapshot carries the request's
        headers, for the condition and for the unsafe-method gate.
        """
        pol = policy(
            """
            policy: keyed
            rules:
              - id: keyed-read
                when: {failure: read, request_headers: {Idempotency-Key: {exists: true}}}
                do: retry
                retry: {backoff: {initial: 1s, jitter: none}}
            """
        )
        server.script("/pay", [RESET, Reply(201, body=b"paid")])
        # Every adapter's failure snapshot carries the request's headers.

        with no_sleep():
            response = any_client(
                pol,
                "POST",
                server.url("/pay"),
                headers={"Idempotency-Key": "k-1"},
                content=b"{}",
            )

        assert 201 == response.status_code
        assert b"paid" == response.content
        assert 2 == server.count("/pay")
        keys = [r.headers["idempotency-key"] for r in server.requests]
        assert ["k-1", "k-1"] == keys
