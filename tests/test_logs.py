"""Logs never carry auth tokens, passwords, recipients' numbers or message bodies."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from sms_monitor import logs


@pytest.fixture(autouse=True)
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def capture(secrets: list[str]) -> io.StringIO:
    stream = io.StringIO()
    logs.configure("debug", secrets=secrets, json_output=True, stream=stream)
    return stream


def test_secrets_and_numbers_are_scrubbed_from_structlog_events() -> None:
    stream = capture(["s3cret-token-value", "dbpass"])
    log = structlog.get_logger("t")
    log.warning("oops", detail="Authorization failed for s3cret-token-value",
                url="postgresql://app:dbpass@db/app", to="+15551234567",
                body="Your appointment is at 10:30", note="call +442071838750 now")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    text = json.dumps(line)
    assert "s3cret-token-value" not in text and "dbpass" not in text
    assert line["detail"] == "Authorization failed for [REDACTED]"
    assert line["to"] == "+*********67"
    assert line["body"] == "[MASKED]"
    assert "+442071838750" not in text and line["note"].endswith("50 now")
    assert line["level"] == "warning" and line["event"] == "oops"


def test_stdlib_records_pass_through_the_same_scrubbing() -> None:
    stream = capture(["s3cret-token-value"])
    logging.getLogger("someone.else").error("token s3cret-token-value for +15551234567")
    out = stream.getvalue()
    assert "s3cret-token-value" not in out and "+15551234567" not in out
    assert "[REDACTED]" in out


def test_twilio_request_logging_is_silenced() -> None:
    stream = capture([])
    logging.getLogger("twilio.http_client").info("GET ...?PhoneNumber=+15551234567")
    assert stream.getvalue() == ""


def test_mask_phone_keeps_only_two_digits() -> None:
    assert logs.mask_phone("+15005550006") == "+*********06"
    assert logs.mask_phone("no number") == "no number"
