"""
Target 8, the fleet: what :class:`referee.redis.RedisState` costs per
send — admitting the call (breakers checked, a rate-limit slot taken)
and settling it (the outcome counted for the failure-ratio breaker, the
retry budget refunded) — against a real ``redis-server`` started here on
a free loopback port, and how many Redis round trips a send makes.

The middleware runs over a stub transport (a prebuilt 200), so the times
are referee's and Redis's alone; the ratio is against the same policy on
the in-process :class:`~referee.MemoryState`, and the Redis ``PING``
round trip, times the round trips counted, is the floor.

The cluster case (:func:`run_cluster`) starts three more servers as the
masters of a Redis Cluster (``redis-cli --cluster create``) and times the
same sends on it beside the single server: the ratio is what the cluster
costs per operation (every script runs on the one node that holds the
policy's slot, so it should be close to 1x).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import referee


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


#: Every state feature at once: a failure-ratio breaker, a rule breaker,
#: a rate limit that never makes a call wait, and a retry budget.
POLICY = """\
policy: fleet
defaults:
  breaker: {failure_ratio: 0.5, window: 30s, min_calls: 20, open_for: 30s}
  budget: {tokens: 10, refill: 0.1}
  rate_limit: {requests: 100000000, per: 1s}
rules:
  - id: out-of-credits
    when: {status: 402}
    do: abort
    breaker: {name: credits, open_for: 10m}
  - id: unavailable
    when: {status: 503}
    do: retry
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _bus_port() -> int:
    """
    A free port whose cluster bus port (10000 above) is free too.
    """
    while True:
        port = random.randrange(20_000, 55_000)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


