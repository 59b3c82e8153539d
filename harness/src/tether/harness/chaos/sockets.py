"""Count this process's own TCP connections to a port, from ``/proc`` (Linux).

The leak check wants to know how many connections the pool *holds*. The
server's session count says how many sessions exist, but behind toxiproxy
a session can outlive its client: toxiproxy occasionally keeps the upstream
half of a link open after the client closed its socket (seen with links
created while a toxic was being removed). Counting the sockets this process
has open to the proxy's port measures what the pool holds, exactly.
"""

from __future__ import annotations

import os

__all__ = ["connections_to_port"]

_LISTEN = "0A"


def _socket_inodes() -> set[str]:
    inodes = set()
    fd_dir = "/proc/self/fd"
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def connections_to_port(port: int) -> int | None:
    """How many TCP sockets this process holds whose remote port is ``port``
    (any state but LISTEN; a socket the peer closed but we did not still counts).
    None where ``/proc`` is not available."""
    tables = [p for p in ("/proc/self/net/tcp", "/proc/self/net/tcp6") if os.path.exists(p)]
    if not tables or not os.path.isdir("/proc/self/fd"):
        return None
    inodes = _socket_inodes()
    count = 0
    for table in tables:
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == _LISTEN or inode == "0" or inode not in inodes:
                continue
            try:
                remote_port = int(remote.rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if remote_port == port:
                count += 1
    return count
