"""
A throw-away ``redis-server`` on a free loopback port, for the tests of
:mod:`referee.redis`: no persistence, its own scratch directory, stopped
(or killed, to test an outage) and restarted on the same port.

::

    with RedisServer.start_or_skip() as server:
        state = RedisState.from_url(server.url)
        server.kill()       # Redis goes away mid-test
        server.restart()    # and comes back, empty, on the same port

:class:`RedisCluster` starts three of them as the masters of a Redis
Cluster (``redis-cli --cluster create``), each with a third of the slots::

    with RedisCluster.start_or_skip() as cluster:
        state = RedisState.from_url(cluster.url, cluster=True)

Without ``redis-server`` (or, for a cluster, ``redis-cli``) on PATH the tests that need it are skipped, with
a message saying how to install it — except in CI (the environment
variable ``CI`` is set), where its absence fails the run.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Self

import pytest


__all__ = ["RedisCluster", "RedisServer", "free_port"]

STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    """
    A loopback port nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """
    A loopback port that is free, and so is the port 10000 above it (a
    cluster node's bus).
    """
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 55_000)
        if _free(port) and _free(port + 10_000):
            return port


def _need(name: str) -> str:
    """
    The path of the executable *name*; skips the test (fails it under CI)
    when it is not installed.
    """
    exe = shutil.which(name)
    if exe is None:
        msg = (
            f"{name} is not on PATH: the tests of referee.redis "
            "need a real server (apt-get install redis-server, "
            "brew install redis, …)"
        )
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must install it", pytrace=False)
        pytest.skip(msg)
    return exe


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            # NOAUTH: up, and asking for the password it was given.
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """
    One ``redis-server`` process; use :meth:`start_or_skip` as a context
    manager.
    """

    def __init__(
        self, executable: str, *options: str, port: int | None = None
    ) -> None:
        self.executable = executable
        self.options = options
        self.port = free_port() if port is None else port
        self._dir = tempfile.mkdtemp(prefix="referee-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start_or_skip(cls, *options: str) -> Self:
        """
        A started server, with extra configuration *options*
        (``"--requirepass", "secret"``); skips the test (fails it under
        CI) when ``redis-server`` is not installed.
        """
        server = cls(_need("redis-server"), *options)
        server.restart()
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        """
        Start the server (again, empty) on its port and wait until it
        answers PING.
        """
        self._proc = subprocess.Popen(  # noqa: S603 - our own arguments
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--daemonize",
                "no",
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _answers_ping(self.port):
            if self._proc.poll() is not None:
                msg = (
                    f"redis-server exited with {self._proc.returncode} "
                    f"on port {self.port}"
                )
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                self.kill()
                msg = f"redis-server did not answer PING on port {self.port}"
                raise RuntimeError(msg)
            time.sleep(0.01)

    def kill(self) -> None:
        """
        Kill the server at once (SIGKILL), as a crash would.
        """
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def freeze(self) -> None:
        """
        Freeze the server (SIGSTOP): its port still accepts connections,
        and nothing answers, as with a server stuck in a long command or
        a host that stopped scheduling it.
        """
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """
        Let a frozen server go on (SIGCONT); it answers what it was sent.
        """
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """
        Stop the server and remove its directory.
        """
        if self._proc is not None:
            self.thaw()  # a stopped process would not act on SIGTERM
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *args: object) -> None:
        with contextlib.suppress(OSError):
            self.stop()


class RedisCluster:
    """
    Three ``redis-server`` processes, the masters of one Redis Cluster
    (no replicas); use :meth:`start_or_skip` as a context manager.
    """

    NODES = 3

    def __init__(self, servers: list[RedisServer]) -> None:
        self.servers = servers

    @classmethod
    def start_or_skip(cls) -> Self:
        """
        A started cluster whose every slot is served; skips the test
        (fails it under CI) without ``redis-server`` and ``redis-cli``.
        """
        exe = _need("redis-server")
        cli = _need("redis-cli")
        cluster = cls([])
        try:
            for _ in range(cls.NODES):
                server = RedisServer(
                    exe,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    port=cluster_port(),
                )
                cluster.servers.append(server)
                server.restart()
            subprocess.run(  # noqa: S603 - our own arguments
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{s.port}" for s in cluster.servers),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=STARTUP_TIMEOUT,
            )
            cluster._wait_until_ok(cli)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _wait_until_ok(self, cli: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for server in self.servers:
            while True:
                info = subprocess.run(  # noqa: S603 - our own arguments
                    [cli, "-p", str(server.port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=STARTUP_TIMEOUT,
                    check=False,
                ).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    msg = f"the cluster did not come up: {info!r}"
                    raise RuntimeError(msg)
                time.sleep(0.05)

    @property
    def url(self) -> str:
        """
        The first node's URL: the client discovers the others from it.
        """
        return self.servers[0].url

    def stop(self) -> None:
        """
        Stop every node and remove their directories.
        """
        for server in self.servers:
            with contextlib.suppress(OSError):
                server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *args: object) -> None:
        self.stop()
