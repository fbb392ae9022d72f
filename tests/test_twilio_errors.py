"""The one classification of failed Twilio calls (poller and canary alike)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from sms_monitor.core import facts as kinds
from sms_monitor.inputs.twilio_errors import TWILIO_FAILURES, failure_kind


@pytest.mark.parametrize(("exc", "kind"), [
    (requests.Timeout(), kinds.TIMEOUT),
    (requests.ConnectionError(), kinds.CONNECTION),
    (TwilioRestException(401, "/x"), kinds.AUTH),
    (TwilioRestException(429, "/x"), kinds.SERVER_ERROR),
    (TwilioRestException(503, "/x"), kinds.SERVER_ERROR),
    (TwilioRestException(404, "/x"), kinds.CLIENT_ERROR),
    # the client's "unable to fetch page" carries the response as its second argument
    (TwilioException("Unable to fetch page", SimpleNamespace(status_code=500)),
     kinds.SERVER_ERROR),
    (TwilioException("odd"), kinds.MALFORMED),
    (ValueError("not JSON"), kinds.MALFORMED),
    (KeyError("sid"), kinds.MALFORMED),
])
def test_failure_kind(exc: Exception, kind: str) -> None:
    assert isinstance(exc, TWILIO_FAILURES)
    assert failure_kind(exc) == kind


def test_programming_errors_are_not_twilio_failures() -> None:
    assert not isinstance(ZeroDivisionError(), TWILIO_FAILURES)
