"""
The scripted loopback server of referee's own tests: the public
``referee.testing.ScriptedServer`` (which the ``referee_server`` fixture
serves), plus :func:`closed_port`.
"""

from __future__ import annotations

import socket

from referee.testing import RESET, Recorded, Reply, ScriptedServer


__all__ = ["RESET", "Recorded", "Reply", "ScriptedServer", "closed_port"]


def closed_port() -> int:
    """
    A loopback port with nothing listening: connecting is refused.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
