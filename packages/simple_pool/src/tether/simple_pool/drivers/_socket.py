"""Looking at a driver's socket without disturbing it, for ``peer_closed``.

A server that ends an idle session writes its last words (if any) and closes
the socket. Reading that data would steal it from the driver, so the
adapters peek: ``MSG_PEEK`` leaves every byte in the kernel's buffer for the
driver to read later.
"""

from __future__ import annotations

import socket

from .base import socket_readable

__all__ = ["peek", "socket_readable"]

#: Enough for a few protocol messages; a server's farewell is one short message.
PEEK_SIZE = 4096


def peek(fd: int, size: int = PEEK_SIZE) -> bytes | None:
    """The bytes waiting on socket ``fd`` (``b""`` at EOF), without consuming them.

    None when nothing is waiting, or ``fd`` is not a socket we can peek at.
    The descriptor stays owned by the driver: the temporary socket object is
    detached, never closed.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        return sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""  # ECONNRESET and friends: the peer is gone
    finally:
        sock.detach()
