"""
No secret reaches what referee renders: log events, errors, alerts,
trails, hook events, reprs (SECURITY.md, "Redaction").

One end-to-end test plants secrets in every channel a call has (request
headers and cookies, the query string, URL userinfo, response headers, a
JSON body that echoes a key, alert templates that name secret headers and
body fields) and searches everything referee produced for them; the rest
pin :func:`redact_text`, the URL list, and the ``redact:`` key.
"""

from __future__ import annotations

import threading

import httpx
import pytest
import structlog

import referee
from referee._core.redact import (
    DEFAULT,
    REDACTED,
    Redaction,
    redact_text,
    redact_url,
)
from referee.httpx import OUTCOME_EXTENSION, PolicyTransport
from referee.testing import no_sleep

from .server import Reply, ScriptedServer


# Planted on purpose: each string is unique, so that a leak names its
# channel.  The shapes are the real ones (Stripe, OpenAI, Slack, GitHub,
# AWS, JWT); the values are made up.
STRIPE = "sk_live_51HqLyjWDarjtT1zdp7dcSTRIPE"  # echoed in the body
OPENAI = "sk-proj-Zq8vN3kP0aLx7rT2mW9yOPENAI"  # Bearer, sent and echoed
SLACK = "xoxb-1234567890-0987654321-SLACKtok"  # a body field
GITHUB = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4GITHUB"  # a response header
AWS = "AKIAIOSFODNN7EXAMPLE"  # the query string, as a value
JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqd3QtdXNlciJ9."
    "c2lnbmF0dXJlLW9mLXRoZS1qd3Q"
)  # a body field named jwt, and a refresh_token
API_KEY = "hdr-x-api-key-plain-S1"  # x-api-key: not token-shaped
COOKIE = "cookie-session-plain-S2"  # Cookie: session=...
SET_COOKIE = "set-cookie-sid-plain-S3"  # response Set-Cookie
MINE = "my-secret-header-plain-S4"  # X-My-Secret, added by redact:
AMZ_SIG = "f00dfacecafebeef0123456789abcdefAMZSIG"  # X-Amz-Signature
MY_TOKEN = "my-token-query-plain-S5"  # noqa: S105 - planted
PASSWORD = "userinfo-password-S6"  # noqa: S105 - planted userinfo
ACCESS = "access-token-field-plain-S7"  # body field error.access_token
CUSTOM = "tok_ABCDEFGHIJKLMNOPQRSTUVWX"  # added by redact: patterns

SECRETS = [
    STRIPE,
    OPENAI,
    SLACK,
    GITHUB,
    AWS,
    JWT,
    API_KEY,
    COOKIE,
    SET_COOKIE,
    MINE,
    AMZ_SIG,
    MY_TOKEN,
    PASSWORD,
    ACCESS,
    CUSTOM,
]

POLICY = """\
policy: leaky-api
redact:
  query: [my_token]
  headers: [X-My-Secret]
  patterns: ["tok_[A-Za-z0-9]{20,}"]
rules:
  - id: bad-key
    when: {status: 401}
    do: abort
    error: AuthenticationError
    alert:
      kind: credentials
      severity: critical
      message: >-
        {method} {request.url} got {status}: {body.error.message}
        cookie={header.Set-Cookie} mine={header.X-My-Secret}
        gh={header.X-Debug-Token} auth={header.Authorization}
        slack={body.error.session} jwt={body.error.jwt}
        access={body.error.access_token} custom={body.error.hint}
        echo={body.error.echo}
  - id: unavailable
    when: {status: 503}
    do: retry
    retry: {attempts: 3, backoff: {initial: 0s}}
"""

RESPONSE_HEADERS = {
    "Set-Cookie": f"sid={SET_COOKIE}; HttpOnly",
    "X-My-Secret": MINE,
    "X-Debug-Token": GITHUB,
}

BODY = {
    "error": {
        "type": "invalid_request_error",
        "message": f"Invalid API key provided: {STRIPE}",
        "session": SLACK,
        "jwt": JWT,
        "access_token": ACCESS,
        "hint": f"expected a key like {CUSTOM}",
        "echo": f"Bearer {OPENAI}",
    }
}


