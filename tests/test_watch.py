"""
Live reload (referee.watch_policy) and the policy search path
(REFEREE_POLICY_PATH).

The watcher polls every 0.05 s here; a test waits (up to a few seconds) for
a change to show and never asserts how fast it showed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import pytest
import requests
import structlog
from tests.server import Reply, ScriptedServer

import referee
from referee.aiohttp import PolicyMiddleware
from referee.httpx import AsyncPolicyTransport, PolicyTransport
from referee.requests import PolicyAdapter


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


INTERVAL = 0.05

ABORT = """\
policy: watched
rules:
  - id: teapot
    when: {status: 418}
    do: abort
    error: BadRequest
"""

ACCEPT = """\
policy: watched
rules:
  - id: teapot
    when: {status: 418}
    do: accept
"""

#: A rule with a breaker, appended to ABORT or ACCEPT: the adapters check
#: breakers only for a policy that has some.
CREDITS = """\
  - id: out-of-credits
    when: {status: 402}
    do: abort
    error: InsufficientCredits
    breaker: {name: credits, open_for: 10m}
"""

BROKEN = """\
policy: watched
rules:
  - id: teapot
    when: {status: 418}
    do: abortt
"""


def write(path: Path, text: str) -> None:
    """
    Write *text* to *path* and move its mtime forward, so that even an edit
    within the file system's timestamp granularity is seen as one.
    """
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(later, later))


def until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    """
    Wait until *cond* holds; fail after *timeout* seconds.
    """
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail("the change did not show within the timeout")
        time.sleep(0.01)


def reloads(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    The ``referee.policy_reloaded`` events among *logs*.
    """
    return [e for e in logs if e["event"] == "referee.policy_reloaded"]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "watched.yaml"
    write(path, ABORT)
    return path


@pytest.fixture
def watcher(policy_file: Path) -> Iterator[referee.PolicyWatcher]:
    with referee.watch_policy(policy_file, interval=INTERVAL) as w:
        yield w


def teapot_transport(
    gate: threading.Event | None = None,
) -> httpx.MockTransport:
    """
    A mock transport that answers 418, after *gate* is set if given.
    """

    def handler(request: httpx.Request) -> httpx.Response:
        if gate is not None:
            assert gate.wait(5)
        return httpx.Response(418)

    return httpx.MockTransport(handler)


def action(policy: referee.Policy) -> str:
    """
    What the policy's only rule does.
    """
    return policy.doc.rules[0].do


