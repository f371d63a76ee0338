"""
One worker of the fleet test (``tests/test_fleet.py``), run as its own
process::

    python tests/fleet_worker.py SERVER_URL WORKER_ID

It obeys commands, one JSON object a line on stdin, answering each with
one JSON line on stdout:

- ``{"do": "configure", "redis": URL, "cluster": false, "prefix": P,
  "recheck_after": S}``: load the fleet policy with a new
  ``RedisState.from_url(...)`` (on a Redis Cluster when *cluster*) and a
  new httpx client through ``referee.httpx.PolicyTransport``; answers
  ``{"configured": WORKER_ID}``.
- ``{"do": "post", "path": "/send", "n": 5}``: make *n* POSTs; answers
  ``{"results": [200, "CircuitOpen", ...], "alerts": [...], "slots":
  [...]}``: a status, or the referee error's class name; the alerts its
  sink received; the times (its clock) at which the rate limiter granted
  it a send.
- ``{"do": "quit"}``.

Its first line is ``{"ready": WORKER_ID}``, once everything is imported,
so that the test can start all workers' sends together.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import httpx
import structlog

import referee
from referee.httpx import PolicyTransport
from referee.redis import RedisState


if TYPE_CHECKING:
    from referee._core.backend import Admission
    from referee._core.ops import Admit


# POSTs are paced to 10 a second; a 402 on /topup alerts (one an hour per
# key), a 402 on /paid opens the breaker `credits` for ten minutes.
POLICY = """
policy: fleet
defaults:
  rate_limit: {requests: 10, per: 1s, methods: [POST]}
rules:
  - id: topup
    when: {status: 402, path: /topup}
    do: abort
    error: InsufficientCredits
    alert: {kind: topup, severity: critical, dedupe: 1h}
  - id: paid-out
    when: {status: 402, path: /paid}
    do: abort
    error: InsufficientCredits
    breaker: {name: credits, open_for: 10m}
"""


class RecordingState(RedisState):
    """
    A RedisState that notes when it granted a send slot (in an admission
    that asked for one).
    """

    slots: list[float]

    def admit(self, op: Admit) -> Admission:
        got = super().admit(op)
        granted = got.breaker is None and got.pause is None and got.wait <= 0
        if op.limit is not None and granted:
            self.slots.append(op.now)
        return got


def say(answer: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


class Worker:
    """
    The worker's client, policy and state: made anew by each
    ``configure`` (a test's own Redis and key prefix).
    """

    def __init__(self, server_url: str, name: str) -> None:
        self.server_url = server_url
        self.name = name
        self.alerts: list[dict[str, object]] = []
        self.state: RecordingState | None = None
        self.policy: referee.Policy | None = None
        self.client: httpx.Client | None = None

    def configure(
        self, redis_url: str, cluster: bool, prefix: str, recheck_after: float
    ) -> None:
        self.close()
        self.state = RecordingState.from_url(
            redis_url,
            cluster=cluster,
            prefix=prefix,
            recheck_after=recheck_after,
        )
        self.state.slots = []
        self.policy = referee.load_policy_text(
            POLICY,
            state=self.state,
            alert_sinks=[lambda a: self.alerts.append(a.as_dict())],
        )
        self.client = httpx.Client(
            transport=PolicyTransport(self.policy),
            headers={"X-Worker": self.name},
            timeout=30.0,
        )

    def post(self, path: str, n: int) -> dict[str, object]:
        assert self.client is not None
        assert self.policy is not None
        assert self.state is not None
        results: list[int | str] = []
        for _ in range(n):
            try:
                response = self.client.post(self.server_url + path, json={})
            except referee.RefereeError as exc:
                results.append(type(exc).__name__)
            else:
                results.append(response.status_code)
        self.policy.runtime.alerts.flush()
        answer = {
            "results": results,
            "alerts": self.alerts[:],
            "slots": self.state.slots,
        }
        self.alerts.clear()
        self.state.slots = []
        return answer

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.policy is not None:
            self.policy.runtime.alerts.close()
        if self.state is not None:
            self.state.close()


def main() -> None:
    server_url, name = sys.argv[1:3]
    # stdout carries the answers: logs go to stderr.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr)
    )
    worker = Worker(server_url, name)
    say({"ready": name})
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] == "configure":
            worker.configure(
                command["redis"],
                command["cluster"],
                command["prefix"],
                command["recheck_after"],
            )
            say({"configured": name})
        elif command["do"] == "post":
            say(worker.post(command["path"], command["n"]))
        else:
            break
    worker.close()


if __name__ == "__main__":
    main()
