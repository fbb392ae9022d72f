"""A threading HTTP server that runs on a background thread and stops in milliseconds.

The Twilio simulator and the tests' small receivers use it (the exporter, which faces the
internet, runs on uvicorn instead: :mod:`sms_monitor.outputs.http`). The standard library's
``serve_forever`` only notices ``shutdown()`` at its next poll (every 0.5 s by default); here
the loop also watches one end of a socket pair, and ``stop()``/``shutdown()`` write a byte to
the other end, so the loop wakes at once while an idle server still polls only twice a second.
Request handling is left entirely to the subclass and its handler class.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class BackgroundHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still talking to a slow client never holds up exit
    allow_reuse_address = True
    request_queue_size = 128  # a burst of new connections is queued, not reset
    thread_name = "http-server"
    join_timeout = 5.0  # seconds stop() waits for the serving thread

    def __init__(self, address: tuple[str, int],
                 handler_class: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:  # an IPv6 host ("::1", "::"): the class default is IPv4
            self.address_family = socket.AF_INET6
        # before binding: a failed bind calls server_close() inside super().__init__
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        super().__init__(address, handler_class)
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()  # nothing serves yet
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "http"

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host!s}]" if ":" in str(host) else str(host)
        return f"{self.scheme}://{shown}:{port}"

    def start(self) -> Self:
        """Serves on a daemon thread; returns the server, listening already."""
        self._stopped.clear()  # a stop() right away waits for the thread instead of racing it
        self._thread = threading.Thread(target=self.serve_forever, name=self.thread_name,
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Handles requests until shutdown(); the same contract as the standard library's."""
        self._stopped.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stop_requested.is_set():
                    ready = selector.select(poll_interval)
                    if self._stop_requested.is_set():
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        self._accept_one()
                    self.service_actions()
        finally:
            self._stop_requested.clear()
            self._drain_wake()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stops serve_forever (running in another thread) and waits until it has returned."""
        if self._stopped.is_set():
            return
        self._stop_requested.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._stopped.wait()

    def stop(self) -> None:
        """Stops serving, closes the listening socket and joins the serving thread."""
        self.shutdown()
        self.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.join_timeout)

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept_one(self) -> None:
        """Accepts one waiting connection and hands it on (socketserver's own steps)."""
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        if not self.verify_request(request, client_address):
            self.shutdown_request(request)
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)
        except BaseException:
            self.shutdown_request(request)
            raise

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(64):
                pass