class TestWatchPolicy:
    def test_loads_the_file(self, watcher: referee.PolicyWatcher):
        """
        The watcher's current policy is the file's.
        """
        assert "watched" == watcher.current.name
        assert "abort" == action(watcher.current)
        assert "PolicyWatcher" in repr(watcher)

    def test_first_load_raises(self, tmp_path: Path):
        """
        A file that does not load the first time raises PolicyError.
        """
        path = tmp_path / "bad.yaml"
        write(path, BROKEN)

        with pytest.raises(referee.PolicyError, match="abortt"):
            referee.watch_policy(path, interval=INTERVAL)

    @pytest.mark.parametrize("interval", [0, -1.0], ids=["zero", "negative"])
    def test_interval_must_be_positive(self, policy_file: Path, interval):
        """
        An interval that is not above zero is a ValueError.
        """
        with pytest.raises(ValueError, match="interval"):
            referee.watch_policy(policy_file, interval=interval)

    def test_edit_takes_effect_for_new_calls(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        After an edit, new calls run under the edited policy.
        """
        client = httpx.Client(
            transport=PolicyTransport(watcher, teapot_transport())
        )
        with pytest.raises(referee.BadRequest):
            client.get("https://api.example/")

        write(policy_file, ACCEPT)
        until(lambda: action(watcher.current) == "accept")

        assert 418 == client.get("https://api.example/").status_code

    def test_good_reload_is_logged(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        A reload logs referee.policy_reloaded with ok, the name and the
        sources.
        """
        with structlog.testing.capture_logs() as logs:
            write(policy_file, ACCEPT)
            until(lambda: bool(reloads(logs)))

        [event] = reloads(logs)
        assert {
            "event": "referee.policy_reloaded",
            "log_level": "info",
            "ok": True,
            "path": str(policy_file),
            "policy": "watched",
            "sources": [str(policy_file)],
        } == event

    def test_bad_edit_keeps_the_old_policy(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        An edit that does not load keeps the policy in force and logs the
        whole PolicyError.
        """
        before = watcher.current
        with structlog.testing.capture_logs() as logs:
            write(policy_file, BROKEN)
            until(lambda: bool(reloads(logs)))

        [event] = reloads(logs)
        assert before is watcher.current
        assert (False, "error") == (event["ok"], event["log_level"])
        assert "abortt" in event["error"]
        assert str(policy_file) in event["error"]

    def test_fixing_the_file_reloads(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        After a bad edit, the fixed file is loaded.
        """
        with structlog.testing.capture_logs() as logs:
            write(policy_file, BROKEN)
            until(lambda: bool(reloads(logs)))
            write(policy_file, ACCEPT)
            until(lambda: action(watcher.current) == "accept")

        assert [False, True] == [e["ok"] for e in reloads(logs)]

    def test_bad_edit_is_logged_once(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        A file that stays broken is not reloaded (nor logged) again and
        again.
        """
        with structlog.testing.capture_logs() as logs:
            write(policy_file, BROKEN)
            until(lambda: bool(reloads(logs)))
            time.sleep(INTERVAL * 4)

        assert 1 == len(reloads(logs))

    def test_edit_to_an_extended_file_reloads(self, tmp_path: Path):
        """
        A change to a file that the policy extends reloads it too.
        """
        base = tmp_path / "base.yaml"
        write(base, ABORT.replace("watched", "base"))
        child = tmp_path / "child.yaml"
        write(child, "policy: child\nextends: ./base.yaml\n")

        with referee.watch_policy(child, interval=INTERVAL) as w:
            assert "abort" == action(w.current)
            write(base, ACCEPT.replace("watched", "base"))
            until(lambda: action(w.current) == "accept")

        assert "child" == w.current.name

    def test_fixing_a_newly_extended_file_reloads(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        An edit that extends a file that does not load yet is reloaded
        once that file is fixed.
        """
        base = policy_file.parent / "base.yaml"
        write(base, BROKEN.replace("watched", "base"))
        with structlog.testing.capture_logs() as logs:
            write(policy_file, "policy: watched\nextends: ./base.yaml\n")
            until(lambda: bool(reloads(logs)))
            write(base, ACCEPT.replace("watched", "base"))
            until(lambda: action(watcher.current) == "accept")

        assert [False, True] == [e["ok"] for e in reloads(logs)]

    def test_state_survives_a_reload(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        The reloaded policy keeps the state backend and the alert
        dispatcher: a breaker opened before is still open after.
        """
        write(policy_file, ABORT + CREDITS)
        until(lambda: len(watcher.current.rules) == 2)
        before = watcher.current
        assert before.runtime is not None
        before.runtime.state.open_breaker(
            "watched", "credits", time.time() + 600, "out-of-credits"
        )

        write(policy_file, ACCEPT + CREDITS)
        until(lambda: action(watcher.current) == "accept")
        after = watcher.current

        assert before.runtime is after.runtime
        assert after.runtime is not None
        opened = after.runtime.state.check_breakers("watched", time.time())
        assert opened is not None
        assert "credits" == opened.name
        client = httpx.Client(
            transport=PolicyTransport(watcher, teapot_transport())
        )
        with pytest.raises(referee.CircuitOpen):
            client.get("https://api.example/")

    def test_state_and_sinks_are_passed_on(self, policy_file: Path):
        """
        state and alert_sinks go to the first load and stay.
        """
        state = referee.MemoryState()
        with referee.watch_policy(
            policy_file, interval=INTERVAL, state=state
        ) as w:
            before = w.current
            assert w.reload()

        assert w.current.runtime is not None
        assert state is w.current.runtime.state
        assert before is not w.current

    def test_call_in_flight_keeps_its_policy(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        A call that started before a reload finishes under the policy it
        started with; the next call gets the new one.
        """
        gate = threading.Event()
        client = httpx.Client(
            transport=PolicyTransport(watcher, teapot_transport(gate))
        )
        caught: list[BaseException] = []

        def call() -> None:
            try:
                client.get("https://api.example/")
            except referee.Aborted as exc:
                caught.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        write(policy_file, ACCEPT)
        until(lambda: action(watcher.current) == "accept")
        gate.set()
        thread.join(5)

        assert [referee.BadRequest] == [type(e) for e in caught]
        assert 418 == client.get("https://api.example/").status_code

    def test_reload_now(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        reload() loads the file at once and says whether it took.
        """
        watcher.close()
        write(policy_file, BROKEN)
        with structlog.testing.capture_logs():
            assert not watcher.reload()
        write(policy_file, ACCEPT)
        with structlog.testing.capture_logs():
            assert watcher.reload()

        assert "accept" == action(watcher.current)

    def test_close_stops_the_thread(
        self, watcher: referee.PolicyWatcher, policy_file: Path
    ):
        """
        close() stops the watching thread; current stays usable.
        """
        names = {t.name for t in threading.enumerate()}
        assert "referee-watch-watched" in names

        watcher.close()
        watcher.close()  # twice is fine

        assert watcher.closed
        names = {t.name for t in threading.enumerate()}
        assert "referee-watch-watched" not in names
        assert "closed" in repr(watcher)
        write(policy_file, ACCEPT)
        time.sleep(INTERVAL * 4)
        assert "abort" == action(watcher.current)

    def test_context_manager_closes(self, policy_file: Path):
        """
        Leaving the with block closes the watcher.
        """
        with referee.watch_policy(policy_file, interval=INTERVAL) as w:
            assert not w.closed

        assert w.closed


def _httpx_sync(watcher: referee.PolicyWatcher, url: str) -> int:
    with httpx.Client(transport=PolicyTransport(watcher)) as client:
        return client.get(url).status_code


def _httpx_async(watcher: referee.PolicyWatcher, url: str) -> int:
    async def go() -> int:
        async with httpx.AsyncClient(
            transport=AsyncPolicyTransport(watcher)
        ) as client:
            return (await client.get(url)).status_code

    return asyncio.run(go())


def _requests(watcher: referee.PolicyWatcher, url: str) -> int:
    with requests.Session() as session:
        session.mount("http://", PolicyAdapter(watcher))
        return session.get(url, timeout=5).status_code


def _aiohttp(watcher: referee.PolicyWatcher, url: str) -> int:
    async def go() -> int:
        async with (
            aiohttp.ClientSession(
                middlewares=[PolicyMiddleware(watcher)]
            ) as session,
            session.get(url) as response,
        ):
            return response.status

    return asyncio.run(go())


class TestAdapters:
    @pytest.mark.parametrize(
        "call",
        [_httpx_sync, _httpx_async, _requests, _aiohttp],
        ids=["httpx", "httpx-async", "requests", "aiohttp"],
    )
    def test_adapter_follows_the_watcher(
        self,
        watcher: referee.PolicyWatcher,
        policy_file: Path,
        call: Callable[[referee.PolicyWatcher, str], int],
    ):
        """
        Every adapter takes a watcher and runs each call under its current
        policy.
        """
        with ScriptedServer() as server:
            server.script("/", [Reply(418)])
            with pytest.raises(referee.BadRequest):
                call(watcher, server.url("/"))

            write(policy_file, ACCEPT)
            until(lambda: action(watcher.current) == "accept")

            assert 418 == call(watcher, server.url("/"))


OWN = """\
policy: my-enrow
extends: enrow
rules:
  - id: teapot
    when: {status: 418}
    do: accept
"""


class TestSearchPath:
    def test_overrides_a_bundled_policy(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        A file on REFEREE_POLICY_PATH is loaded by name before the bundled
        policy of that name.
        """
        write(tmp_path / "enrow.yaml", "policy: mine\n")
        monkeypatch.setenv("REFEREE_POLICY_PATH", str(tmp_path))

        policy = referee.load_policy("enrow")

        assert "mine" == policy.name
        assert (str(tmp_path / "enrow.yaml"),) == policy.sources

    def test_own_name_extends_the_bundled_policy(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        A file on the search path that extends its own name extends the
        bundled policy it overrides.
        """
        write(tmp_path / "enrow.yaml", OWN)
        monkeypatch.setenv("REFEREE_POLICY_PATH", str(tmp_path))

        policy = referee.load_policy("enrow")

        assert "my-enrow" == policy.name
        assert str(tmp_path / "enrow.yaml") == policy.sources[0]
        assert "enrow" == policy.sources[1]
        assert "teapot" == policy.rules[0].id

    def test_own_name_chains_through_the_folders(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        Files of one name in several folders, each extending that name,
        extend the next folder's, and the last the bundled one.
        """
        first, second = tmp_path / "a", tmp_path / "b"
        first.mkdir()
        second.mkdir()
        write(first / "enrow.yaml", "policy: a\nextends: enrow\n")
        write(second / "enrow.yml", "policy: b\nextends: enrow\n")
        monkeypatch.setenv(
            "REFEREE_POLICY_PATH", os.pathsep.join([str(first), str(second)])
        )

        policy = referee.load_policy("enrow")

        assert (
            str(first / "enrow.yaml"),
            str(second / "enrow.yml"),
            "enrow",
        ) == policy.sources[:3]

    def test_extends_by_name_uses_the_search_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        extends: NAME finds the search path's file too.
        """
        folder = tmp_path / "policies"
        folder.mkdir()
        write(folder / "enrow.yaml", OWN)
        app = tmp_path / "app.yaml"
        write(app, "policy: app\nextends: enrow\n")
        monkeypatch.setenv("REFEREE_POLICY_PATH", str(folder))

        policy = referee.load_policy(app)

        assert (str(app), str(folder / "enrow.yaml"), "enrow") == (
            policy.sources[:3]
        )

    def test_first_folder_wins(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        Folders are searched in order; a missing folder is passed over.
        """
        first, second = tmp_path / "a", tmp_path / "b"
        first.mkdir()
        second.mkdir()
        write(first / "mine.json", '{"policy": "from-a"}')
        write(second / "mine.yaml", "policy: from-b\n")
        missing = tmp_path / "missing"
        monkeypatch.setenv(
            "REFEREE_POLICY_PATH",
            os.pathsep.join([str(missing), "", str(first), str(second)]),
        )

        assert "from-a" == referee.load_policy("mine").name

    def test_missing_folders_fall_back_to_bundled(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        With only missing folders on the path, names are the bundled ones.
        """
        monkeypatch.setenv("REFEREE_POLICY_PATH", str(tmp_path / "nope"))

        policy = referee.load_policy("enrow")

        assert ("enrow",) == policy.sources[:1]

    def test_unknown_name_says_where_it_looked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        A name found nowhere says which folders were searched.
        """
        monkeypatch.setenv("REFEREE_POLICY_PATH", str(tmp_path))

        with pytest.raises(referee.PolicyError) as info:
            referee.load_policy("nowhere")

        assert "REFEREE_POLICY_PATH" in str(info.value)
        assert str(tmp_path) in str(info.value)

    def test_cycle_on_the_search_path_is_reported(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        Two search-path files extending each other by name form a cycle.
        """
        write(tmp_path / "x.yaml", "policy: x\nextends: y\n")
        write(tmp_path / "y.yaml", "policy: y\nextends: x\n")
        monkeypatch.setenv("REFEREE_POLICY_PATH", str(tmp_path))

        with pytest.raises(referee.PolicyError, match="cycle"):
            referee.load_policy("x")

    def test_watcher_watches_a_name_on_the_search_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """
        watch_policy("NAME") watches the file the search path finds.
        """
        path = tmp_path / "watched.yaml"
        write(path, ABORT)
        monkeypatch.setenv("REFEREE_POLICY_PATH", str(tmp_path))

        with referee.watch_policy("watched", interval=INTERVAL) as w:
            write(path, ACCEPT)
            until(lambda: action(w.current) == "accept")
