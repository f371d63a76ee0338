"""
Secrets never reach a log line, an error message, an alert or a trail.

Pure helpers, and the one rule behind them: whatever text referee renders
(reasons, error messages and API details, alert messages, log events,
hook events, reprs) goes through :func:`redact_text` or
:meth:`Redaction.text` first, and URLs through :func:`redact_url`.

- **Secret headers** (:data:`SECRET_HEADERS`) never render: an alert
  template's ``{header.Set-Cookie}`` reads ``REDACTED``.
- **Secret query parameters** (:data:`SECRET_PARAMS`) and URL userinfo
  are masked in URLs, and in URLs quoted inside text.
- **Values shaped like credentials** (Stripe, OpenAI and Anthropic,
  Slack, GitHub and AWS keys, JWTs, ``Bearer``/``Basic`` credentials) are
  masked wherever they appear, whatever the field: an API that echoes the
  key it refused ("Invalid API key provided: sk_live_...") does not put
  it in a log.

A policy's ``redact:`` key (or ``load_policy(..., redact=Redaction(...))``)
adds query parameters, headers and value patterns; nothing can remove the
built-in ones.

The common path is cheap: text with nothing to mask costs one scan of a
precompiled pattern and comes back as the same string.  The built-in
patterns are fixed and linear (no nested repetition), so the stdlib ``re``
serves.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import attrs
import re2


if TYPE_CHECKING:
    from collections.abc import Iterable


__all__ = [
    "DEFAULT",
    "REDACTED",
    "SECRET_HEADERS",
    "SECRET_PARAMS",
    "Redaction",
    "redact_text",
    "redact_url",
]

#: What a masked value reads.
REDACTED: Final = "REDACTED"

#: Headers whose values are credentials (lower case).
SECRET_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "apikey",
        "auth-token",
        "x-auth-token",
        "x-access-token",
        "x-app-key",
        "x-amz-security-token",
        "x-goog-api-key",
        "private-token",
        "x-vault-token",
    }
)

#: Query parameters whose values are credentials (lower case; names are
#: compared case-insensitively).
SECRET_PARAMS: Final = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "x-api-key",
        "key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "private_token",
        "auth",
        "auth_token",
        "jwt",
        "session",
        "code",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "signature",
        "sig",
        # Presigned URLs: AWS S3 (SigV4) and Google Cloud Storage.
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
    }
)

# Well-known credential forms.  Each is a prefix the issuer documents and
# a run of token characters: fixed, linear patterns (no nested
# repetition), so that masking costs one pass over the text.
_TOKENS: Final = (
    # Stripe secret and restricted keys; webhook signing secrets.
    r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{8,}",
    r"\bwhsec_[0-9A-Za-z]{16,}",
    # OpenAI (sk-..., sk-proj-...), Anthropic (sk-ant-...).
    r"\bsk-[0-9A-Za-z_-]{16,}",
    # Slack tokens (xoxb-, xoxp-, xoxa-, xoxo-, xoxs-, xoxr-).
    r"\bxox[abposr]-[0-9A-Za-z-]{8,}",
    # GitHub tokens: classic and fine-grained.
    r"\bgh[pousr]_[0-9A-Za-z]{20,}",
    r"\bgithub_pat_[0-9A-Za-z_]{20,}",
    # AWS access key ids (long-term and temporary).
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    # JSON Web Tokens: a JSON header and payload, base64url.
    r"\beyJ[0-9A-Za-z_-]+\.eyJ[0-9A-Za-z_-]+\.[0-9A-Za-z_-]*",
)


def _params_in_text(names: Iterable[str]) -> str:
    # A query parameter quoted in text (a URL inside an API's message):
    # only after ?, & or ;, so that prose such as "error code=42" stays.
    # The separator leads, so that the scan for it is fast.
    alternatives = "|".join(
        sorted((re.escape(n) for n in names), key=len, reverse=True)
    )
    return rf"(?P<_r_param>[?&;](?i:{alternatives})=)[^&#\s\"'<>]+"


_TOKEN: Final = re.compile(
    "|".join(
        (
            *_TOKENS,
            # HTTP credentials: "Bearer <token>", "Basic <base64>".  The
            # token needs a digit, a + or /, a capital inside, or padding
            # (or is long), so that "Basic plan" and "Bearer
            # authentication required" are left alone.
            (
                r"(?P<_r_scheme>\b(?i:bearer|basic)\s+)"
                r"(?:(?=[0-9A-Za-z._~+/-]*[0-9+/]|[0-9A-Za-z._~+/-]+[A-Z]"
                r"|[0-9A-Za-z._~+/-]{8,}=)[0-9A-Za-z._~+/-]{8,}"
                r"|[0-9A-Za-z._~+/-]{24,})=*"
            ),
        )
    )
)

_URL_PARTS: Final = re.compile(
    "|".join(
        (
            _params_in_text(SECRET_PARAMS),
            # Userinfo in a URL quoted in text.
            r"(?P<_r_uri>://)[^/?#\s@]+@",
        )
    )
)


def _suspect(text: str) -> bool:
    # The literal parts of the token forms: a plain substring test is
    # many times cheaper than the pattern, and almost every text has none.
    return (
        "sk-" in text
        or "_live_" in text
        or "_test_" in text
        or "eyJ" in text
        or "xox" in text
        or "AKIA" in text
        or "ASIA" in text
        or "gh" in text
        or "whsec_" in text
        or "_pat_" in text
        or "earer" in text
        or "asic" in text
        or "EARER" in text
        or "ASIC" in text
    )


def _keep(m: re.Match[str]) -> str:
    # What a match keeps: the scheme of a credential, the name of a
    # parameter, the scheme separator of a URL with userinfo.
    kept = m.lastgroup
    if kept == "_r_uri":
        return f"://{REDACTED}@"
    if kept in {"_r_scheme", "_r_param"}:
        return f"{m.group(kept)}{REDACTED}"
    return REDACTED


def _tokens(text: str) -> str:
    return _TOKEN.sub(_keep, text) if _suspect(text) else text


def redact_text(text: str, extra: Iterable[Any] | None = None) -> str:
    """
    *text* with every value shaped like a credential, every secret query
    parameter and every URL userinfo in it replaced by ``REDACTED``; then
    whatever the *extra* patterns match.

    Text with nothing to mask comes back as the same string.
    """
    text = _tokens(text)
    if "=" in text or "@" in text:
        text = _URL_PARTS.sub(_keep, text)
    if extra:
        for pattern in extra:
            text = pattern.sub(_keep, text)
    return text


_PARAM: Final = re.compile(r"([^&=;]+)=([^&;]*)")


def redact_url(url: str, params: frozenset[str] = SECRET_PARAMS) -> str:
    """
    *url* with the values of the query parameters in *params* (lower
    case), any userinfo, and values shaped like credentials (a Slack
    webhook's path, a token in a path) replaced by ``REDACTED``.  Never
    raises: an unparsable URL is redacted whole.
    """
    if "?" in url or "@" in url:
        try:
            parts = urlsplit(url)
        except ValueError:
            return REDACTED
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
        query = _PARAM.sub(
            lambda m: (
                f"{m.group(1)}={REDACTED}"
                if m.group(1).lower() in params
                else m.group(0)
            ),
            parts.query,
        )
        url = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    return _tokens(url)


def _names(value: Iterable[str] | str) -> frozenset[str]:
    if isinstance(value, str):
        value = (value,)
    return frozenset(str(v).strip().lower() for v in value)


def _patterns(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    return tuple(value)


@attrs.frozen
class Redaction:
    """
    What to mask besides referee's built-in lists, which always apply.

    Give it to :func:`referee.load_policy` as ``redact=``, or write the
    same in the policy file's ``redact:`` key; the two add up, and a policy
    adds up with the policies it extends::

        referee.load_policy(
            "my-api",
            redact=referee.Redaction(
                query=["my_token"],
                headers=["X-My-Secret"],
                patterns=[r"tok_[A-Za-z0-9]{20,}"],
            ),
        )

    Attributes:
        query: Query parameters whose values are masked in URLs (any
            case).
        headers: Headers whose values never render (any case).
        patterns: Regular expressions (Python syntax) for values that are
            masked wherever referee renders text.  Keep them linear: a
            pattern runs on every log line.

    Raises:
        ValueError: A pattern is not a valid regular expression, or it
            matches the empty string.
    """

    query: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    headers: frozenset[str] = attrs.field(
        default=frozenset(), converter=_names
    )
    patterns: tuple[str, ...] = attrs.field(default=(), converter=_patterns)
    #: Every secret query parameter: the built-in ones and *query*.
    all_params: frozenset[str] = attrs.field(init=False, repr=False, eq=False)
    #: Every secret header: the built-in ones and *headers*.
    all_headers: frozenset[str] = attrs.field(init=False, repr=False, eq=False)
    _extra: tuple[Any, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        extra = [compile_pattern(p) for p in self.patterns]
        added = self.query - SECRET_PARAMS
        if added:
            extra.insert(0, re.compile(_params_in_text(added)))
        object.__setattr__(self, "all_params", SECRET_PARAMS | self.query)
        object.__setattr__(self, "all_headers", SECRET_HEADERS | self.headers)
        object.__setattr__(self, "_extra", tuple(extra))

    def __or__(self, other: Redaction) -> Redaction:
        """
        Everything either masks.
        """
        if not isinstance(other, Redaction):
            return NotImplemented
        if not (other.query or other.headers or other.patterns):
            return self
        return Redaction(
            query=self.query | other.query,
            headers=self.headers | other.headers,
            patterns=tuple(dict.fromkeys((*self.patterns, *other.patterns))),
        )

    def text(self, text: str) -> str:
        """
        :func:`redact_text` with this redaction's patterns and query
        parameters.
        """
        return redact_text(text, self._extra)

    def url(self, url: str) -> str:
        """
        :func:`redact_url` with this redaction's query parameters and
        patterns.
        """
        url = redact_url(url, self.all_params)
        return redact_text(url, self._extra) if self._extra else url

    def secret_header(self, name: str) -> bool:
        """
        Whether the header *name* (any case) never renders.
        """
        return name.lower() in self.all_headers


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is a load error, not stderr
    return options


_RE2_OPTIONS: Final = _re2_options()


def compile_pattern(pattern: str) -> Any:
    """
    A user's redaction pattern, compiled.

    Raises:
        ValueError: It is not a valid regular expression, or it matches
            the empty string (it would mask nothing but litter the text).
    """
    # RE2, as for `matches`: these run over every line referee renders,
    # so none may backtrack.
    try:
        compiled: Any = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        msg = (
            f"invalid regular expression {pattern!r}: {reason} (RE2 syntax:"
            f" no lookaround, no backreferences)"
        )
        raise ValueError(msg) from None
    if compiled.fullmatch("") is not None:
        msg = (
            f"the pattern {pattern!r} matches the empty string; write one "
            f"that matches the secret itself (tok_[A-Za-z0-9]{{20,}})"
        )
        raise ValueError(msg)
    return compiled


#: Only the built-in lists.
DEFAULT: Final = Redaction()