@contextlib.contextmanager
def redis_server(
    *options: str, port: int | None = None
) -> Iterator[str | None]:
    """
    A throw-away ``redis-server`` (no persistence) on a free loopback
    port, with extra *options*: its URL, or None when ``redis-server`` is
    not on PATH.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    port = _free_port() if port is None else port
    with tempfile.TemporaryDirectory(prefix="referee-bench-") as where:
        proc = subprocess.Popen(  # noqa: S603 - our own arguments
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                where,
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not _pings(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    msg = f"redis-server did not start on port {port}"
                    raise RuntimeError(msg)
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(5)


@contextlib.contextmanager
def redis_cluster() -> Iterator[str | None]:
    """
    Three throw-away ``redis-server`` masters of one Redis Cluster: a
    node's URL, or None without ``redis-server`` and ``redis-cli``.
    """
    cli = shutil.which("redis-cli")
    if cli is None or shutil.which("redis-server") is None:
        yield None
        return
    options = ("--cluster-enabled", "yes", "--cluster-config-file", "n.conf")
    with contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(redis_server(*options, port=_bus_port()))
            for _ in range(3)
        ]
        nodes = [str(u).removeprefix("redis://").split("/")[0] for u in urls]
        subprocess.run(  # noqa: S603 - our own arguments
            [
                cli,
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 30
        for node in nodes:
            host, port = node.split(":")
            while (
                "cluster_state:ok"
                not in subprocess.run(  # noqa: S603
                    [cli, "-h", host, "-p", port, "cluster", "info"],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=10,
                ).stdout
            ):
                if time.monotonic() > deadline:
                    msg = "the benchmark's Redis Cluster did not come up"
                    raise RuntimeError(msg)
                time.sleep(0.05)
        yield urls[0]


def round_trips(state: Any, send: Callable[[], Any]) -> Counter[str]:
    """
    The Redis commands one *send* makes through *state*'s client, by
    script name (EVALSHA) or command; the client's first use (script
    loading) is left out.
    """
    names = {s.sha: name for name, s in state._scripts.items()}
    seen: Counter[str] = Counter()
    client = state._client
    original = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        command = str(args[0]).upper()
        seen[
            names.get(args[1], command) if command == "EVALSHA" else command
        ] += 1
        return original(*args, **options)

    from referee._run.stateio import drain

    send()
    drain()  # the first send's settlement, and the scripts' loading
    client.execute_command = counting
    try:
        send()
        drain()  # a success's settlement goes to the settling thread
    finally:
        del client.execute_command
    return seen


def run(
    rounds: int,
    compare: Callable[..., dict[str, Any]],
) -> dict[str, Any] | None:
    """
    The timing comparison (overheads over a bare stub transport) and the
    round trips per send; None without ``redis-server``.
    """
    import httpx

    from referee.httpx import PolicyTransport
    from referee.redis import RedisState

    response = httpx.Response(200, content=b'{"ok": true}')

    class Stub(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return response

    stub = Stub()
    request = httpx.Request("POST", "https://api.example.com/v1/things")
    with redis_server() as url:
        if url is None:
            return None
        state = RedisState.from_url(url)
        try:
            shared = PolicyTransport(
                referee.load_policy_text(POLICY, state=state), stub
            )
            local = PolicyTransport(
                referee.load_policy_text(POLICY, state=referee.MemoryState()),
                stub,
            )
            from referee._run.stateio import drain

            trips = round_trips(state, lambda: shared.handle_request(request))
            n = sum(trips.values())
            ping = state._client.ping

            def pings() -> None:
                for _ in range(n):
                    ping()

            def settled() -> None:
                shared.handle_request(request)
                drain()

            result = compare(
                {
                    "referee + RedisState": lambda: shared.handle_request(
                        request
                    ),
                    "referee + RedisState, its settlement waited for": (
                        settled
                    ),
                    "bare stub transport": lambda: stub.handle_request(
                        request
                    ),
                    "referee + MemoryState": lambda: local.handle_request(
                        request
                    ),
                    "1 × redis PING": ping,
                    f"{n} × redis PING (the round-trip floor)": pings,
                },
                rounds,
                "bare stub transport",
            )
        finally:
            state.close()
    return {"results": result, "round_trips": dict(trips), "trips": n}


def table(fleet: dict[str, Any] | None) -> str:
    head = "### The fleet: RedisState per send (admit + settle)"
    if fleet is None:
        return f"{head}\n\nSkipped: redis-server is not on PATH."
    res = fleet["results"]
    ours = res["referee + RedisState"]["median_ns"] / 1000
    trips = ", ".join(f"{k} {v}" for k, v in fleet["round_trips"].items())
    rows = [
        (
            f"| {name} | {r['median_ns'] / 1000:,.1f} µs | "
            f"**{r['ratio']:.2f}×** ({r['ratio_q1']:.2f}–{r['ratio_q3']:.2f}) |"
        )
        for name, r in res.items()
        if name not in ("referee + RedisState", "bare stub transport")
    ]
    return "\n".join(
        [
            head,
            "",
            (
                "A policy with a failure-ratio breaker, a rule breaker, a rate "
                "limit and a retry budget; a successful POST over a stub "
                "transport.  The call waits for its admission; its "
                "settlement goes to the settling thread (the second row "
                "waits for it too)."
            ),
            "",
            "| contender | overhead per send | the call ÷ contender (IQR) |",
            "|---|---:|---:|",
            f"| referee + RedisState (the call) | {ours:,.1f} µs | — |",
            *rows,
            "",
            (
                f"Round trips per send: **{fleet['trips']}** ({trips}), "
                "one of them on the call's path."
            ),
        ]
    )


def run_cluster(
    rounds: int,
    compare: Callable[..., dict[str, Any]],
) -> dict[str, Any] | None:
    """
    The same sends on a 3-master Redis Cluster and on a single server,
    overheads over a bare stub transport; None without ``redis-server``
    or ``redis-cli``.
    """
    import httpx

    from referee.httpx import PolicyTransport
    from referee.redis import RedisState

    response = httpx.Response(200, content=b'{"ok": true}')

    class Stub(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return response

    stub = Stub()
    request = httpx.Request("POST", "https://api.example.com/v1/things")
    with redis_cluster() as cluster_url, redis_server() as single_url:
        if cluster_url is None or single_url is None:
            return None
        on_cluster = RedisState.from_url(cluster_url, cluster=True)
        on_single = RedisState.from_url(single_url)
        try:
            cluster = PolicyTransport(
                referee.load_policy_text(POLICY, state=on_cluster), stub
            )
            single = PolicyTransport(
                referee.load_policy_text(POLICY, state=on_single), stub
            )
            cluster.handle_request(request)  # scripts loaded
            single.handle_request(request)
            result = compare(
                {
                    "referee + RedisState on a cluster": lambda: (
                        cluster.handle_request(request)
                    ),
                    "bare stub transport": lambda: stub.handle_request(
                        request
                    ),
                    "referee + RedisState on one server": lambda: (
                        single.handle_request(request)
                    ),
                },
                rounds,
                "bare stub transport",
            )
        finally:
            on_cluster.close()
            on_single.close()
    return {"results": result}


def cluster_table(fleet: dict[str, Any] | None) -> str:
    head = "### The fleet on Redis Cluster: cost per send against one server"
    if fleet is None:
        return f"{head}\n\nSkipped: redis-server or redis-cli is not on PATH."
    res = fleet["results"]
    ours = res["referee + RedisState on a cluster"]["median_ns"] / 1000
    single = res["referee + RedisState on one server"]
    return "\n".join(
        [
            head,
            "",
            "The policy above, on 3 masters (no replicas) and on one server.",
            "",
            "| contender | overhead per send | cluster ÷ contender (IQR) |",
            "|---|---:|---:|",
            f"| RedisState on a cluster | {ours:,.1f} µs | — |",
            (
                f"| RedisState on one server | "
                f"{single['median_ns'] / 1000:,.1f} µs | "
                f"**{single['ratio']:.2f}×** ({single['ratio_q1']:.2f}–"
                f"{single['ratio_q3']:.2f}) |"
            ),
        ]
    )
