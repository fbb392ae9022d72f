"""HTTP front of the simulator: Twilio's URL layout, basic auth and error bodies.

Control endpoints live under ``/_simulator/`` (unauthenticated, for local use):
``GET /_simulator/state``, ``POST /_simulator/scenario`` (``name=...``),
``POST /_simulator/faults`` (JSON of :class:`~sms_monitor.simulator.state.Faults` fields; a
fault is cleared by posting its default),
``POST /_simulator/clock`` (``advance=SECONDS``: fast-forward the simulated clock),
``POST /_simulator/load`` (``count``, ``span``, ``before`` seconds: bulk-create messages),
``POST /_simulator/webhooks`` (``status_url``, ``inbound_url``: where signed status callbacks
and inbound-message webhooks go; an empty value switches one off, a missing one is kept) and
``POST /_simulator/inbound`` (``from`` in E.164, ``body``, optional ``account`` SID: a message
arrives now, and is posted to the inbound webhook if one is configured) and
``POST /_simulator/account`` (``sid``, and ``status`` (active, suspended, closed) and/or
``friendly_name``: change an account, e.g. suspend a subaccount).

Accounts: a parent may have subaccounts (:meth:`SimState.add_subaccounts`). The parent's
credentials (its SID and auth token, or one of its API keys: ``SK…`` SID and secret) act on
its own resources and on every subaccount's, as Twilio allows; a subaccount's act on its own
only. ``GET /2010-04-01/Accounts.json`` lists the authenticated account and its subaccounts
(filters ``FriendlyName`` and ``Status``; ``PageSize``, ``Page``, ``PageToken`` paging).

Concurrency: with the ``concurrency_limit`` fault (or ``simulate --concurrency-limit``), an API
request arriving while that many are in flight, all accounts together, is answered at once with
429 / 20429 and Retry-After (the ``retry_after`` fault); ``GET /_simulator/state`` counts them
under ``concurrency``. Latency (the ``delay`` fault) is waited per request, concurrently.

Messages created through the API may carry ``StatusCallback``: their status callbacks go there
instead of to the configured ``status_url`` (see :mod:`sms_monitor.simulator.webhooks`).
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from sms_monitor.background_server import BackgroundHTTPServer
from sms_monitor.core.e164 import is_e164
from sms_monitor.inputs.statuspage import COMPONENT_STATES
from sms_monitor.simulator.forms import like
from sms_monitor.simulator.scenarios import SCENARIOS
from sms_monitor.simulator.state import (
    ACCOUNT_STATUSES,
    SimAccount,
    SimMessage,
    SimState,
    rfc2822,
)
from sms_monitor.simulator.webhooks import KEEP, Keep, WebhookSender, check_url

MAX_BODY = 1600  # characters, Twilio's limit for a message body

_BASE = r"^/2010-04-01/Accounts/(?P<acc>AC[0-9a-fA-F]{32})"
_ROUTES = [
    (re.compile(r"^/2010-04-01/Accounts\.json$"), "accounts"),
    (re.compile(_BASE + r"\.json$"), "account"),
    (re.compile(_BASE + r"/Balance\.json$"), "balance"),
    (re.compile(_BASE + r"/Messages\.json$"), "messages"),
    (re.compile(_BASE + r"/Messages/(?P<sid>(SM|MM)[0-9a-fA-F]{32})\.json$"), "message"),
    (re.compile(_BASE + r"/IncomingPhoneNumbers\.json$"), "numbers"),
    (re.compile(_BASE + r"/Usage/Records/(?P<period>ThisMonth|Today)\.json$"), "usage"),
]


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


def _parse_date_filter(value: str) -> tuple[float, bool]:
    """(timestamp, whole_day) from 'YYYY-MM-DD' or 'YYYY-MM-DDThh:mm:ssZ'."""
    if re.match(r"^\d{4}-\d{2}-\d{2}$", value):
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).timestamp(), True
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp(), False


class SimulatorHandler(BaseHTTPRequestHandler):
    server: SimulatorServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # see ExporterHandler: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # request lines may carry phone numbers in filters: keep them out of stderr

    # -- plumbing ---------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _principal(self) -> SimAccount | None:
        """The account the request's credentials are of: an account SID and its auth token,
        or an API key's SID and secret (the key's account); None if they are neither. A closed
        account's own credentials authenticate nothing."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        state = self.server.state
        if user.startswith("SK"):
            secret, sid = state.api_keys.get(user, ("", ""))
            if not secret or not hmac.compare_digest(secret, password):
                return None
            account = state.accounts.get(sid)
        else:
            account = state.accounts.get(user)
            if account is None or not hmac.compare_digest(account.auth_token, password):
                return None
        if account is None or account.status == "closed":
            return None
        return account

    def _authorised(self, acc: SimAccount | None) -> bool:
        """The credentials may act on ``acc``: its own, or its parent's."""
        principal = self._principal()
        if principal is None:
            return False
        return acc is None or acc.sid == principal.sid or acc.owner_sid == principal.sid

    # -- dispatch ---------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/statuspage/api/v2/summary.json":
            self._statuspage()
            return
        if url.path.startswith("/_simulator") or url.path == "/":
            self._control_get(url.path)
            return
        self._api(url.path, parse_qs(url.query))

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1 << 20)) if length else b""
        if url.path == "/_simulator/scenario":
            fields = _form_or_json(raw, self.headers.get("Content-Type", ""))
            name = str(fields.get("name", ""))
            if name not in SCENARIOS:
                self._json(400, {"error": f"unknown scenario {name!r}",
                                 "scenarios": sorted(SCENARIOS)})
                return
            self.server.state.set_scenario(name)
            if self.server.on_scenario is not None:
                self.server.on_scenario(name)
            if "application/x-www-form-urlencoded" in self.headers.get("Content-Type", "") \
                    and self.headers.get("Accept", "").startswith("text/html"):
                self._send(303, b"", "text/plain", {"Location": "/"})
                return
            self._json(200, {"scenario": name})
            return
        if url.path == "/_simulator/clock":
            fields = _form_or_json(raw, self.headers.get("Content-Type", ""))
            try:
                now = self.server.state.fast_forward(float(fields.get("advance", 0)))
            except (TypeError, ValueError):
                self._json(400, {"error": "advance must be a number of seconds"})
                return
            self._json(200, {"now": now})
            return
        if url.path == "/_simulator/load":
            fields = _form_or_json(raw, self.headers.get("Content-Type", ""))
            state = self.server.state
            try:
                count, span = int(fields.get("count", 0)), float(fields.get("span", 3600))
                if not 0 <= count <= 1_000_000:
                    raise ValueError(count)
                before = float(fields.get("before", 0))
                sid = str(fields.get("account") or next(iter(state.accounts)))
                state.load(sid, count, span, before=before)
            except (TypeError, ValueError, KeyError, StopIteration):
                self._json(400, {"error": "expected count, span, before and an existing account"})
                return
            self._json(200, {"account": sid, "messages": len(state.accounts[sid].messages)})
            return
        if url.path == "/_simulator/statuspage":
            fields = _form_or_json(raw, self.headers.get("Content-Type", ""))
            allowed = (*COMPONENT_STATES, "down", "malformed")
            status = str(fields.get("component_status", "operational"))
            if status not in allowed:
                self._json(400, {"error": f"component_status must be one of {allowed}"})
                return
            self.server.state.statuspage = {"component_status": status,
                                            "incident": str(fields.get("incident", ""))[:100]}
            self._json(200, self.server.state.statuspage)
            return
        if url.path == "/_simulator/faults":
            fields = _form_or_json(raw, self.headers.get("Content-Type", ""))
            faults = self.server.state.faults
            current = vars(faults)
            parsed: dict[str, object] = {}
            for key, value in fields.items():
                if key not in current:
                    self._json(400, {"error": f"unknown fault {key!r}"})
                    return
                try:
                    parsed[key] = like(current[key], value)
                except ValueError as exc:  # nothing is applied unless every value parses
                    self._json(400, twilio_error(400, 20001, f"Invalid {key}: {exc}"))
                    return
            self._json(200, vars(self.server.state.set_faults(parsed)))
            return
        if url.path == "/_simulator/webhooks":
            # an empty field switches a URL off, so blank values count here
            self._configure_webhooks(_form_or_json(raw, self.headers.get("Content-Type", ""),
                                                   keep_blank=True))
            return
        if url.path == "/_simulator/account":
            fields = _form_or_json(raw, self.headers.get("Content-Type", ""))
            try:
                acc = self.server.state.set_account(
                    str(fields.get("sid", "")), status=fields.get("status"),
                    friendly_name=fields.get("friendly_name"))
            except (KeyError, ValueError, TypeError) as exc:
                self._json(400, {"error": f"expected an existing sid, and status in "
                                          f"{ACCOUNT_STATUSES} or friendly_name: {exc}"})
                return
            self._json(200, {"sid": acc.sid, "status": acc.status,
                             "friendly_name": acc.friendly_name})
            return
        if url.path == "/_simulator/inbound":
            self._inbound(_form_or_json(raw, self.headers.get("Content-Type", ""),
                                        keep_blank=True))
            return
        self._api(url.path, parse_qs(raw.decode(errors="replace")), method="POST")

    def _html_form_post(self) -> bool:
        """A form on the control page posted this: answer with a redirect back to it."""
        return ("application/x-www-form-urlencoded" in self.headers.get("Content-Type", "")
                and self.headers.get("Accept", "").startswith("text/html"))

    def _configure_webhooks(self, fields: dict[str, Any]) -> None:
        webhooks = self.server.webhooks
        urls: list[str | None | Keep] = []
        for key in ("status_url", "inbound_url"):
            value = fields.get(key, KEEP)
            if value is not KEEP and value is not None and not isinstance(value, str):
                self._json(400, {"error": f"{key} must be a URL or empty"})
                return
            urls.append(value.strip() or None if isinstance(value, str) else value)
        try:
            webhooks.configure(status_url=urls[0], inbound_url=urls[1])
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        if self._html_form_post():
            self._send(303, b"", "text/plain", {"Location": "/"})
            return
        self._json(200, webhooks.snapshot())

    def _inbound(self, fields: dict[str, Any]) -> None:
        state = self.server.state
        sender = fields.get("from")
        body = fields.get("body", "")
        if not isinstance(sender, str) or not is_e164(sender):  # (narrows the type)
            self._json(400, {"error": "from must be a phone number in E.164 (+15551234567)"})
            return
        if not isinstance(body, str) or len(body) > MAX_BODY:
            self._json(400, {"error": f"body must be text of at most {MAX_BODY} characters"})
            return
        sid = fields.get("account") or next(iter(state.accounts), None)
        if not isinstance(sid, str) or sid not in state.accounts:
            self._json(400, {"error": "no such account"})
            return
        msg = state.receive(sid, sender, body)
        if self._html_form_post():
            self._send(303, b"", "text/plain", {"Location": "/"})
            return
        self._json(200, {"sid": msg.sid})

    def _statuspage(self) -> None:
        sp = dict(self.server.state.statuspage)
        if sp["component_status"] == "down":
            self._send(503, b"<html>Service Unavailable</html>", "text/html")
            return
        if sp["component_status"] == "malformed":
            self._send(200, b'{"page": {"id": "x"', "application/json")
            return
        self._json(200, statuspage_summary(sp["component_status"], sp["incident"],
                                           self.server.state.clock()))

    def _control_get(self, path: str) -> None:
        state = self.server.state
        if path == "/_simulator/state":
            with state.lock:
                self._json(200, {
                    "scenario": state.scenario.name,
                    "scenarios": sorted(SCENARIOS),
                    "faults": vars(state.faults),
                    "accounts": {sid: len(a.messages) for sid, a in state.accounts.items()},
                    "requests": state.requests,
                    "concurrency": state.concurrency(),
                    "now": state.clock(),
                    "webhooks": self.server.webhooks.snapshot(),
                })
            return
        if path == "/":
            self._send(200, _control_page(state, self.server.webhooks,
                                          self.server.home_url).encode(),
                       "text/html; charset=utf-8")
            return
        self._json(404, {"error": "not found"})

    def _api(self, path: str, query: dict[str, list[str]], method: str = "GET") -> None:
        state = self.server.state
        named = re.match(_BASE, path)
        if not state.enter(named.group("acc") if named else None):
            with state.lock:
                state.requests += 1
            self._json(429, twilio_error(429, 20429, "Too Many Requests"),
                       headers={"Retry-After": str(state.faults.retry_after)})
            return
        try:
            self._admitted(path, query, method)
        finally:
            state.leave()

    def _admitted(self, path: str, query: dict[str, list[str]], method: str) -> None:
        state = self.server.state
        with state.lock:
            state.requests += 1
            n = state.requests
            sc = state.scenario
            faults = state.faults
        if sc.outage:
            self.close_connection = True
            self.connection.shutdown(2)  # socket.SHUT_RDWR: no answer at all
            return
        if sc.api_delay or faults.delay:
            state.wait_delay(sc.api_delay, released=self.server.closing.is_set)
        if faults.server_error_every and n % faults.server_error_every == 0:
            self._json(503, twilio_error(503, 20503, "Service Unavailable"))
            return
        if faults.rate_limit_every and n % faults.rate_limit_every == 0:
            self._json(429, twilio_error(429, 20429, "Too Many Requests"),
                       headers={"Retry-After": str(faults.retry_after)})
            return
        if sc.rate_limit_every and n % sc.rate_limit_every == 0:
            self._json(429, twilio_error(429, 20429, "Too Many Requests"),
                       headers={"Retry-After": "1"})
            return
        route = next(((m, kind) for pattern, kind in _ROUTES if (m := pattern.match(path))), None)
        if route is None:
            self._json(404, twilio_error(404, 20404, "The requested resource was not found"))
            return
        m, kind = route
        if kind == "accounts":
            principal = self._principal()
            if sc.auth_failure or principal is None:
                self._json(401, twilio_error(401, 20003, "Authenticate"),
                           headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
                return
            self._list_accounts(principal, path, query)
            return
        acc = state.accounts.get(m.group("acc"))
        if sc.auth_failure or acc is None or not self._authorised(acc):
            self._json(401, twilio_error(401, 20003, "Authenticate"),
                       headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
            return
        if kind == "numbers" and faults.number_not_found:
            self._json(404, twilio_error(404, 20404, "The requested resource was not found"))
            return
        state.advance()
        if kind == "messages" and method == "POST":
            self._create_message(acc, query)
        elif kind == "messages":
            self._list_messages(acc, path, query)
        elif kind == "message":
            self._fetch_message(acc, m.group("sid"))
        elif kind == "balance":
            balance = sc.balance if acc.balance is None else acc.balance
            self._json(200, {"account_sid": acc.sid, "balance": f"{balance:.2f}",
                             "currency": acc.currency})
        elif kind == "account":
            self._json(200, _account_json(acc, acc.status or sc.account_status,
                                          created=acc.created))
        elif kind == "usage":
            self._usage(acc, path, m.group("period"), query)
        else:
            self._list_numbers(acc, path, query)

    # -- resources --------------------------------------------------------
    def _list_accounts(self, principal: SimAccount, path: str,
                       query: dict[str, list[str]]) -> None:
        """The authenticated account and its subaccounts, oldest first, filtered; paged as
        Twilio pages (PageToken ``PA`` + the previous page's last SID wins over Page)."""
        state = self.server.state
        q = {k: v[-1] for k, v in query.items()}
        try:
            size = int(q.get("PageSize", "50"))
            page = int(q.get("Page", "0"))
        except ValueError:
            self._json(400, twilio_error(400, 20001, "Invalid parameter"))
            return
        if not 1 <= size <= 1000 or page < 0:
            self._json(400, twilio_error(400, 20001, "PageSize must be between 1 and 1000"))
            return
        status = q.get("Status")
        if status is not None and status not in ACCOUNT_STATUSES:
            self._json(400, twilio_error(400, 20001, f"Invalid Status: {status}"))
            return
        name = q.get("FriendlyName")
        default = state.scenario.account_status
        with state.lock:
            family = [a for a in state.accounts.values()
                      if a.sid == principal.sid or a.owner_sid == principal.sid]
            family.sort(key=lambda a: (a.owner_sid is not None, a.created))
            matching = [a for a in family
                        if (name is None or a.friendly_name == name)
                        and (status is None or (a.status or default) == status)]
            start = page * size
            token = q.get("PageToken")
            if token:
                after = next((i for i, a in enumerate(matching) if "PA" + a.sid == token), None)
                if after is None:
                    self._json(400, twilio_error(400, 20001, "Invalid PageToken"))
                    return
                start = after + 1
            items = matching[start:start + size]
            more = start + size < len(matching)
            body = [_account_json(a, a.status or default, a.owner, a.created) for a in items]
        params = {k: v for k, v in q.items() if k not in ("Page", "PageToken", "PageSize")}
        first = _page_uri(path, params, size, 0, None)
        self._json(200, {
            "accounts": body,
            "end": page * size + max(0, len(items) - 1),
            "first_page_uri": first,
            "next_page_uri": (_page_uri(path, params, size, page + 1, "PA" + items[-1].sid)
                              if more and items else None),
            "page": page,
            "page_size": size,
            "previous_page_uri": None if page == 0 else first,
            "start": page * size,
            "uri": _page_uri(path, params, size, page, token),
        })

    def _list_messages(self, acc: SimAccount, path: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        if state.faults.malformed_messages:
            self._send(200, b'{"messages": [{"sid": "SM', "application/json")
            return
        q = {k: v[-1] for k, v in query.items()}
        try:
            size = int(q.get("PageSize", "50"))
            page = int(q.get("Page", "0"))
            filters = _message_filters(q, state.clock())
        except ValueError:
            self._json(400, twilio_error(400, 20001, "Invalid parameter"))
            return
        if not 1 <= size <= 1000:
            self._json(400, twilio_error(400, 20001, "PageSize must be between 1 and 1000"))
            return
        now = state.clock()
        with state.lock:
            msgs = acc.messages
            # newest first; PageToken names the last SID of the previous page
            start = len(msgs) - 1
            token = q.get("PageToken")
            if token and token.startswith("PA"):
                pos = acc.index.get(token[2:])
                if pos is None:
                    self._json(400, twilio_error(400, 20001, "Invalid PageToken"))
                    return
                start = pos - 1
            if state.faults.endless_paging:
                start = len(msgs) - 1
            items: list[SimMessage] = []
            i = start
            while i >= 0 and len(items) < size:
                msg = msgs[i]
                if all(f(msg) for f in filters):
                    items.append(msg)
                i -= 1
            more = i >= 0 or state.faults.endless_paging
            skew = state.faults.clock_skew
            body = [msg.as_json(now, skew) for msg in items]
        params = {k: v for k, v in q.items() if k not in ("Page", "PageToken", "PageSize")}
        first = _page_uri(path, params, size, 0, None)
        next_uri = (_page_uri(path, params, size, page + 1, "PA" + items[-1].sid)
                    if more and items else None)
        payload = {
            "messages": body,
            "end": page * size + max(0, len(items) - 1),
            "first_page_uri": first,
            "next_page_uri": next_uri,
            "page": page,
            "page_size": size,
            "previous_page_uri": None if page == 0 else first,
            "start": page * size,
            "uri": _page_uri(path, params, size, page, q.get("PageToken")),
        }
        if state.faults.truncated_json:  # a 200 whose body stops half-way (a cut connection)
            raw = json.dumps(payload).encode()
            self._send(200, raw[:len(raw) // 2])
            return
        self._json(200, payload)

    def _fetch_message(self, acc: SimAccount, sid: str) -> None:
        state = self.server.state
        with state.lock:
            pos = acc.index.get(sid)
            if pos is None:
                self._json(404, twilio_error(404, 20404, "The requested resource was not found"))
                return
            self._json(200, acc.messages[pos].as_json(state.clock(), state.faults.clock_skew))

    def _create_message(self, acc: SimAccount, form: dict[str, list[str]]) -> None:
        state = self.server.state
        to = (form.get("To") or [""])[-1]
        if not is_e164(to):
            self._json(400, twilio_error(400, 21211, "Invalid 'To' Phone Number"))
            return
        callback = (form.get("StatusCallback") or [""])[-1] or None
        if callback is not None:
            try:
                check_url(callback)
            except ValueError:
                self._json(400, twilio_error(400, 21609, "Invalid StatusCallback url"))
                return
        with state.lock:
            msg = state.create_message(acc, state.clock(), to=to,
                                       body=(form.get("Body") or [""])[-1],
                                       status_callback=callback)
            self._json(201, msg.as_json(state.clock()))

    def _usage(self, acc: SimAccount, path: str, period: str,
               query: dict[str, list[str]]) -> None:
        state = self.server.state
        category = (query.get("Category") or ["sms"])[-1]
        now = state.clock()
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today if period == "Today" else today.replace(day=1)
        records = []
        if category in ("sms", "sms-outbound"):
            count, price = state.spend(acc, start.timestamp(), now)
            records.append({
                "account_sid": acc.sid, "api_version": "2010-04-01", "as_of": rfc2822(now),
                "category": category, "count": str(count), "count_unit": "messages",
                "description": "SMS Messages", "end_date": datetime.fromtimestamp(now, UTC)
                .strftime("%Y-%m-%d"), "price": round(price, 5), "price_unit": "usd",
                "start_date": start.strftime("%Y-%m-%d"),
                "subresource_uris": {"all_time": f"/2010-04-01/Accounts/{acc.sid}/Usage/Records/"
                                                 f"AllTime.json?Category={category}"},
                "uri": f"{path}?Category={category}", "usage": str(count),
                "usage_unit": "messages"})
        self._json(200, {"usage_records": records, "end": max(0, len(records) - 1),
                         "first_page_uri": f"{path}?Category={category}&PageSize=50&Page=0",
                         "next_page_uri": None, "page": 0, "page_size": 50,
                         "previous_page_uri": None, "start": 0,
                         "uri": f"{path}?Category={category}&PageSize=50&Page=0"})

    def _list_numbers(self, acc: SimAccount, path: str, query: dict[str, list[str]]) -> None:
        sc = self.server.state.scenario
        wanted_list = query.get("PhoneNumber")
        wanted = wanted_list[-1] if wanted_list else None
        numbers = []
        if sc.number_present and (wanted is None or wanted == acc.phone_number):
            numbers.append(_number_json(acc, sc.number_sms))
        uri = path + ("?" + urlencode({"PhoneNumber": wanted}) if wanted else "")
        self._json(200, {
            "incoming_phone_numbers": numbers,
            "end": max(0, len(numbers) - 1),
            "first_page_uri": uri,
            "next_page_uri": None,
            "page": 0,
            "page_size": 50,
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        })


def statuspage_summary(messaging: str, incident: str, now: float) -> dict[str, Any]:
    """A Statuspage v2 summary.json shaped like Twilio's, SMS components in ``messaging``."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def component(cid: str, name: str, status: str, group: bool = False,
                  group_id: str | None = None) -> dict[str, Any]:
        return {"id": cid, "name": name, "status": status, "created_at": stamp,
                "updated_at": stamp, "position": 1, "description": None, "showcase": False,
                "start_date": None, "group_id": group_id, "page_id": "gpkpyklzq55q",
                "group": group, "only_show_if_degraded": False,
                **({"components": []} if group else {})}

    indicator = {"operational": "none", "degraded_performance": "minor",
                 "under_maintenance": "maintenance", "partial_outage": "major",
                 "major_outage": "critical"}[messaging]
    incidents = []
    if incident:
        incidents.append({"id": "inc1", "name": incident, "status": "investigating",
                          "impact": "major", "created_at": stamp, "updated_at": stamp,
                          "shortlink": "https://stspg.io/x", "page_id": "gpkpyklzq55q",
                          "incident_updates": [], "components": []})
        indicator = indicator if indicator != "none" else "minor"
    return {
        "page": {"id": "gpkpyklzq55q", "name": "Twilio", "url": "https://status.twilio.com",
                 "time_zone": "Etc/UTC", "updated_at": stamp},
        "components": [
            component("grp1", "Programmable Messaging", messaging, group=True),
            component("c1", "SMS Delivery", messaging, group_id="grp1"),
            component("c2", "Messaging API", messaging, group_id="grp1"),
            component("c3", "REST API", "operational"),
            component("c4", "Voice", "operational"),
        ],
        "incidents": incidents,
        "scheduled_maintenances": [],
        "status": {"indicator": indicator, "description": "All Systems Operational"
                   if indicator == "none" else "Service disruption"},
    }


def _form_or_json(raw: bytes, ctype: str, *, keep_blank: bool = False) -> dict[str, Any]:
    if "json" in ctype:
        try:
            data = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}
    form = parse_qs(raw.decode(errors="replace"), keep_blank_values=keep_blank)
    return {k: v[-1] for k, v in form.items()}


def _message_filters(q: dict[str, str], now: float) -> list[Any]:
    """Filters of the Messages list. ``DateSent`` filters compare the message's sent time
    (whole seconds, as Twilio reports it); a message not sent yet never matches them."""
    filters: list[Any] = []
    if "To" in q:
        filters.append(lambda m, v=q["To"]: m.to == v)
    if "From" in q:
        filters.append(lambda m, v=q["From"]: m.from_ == v)

    def sent(m: SimMessage) -> float | None:
        at = m.status_at(now)[2]
        return None if at is None else float(int(at))

    for key, op in (("DateSent", "eq"), ("DateSent<", "le"), ("DateSent>", "ge")):
        if key not in q:
            continue
        ts, whole_day = _parse_date_filter(q[key])
        if op == "eq":
            end = ts + 86400 if whole_day else ts + 1
            filters.append(lambda m, a=ts, b=end: (t := sent(m)) is not None and a <= t < b)
        elif op == "le":
            end = ts + 86400 if whole_day else ts + 1
            filters.append(lambda m, b=end: (t := sent(m)) is not None and t < b)
        else:
            filters.append(lambda m, a=ts: (t := sent(m)) is not None and t >= a)
    return filters


def _page_uri(path: str, params: dict[str, str], size: int, page: int, token: str | None) -> str:
    q = dict(params)
    q["PageSize"] = str(size)
    q["Page"] = str(page)
    if token:
        q["PageToken"] = token
    return f"{path}?{urlencode(q)}"


def _account_json(acc: SimAccount, status: str, owner: str | None = None,
                  created: float = 1_700_000_000) -> dict[str, Any]:
    base = f"/2010-04-01/Accounts/{acc.sid}"
    return {
        "auth_token": acc.auth_token,
        "date_created": rfc2822(created),
        "date_updated": rfc2822(created),
        "friendly_name": acc.friendly_name,
        "owner_account_sid": owner or acc.owner,
        "sid": acc.sid,
        "status": status,
        "subresource_uris": {"balance": f"{base}/Balance.json",
                             "messages": f"{base}/Messages.json",
                             "incoming_phone_numbers": f"{base}/IncomingPhoneNumbers.json"},
        "type": "Full",
        "uri": f"{base}.json",
    }


def _number_json(acc: SimAccount, sms: bool) -> dict[str, Any]:
    sid = "PN" + acc.sid[2:]
    return {
        "account_sid": acc.sid, "address_sid": None, "address_requirements": "none",
        "api_version": "2010-04-01", "beta": False,
        "capabilities": {"voice": True, "sms": sms, "mms": True, "fax": False},
        "date_created": rfc2822(1_700_000_000), "date_updated": rfc2822(1_700_000_000),
        "friendly_name": "Practice reminders", "identity_sid": None,
        "phone_number": acc.phone_number, "origin": "twilio", "sid": sid,
        "sms_application_sid": None, "sms_fallback_method": "POST", "sms_fallback_url": "",
        "sms_method": "POST", "sms_url": "", "status_callback": "",
        "status_callback_method": "POST", "trunk_sid": None,
        "uri": f"/2010-04-01/Accounts/{acc.sid}/IncomingPhoneNumbers/{sid}.json",
        "voice_receive_mode": "voice", "voice_application_sid": None,
        "voice_caller_id_lookup": False, "voice_fallback_method": "POST",
        "voice_fallback_url": None, "voice_method": "POST", "voice_url": None,
        "emergency_status": "Inactive", "emergency_address_sid": None,
        "emergency_address_status": "unregistered", "bundle_sid": None, "status": "in-use",
        "type": "local",
    }


def _control_page(state: SimState, webhooks: WebhookSender | None = None,
                  home_url: str | None = None) -> str:
    rows = "".join(
        f"<li><form method='post' action='/_simulator/scenario'>"
        f"<input type='hidden' name='name' value='{html.escape(s.name)}'>"
        f"<button>{html.escape(s.name)}</button> {html.escape(s.description)}"
        f"{' <b>(active)</b>' if s.name == state.scenario.name else ''}</form></li>"
        for s in SCENARIOS.values()
    )
    back = (f"<p><a href='{html.escape(home_url)}'>Back to sms-monitor</a>, whose page "
            f"switches the demo's scenarios too.</p>" if home_url else "")
    page = (f"<!doctype html><title>Twilio simulator</title><h1>Twilio API simulator</h1>"
            f"{back}<p>Scenario: <b>{html.escape(state.scenario.name)}</b></p><ul>{rows}</ul>")
    if webhooks is not None:
        snap = webhooks.snapshot()
        status_url = html.escape(snap["status_url"] or "")
        inbound_url = html.escape(snap["inbound_url"] or "")
        counts = html.escape(f"sent {snap['sent']}, failed {snap['failed']}")
        page += (
            "<h2>Webhooks</h2>"
            "<form method='post' action='/_simulator/webhooks'>"
            "<label>Status callback URL <input name='status_url' size='50' "
            f"value='{status_url}'></label><br>"
            "<label>Inbound message URL <input name='inbound_url' size='50' "
            f"value='{inbound_url}'></label><br>"
            "<button>Save</button> (empty: off)</form>"
            f"<p>{counts}</p>"
            "<h2>Inbound message</h2>"
            "<form method='post' action='/_simulator/inbound'>"
            "<label>From <input name='from' value='+15555550100'></label> "
            "<label>Body <input name='body' value='STOP'></label> "
            "<button>Send STOP</button></form>"
        )
    return page


class SimulatorServer(BackgroundHTTPServer):
    thread_name = "simulator"

    def __init__(self, address: tuple[str, int], state: SimState) -> None:
        # set before binding: a failed bind closes the server inside super().__init__
        self.state = state
        self.closing = threading.Event()  # set on close: answers waiting out a delay go now
        self.webhooks = WebhookSender(state)  # sends nothing until a URL is configured
        # the demo's: where the control page links back to, and what to tell of a switch
        # made there (``POST /_simulator/scenario``)
        self.home_url: str | None = None
        self.on_scenario: Callable[[str], None] | None = None
        super().__init__(address, SimulatorHandler)

    def start(self) -> SimulatorServer:
        self.webhooks.start()  # ticking from now on, before the first request is served
        return super().start()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.webhooks.start()  # also when run in the foreground (``sms-monitor simulate``)
        super().serve_forever(poll_interval)

    def server_close(self) -> None:
        self.closing.set()
        self.state.wake()
        self.webhooks.stop()
        super().server_close()
