"""Credentials in URLs: found and masked whatever characters a password holds.

Every URL sms-monitor is given (the application database, its own stores, Alertmanager,
SMTP, Twilio's API base, the status page) may carry ``user:password@``, and an operator
does not always percent-encode the password. So here a URL's *userinfo* is everything
between ``://`` and the **last** ``@`` that is followed by a host (a name, an address, a
bracketed IPv6 address or nothing, then an optional port) and the end of the URL or one of
``/ ? #``: a password may hold ``@ / ? # :``. The username may hold ``@`` (an e-mail
address) but none of ``/ ? # :``.

- :func:`mask_credentials` hides the userinfo of every URL in a text (a log line, an error,
  a check's detail) as ``scheme://***@host``; where a URL is ambiguous it hides more
  rather than less. In a text a URL ends at white space; :func:`mask_url` masks one URL
  whatever it holds.
- :func:`url_passwords` gives the forms of a URL's password the log redaction registers.
- :func:`unambiguous` percent-encodes the reserved characters of a password that standard
  parsers would otherwise split in the wrong place (``postgresql://app:p@ss@db/x``, whose
  host SQLAlchemy reads as ``ss@db``, and an error then names it), so the URL sms-monitor
  uses is the one the operator meant.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

_SCHEME = r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)"
_HOST = r"(?:\[[0-9A-Fa-f:.]*\]|[\w.~%-]*)(?::\d*)?"
# what may follow a host: the URL's end, its path, query or fragment; in a text, a space,
# a quote, a bracket or punctuation
_END = r"(?=[/?#\s'\"<>()\[\]{},;|`\\]|$)"
_USER = r"[^\s/?#:]*"

# in a text: a URL does not hold white space
_IN_TEXT = re.compile(_SCHEME + rf"(?P<userinfo>{_USER}(?::\S*)?)@(?={_HOST}{_END})")
# one URL (a configured value): the password may hold anything
_WHOLE = re.compile(_SCHEME + rf"(?P<user>{_USER})(?::(?P<password>.*))?@(?={_HOST}{_END})",
                    re.DOTALL)

# the characters a password must not hold unencoded for urlsplit and SQLAlchemy to read it
_RESERVED = {"@": "%40", "/": "%2F", "?": "%3F", "#": "%23"}


def mask_credentials(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    if "://" not in text or "@" not in text:
        return text
    return _IN_TEXT.sub(lambda m: m.group("scheme") + MASK + "@", text)


def mask_url(url: str) -> str:
    """One URL (a configured value, whose password may even hold spaces) with its userinfo
    replaced by ``***``."""
    parts = split_userinfo(url)
    return mask_credentials(url) if parts is None else f"{parts[0]}{MASK}@{parts[3]}"


def split_userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """(``scheme://``, user, password or None, the rest from the host on) of a URL with
    userinfo; None without."""
    m = _WHOLE.match(url)
    if m is None:
        return None
    return m.group("scheme"), m.group("user"), m.group("password"), url[m.end():]


def url_passwords(url: str | None) -> list[str]:
    """The password of ``url`` as written and percent-decoded, read up to the last ``@``
    and (where that differs) as standard parsers read it; empty without one."""
    parts = split_userinfo(url) if url else None
    if url is None or parts is None:
        return []
    authority = re.split(r"[/?#]", url[len(parts[0]):], maxsplit=1)[0]
    userinfo, at, _ = authority.rpartition("@")
    found = [parts[2] or "", userinfo.partition(":")[2] if at else ""]
    return list(dict.fromkeys(p for raw in found if raw for p in (raw, unquote(raw))))


def _encode(part: str) -> str:
    return "".join(_RESERVED.get(c, c) for c in part)


def unambiguous(url: str) -> str:
    """``url`` with ``@ / ? #`` in its userinfo percent-encoded, so that every parser reads
    the host sms-monitor reads: the one after the last ``@``.

    ``postgresql://app:p@ss@db/x`` becomes ``postgresql://app:p%40ss@db/x`` (SQLAlchemy
    would take the first ``@`` and connect to ``ss@db``); ``https://u:pa/ss@am.example/``
    becomes ``https://u:pa%2Fss@am.example/`` (every parser ends the host at the first
    ``/``). A URL with credentials therefore holds ``@`` only before its host: one in its
    path or query is written ``%40``. A URL whose host and port read well without
    credentials is left as it is: ``https://h:8443/@team`` is host ``h``, port 8443.
    """
    parts = split_userinfo(url)
    if parts is None:
        return url
    scheme, user, password, rest = parts
    authority = re.split(r"[/?#]", url[len(scheme):], maxsplit=1)[0]  # RFC 3986's
    if "@" not in authority and re.fullmatch(r"(?:\[[^\]]*\]|[^:]*)(?::\d*)?", authority):
        return url
    encoded = _encode(user) + ("" if password is None else ":" + _encode(password))
    return f"{scheme}{encoded}@{rest}"
