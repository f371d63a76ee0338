"""
referee's pytest plugin: fixtures for the test suites of clients that use
referee.  pytest loads it by itself once referee is installed (the
``pytest11`` entry point ``referee``); ``-p no:referee`` turns it off.

- ``referee_no_sleep``: :func:`referee.testing.no_sleep` for the whole
  test; the recorder (its ``delays``) is the fixture's value.
- ``referee_alerts``: an :class:`~referee.testing.AlertCollector`, a sink
  to pass in ``alert_sinks=`` when loading the policy under test; its
  ``alerts`` are those delivered during the test.
- ``referee_server``: a started :class:`~referee.testing.ScriptedServer`,
  a fake API on a loopback port, stopped after the test.

The trail assertion is a function, :func:`referee.testing.assert_trail`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .testing import AlertCollector, ScriptedServer, SleepRecorder, no_sleep


if TYPE_CHECKING:
    from collections.abc import Iterator


__all__ = ["referee_alerts", "referee_no_sleep", "referee_server"]


@pytest.fixture
def referee_no_sleep() -> Iterator[SleepRecorder]:
    """
    No sleeping in referee's runners during the test: every delay is
    recorded in the value's ``delays`` instead.
    """
    with no_sleep() as recorder:
        yield recorder


@pytest.fixture
def referee_alerts() -> AlertCollector:
    """
    A sink that collects alerts: load the policy under test with
    ``alert_sinks=[referee_alerts]`` and read ``referee_alerts.alerts``.
    """
    return AlertCollector()


@pytest.fixture
def referee_server() -> Iterator[ScriptedServer]:
    """
    A fake API on a loopback port: ``script(path, [Reply(...), ...])``,
    ``url(path)``, ``requests`` and ``count(path)``.
    """
    with ScriptedServer() as server:
        yield server
