"""
Idempotency keys (``idempotency:``, draft-ietf-httpapi-idempotency-key-
header-07): one key per call, minted before the first send and the same on
every attempt; a caller's own key is kept; a minted key opens the
unsafe-method gate; 409 is retried and 422 aborts (the implied rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import re
import textwrap
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import httpx
import pytest
import requests

import referee
from referee import Abort, AttemptState, Retry, Snapshot, decide
from referee._tools.check import check_policy
from referee.aiohttp import PolicyMiddleware
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.requests import PolicyAdapter
from referee.testing import no_sleep, simulate

from .server import Reply, ScriptedServer


if TYPE_CHECKING:
    from collections.abc import Iterator


NOW = 1_700_000_000.0
DOCS = Path(__file__).resolve().parent.parent / "docs" / "policy-language.md"

KEYED = """\
policy: keyed
idempotency: {header: Idempotency-Key, mint: uuid4, methods: [POST, PATCH]}
rules:
  - id: overloaded
    when: {status: 503}
    do: retry
    retry: {attempts: 3, backoff: {initial: 1s, jitter: none}}
"""


def policy(text: str = KEYED) -> referee.Policy:
    return referee.load_policy_text(textwrap.dedent(text))


def run(pol: referee.Policy, snap: Snapshot) -> referee.Decision:
    return decide(
        pol, snap, AttemptState(started=NOW), now=NOW, rng=random.Random(0)
    )


def keys(server: ScriptedServer) -> list[str | None]:
    return [
        {k.lower(): v for k, v in r.headers.items()}.get("idempotency-key")
        for r in server.requests
    ]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


class TestLoad:
    def test_defaults(self):
        """
        ``idempotency: {}`` mints uuid4 keys in Idempotency-Key for POST
        and PATCH.
        """
        idem = policy("policy: p\nidempotency: {}\n").idempotency

        assert idem is not None
        assert "Idempotency-Key" == idem.header
        assert "uuid4" == idem.mint
        assert frozenset({"POST", "PATCH"}) == idem.methods

    def test_absent_is_none(self):
        assert policy("policy: p\n").idempotency is None

    @pytest.mark.parametrize(
        ("doc", "path", "message"),
        [
            (
                "{mint: uuid7}",
                "$.idempotency.mint",
                "expected one of uuid4",
            ),
            (
                "{header: 'Idempotency Key'}",
                "$.idempotency.header",
                "expected a header name",
            ),
            (
                "{methods: 3}",
                "$.idempotency.methods",
                "found 3",
            ),
            (
                "{key: uuid4}",
                "$.idempotency.key",
                "key",
            ),
            ("uuid4", "$.idempotency", "expected a mapping"),
        ],
        ids=["mint", "header", "methods", "unknown-key", "not-a-mapping"],
    )
    def test_errors_name_the_path(self, doc, path, message):
        """
        A wrong ``idempotency:`` is a PolicyError at its path.
        """
        with pytest.raises(referee.PolicyError) as ei:
            policy(f"policy: p\nidempotency: {doc}\n")

        (problem,) = ei.value.problems
        assert path == problem.path
        assert message in problem.message

    def test_extends_merges_key_by_key(self, tmp_path):
        """
        A child's ``idempotency:`` merges over its parent's.
        """
        (tmp_path / "base.yaml").write_text(
            "policy: base\nidempotency: {header: X-Key}\n", encoding="utf-8"
        )
        (tmp_path / "child.yaml").write_text(
            "policy: child\nextends: ./base.yaml\n"
            "idempotency: {methods: [PUT]}\n",
            encoding="utf-8",
        )

        idem = referee.load_policy(tmp_path / "child.yaml").idempotency

        assert idem is not None
        assert ("X-Key", frozenset({"PUT"})) == (idem.header, idem.methods)


class TestEngine:
    def test_minted_key_opens_the_unsafe_gate(self):
        """
        A POST is retried on 503 only when it carried the key.
        """
        pol = policy()
        keyed = Snapshot.response(
            503, method="POST", request_headers={"Idempotency-Key": "k"}
        )
        bare = Snapshot.response(503, method="POST")

        assert Retry is type(run(pol, keyed))
        assert Abort is type(run(pol, bare))

    def test_custom_header_opens_the_gate(self):
        pol = policy(
            "policy: p\nidempotency: {header: X-Key}\n"
            "rules: [{when: {status: 503}, do: retry}]\n"
        )
        snap = Snapshot.response(
            503, method="POST", request_headers={"X-Key": "k"}
        )

        assert Retry is type(run(pol, snap))

    def test_409_with_a_key_is_retried(self):
        """
        draft-07: 409, the original request still being processed, waits
        and retries.
        """
        snap = Snapshot.response(
            409, method="POST", request_headers={"Idempotency-Key": "k"}
        )

        decision = run(policy(), snap)

        assert Retry is type(decision)
        assert "idempotency-conflict" == decision.rule_id

    def test_422_with_a_key_aborts(self):
        """
        draft-07: 422, the key reused with another payload, aborts.
        """
        snap = Snapshot.response(
            422, method="POST", request_headers={"Idempotency-Key": "k"}
        )

        decision = run(policy(), snap)

        assert Abort is type(decision)
        assert "idempotency-mismatch" == decision.rule_id

    def test_implied_rules_only_match_keyed_requests(self):
        snap = Snapshot.response(409, method="POST")

        assert run(policy(), snap).rule_id != "idempotency-conflict"

    def test_a_rule_of_the_same_id_replaces_the_implied_one(self):
        pol = policy(
            KEYED + "  - id: idempotency-conflict\n"
            "    when: {status: 409}\n"
            "    do: abort\n"
        )
        snap = Snapshot.response(
            409, method="POST", request_headers={"Idempotency-Key": "k"}
        )

        assert Abort is type(run(pol, snap))
        assert 1 == sum(r.id == "idempotency-conflict" for r in pol.rules)

    def test_no_implied_rules_without_idempotency(self):
        ids = {r.id for r in policy("policy: p\n").rules}

        assert not ids & {"idempotency-conflict", "idempotency-mismatch"}


class TestSimulate:
    def test_409_then_200(self):
        """
        simulate mints the key as a runner does: the POST's 409 is retried.
        """
        sim = simulate(policy(), [409, 200], method="POST")

        assert sim.finished
        assert "idempotency-conflict" == sim.steps[0].decision.rule_id
        sent = sim.steps[0].snapshot.request_headers.get("idempotency-key")
        assert 4 == uuid.UUID(sent).version

    def test_get_gets_no_key(self):
        sim = simulate(policy(), [503, 200], method="GET")

        assert (
            sim.steps[0].snapshot.request_headers.get("idempotency-key")
            is None
        )


class TestHttpx:
    def test_same_key_on_every_attempt_new_key_per_call(self, server):
        """
        A POST answered 503 then 200 is sent twice with the same minted
        key; the next call gets another.
        """
        server.script("/charges", [Reply(503), Reply(200)])
        transport = PolicyTransport(policy())

        with no_sleep(), httpx.Client(transport=transport) as client:
            first = client.post(server.url("/charges"), json={"amount": 1})
            server.script("/charges", [Reply(200)])
            second = client.post(server.url("/charges"), json={"amount": 2})

        assert (200, 200) == (first.status_code, second.status_code)
        a, b, c = keys(server)
        assert a is not None
        assert a == b
        assert c is not None
        assert c != a
        assert 4 == uuid.UUID(a).version

    def test_callers_own_key_is_kept(self, server):
        server.script("/charges", [Reply(503), Reply(200)])
        transport = PolicyTransport(policy())

        with no_sleep(), httpx.Client(transport=transport) as client:
            client.post(
                server.url("/charges"),
                json={},
                headers={"Idempotency-Key": "mine"},
            )

        assert ["mine", "mine"] == keys(server)

    def test_get_gets_no_key(self, server):
        server.script("/charges", [Reply(200)])
        transport = PolicyTransport(policy())

        with httpx.Client(transport=transport) as client:
            client.get(server.url("/charges"))

        assert [None] == keys(server)

    def test_without_idempotency_a_post_is_not_retried(self, server):
        server.script("/charges", [Reply(503), Reply(200)])
        transport = PolicyTransport(
            policy(KEYED.replace("idempotency: {", "# {"))
        )

        with (
            no_sleep(),
            httpx.Client(transport=transport) as client,
            pytest.raises(referee.Aborted),
        ):
            client.post(server.url("/charges"), json={})

        assert [None] == keys(server)


class TestRequests:
    def test_same_key_on_every_attempt(self, server):
        server.script("/charges", [Reply(503), Reply(200)])

        with no_sleep(), requests.Session() as session:
            session.mount("http://", PolicyAdapter(policy()))
            response = session.post(server.url("/charges"), json={})

        assert 200 == response.status_code
        a, b = keys(server)
        assert a is not None
        assert a == b


class TestDocs:
    def test_docs_example_prints_what_the_docs_show(
        self, tmp_path, monkeypatch
    ):
        """
        The Stripe example of docs/policy-language.md, run on its own
        policy block, prints the output shown under it.
        """
        text = DOCS.read_text(encoding="utf-8")
        yaml = re.search(
            r"```yaml\n(policy: stripe-keys\n.*?)```", text, re.DOTALL
        )
        code = re.search(
            r"```python\n(import referee\n(?:(?!```).)*?stripe-keys\.yaml"
            r"(?:(?!```).)*?)```\s*```text\n(.*?)```",
            text,
            re.DOTALL,
        )
        assert yaml is not None
        assert code is not None
        (tmp_path / "stripe-keys.yaml").write_text(
            yaml.group(1), encoding="utf-8"
        )
        monkeypatch.chdir(tmp_path)
        out = io.StringIO()

        with contextlib.redirect_stdout(out):
            exec(code.group(1), {})  # noqa: S102 - the docs' own example

        assert code.group(2) == out.getvalue()

    def test_stripe_example_passes_check(self):
        text = DOCS.read_text(encoding="utf-8")
        yaml = re.search(
            r"```yaml\n(policy: stripe-keys\n.*?)```", text, re.DOTALL
        )
        assert yaml is not None

        pol = referee.load_policy_text(yaml.group(1))

        assert [] == check_policy(pol)


class TestAsync:
    def test_httpx_async_same_key_then_a_new_one(self, server):
        """
        The async runner mints as the sync one does.
        """
        server.script("/charges", [Reply(503), Reply(200)])

        async def main() -> None:
            transport = AsyncPolicyTransport(policy())
            async with httpx.AsyncClient(transport=transport) as client:
                await client.post(server.url("/charges"), json={})
                server.script("/charges", [Reply(200)])
                await client.post(server.url("/charges"), json={})

        with no_sleep():
            asyncio.run(main())

        a, b, c = keys(server)
        assert a is not None
        assert a == b
        assert c not in (None, a)

    def test_aiohttp_same_key_on_every_attempt(self, server):
        server.script("/charges", [Reply(503), Reply(200)])

        async def main() -> int:
            async with aiohttp.ClientSession(
                middlewares=[PolicyMiddleware(policy())]
            ) as session:
                response = await session.post(server.url("/charges"), json={})
                return response.status

        with no_sleep():
            status = asyncio.run(main())

        assert 200 == status
        a, b = keys(server)
        assert a is not None
        assert a == b


class TestPoll:
    def test_a_poll_that_resends_carries_the_same_key(self, server):
        """
        A POST polled by sending it again (202, no Location) carries the
        key of its first send: the poll passes the gate.
        """
        server.script("/jobs", [Reply(202), Reply(202), Reply(200)])
        pol = policy(
            "policy: p\n"
            "idempotency: {}\n"
            "rules:\n"
            "  - {id: pending, when: {status: 202}, do: poll,\n"
            "     poll: {initial: 1s}}\n"
        )

        with no_sleep(), httpx.Client(transport=PolicyTransport(pol)) as c:
            response = c.post(server.url("/jobs"), json={})

        assert 200 == response.status_code
        a, b, c2 = keys(server)
        assert a is not None
        assert a == b == c2


class TestEntropy:
    def test_runners_seeded_alike_mint_different_keys(self, server):
        """
        The key comes from the OS, not the jitter rng: two clients seeded
        alike (as tests and replays do) never send the same key.
        """
        server.script("/charges", [Reply(200)])

        for _ in range(2):
            transport = PolicyTransport(policy(), rng=random.Random(0))
            with httpx.Client(transport=transport) as client:
                client.post(server.url("/charges"), json={})

        a, b = keys(server)
        assert a is not None
        assert a != b