def _url(server: ScriptedServer) -> str:
    return (
        f"http://alice:{PASSWORD}@127.0.0.1:{server.port}/v1/charges"
        f"?api_key={AWS}&X-Amz-Signature={AMZ_SIG}&refresh_token={JWT}"
        f"&my_token={MY_TOKEN}&amount=10"
    )


REQUEST_HEADERS = {
    "Authorization": f"Bearer {OPENAI}",
    "x-api-key": API_KEY,
    "Cookie": f"session={COOKIE}",
    "X-My-Secret": MINE,
}


class _Sink:
    def __init__(self) -> None:
        self.alerts: list[referee.Alert] = []
        self.lock = threading.Lock()

    def __call__(self, alert: referee.Alert) -> None:
        with self.lock:
            self.alerts.append(alert)


def _leaks(texts: list[str]) -> list[tuple[str, str]]:
    return [(s, t) for t in texts for s in SECRETS if s in t]


class TestEveryChannel:
    def test_no_secret_reaches_what_referee_renders(self) -> None:
        """
        Secrets planted in request headers, cookies, the query string,
        URL userinfo, response headers, a JSON error body and alert
        templates appear in no log event, alert, error (str, repr,
        reason, detail), trail, attached outcome or hook event, through
        retries, an abort with an alert, and raise_on_abort=False.
        """
        sink = _Sink()
        events: list[object] = []
        policy = referee.load_policy_text(POLICY, alert_sinks=[sink])
        referee.add_hook(events.append)
        try:
            with (
                ScriptedServer() as server,
                no_sleep(),
                structlog.testing.capture_logs() as logs,
            ):
                script = [
                    Reply(503, RESPONSE_HEADERS, BODY),
                    Reply(401, RESPONSE_HEADERS, BODY),
                ]
                server.script("/v1/charges", script)
                with (
                    httpx.Client(transport=PolicyTransport(policy)) as c,
                    pytest.raises(referee.AuthenticationError) as ei,
                ):
                    c.get(_url(server), headers=REQUEST_HEADERS)
                server.script("/v1/charges", script)
                quiet = PolicyTransport(policy, raise_on_abort=False)
                with httpx.Client(transport=quiet) as c:
                    response = c.get(_url(server), headers=REQUEST_HEADERS)
                assert policy.runtime.alerts.flush(5)
        finally:
            referee.remove_hook(events.append)

        err = ei.value
        outcome = response.extensions[OUTCOME_EXTENSION]
        texts = [repr(v) for e in logs for v in e.values()]
        texts += [str(v) for e in logs for v in e.values()]
        for a in sink.alerts:
            texts += [a.message, repr(a), repr(a.as_dict())]
        for e in (err, outcome.error):
            texts += [str(e), repr(e), e.reason, str(e.detail)]
            texts += [repr(e.trail), *(repr(r) for r in e.trail)]
        texts += [
            repr(outcome),
            repr(outcome.decision),
            outcome.decision.reason,
        ]
        texts += [repr(e) for e in events]

        assert [] == _leaks(texts)
        # The channels were exercised: two calls of a retry and an abort
        # each, two alerts, the API's message carried (masked).
        assert 4 == sum(e["event"] == "referee.decision" for e in logs)
        assert 4 == len(events)
        assert 2 == len(sink.alerts)
        assert f"Invalid API key provided: {REDACTED}" == err.detail
        assert 401 == response.status_code
        assert STRIPE.encode() in err.body  # the API's own body, whole
        message = sink.alerts[0].message
        for shown in (
            f"cookie={REDACTED}",
            f"mine={REDACTED}",
            f"gh={REDACTED}",
            f"access={REDACTED}",
            "amount=10",
            f"my_token={REDACTED}",
        ):
            assert shown in message
        # What the server received is untouched: redaction is display only.
        sent = server.requests[0]
        headers = {k.lower(): v for k, v in sent.headers.items()}
        assert API_KEY == headers["x-api-key"]
        assert MY_TOKEN in sent.path


