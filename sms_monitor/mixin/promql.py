"""The selector that scopes every expression to sms-monitor's own series.

Expressions in this package are written with every vector selector in braces, even empty
ones (``up{}``, ``twilio_account_balance{account=~"$account"}``), and with ``KEEP`` where
an aggregation keeps the selector's labels (``max by (KEEP, account) (...)``). :func:`scoped`
puts the selector's matchers first in every pair of braces that follows a metric name and
replaces ``KEEP`` with the selector's label names, so a recording rule of one deployment
never collides with another's and an alert carries the labels that tell them apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SELECTOR = 'job="sms-monitor"'

_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\\n]|\\.)*)"\s*')
# a metric name right before "{": not a label value ("$account" and "${account}" are Grafana's)
_SELECTOR_START = re.compile(r'(?<![\w:$."\\])([A-Za-z_:][A-Za-z0-9_:]*)\{')
_KEEP = re.compile(r"\bKEEP\b")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_KEYWORDS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "and",
    "or", "unless", "bool", "offset", "inf", "nan",
})


class SelectorError(ValueError):
    """A selector that is not a list of PromQL label matchers."""


@dataclass(frozen=True)
class Selector:
    """Label matchers, as written inside PromQL's braces: ``job="sms-monitor"``."""

    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value as written, escaped)

    @classmethod
    def parse(cls, text: str) -> Selector:
        text = text.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        matchers: list[tuple[str, str, str]] = []
        rest = text
        while rest.strip():
            m = _MATCHER.match(rest)
            if m is None:
                raise SelectorError(
                    f"selector {text!r}: expected label matchers like job=\"sms-monitor\", "
                    f"separated by commas, at {rest.strip()[:40]!r}")
            matchers.append((m.group(1), m.group(2), m.group(3)))
            rest = rest[m.end():]
            if rest.startswith(","):
                rest = rest[1:]
                if not rest.strip():
                    break
            elif rest.strip():
                raise SelectorError(f"selector {text!r}: expected a comma at {rest.strip()[:40]!r}")
        if not matchers:
            raise SelectorError("the selector is empty: it is what keeps other exporters' series "
                                "(another Twilio exporter's twilio_account_balance) out of the "
                                "rules, e.g. job=\"sms-monitor\"")
        if not any(op in ("=", "=~") and value not in ("", ".*") for _, op, value in matchers):
            raise SelectorError(f"selector {text!r} matches every series: give at least one "
                                f"matcher like job=\"sms-monitor\"")
        if "__name__" in (label for label, _, _ in matchers):
            raise SelectorError("the selector may not match __name__: the rules name the metrics")
        return cls(tuple(matchers))

    def __str__(self) -> str:
        return ", ".join(f'{label}{op}"{value}"' for label, op, value in self.matchers)

    @property
    def labels(self) -> tuple[str, ...]:
        """The selector's label names, each once, in order: what aggregations keep."""
        return tuple(dict.fromkeys(label for label, _, _ in self.matchers))


def scoped(expr: str, selector: Selector) -> str:
    """``expr`` with the selector in every vector selector and ``KEEP`` replaced; a metric
    written without braces is an error (it would read every exporter's series)."""
    bare = bare_metrics(expr)
    if bare:
        raise ValueError(f"write {', '.join(sorted(bare))} with braces in {expr!r}")
    sel = str(selector)

    def inject(m: re.Match[str]) -> str:
        after = expr[m.end():].lstrip()
        return f"{m.group(1)}{{{sel}" + ("" if after.startswith("}") else ", ")

    out = _SELECTOR_START.sub(inject, expr)
    return _KEEP.sub(", ".join(selector.labels), out)


def bare_metrics(expr: str) -> set[str]:
    """Metric names used without braces (which no selector can scope)."""
    s = _STRINGS.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", "{}", s)
    s = re.sub(r"\[[^\]]*\]", "[]", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*[({])", s):
        word = m.group(1)
        if word.lower() not in _KEYWORDS and word != "KEEP":
            names.add(word)
    return names


def go_string(text: str) -> str:
    """A Go (text/template) string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
