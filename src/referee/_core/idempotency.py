"""
Idempotency keys (draft-ietf-httpapi-idempotency-key-header-07): whether a
call gets one, the key itself, and the rules ``idempotency:`` implies.

Pure: the key is drawn from the rng the runner passes, as jitter is.  The
runner only applies what this decides, through its exchange
(``with_header``: a header the caller set already is kept).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

import attrs

from . import schema as s


if TYPE_CHECKING:
    import random


__all__ = [
    "CONFLICT",
    "MISMATCH",
    "IdempotencySettings",
    "implied_rules",
    "mint",
]

#: The implied rules' ids: a rule of the policy's with the same id
#: replaces the implied one.
CONFLICT: Final = "idempotency-conflict"
MISMATCH: Final = "idempotency-mismatch"


@attrs.frozen
class IdempotencySettings:
    """
    The compiled ``idempotency:``.

    Attributes:
        header: The header the key is sent in.
        mint: How a key is made (``uuid4``).
        methods: The methods whose calls get a key.
    """

    header: str = "Idempotency-Key"
    mint: str = "uuid4"
    methods: frozenset[str] = frozenset({"POST", "PATCH"})


def settings(doc: s.IdempotencyDoc) -> IdempotencySettings:
    d = IdempotencySettings()
    return IdempotencySettings(
        header=doc.header or d.header,
        mint=doc.mint or d.mint,
        methods=doc.methods or d.methods,
    )


def mint(
    idem: IdempotencySettings | None, method: str, rng: random.Random
) -> tuple[str, str] | None:
    """
    ``(header, key)`` for a call of *method*, or None when it gets none.
    One key per call: the runner sets it on the request once, before the
    first send, and every re-send (retry or poll) carries the same.
    """
    if idem is None or method.upper() not in idem.methods:
        return None
    # uuid4 from the rng's bits: the core never reads the OS for entropy.
    return idem.header, str(uuid.UUID(int=rng.getrandbits(128), version=4))


def implied_rules(idem: IdempotencySettings) -> list[s.RuleDoc]:
    """
    What draft-07 asks of a client that sends a key, as rules: 409 (the
    original request still being processed) waits and retries; 422 (the
    key was used with another payload) aborts.  Both only when the request
    carried the key.
    """
    sent = {idem.header.lower(): s.ValueMatch(exists=True)}
    return [
        s.RuleDoc(
            do=s.Word("retry"),
            id=s.Name(CONFLICT),
            description=(
                "409 to a request with an idempotency key: the original "
                "request is still being processed; retry later"
            ),
            when=s.ConditionDoc(
                status=s.StatusSet(frozenset({409})), request_headers=sent
            ),
        ),
        s.RuleDoc(
            do=s.Word("abort"),
            id=s.Name(MISMATCH),
            description=(
                "422 to a request with an idempotency key: the key was "
                "used with another payload; never retried"
            ),
            when=s.ConditionDoc(
                status=s.StatusSet(frozenset({422})), request_headers=sent
            ),
        ),
    ]