# A table of credential forms, as they appear in text.
TOKENS = [
    pytest.param("sk_live_4eC39HqLyjWDarjtT1zdp7dc", id="stripe-live"),
    pytest.param("sk_test_4eC39HqLyjWDarjtT1zdp7dc", id="stripe-test"),
    pytest.param("rk_live_51HqLyjWDarjtT1zdp7dc", id="stripe-restricted"),
    pytest.param("whsec_abcdefghijklmnop0123456789", id="stripe-webhook"),
    pytest.param("sk-abcdefghijklmnopqrstuvwxyz012345", id="openai"),
    pytest.param("sk-proj-abc123DEF456ghi789JKL012mno", id="openai-proj"),
    pytest.param("sk-ant-api03-abcDEF123_ghiJKL456-mnoPQR", id="anthropic"),
    pytest.param("xoxb-1234567890-0987654321-abcdefgh", id="slack-bot"),
    pytest.param("xoxp-1234567890-0987654321-abcdefgh", id="slack-user"),
    pytest.param("ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", id="github"),
    pytest.param(
        "gho_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", id="github-oauth"
    ),
    pytest.param("ghs_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", id="github-app"),
    pytest.param("ghu_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", id="github-u2s"),
    pytest.param("github_pat_11ABCDEFG0abcdefghijkl_mnopq", id="github-pat"),
    pytest.param("AKIAIOSFODNN7EXAMPLE", id="aws-akia"),
    pytest.param("ASIAIOSFODNN7EXAMPLE", id="aws-asia"),
    pytest.param(
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        id="jwt",
    ),
]


class TestRedactText:
    @pytest.mark.parametrize("token", TOKENS)
    def test_tokens_are_masked(self, token: str) -> None:
        """
        Each well-known credential form is masked, alone, in a sentence,
        and quoted.
        """
        for text in (token, f"Invalid key: {token}.", f"'{token}'"):
            masked = redact_text(text)

            assert token not in masked
            assert REDACTED in masked

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Authorization: Bearer abc123def456", "Bearer REDACTED"),
            ("authorization: bearer abc123def456", "bearer REDACTED"),
            ("Basic dXNlcjpwYXNzd29yZA==", "Basic REDACTED"),
            ("basic dXNlcjpwYXNz", "basic REDACTED"),
        ],
    )
    def test_http_credentials_keep_their_scheme(
        self, text: str, expected: str
    ) -> None:
        """
        ``Bearer``/``Basic`` credentials are masked; the scheme stays.
        """
        assert redact_text(text).endswith(expected)

    def test_urls_in_text(self) -> None:
        """
        A URL quoted in text loses its userinfo and secret parameters,
        and keeps the rest.
        """
        text = "failed: https://u:pw@x.test/a?api_key=1&q=2;code=3 (sorry)"

        assert (
            "failed: https://REDACTED@x.test/a?api_key=REDACTED&q=2;"
            "code=REDACTED (sorry)"
        ) == redact_text(text)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "GET got 503: rule 'server-unavailable' retries in 1s",
            "the job 123e4567-e89b-12d3-a456-426614174000 is running",
            "order ord_12345 and charge ch_3MmlLrLkdIwHu7ix",
            "Basic plan exceeded; Bearer authentication required",
            "task-runner uses sk-learn, skip_live_tests is on",
            "error code=42; key: value; token expired",
            "high throughput, ghost_mode and AKIA",
            "mailto:someone@example.com wrote",
            "emails: ops@example.com",
            "a=b&c=d",
        ],
    )
    def test_ordinary_text_passes_unchanged(self, text: str) -> None:
        """
        Words, UUIDs, short ids, prose near the token forms: the same
        string comes back (not a copy).
        """
        assert redact_text(text) is text

    def test_extra_patterns(self) -> None:
        """
        A Redaction's patterns and query names add to the built-in ones.
        """
        r = Redaction(query=["My_Token"], patterns=[r"tok_[A-Za-z0-9]{20,}"])

        assert "x REDACTED y" == r.text("x tok_ABCDEFGHIJKLMNOPQRSTUV y")
        assert "see /a?my_token=REDACTED" == r.text("see /a?my_token=s3")
        assert "see /a?my_token=s3" == DEFAULT.text("see /a?my_token=s3")


