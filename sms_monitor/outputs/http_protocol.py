"""uvicorn's h11 protocol with the limits a server facing the internet needs.

uvicorn parses HTTP/1.1 with h11, which refuses conflicting ``Content-Length`` values, any
``Transfer-Encoding`` but ``chunked``, multiple ``Host`` headers and oversized heads, and
drains a body the application left unread before it reads the next request, so a body is
never taken for a request. :class:`GuardedProtocol` adds, per connection:

- **one deadline per phase** on the connection's :class:`~sms_monitor.outputs.gate.GatedConnection`:
  a request's head and body within ``request_timeout`` of its first byte, the response within
  ``response_timeout``, an idle keep-alive connection closed after ``idle_timeout``;
- **a stricter head** than h11 asks for, checked on the raw bytes before h11 sees them: a
  ``Content-Length`` and a ``Transfer-Encoding`` together, a repeated ``Content-Length`` or
  ``Transfer-Encoding`` (even with equal values), a bare LF line end and an obsolete folded
  header line each get 400 and the connection closed. A proxy in front might frame such a
  request differently from us, which is what request smuggling needs;
- **client certificate names**: with ``client_allowed_sans`` a TLS client whose verified
  certificate names none of them is closed before it sends a request;
- **the connection's state** (its request count) in ``scope["state"]["connection"]``, so the
  application can say ``Connection: close`` after ``max_requests_per_connection``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from sms_monitor.outputs.gate import Gate, GatedConnection

INVALID = "not valid HTTP/1.1"  # what h11 refused, as the reason our counters see
MAX_HEAD = 16 * 1024  # bytes of request line and headers (h11's limit is set to match)
_HEAD_END = b"\r\n\r\n"
_FIELD = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:", re.MULTILINE)


def head_problem(head: bytes) -> str | None:
    """Why a request head (up to its blank line) is refused; None when it is acceptable."""
    if b"\n" in head.replace(b"\r\n", b""):
        return "bare LF line ending"
    lines = head.split(b"\r\n")
    if any(line[:1] in (b" ", b"\t") for line in lines[1:] if line):
        return "obsolete line folding"
    names = [m.group(1).lower() for m in _FIELD.finditer(b"\n".join(lines[1:]))]
    lengths, encodings = names.count(b"content-length"), names.count(b"transfer-encoding")
    if lengths and encodings:
        return "both Content-Length and Transfer-Encoding"
    if lengths > 1 or encodings > 1:
        return "repeated Content-Length or Transfer-Encoding"
    return None


@dataclass
class Limits:
    """What one listener's protocol enforces (seconds and counts)."""

    request_timeout: float = 10.0
    response_timeout: float = 30.0
    idle_timeout: float = 15.0
    max_requests_per_connection: int = 1000


@dataclass
class ConnectionState:
    """Shared by a connection and each request's scope."""

    requests: int = 0
    peer_names: tuple[str, ...] = ()


class GuardedProtocol(H11Protocol):
    """One per connection; :func:`protocol_class` binds it to a listener's gate and limits."""

    gate: Gate
    limits: Limits
    sans_allowed: Callable[[Any], bool] | None = None  # peer certificate -> allowed
    on_refused_head: Callable[[str], None] | None = None

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.connection_state = ConnectionState()
        # the app's state is copied into every scope: one copy per connection carries ours
        super().__init__(config, server_state, {**app_state, "connection": self.connection_state},
                         _loop)
        self._socket: GatedConnection | None = None
        self._head = bytearray()
        self._reading = True  # the accept armed the first request's deadline

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        raw = transport.get_extra_info("socket")
        self._socket = self.gate.connection(raw.fileno()) if raw is not None else None
        if self.sans_allowed is not None and self.scheme == "https" \
                and not self.sans_allowed(transport.get_extra_info("peercert")):
            self.transport.close()  # before any request: nothing to answer

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            if not self._reading:  # the first byte of the next request: its clock starts
                self._arm(self.limits.request_timeout)
                self._reading = True
            if not self._guard(data):
                return
        super().data_received(data)
        self._after_events()

    def on_response_complete(self) -> None:
        # bytes already received past this request: the next head(s), pipelined
        pipelined = bytes(self.conn.trailing_data[0])
        self._head = bytearray()
        if self.conn.their_state is h11.DONE and pipelined and not self._guard(pipelined):
            return
        super().on_response_complete()
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE and not self.conn.trailing_data[0] and not self._head:
            self._reading = False
            self._arm(self.limits.idle_timeout)
        elif state is h11.IDLE or state is h11.SEND_BODY:
            # a partial next head, or the unread body of the request just answered: it keeps
            # the deadline it had when its first byte came
            self._reading = True
        else:
            self._after_events()

    def send_400_response(self, msg: str) -> None:
        """h11 could not parse the request (a bad header value, an oversized head, a
        transfer coding other than chunked...): uvicorn answers 400; we count it."""
        if self.on_refused_head is not None:
            self.on_refused_head(INVALID)
        super().send_400_response(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._socket is not None:
            self._socket.disarm()
        super().connection_lost(exc)

    # ------------------------------------------------------------------ helpers

    def _after_events(self) -> None:
        if self._reading and self.conn.their_state in (h11.DONE, h11.MUST_CLOSE) \
                and self.cycle is not None and not self.cycle.response_complete:
            self._reading = False  # the request is in: the response has its own limit
            self._arm(self.limits.response_timeout)

    def _arm(self, seconds: float) -> None:
        if self._socket is not None:
            self._socket.arm(seconds)

    def _guard(self, data: bytes) -> bool:
        """Checks the head being received; False when the connection was refused."""
        self._head += data
        end = self._head.find(_HEAD_END)
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._head = bytearray()  # h11 answers an oversized head with 400 itself
            return True
        problem = head_problem(bytes(self._head[:end + 2]))
        self._head = bytearray()
        if problem is not None:
            self._refuse(problem)
            return False
        return True

    def _refuse(self, problem: str) -> None:
        if self.on_refused_head is not None:
            self.on_refused_head(problem)
        if not self.transport.is_closing():
            body = f"bad request: {problem}\n".encode()
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; "
                                 b"charset=utf-8\r\nConnection: close\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
            self.transport.close()


def protocol_class(gate: Gate, limits: Limits,
                   sans_allowed: Callable[[Any], bool] | None = None,
                   on_refused_head: Callable[[str], None] | None = None,
                   name: str = "listener") -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` subclass bound to one listener (uvicorn builds instances)."""
    attrs: dict[str, Any] = {
        "gate": gate, "limits": limits,
        # staticmethod: a plain function as a class attribute would be bound to the instance
        "sans_allowed": staticmethod(sans_allowed) if sans_allowed else None,
        "on_refused_head": staticmethod(on_refused_head) if on_refused_head else None}
    return type(f"GuardedProtocol_{name}", (GuardedProtocol,), attrs)


__all__: Sequence[str] = ("ConnectionState", "GuardedProtocol", "Limits", "head_problem",
                          "protocol_class")
