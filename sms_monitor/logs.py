"""structlog setup: JSON when not on a terminal, and nothing private in any line.

Secrets (auth tokens, passwords) are replaced wherever they appear, and the userinfo of
any URL is masked whatever its password holds (``core/credentials.py``); phone
numbers are masked to their last two digits; fields that could carry a
message body are dropped. Records from other libraries (APScheduler, twilio)
pass through the same processors.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from sms_monitor.core.credentials import mask_credentials

_PHONE = re.compile(r"\+[1-9]\d{6,14}")
_PRIVATE_KEYS = frozenset({"body", "to", "from", "from_", "phone", "phone_number", "recipient"})


def mask_phone(text: str) -> str:
    return _PHONE.sub(lambda m: "+" + "*" * (len(m.group()) - 3) + m.group()[-2:], text)


class Redactor:
    """A structlog processor that removes secrets and personal data from an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def clean(self, value: str) -> str:
        value = mask_credentials(value)  # any URL's userinfo, registered or not
        for secret in self.secrets:
            value = value.replace(secret, "[REDACTED]")
        return mask_phone(value)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        for key in list(event):
            value = event[key]
            if key in _PRIVATE_KEYS:
                event[key] = "[MASKED]" if key in ("body", "recipient") else (
                    self.clean(str(value)) if value is not None else None)
            elif isinstance(value, str):
                event[key] = self.clean(value)
            elif value is not None and not isinstance(value, int | float | bool):
                event[key] = self.clean(str(value))
        return event


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after setup)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(level: str = "info", *, secrets: Iterable[str] = (), json_output: bool | None = None,
              stream: TextIO | None = None) -> Redactor:
    out: Any = stream or _CurrentStderr()
    if json_output is None:
        json_output = not out.isatty()
    redactor = Redactor(secrets)
    renderer: Any = (structlog.processors.JSONRenderer() if json_output
                     else structlog.dev.ConsoleRenderer(colors=False))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redactor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor,
                    renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # The twilio library logs full request URLs and parameters at INFO.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return redactor
