"""
Session-wide settings shared by the test modules.
"""

from __future__ import annotations

import os
import random

import pytest


# The bundled-policy tests assert in tests.policy_helpers (check_decision,
# check_delay): rewritten, their failures show both outcomes.
pytest.register_assert_rewrite("tests.policy_helpers")

#: Where the chaos soak's seed for this session is kept (tests/test_soak.py).
SOAK_SEED = pytest.StashKey[int]()
#: Set when a test used the seed: the summary repeats it.
SOAK_RAN = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    # referee's own fixtures (referee_server, referee_no_sleep, ...): an
    # install loads the plugin through its pytest11 entry point; a
    # checkout that was installed before the entry point existed (or runs
    # with plugin autoloading off) registers it here, once.
    from referee import pytest_plugin

    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "referee")
    # The CI soak meets new faults on every run; the seed is printed in the
    # header and in every failure, and REFEREE_SOAK_SEED=N replays run N.
    given = os.environ.get("REFEREE_SOAK_SEED", "").strip()
    if given:
        try:
            seed = int(given)
        except ValueError:
            msg = f"REFEREE_SOAK_SEED must be an integer, not {given!r}"
            raise pytest.UsageError(msg) from None
    else:
        seed = random.SystemRandom().randrange(2**31)
    config.stash[SOAK_SEED] = seed


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[SOAK_SEED]
    return f"soak seed: {seed} (REFEREE_SOAK_SEED={seed} replays it)"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter,
    exitstatus: int,
    config: pytest.Config,
) -> None:
    if config.stash.get(SOAK_RAN, False):
        seed = config.stash[SOAK_SEED]
        terminalreporter.write_line(
            f"soak seed: {seed} (REFEREE_SOAK_SEED={seed} replays it)"
        )


@pytest.fixture(scope="session")
def soak_seed(pytestconfig: pytest.Config) -> int:
    """
    The chaos soak's seed for this session.
    """
    pytestconfig.stash[SOAK_RAN] = True
    return pytestconfig.stash[SOAK_SEED]
