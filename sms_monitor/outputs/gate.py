"""Admission and deadlines for the HTTP listeners, below TLS and HTTP.

A listener's socket is a :class:`GatedListener`: its ``accept()`` hands asyncio only the
connections the :class:`Gate` admits (at most ``max_connections`` open, at most
``per_source`` from one address; an IPv6 source is its /64, which one host can fill at
will), and closes the rest at once, before a TLS handshake or a byte of HTTP is read. So a
flood of slow connections from one address cannot take the descriptors the probes and the
scrapes need.

Every admitted connection carries one timer. It starts at accept: the TLS handshake and the
first request's head and body must arrive within ``request_timeout``, however slowly the
bytes trickle in. The HTTP protocol moves the timer on (:mod:`sms_monitor.outputs.http_protocol`):
the response gets its own limit, an idle keep-alive connection its own, and the next request
a fresh ``request_timeout`` from its first byte. When the timer fires, the connection is shut
down at the socket (``shutdown(SHUT_RDWR)``): asyncio then sees end-of-file whatever layer is
reading (TLS or HTTP) and closes it the usual way, so nothing is torn down under its feet.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections import Counter
from typing import Any

REFUSED_REASONS = ("max_connections", "per_source")


def source_key(address: Any) -> str:
    """The address a per-source limit counts: IPv4 as is, IPv6 by its /64."""
    host = str(address[0]) if isinstance(address, tuple) else str(address)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


class Gate:
    """Counts what one listener has open; admits or refuses each new connection."""

    def __init__(self, max_connections: int, per_source: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.per_source = per_source
        self.request_timeout = request_timeout
        self.open: dict[int, GatedConnection] = {}  # by file descriptor
        self.by_source: Counter[str] = Counter()
        self.refused: Counter[str] = Counter({r: 0 for r in REFUSED_REASONS})
        self.expired = 0  # connections shut down by their deadline
        self.accepted = 0

    def admit(self, conn: GatedConnection, source: str) -> str | None:
        """Registers ``conn``; returns why it is refused instead, or None."""
        if len(self.open) >= self.max_connections:
            reason = "max_connections"
        elif self.by_source[source] >= self.per_source:
            reason = "per_source"
        else:
            self.open[conn.fileno()] = conn
            self.by_source[source] += 1
            self.accepted += 1
            return None
        self.refused[reason] += 1
        return reason

    def release(self, conn: GatedConnection) -> None:
        if self.open.get(conn.registered_fd) is conn:
            del self.open[conn.registered_fd]
            self.by_source[conn.source] -= 1
            if self.by_source[conn.source] <= 0:
                del self.by_source[conn.source]

    def connection(self, fd: int) -> GatedConnection | None:
        return self.open.get(fd)


class GatedConnection(socket.socket):
    """An accepted connection: released from its gate when closed, shut down by its timer."""

    gate: Gate
    source = ""
    registered_fd = -1
    _timer: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        """(Re)starts the deadline: ``seconds`` from now. Called on the event loop's thread."""
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self.expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def expire(self) -> None:
        self._timer = None
        self.gate.expired += 1
        with contextlib.suppress(OSError):
            self.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.disarm()
        if self.registered_fd != -1:
            self.gate.release(self)
        super().close()


class GatedListener(socket.socket):
    """A listening socket whose ``accept()`` only returns what its gate admits."""

    gate: Gate

    def accept(self) -> tuple[socket.socket, Any]:
        while True:  # a refused connection is closed and the next one tried
            fd, address = self._accept()  # type: ignore[attr-defined]
            conn = GatedConnection(self.family, self.type, self.proto, fileno=fd)
            conn.gate = self.gate
            source = source_key(address)
            if self.gate.admit(conn, source) is not None:
                # RST instead of FIN: nothing lingers in TIME_WAIT for a refused client
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            conn.source, conn.registered_fd = source, fd
            # asyncio sets TCP_NODELAY only on sockets made with proto=IPPROTO_TCP, not ours:
            # without it a response's head and body (two writes) meet the client's delayed
            # ACK, and every small response waits 40 ms (Nagle)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if socket.getdefaulttimeout() is None:
                conn.setblocking(True)  # what socket.accept() does; asyncio sets it non-blocking
            with contextlib.suppress(RuntimeError):  # no loop: a caller outside asyncio
                conn.arm(self.gate.request_timeout)
            return conn, address


def listen(address: tuple[str, int], gate: Gate, backlog: int = 128) -> GatedListener:
    """Binds and listens; OSError (address in use, no such address) is the caller's to report."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = GatedListener(family, socket.SOCK_STREAM)
    sock.gate = gate
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and address[0] in ("::", ""):
            with contextlib.suppress(OSError):  # dual stack where the system allows it
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
