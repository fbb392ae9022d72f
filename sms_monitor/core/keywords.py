"""Whole-body SMS keywords: opt-out, opt-in and help.

A message is a keyword only when its whole trimmed body, in any case, is one of
the words: "STOP" is an opt-out, "don't stop my reminders" is not.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_OPTOUT = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE")
DEFAULT_OPTIN = ("START", "UNSTOP", "YES")
DEFAULT_HELP = ("HELP", "INFO")

OPTOUT = "optout"
OPTIN = "optin"
HELP = "help"


class KeywordMatcher:
    def __init__(self, optout: Iterable[str] = DEFAULT_OPTOUT, optin: Iterable[str] = DEFAULT_OPTIN,
                 help_words: Iterable[str] = DEFAULT_HELP) -> None:
        self._kinds: dict[str, str] = {}
        for kind, words in ((HELP, help_words), (OPTIN, optin), (OPTOUT, optout)):
            for word in words:
                self._kinds[word.strip().upper()] = kind

    def kind(self, body: object) -> str | None:
        """``optout``, ``optin``, ``help`` or None for anything that is not a bare keyword."""
        if not isinstance(body, str) or len(body) > 40:
            return None
        return self._kinds.get(body.strip().upper())