URL_PARAMS = [
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "refresh_token",
    "id_token",
    "private_token",
    "jwt",
    "x-api-key",
    "session",
    "code",
    "pwd",
    "passwd",
    "api_key",
    "access_token",
]


class TestRedactUrl:
    @pytest.mark.parametrize("name", URL_PARAMS)
    def test_secret_params(self, name: str) -> None:
        """
        Each secret query parameter is masked, in any case; the others
        stay.
        """
        for written in (name, name.upper(), name.lower()):
            url = f"https://s3.test/b/k?{written}=SeCrEt1&x=1"

            assert f"https://s3.test/b/k?{written}=REDACTED&x=1" == (
                redact_url(url)
            )

    def test_userinfo_and_tokens_in_the_path(self) -> None:
        """
        Userinfo goes; a token in the path (a Slack webhook) goes too.
        """
        url = "https://bob:pw@hooks.test/services/T0/B0/xoxb-12345678-abcdefgh"

        assert "https://REDACTED@hooks.test/services/T0/B0/REDACTED" == (
            redact_url(url)
        )

    def test_added_params(self) -> None:
        """
        ``Redaction(query=...)`` adds names; the built-in ones stay.
        """
        r = Redaction(query=["my_token"])
        url = "https://a.test/?My_Token=1&api_key=2&q=3"

        assert "https://a.test/?My_Token=REDACTED&api_key=REDACTED&q=3" == (
            r.url(url)
        )


class TestPolicyKey:
    def test_file_key_and_python_add_up(self) -> None:
        """
        ``redact:`` in the file, in the policy it extends, and
        ``load_policy_text(..., redact=...)`` add up.
        """
        policy = referee.load_policy_text(
            "policy: p\nredact: {query: a_secret, headers: [X-One]}\n"
            "rules: []\n",
            redact=referee.Redaction(headers=["X-Two"], patterns=["zz\\d+"]),
        )
        r = policy.redaction

        assert {"a_secret"} == r.query
        assert {"x-one", "x-two"} == r.headers
        assert ("zz\\d+",) == r.patterns
        assert r.secret_header("Set-Cookie")
        assert "REDACTED" == r.text("zz123")

    def test_extends_adds_up(self, tmp_path) -> None:
        """
        A child policy keeps what its parent masks.
        """
        (tmp_path / "base.yaml").write_text(
            "policy: base\nredact: {headers: [X-Base]}\nrules: []\n"
        )
        child = tmp_path / "child.yaml"
        child.write_text(
            "policy: child\nextends: ./base.yaml\n"
            "redact: {headers: [X-Child]}\nrules: []\n"
        )

        r = referee.load_policy(child).redaction

        assert {"x-base", "x-child"} == r.headers

    @pytest.mark.parametrize(
        ("doc", "path", "words"),
        [
            ("redact: {query: [''] }", "$.redact.query", "parameter name"),
            ("redact: {query: ['a=b']}", "$.redact.query", "without spaces"),
            ("redact: {headers: ['X Bad']}", "$.redact.headers", "header"),
            ("redact: {headers: 3}", "$.redact.headers", "header name"),
            ("redact: {patterns: ['(']}", "$.redact.patterns", "invalid"),
            ("redact: {patterns: ['a*']}", "$.redact.patterns", "empty"),
            ("redact: {secrets: [x]}", "$.redact.secrets", "unknown key"),
            ("redact: [x]", "$.redact", "a mapping with the keys"),
        ],
    )
    def test_bad_values_are_clear_errors(
        self, doc: str, path: str, words: str
    ) -> None:
        """
        A bad ``redact:`` value is a PolicyError that names the path and
        says what is allowed.
        """
        with pytest.raises(referee.PolicyError) as ei:
            referee.load_policy_text(f"policy: p\n{doc}\nrules: []\n")

        (problem,) = ei.value.problems
        assert path == problem.path
        assert words in problem.message

    def test_bad_python_pattern(self) -> None:
        """
        ``Redaction`` refuses a pattern that does not compile.
        """
        with pytest.raises(ValueError, match="invalid regular expression"):
            Redaction(patterns=["("])
