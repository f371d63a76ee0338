"""
Live reload: a policy that follows its file.

:func:`watch_policy` loads a policy file and starts a daemon thread that
looks at the file (and every file it extends) every *interval* seconds; when
one changes, the policy is loaded again.  An adapter given the watcher reads
:attr:`PolicyWatcher.current` once at the start of each call, so a call in
flight finishes under the policy it started with and new calls get the new
one.

A reload that fails keeps the policy in force; either way a
``referee.policy_reloaded`` structlog event says what happened.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, final

import attrs
import structlog

from referee._core.errors import PolicyError

from .load import _is_path, load_policy


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from types import TracebackType

    from referee._core.backend import StateBackend
    from referee._core.compile import Policy
    from referee._core.redact import Redaction


__all__ = ["PolicyWatcher", "watch_policy"]

_log = structlog.get_logger("referee")

#: What says a file changed: None when it cannot be looked at (it is
#: missing, for now: an editor replacing it).
_Stamp = tuple[int, int, int, int] | None


def _stamp(path: str) -> _Stamp:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _stamps(files: Iterable[str]) -> dict[str, _Stamp]:
    return {f: _stamp(f) for f in files}


def _files(policy: Policy) -> list[str]:
    # Bundled policies (named, not paths) do not change under a process.
    return [s for s in policy.sources if _is_path(s)]


@final
class PolicyWatcher:
    """
    A policy that is loaded again when its file changes; made by
    :func:`watch_policy`.

    Give it to :class:`referee.httpx.PolicyTransport` (or the other
    adapters) where a :class:`~referee.Policy` goes.  Every reload keeps
    the first load's state backend and alert dispatcher: breakers, retry
    budgets, rate limits and alert de-duplication carry over, and the
    alert sinks (and the webhook) stay those of the first load.

    .. versionadded:: 0.3.0
    """

    def __init__(
        self,
        path: str | Path,
        *,
        interval: float = 1.0,
        state: StateBackend | None = None,
        alert_sinks: Sequence[Callable[[Any], object]] = (),
        redact: Redaction | None = None,
    ) -> None:
        if not interval > 0:
            msg = f"interval must be a number of seconds above 0: {interval!r}"
            raise ValueError(msg)
        self.path = path
        self.interval = interval
        self._redact = redact
        self._lock = threading.Lock()
        policy = load_policy(
            path, state=state, alert_sinks=alert_sinks, redact=redact
        )
        self._policy = policy
        self._stamps = _stamps(_files(policy))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch,
            name=f"referee-watch-{policy.name}",
            daemon=True,
        )
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "watching"
        return (
            f"<PolicyWatcher {str(self.path)!r} policy="
            f"{self._policy.name!r} {state}>"
        )

    @property
    def current(self) -> Policy:
        """
        The policy in force: the last one that loaded.
        """
        return self._policy

    @property
    def closed(self) -> bool:
        """
        Whether :meth:`close` stopped the watching.
        """
        return self._stop.is_set()

    def reload(self) -> bool:
        """
        Load the file again now, changed or not; whether the new policy
        took effect (on failure the old one stays, and the problems are
        logged).
        """
        with self._lock:
            return self._reload(_stamps(self._stamps))

    def close(self) -> None:
        """
        Stop watching; :attr:`current` stays the last policy loaded.
        """
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self._lock:
                    now = _stamps(self._stamps)
                    if now != self._stamps:
                        self._reload(now)
            except Exception as exc:  # noqa: BLE001 - the thread must live
                _log.error("referee.policy_watch_error", error=repr(exc))

    def _reload(self, stamps: dict[str, _Stamp]) -> bool:
        """
        Load again; *stamps* were taken before reading, so that a change
        made while loading is seen next time.
        """
        old = self._policy
        try:
            new = load_policy(self.path, redact=self._redact)
        except PolicyError as exc:
            # Also watch the files that the problems are in (a new
            # `extends` that does not load yet), so fixing them reloads.
            more = [
                p.file
                for p in exc.problems
                if _is_path(p.file) and p.file not in stamps
            ]
            self._stamps = {**stamps, **_stamps(more)}
            _log.error(
                "referee.policy_reloaded",
                ok=False,
                path=str(self.path),
                policy=old.name,
                error=str(exc),
            )
            return False
        # The same runtime: the state and the dispatcher live on, and no
        # new dispatcher threads start.
        self._policy = attrs.evolve(new, runtime=old.runtime)
        files = _files(new)
        self._stamps = {
            f: stamps[f] if f in stamps else _stamp(f) for f in files
        }
        _log.info(
            "referee.policy_reloaded",
            ok=True,
            path=str(self.path),
            policy=new.name,
            sources=list(new.sources),
        )
        return True


def watch_policy(
    path: str | Path,
    *,
    interval: float = 1.0,
    state: StateBackend | None = None,
    alert_sinks: Sequence[Callable[[Any], object]] = (),
    redact: Redaction | None = None,
) -> PolicyWatcher:
    """
    Load the policy at *path* and reload it whenever it (or a file it
    extends) changes.

    Args:
        path: As for :func:`~referee.load_policy`: a path, or a name (a
            name found on ``REFEREE_POLICY_PATH`` is watched as a file;
            bundled policies never change).
        interval: How often the files are looked at, in seconds.
        state: As for :func:`~referee.load_policy`; kept across reloads.
        alert_sinks: As for :func:`~referee.load_policy`; kept across
            reloads.
        redact: As for :func:`~referee.load_policy`; kept across reloads.

    Returns:
        The watcher: its :attr:`~PolicyWatcher.current` is the policy in
        force; close it (or use it as a context manager) to stop watching.

    Raises:
        PolicyError: The first load fails.

    .. versionadded:: 0.3.0
    """
    return PolicyWatcher(
        path,
        interval=interval,
        state=state,
        alert_sinks=alert_sinks,
        redact=redact,
    )
