"""
referee for httpx2: transports that wrap any other httpx2 transport.

::

    policy = referee.load_policy("openai")
    client = httpx2.Client(transport=PolicyTransport(policy))
    client = httpx2.AsyncClient(
        transport=AsyncPolicyTransport(policy, transport=inner)
    )

httpx2, Pydantic's fork of httpx (the client of the openai 3.x and
anthropic 2.x SDKs), has httpx's transport API under classes and
exceptions of its own.  These transports are :mod:`referee.httpx`'s, the
same code (``referee._httpx_family``) given httpx2's classes: httpx2's
exceptions in the portable failure words (connect, timeout, protocol,
read), its request bodies sent again (bytes, a file rewound, a multipart
form rebuilt; a generator's body ends the call with
:class:`referee.NotReplayable`), a body read to decide given back whole.
This module does not import httpx.
"""

from __future__ import annotations

from typing import Final

import httpx2

from . import _httpx_family
from ._httpx_family import AsyncTransport, Library, Transport


__all__ = ["OUTCOME_EXTENSION", "AsyncPolicyTransport", "PolicyTransport"]

#: Where a response returned instead of an exception carries its
#: :class:`~referee.CallOutcome`: ``response.extensions[...]`` (the same
#: key as :mod:`referee.httpx`'s).
OUTCOME_EXTENSION: Final = _httpx_family.OUTCOME_EXTENSION

_LIBRARY: Final = Library(httpx2)


class PolicyTransport(
    Transport[httpx2.BaseTransport, httpx2.Request, httpx2.Response],
    httpx2.BaseTransport,
):
    """
    An httpx2 transport that enforces *policy* around *transport*
    (default: a new :class:`httpx2.HTTPTransport`).

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
    AsyncTransport[httpx2.AsyncBaseTransport, httpx2.Request, httpx2.Response],
    httpx2.AsyncBaseTransport,
):
    """
    The asyncio twin of :class:`PolicyTransport`, wrapping an
    :class:`httpx2.AsyncBaseTransport` (default: a new
    :class:`httpx2.AsyncHTTPTransport`).
    """

    library = _LIBRARY
