"""
referee for httpx: transports that wrap any other transport.

::

    policy = referee.load_policy("enrow")
    client = httpx.Client(transport=PolicyTransport(policy))
    client = httpx.AsyncClient(
        transport=AsyncPolicyTransport(policy, transport=inner)
    )

The transports only translate — httpx requests and responses to
snapshots, httpx's exceptions to the portable failure words, a body read
in chunks back into the response — and hand every call to a runner
(``referee._run.runner``), which runs the flow.

- A body is read to decide only when a candidate rule looks into it, up to
  the policy's ``body_limit``, within the time the call has left; never an
  event stream unless a rule opts in.  What was read is given back: the
  caller's ``read()``, ``iter_bytes()``, ``iter_lines()`` (and the async
  twins) see the whole body.
- A request is sent again with its body: bytes as they are, a file (or
  ``BytesIO``) rewound to its start, multipart forms as httpx rebuilds
  them.  A generator's body cannot be: the call ends with
  :class:`referee.NotReplayable`.
- A re-send's timeouts are cut to what is left of the deadline.
"""

from __future__ import annotations

from typing import Final

import httpx

from . import _httpx_family
from ._httpx_family import AsyncTransport, Library, Transport


__all__ = ["OUTCOME_EXTENSION", "AsyncPolicyTransport", "PolicyTransport"]

#: Where a response returned instead of an exception carries its
#: :class:`~referee.CallOutcome`: ``response.extensions[...]``.
OUTCOME_EXTENSION: Final = _httpx_family.OUTCOME_EXTENSION

# httpx's classes and exception tree, as the shared translation needs them
# (referee._httpx_family, which referee.httpx2 shares).
_LIBRARY: Final = Library(httpx)


def failure_word(exc: BaseException) -> str | None:
    """
    The portable word for an httpx exception, or None when it is not a
    transport failure.
    """
    return _LIBRARY.failure_word(exc)


class PolicyTransport(
    Transport[httpx.BaseTransport, httpx.Request, httpx.Response],
    httpx.BaseTransport,
):
    """
    An httpx transport that enforces *policy* around *transport* (default:
    a new :class:`httpx.HTTPTransport`).

    Args:
        policy: The compiled policy, or a :class:`~referee.PolicyWatcher`
            (each call runs under the policy current when it starts).
        transport: The transport that really sends.
        raise_on_abort: When False, an abort returns the last response
            instead of raising; ``response.extensions["referee.outcome"]``
            holds the outcome and the trail.
        sdk: The client belongs to a vendor SDK that retries on its own
            (openai, anthropic, stripe): the policy is then the only
            retry layer (the docs' *Vendor SDKs* page).
        rng: The source of jitter.
    """

    library = _LIBRARY


class AsyncPolicyTransport(
    AsyncTransport[httpx.AsyncBaseTransport, httpx.Request, httpx.Response],
    httpx.AsyncBaseTransport,
):
    """
    The asyncio twin of :class:`PolicyTransport`, wrapping an
    :class:`httpx.AsyncBaseTransport` (default: a new
    :class:`httpx.AsyncHTTPTransport`).
    """

    library = _LIBRARY
