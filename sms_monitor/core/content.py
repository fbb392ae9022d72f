"""Message content as the runbook's Issue 2 sees it: templates, their delivery, and findings.

Text is normalised into a template (digits, greeted names, e-mail addresses and links
masked) and identified by a short hash. Only counts and hashes leave the process; the
masked template is shown to an operator by ``sms-monitor check`` alone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sms_monitor.core.frozen import Immutable

DEFAULT_SPAM_WORDS = ("FREE", "URGENT", "CLICK HERE", "WINNER", "ACT NOW", "LIMITED TIME",
                      "CASH", "PRIZE", "GUARANTEED", "CONGRATULATIONS")
RULES = ("spam_words", "all_caps", "no_opt_out", "no_practice_name", "not_gsm7")

# GSM 03.38 basic character set and its extension table (each extension char costs two).
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
) | set("^{}\\[~]|€\f")

_DIGITS = re.compile(r"\d+")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
_GREETED = re.compile(r"\b(hi|hello|hey|dear|good (?:morning|afternoon|evening))([ ,]+)"
                      r"([A-Z][\w'-]*)(\s+[A-Z][\w'-]*)?", re.IGNORECASE)
_OPT_OUT = re.compile(r"\b(stop|unsubscribe|opt[ -]?out)\b", re.IGNORECASE)


def normalise_template(text: str) -> str:
    """The message with its personal and varying parts masked."""
    t = _URL.sub("<link>", text)
    t = _EMAIL.sub("<email>", t)
    t = _GREETED.sub(lambda m: f"{m.group(1)}{m.group(2)}<name>", t)
    t = _DIGITS.sub("#", t)
    return re.sub(r"\s+", " ", t).strip()


def template_id(template: str) -> str:
    return hashlib.blake2b(template.encode(), digest_size=4).hexdigest()


def is_gsm7(text: str) -> bool:
    return all(ch in _GSM7 for ch in text)


def findings(template: str, practice_name: str | None,
             spam_words: Iterable[str] = DEFAULT_SPAM_WORDS) -> set[str]:
    """The content rules a template breaks."""
    out = set()
    upper = template.upper()
    if any(re.search(rf"\b{re.escape(w.upper())}\b", upper) for w in spam_words):
        out.add("spam_words")
    letters = [c for c in template if c.isalpha()]
    if len(letters) >= 10 and sum(c.isupper() for c in letters) / len(letters) >= 0.6:
        out.add("all_caps")
    if not _OPT_OUT.search(template):
        out.add("no_opt_out")
    if practice_name and practice_name.lower() not in template.lower():
        out.add("no_practice_name")
    if not is_gsm7(template):
        out.add("not_gsm7")
    return out


@dataclass(frozen=True)
class TemplateStats:
    id: str
    masked: str  # for the operator's eyes only (sms-monitor check)
    sent: int  # rows logged
    delivered: int
    findings: frozenset[str]
    settled: int = -1  # rows with a delivery outcome (delivered or not); -1: as many as sent

    @property
    def outcomes(self) -> int:
        return self.sent if self.settled < 0 else self.settled

    @property
    def delivery_ratio(self) -> float:
        """Delivered among the rows whose outcome is known (0 when none is)."""
        return self.delivered / self.outcomes if self.outcomes else 0.0


@dataclass(frozen=True)
class ContentReport(Immutable):
    templates: tuple[TemplateStats, ...] = ()  # most sent first, with at least min_sent
    findings: Mapping[str, int] = field(default_factory=dict)  # rule -> templates breaking it
    min_sent: int = 10

    def judged(self) -> list[TemplateStats]:
        """Templates with at least ``min_sent`` delivery outcomes: enough to judge."""
        return [t for t in self.templates if t.outcomes >= self.min_sent]

    def under(self, threshold: float) -> list[TemplateStats]:
        return [t for t in self.judged() if t.delivery_ratio < threshold]


def content_report(rows: Iterable[tuple[str, int, int] | tuple[str, int, int, int]],
                   practice_name: str | None,
                   spam_words: Iterable[str] = DEFAULT_SPAM_WORDS, min_sent: int = 10
                   ) -> ContentReport:
    """Merge (digit-masked text, sent, delivered[, settled]) rows into templates and judge
    them. ``settled`` counts the rows with a delivery outcome; without it every row has one.
    """
    merged: dict[str, list[int]] = {}
    for text, sent, delivered, *rest in rows:
        if not isinstance(text, str):
            continue
        key = normalise_template(text)
        acc = merged.setdefault(key, [0, 0, 0])
        acc[0] += int(sent)
        acc[1] += int(delivered)
        acc[2] += int(rest[0]) if rest else int(sent)
    words = tuple(spam_words)
    templates = []
    counts = dict.fromkeys(RULES, 0)
    for key, (sent, delivered, settled) in merged.items():
        if sent < min_sent:
            continue
        found = findings(key, practice_name, words)
        for rule in found:
            counts[rule] += 1
        templates.append(TemplateStats(template_id(key), key[:80], sent, delivered,
                                       frozenset(found), settled))
    templates.sort(key=lambda t: (-t.sent, t.id))
    return ContentReport(tuple(templates), counts, min_sent)
