"""Where webhook notifications may go: the ``[alerts]`` allowlist, the scheme, the address.

Pure (no I/O): the sender resolves a recipient's host name itself, right before
connecting, and asks :meth:`WebhookPolicy.check_address` about each address it got; it then
connects to an address that passed, never to the name again (no DNS rebinding between the
check and the connection).

A recipient URL is allowed when

- its scheme is ``https`` (``http`` only with ``webhook_allow_http = true``);
- it matches an entry of ``webhook_allow``: a host name (``hooks.example.com``, any port),
  a host and port (``hooks.example.com:8443``), every subdomain (``*.example.com``, not the
  name itself), or a URL prefix (``https://hooks.example.com/sms/``: same scheme, host and
  port, and a path that is the prefix's or below it, compared segment by segment);
- every address its host resolves to is a public (global unicast) address, or lies in a
  network of ``webhook_allow_networks``. Loopback, link-local, private (RFC 1918, IPv6
  ULA), shared (CGNAT 100.64.0.0/10), unspecified, multicast and reserved addresses are
  refused otherwise. A cloud metadata address (169.254.169.254, fd00:ec2::254, and the name
  metadata.google.internal) needs an entry for exactly that address (``/32``, ``/128``): a
  broad ``10.0.0.0/8`` or even ``0.0.0.0/0`` never lets a rule row read instance
  credentials.

Every refusal has a bounded reason (:data:`REASONS`) for metrics, and a one-line detail
that shows the recipient as :func:`shown` does: scheme, host and port only, because chat
webhooks carry their secret in the path or the query.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NOT_ALLOWED = "not_allowed"  # not on the allowlist (or not a URL the allowlist can judge)
NOT_HTTPS = "not_https"  # http:// without webhook_allow_http
REFUSED_ADDRESS = "refused_address"  # loopback, private, metadata ... not allowed by a network
REASONS = (NOT_ALLOWED, NOT_HTTPS, REFUSED_ADDRESS)

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata"})  # 169.254.169.254
_GCE_METADATA = ipaddress.ip_address("169.254.169.254")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 embedded in the last 32 bits
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Refusal:
    reason: str  # one of REASONS
    detail: str  # one line, without the URL's path, query or password

    def __str__(self) -> str:
        return self.detail


def shown(url: str) -> str:
    """``scheme://host[:port]`` and ``/…`` when there is more: what a log line or a refusal
    may show of a recipient (a Slack or Teams webhook's secret is its path)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "an unparsable URL"
    host = f"[{host}]" if ":" in host else host
    rest = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{rest}"


def normal_host(host: str) -> str:
    """Lower case, no trailing dot, IDNA for a Unicode name, an IP literal in its short form."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return host
    return host


def address_class(ip: IPAddress) -> str | None:
    """What makes ``ip`` a non-public destination (``loopback``, ``link-local``, ``private``,
    ``shared``, ``unspecified``, ``multicast``, ``metadata``, ``reserved``), or None for a
    public unicast address. An IPv6 address carrying an IPv4 one (mapped ``::ffff:a.b.c.d``,
    NAT64 ``64:ff9b::/96``) is judged by it; a 6to4 one by both."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_class(ip.ipv4_mapped)
        if ip in _NAT64:
            return address_class(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and (inner := address_class(ip.sixtofour)):
            return inner
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared"
    if ip.is_private or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class AllowEntry:
    """One ``webhook_allow`` entry: a host (``*.`` for subdomains, ``:port`` for one port)
    or a URL prefix."""

    text: str
    host: str
    subdomains: bool = False
    port: int | None = None  # None: any port (a host entry)
    scheme: str | None = None  # a URL prefix's
    path: str | None = None  # a URL prefix's, without a trailing slash ("" for the root)

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """ValueError saying what is wrong with an entry."""
        raw = text.strip()
        if not raw:
            raise ValueError("an empty entry")
        if "://" in raw:
            return cls._prefix(raw)
        subdomains = raw.startswith("*.")
        rest = raw[2:] if subdomains else raw
        port: int | None = None
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", rest)
        if m:
            host, port_text = m.group(1), m.group(2)
        elif rest.count(":") == 1:
            host, port_text = rest.split(":")
        else:
            host, port_text = rest, None  # a name, an IPv4 address or a bare IPv6 address
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"{raw!r}: the port must be 1-65535")
            port = int(port_text)
        host = normal_host(host)
        if not re.fullmatch(r"[a-z0-9_.:-]+", host) or "*" in host or not host.strip("."):
            raise ValueError(f"{raw!r} is not a host name, host:port, *.domain or URL prefix")
        if subdomains and _is_ip(host):
            raise ValueError(f"{raw!r}: *. goes with a domain name, not an address")
        return cls(raw, host, subdomains, port)

    @classmethod
    def _prefix(cls, raw: str) -> AllowEntry:
        try:
            parts = urlsplit(raw)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
        except ValueError:
            raise ValueError(f"{shown(raw)} is not a URL prefix") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{shown(raw)}: a URL prefix is https://host[:port]/path")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"{shown(raw)}: a URL prefix has no user or password")
        if parts.query or parts.fragment:
            raise ValueError(f"{shown(raw)}: a URL prefix has no query or fragment")
        if _dot_segments(parts.path):
            raise ValueError(f"{shown(raw)}: a URL prefix has no . or .. segments")
        return cls(raw, normal_host(parts.hostname), False, port, scheme, parts.path.rstrip("/"))

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        if self.subdomains:
            if not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.scheme is not None:
            if scheme != self.scheme:
                return False
            assert self.path is not None
            return path == self.path or path.startswith(self.path + "/") or not self.path
        return True


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _dot_segments(path: str) -> bool:
    """A ``.`` or ``..`` segment, also percent-encoded: a server would climb out of a prefix."""
    return any(unquote(seg) in (".", "..") for seg in re.split(r"[/\\]", path))


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``webhook_allow_networks`` in CIDR form; ValueError naming a bad entry."""
    out: list[IPNetwork] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(str(entry).strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not a network in CIDR form ({exc})") from None
    return tuple(out)


@dataclass(frozen=True)
class WebhookPolicy:
    """The ``[alerts]`` rules for webhook recipients. The default refuses every webhook."""

    allow: tuple[AllowEntry, ...] = ()
    allow_http: bool = False
    networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def of(cls, allow: Sequence[str] = (), allow_http: bool = False,
           networks: Sequence[str] = ()) -> WebhookPolicy:
        """From the configuration's lists; ValueError naming a bad entry."""
        return cls(tuple(AllowEntry.parse(a) for a in allow), allow_http,
                   parse_networks(networks))

    def check_url(self, url: str) -> Refusal | None:
        """The refusal of a recipient URL that can be known without resolving it: scheme,
        allowlist, an address literal or a metadata name. None when it may be tried."""
        text = url.strip()
        where = shown(text)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            return Refusal(NOT_ALLOWED, f"{where} is not a URL")
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return Refusal(NOT_ALLOWED, f"{where} is not an http(s) URL with a host")
        if scheme == "http" and not self.allow_http:
            return Refusal(NOT_HTTPS, f"{where}: plain http:// is refused, https:// only unless "
                                      "[alerts] webhook_allow_http = true")
        if "\\" in text or _dot_segments(parts.path):
            return Refusal(NOT_ALLOWED, f"{where}: a path with . or .. segments or a backslash "
                                        "is refused")
        host = normal_host(parts.hostname)
        port = port or _DEFAULT_PORTS[scheme]
        if not any(e.matches(scheme, host, port, parts.path) for e in self.allow):
            return Refusal(NOT_ALLOWED, f"{where} is not in [alerts] webhook_allow")
        if host in METADATA_NAMES:
            return self.check_address(_GCE_METADATA, f"{where} (a metadata name) is")
        if _is_ip(host):
            return self.check_address(ipaddress.ip_address(host), f"{where} is")
        return None

    def check_address(self, ip: IPAddress, where: str = "") -> Refusal | None:
        """The refusal of connecting to ``ip`` (an address the recipient's host resolved to),
        or None when it is public or inside an allowed network. ``where``: what resolved to
        it, e.g. ``https://hooks.example.com/… resolves to``."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # the IPv4 address a connection to it reaches
        kind = address_class(ip)
        if kind is None:
            return None
        if kind == "metadata":
            exact = any(n.prefixlen == n.max_prefixlen and ip in n for n in self.networks)
            if exact:
                return None
        elif any(ip.version == n.version and ip in n for n in self.networks):
            return None
        what = f"{where} {ip}" if where else f"address {ip}"
        need = ("an entry for exactly that address" if kind == "metadata" else "a network")
        return Refusal(REFUSED_ADDRESS, f"{what} ({kind}), refused without {need} in "
                                        "[alerts] webhook_allow_networks")

