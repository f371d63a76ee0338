"""
One retry layer inside an SDK that retries on its own.

Vendor SDKs (openai, anthropic and the other Stainless-generated ones;
stripe) wrap the HTTP client referee runs in and retry what fails: a
status they count as transient, and any exception the transport raises.
Left alone, each of their retries runs the whole policy again, and a
429-forever under ``attempts: 3`` costs 9 sends (3 of the
SDK's attempts, each the policy's 3).

The SDKs obey response headers made for this, and mark their own
retries:

- ``x-should-retry: false`` (Stainless) and ``Stripe-Should-Retry:
  false`` (stripe) on a response: do not retry it.  referee puts them on
  every error response it hands back in SDK mode (the policy has decided
  it already), so the SDK raises its own status error, carrying the API's
  body, at once.
- ``x-stainless-retry-count: N`` on a request (N ≥ 1: the SDK's own
  retry), and an ``Idempotency-Key`` the same as an earlier request's (the
  same operation, by the key's definition): a request that repeats a call
  referee gave up on with an exception is refused without sending, with
  that call's error.

This module holds the words and the two tests; the runners apply them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final


if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = [
    "KEY_HEADER",
    "STOP",
    "hands_back",
    "is_outer_retry",
]

#: What an error response handed back to an SDK carries: do not retry.
STOP: Final = (
    ("x-should-retry", "false"),
    ("stripe-should-retry", "false"),
)

#: The header Stainless SDKs count their own attempts in (0: the first).
RETRY_COUNT: Final = "x-stainless-retry-count"

#: The header that names one operation across its attempts
#: (draft-ietf-httpapi-idempotency-key-header-07; stripe sends it on
#: every POST).
KEY_HEADER: Final = "idempotency-key"


def hands_back(status: int | None, event_stream: bool) -> bool:
    """
    Whether a call that ends with an error and a response of *status*
    hands the response back to the SDK instead of raising: an error
    status (the SDK raises its own status error with the API's body), or
    an event stream whose first event the policy matched (the SDK raises
    the error the stream carries when it reads it).  A success status
    with a body the policy aborts on is raised: an SDK would take the
    response for a success.
    """
    return status is not None and (status >= 400 or event_stream)


def is_outer_retry(
    header: Callable[[str], str | None],
    key: str | None,
) -> bool:
    """
    Whether the request whose headers *header* reads is an SDK's retry of
    the call that ended with idempotency key *key* (None: it had none) on
    the same method and URL: a Stainless retry count of 1 or more, or the
    same idempotency key.
    """
    count = header(RETRY_COUNT)
    if count is not None and count.strip() not in ("", "0"):
        return True
    return key is not None and header(KEY_HEADER) == key
