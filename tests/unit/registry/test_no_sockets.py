from __future__ import annotations

import socket

import pytest


def test_the_guard_refuses_connections() -> None:
    with socket.socket() as s, pytest.raises(AssertionError, match="network connection"):
        s.connect(("127.0.0.1", 9))
