"""
What a loaded policy carries at run time: its state backend and its alert
dispatcher.  The compiled policy is pure data; this is the edge that the
loader attaches (``load_policy(..., state=..., alert_sinks=...)``) and the
runners use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs


if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from referee._core.backend import StateBackend
    from referee._core.compile import Policy


__all__ = ["Runtime", "attach"]


@attrs.define
class Runtime:
    """
    Attributes:
        state: The state backend (breakers, budgets, rate limits, alert
            de-duplication).
        alerts: The alert dispatcher.
    """

    state: StateBackend
    alerts: Any


def attach(
    policy: Policy,
    *,
    state: StateBackend | None = None,
    alert_sinks: Sequence[Callable[[Any], object]] = (),
) -> Policy:
    """
    *policy* with its run-time attachments: *state* (default: a new
    :class:`~referee.MemoryState` of its own) and an alert dispatcher that
    delivers to *alert_sinks* and to the webhook the policy file names.
    """
    from referee._core.errors import PolicyError, Problem

    from .alerts import AlertDispatcher, webhook_from_config
    from .memory import MemoryState

    backend: StateBackend = state if state is not None else MemoryState()
    sinks = list(alert_sinks)
    hook = policy.webhook
    webhook = None
    if hook is not None:
        try:
            webhook = webhook_from_config(
                "${" + hook.env + "}",
                min_severity=hook.min_severity,
                timeout=hook.timeout,
            )
        except ValueError as exc:
            raise PolicyError(
                [
                    Problem(
                        policy.sources[0],
                        None,
                        "$.alerts.webhook.url",
                        str(exc),
                    )
                ]
            ) from None
    dispatcher = AlertDispatcher(backend, sinks, webhook=webhook)
    return attrs.evolve(policy, runtime=Runtime(backend, dispatcher))
