"""Probe: can a broker be reached at all? For /readyz, which must answer quickly and without a client."""

from __future__ import annotations

import socket


def broker_reachable(bootstrap_servers: list[str], timeout_s: float = 2.0) -> bool:
    """True when a TCP connection to any bootstrap server opens (TLS and SASL come after)."""
    for server in bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False
