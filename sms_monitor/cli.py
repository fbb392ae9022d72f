"""Command line: run, check, demo, simulate."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from sms_monitor import __version__, logs
from sms_monitor.config import ConfigError, Settings, load_file, load_settings, parse_listen_address
from sms_monitor.core.classify import Status
from sms_monitor.mixin.cli import add_parser as add_mixin_parser
from sms_monitor.mixin.cli import run as run_mixin
from sms_monitor.outputs.webconfig import WebConfig
from sms_monitor.simulator.scenarios import DEMO_SCENARIOS, SCENARIOS

if TYPE_CHECKING:
    from sms_monitor.demo import Demo

log = structlog.get_logger("sms_monitor.cli")

EXIT_CONFIG = 2
EXIT_UNKNOWN = 3  # could not run: Nagios UNKNOWN


def _one_line(exc: BaseException, settings: Settings) -> str:
    """An error as one line without the passwords of the configured URLs."""
    from sms_monitor.inputs.database import describe_error

    return logs.Redactor(settings.secrets()).clean(describe_error(exc)[1])


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=os.environ.get("SMS_MONITOR_CONFIG"),
                        help="TOML configuration file (environment variables override it)")
    common.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    def listen_parser(default: str) -> argparse.ArgumentParser:
        listen = argparse.ArgumentParser(add_help=False)
        listen.add_argument("--web.listen-address", dest="listen_address", metavar="HOST:PORT",
                            help="where to serve /metrics, /healthz, /readyz and /, an IPv6 host "
                                 "in brackets: [::1]:9839 (default $SMS_MONITOR_LISTEN_ADDRESS "
                                 f"or {default})")
        listen.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                            default=os.environ.get("SMS_MONITOR_WEB_CONFIG_FILE") or None,
                            help="TLS and basic auth (exporter-toolkit format; default "
                                 "$SMS_MONITOR_WEB_CONFIG_FILE)")
        return listen

    listen = listen_parser("0.0.0.0:9839")

    hooks = argparse.ArgumentParser(add_help=False)
    hooks.add_argument("--web.webhook-address", dest="webhook_listen_address", metavar="HOST:PORT",
                       help="serve Twilio's webhooks (/twilio/status, /twilio/inbound) on a "
                            "listener of their own, so /metrics and the pages need not face "
                            "the internet; off loopback it needs public_url (default "
                            "$SMS_MONITOR_WEBHOOK_LISTEN_ADDRESS; unset: the webhooks share "
                            "--web.listen-address)")

    parser = argparse.ArgumentParser(
        prog="sms-monitor",
        description="Health monitoring and Prometheus exporter for Twilio SMS.")
    parser.add_argument("--version", action="version", version=f"sms-monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common, listen, hooks],
                         help="poll on a schedule and serve /metrics")
    run.add_argument("--shard", type=int, metavar="N",
                     help="this replica's shard, 0 to M-1: it polls only the accounts whose SID "
                          "hashes to it (default $SMS_MONITOR_SHARD; unset with M > 1: the "
                          "trailing -<n> of $HOSTNAME, a StatefulSet pod's ordinal)")
    run.add_argument("--total-shards", type=int, metavar="M",
                     help="how many replicas divide the accounts (default "
                          "$SMS_MONITOR_TOTAL_SHARDS or 1)")
    check = sub.add_parser("check", parents=[common],
                           help="poll once, print the checks, exit 0/1/2/3 (Nagios convention)")
    form = check.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON object")
    form.add_argument("--nagios", action="store_true",
                      help="print one line as a Nagios plugin does: the verdict, then "
                           "performance data ('delivery_rate'=0.988;0.95:;0.9:;0;1 ...)")
    demo = sub.add_parser("demo", parents=[common, listen_parser("127.0.0.1:9839")],
                          help="the daemon against a built-in simulator: no account needed")
    demo.add_argument("--scenario", default="healthy", choices=DEMO_SCENARIOS)
    _alerts_parser(sub, common)
    probe = sub.add_parser("probe", parents=[common, listen],
                           help="GET /healthz of the daemon on this host (the container's "
                                "health check): exit 0 when it answers 200, else 1")
    probe.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    db = sub.add_parser("db", parents=[common], help="application database tools")
    db.add_argument("action", choices=["check"],
                    help="check: verify the [database] table and column mapping against the "
                         "database (each table, each column and its type, SELECT privilege); "
                         "one line per problem; exit 0 usable, 1 problems, 2 configuration "
                         "error, 3 the database could not be reached")
    rules = sub.add_parser("rules", parents=[common], help="notification_rules tools")
    rules.add_argument("action", choices=["check"],
                       help="check: validate every row and say what is wrong with each")
    add_mixin_parser(sub, parents=[common])
    sim = sub.add_parser("simulate", parents=[common],
                         help="serve the Twilio API simulator on its own")
    sim.add_argument("--listen", default="127.0.0.1:8099", metavar="HOST:PORT")
    sim.add_argument("--scenario", default="healthy", choices=sorted(SCENARIOS))
    sim.add_argument("--rate", type=float, default=60.0,
                     help="messages per minute of the (parent) account")
    sim.add_argument("--history", type=float, default=3600.0,
                     help="seconds of message history to create at start")
    sim.add_argument("--subaccounts", type=int, default=0, metavar="N",
                     help="subaccounts of the demo (parent) account, discoverable through the "
                          "Accounts API with the parent's credentials")
    sim.add_argument("--subaccount-rate", type=float, default=1.0, metavar="N",
                     help="messages per minute of each subaccount")
    sim.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                     help="seconds before every API answer (the delay fault), per request")
    sim.add_argument("--concurrency-limit", type=int, default=0, metavar="N",
                     help="answer 429 / 20429 to API requests past N in flight, all accounts "
                          "together (0: no limit)")
    return parser


def _alerts_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``alerts`` lists; ``alerts ack|unack|silence|unsilence RULE`` and ``alerts history``."""
    alerts = sub.add_parser(
        "alerts", parents=[common],
        help="list notification_rules alerts (state, value, last notification, ack/silence); "
             "ack, silence, history")
    # the subcommands take --config and --log-level too, without overwriting the ones given
    # before them (argparse lets a subparser's default win)
    again = argparse.ArgumentParser(add_help=False)
    again.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="TOML configuration file")
    again.add_argument("--log-level", default=argparse.SUPPRESS,
                       choices=["debug", "info", "warning", "error"])
    actions = alerts.add_subparsers(dest="alerts_action", metavar="{ack,unack,silence,"
                                    "unsilence,history}")

    def action(name: str, text: str, *, needs_for: bool = False, takes_for: bool = True
               ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, parents=[again], help=text)
        p.add_argument("rule", metavar="RULE", help="the rule's name (rule_name), quoted")
        p.add_argument("--target", metavar="T",
                       help="one target: an account, * (the roll-up) or database (default: "
                            + ("every firing one)" if name == "ack" else "every one)"))
        if takes_for:  # required by silence: checked there, so the error is one line
            p.add_argument("--for", dest="for_", metavar="DURATION",
                           help="how long, e.g. 30m, 2h, 1d (at most 30 days)"
                                + ("; required" if needs_for else
                                   "; default: until it resolves"))
        p.add_argument("--by", metavar="NAME",
                       help="who (default: $SUDO_USER or the login name), for the audit")
        p.add_argument("--reason", metavar="TEXT", help="why, for the audit")
        return p

    action("ack", "acknowledge a firing alert: no escalation or reminder until it resolves "
                  "(or --for ends)")
    action("unack", "end an acknowledgement: escalation resumes", takes_for=False)
    action("silence", "no notification of the rule's alerts for --for", needs_for=True)
    action("unsilence", "end a silence", takes_for=False)
    history = actions.add_parser("history", parents=[again],
                                 help="the newest alert events, acknowledgements and silences "
                                      "with who and why")
    history.add_argument("rule", metavar="RULE", nargs="?", help="only this rule")
    history.add_argument("--limit", type=int, default=20, help="rows (default 20)")


def _settings(args: argparse.Namespace, env: Mapping[str, str], **kwargs: Any) -> Settings:
    data = load_file(args.config) if args.config else None
    return load_settings(env, data, listen_address=getattr(args, "listen_address", None),
                         webhook_listen_address=getattr(args, "webhook_listen_address", None),
                         shard=getattr(args, "shard", None),
                         total_shards=getattr(args, "total_shards", None), **kwargs)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = dict(os.environ if env is None else env)
    try:
        if args.command == "mixin":
            return run_mixin(args)
        if args.command == "simulate":
            logs.configure(args.log_level)
            return _simulate(args)
        web = None
        if getattr(args, "web_config", None):
            from sms_monitor.outputs.webconfig import load_web_config

            web = load_web_config(args.web_config)
        if args.command == "demo":
            return _demo(args, env, web)
        if args.command == "probe":
            return _probe(_settings(args, env, require_accounts=False), web, args.timeout)
        if args.command == "db":
            return _db_check(_settings(args, env, require_accounts=False))
        settings = _settings(args, env)
    except ConfigError as exc:
        print(f"sms-monitor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(args.log_level, secrets=settings.secrets())
    if args.command == "check":
        return _check(settings, as_json=args.json, nagios=args.nagios)
    if args.command == "rules":
        return _rules_check(settings)
    if args.command == "alerts":
        from sms_monitor.alerts.commands import main as alerts_main

        return alerts_main(settings, args.alerts_action, getattr(args, "rule", None),
                           getattr(args, "target", None), getattr(args, "for_", None),
                           getattr(args, "by", None), getattr(args, "reason", None),
                           limit=getattr(args, "limit", 20),
                           clean=lambda exc: _one_line(exc, settings))
    return _run(settings, web=web)


def _run(settings: Settings, extra_html: str = "", web: WebConfig | None = None,
         demo: Demo | None = None) -> int:
    from sms_monitor.app import build
    from sms_monitor.daemon import Daemon

    stopping = threading.Event()

    def pause(seconds: float) -> None:  # a retry's backoff that SIGTERM cuts short
        stopping.wait(seconds)

    app = build(settings, sleep=pause)
    controls: dict[str, Any] = {"extra_html": extra_html}
    if demo is not None:  # the demo's part of the page and its buttons' endpoints
        demo.attach(app)
        controls = {"extra_html": demo.extra_html, "actions": demo.actions}
    try:
        server = app.exporter((settings.listen_host, settings.listen_port),
                              web_config=web, **controls)
    except OSError as exc:
        print(f"sms-monitor: configuration error: listen address "
              f"{settings.listen_address}{_also(settings.webhook_listen_address)}: "
              f"{exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"sms-monitor {__version__} serving {server.url}/ (metrics at {server.url}/metrics)",
          file=sys.stderr, flush=True)
    if settings.webhook_listen_address:
        print(f"sms-monitor: Twilio's webhooks at {server.webhook_url}/twilio/status and "
              "/twilio/inbound", file=sys.stderr, flush=True)
    return Daemon(app, server, stopping).run_until_signal()


def _probe(settings: Settings, web: WebConfig | None, timeout: float) -> int:
    """The daemon's /healthz on loopback, TLS or not, as its own health check asks."""
    import ssl
    import urllib.error
    import urllib.request

    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.listen_host,
                                                                       settings.listen_host)
    tls = web is not None and web.tls is not None
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{settings.listen_port}/healthz"
    # Our own process on this host: its certificate names the public host, not loopback,
    # and there is nothing between the two ends to verify.
    context = ssl._create_unverified_context() if tls else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            print(f"sms-monitor probe: {url}: {resp.status}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"sms-monitor probe: {url}: HTTP {exc.code}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"sms-monitor probe: {url}: {reason}", file=sys.stderr)
    return 1


def _also(address: str | None) -> str:
    return f" or webhook listen address {address}" if address else ""


def _check(settings: Settings, as_json: bool, nagios: bool = False) -> int:
    from sms_monitor.app import build
    from sms_monitor.outputs.check import nagios_line, render_table, snapshot_json

    try:  # a one-off check reports; it never pages (that is the daemon's job)
        snapshot = build(settings, alerts=False).run_cycle()
    except Exception as exc:  # could not run at all: Nagios UNKNOWN
        from sms_monitor.core.credentials import mask_credentials

        detail = mask_credentials((str(exc).splitlines() or [""])[0])[:200]
        reason = f"{type(exc).__name__}{': ' + detail if detail else ''}"
        if nagios:  # a plugin's first line of standard output is its status
            print(f"OVERALL: UNKNOWN - check could not run: {reason}".replace("|", "/"))
        print(f"sms-monitor: check could not run: {reason}", file=sys.stderr)
        return Status.UNKNOWN.exit_code
    if as_json:
        print(json.dumps(snapshot_json(snapshot)))
    elif nagios:
        print(nagios_line(snapshot, settings.thresholds))
    else:
        print(render_table(snapshot))
    return snapshot.overall.exit_code


def _read_rules(settings: Settings) -> list[dict[str, object]]:
    from sms_monitor.inputs.database import DatabaseSource

    if settings.database is None:
        raise ConfigError("SMS_MONITOR_DATABASE_URL", "not set: notification_rules live there")
    try:
        source = DatabaseSource(settings.database)
    except Exception as exc:  # e.g. a driver that is not installed
        raise RuntimeError(_one_line(exc, settings)) from None
    try:
        with source.engine.connect() as conn, conn.begin():
            return source.rules(conn)
    except Exception as exc:
        raise RuntimeError(_one_line(exc, settings)) from None
    finally:
        source.close()


def _db_check(settings: Settings) -> int:
    """The [database] mapping against the live database: one line per problem."""
    from sms_monitor.inputs.schema_check import Unreachable, check_mapping

    logs.configure("warning", secrets=settings.secrets())
    if settings.database is None:
        raise ConfigError("SMS_MONITOR_DATABASE_URL", "not set: nothing to check")
    try:
        report = check_mapping(settings.database)
    except Unreachable as exc:
        line = logs.Redactor(settings.secrets()).clean(str(exc))
        print(f"sms-monitor: cannot reach the database: {line}", file=sys.stderr)
        return EXIT_UNKNOWN
    except Exception as exc:  # e.g. a driver that is not installed
        print(f"sms-monitor: cannot check the database: {_one_line(exc, settings)}",
              file=sys.stderr)
        return EXIT_UNKNOWN
    for problem in report.problems:
        print(problem)
    if report.problems:
        return 1
    print(f"OK: {report.tables} tables, {report.columns} columns: each exists with a usable "
          f"type and may be read")
    return 0


def _rules_check(settings: Settings) -> int:
    """Validate notification_rules: one line per alert row; exit 1 when any is unusable."""
    from sms_monitor.alerts.engine import ALL_CHECKS, always_notified
    from sms_monitor.alerts.explain import PAGERDUTY_EVENTS_URL
    from sms_monitor.alerts.notify import POSTED, Notifier, recipient_kind
    from sms_monitor.alerts.rules import NO_WEBHOOKS, BrokenRule, parse_rows
    from sms_monitor.alerts.values import targets

    try:
        rows = _read_rules(settings)
    except ConfigError as exc:
        print(f"sms-monitor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RuntimeError as exc:
        print(f"sms-monitor: cannot read notification_rules: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    accounts = [a.name for a in settings.accounts]
    max_window = settings.alerts.max_window if settings.alerts else settings.window_seconds
    also = always_notified(settings.alerts) if settings.alerts else []
    webhooks = settings.alerts.webhook_policy if settings.alerts else NO_WEBHOOKS
    pagerduty = settings.alerts.pagerduty_url if settings.alerts else PAGERDUTY_EVENTS_URL
    rules, broken = parse_rows(rows, accounts=accounts, checks=ALL_CHECKS, max_window=max_window,
                               recipient_ok=lambda r: recipient_kind(r) is not None,
                               always_notified=also, webhooks=webhooks, pagerduty_url=pagerduty)
    # what the allowlist lets through may still resolve to a refused address: asked now
    notifier = Notifier(None, None, webhooks=webhooks, pagerduty_url=pagerduty)
    for rule in rules:
        refusals = [f"{refusal.detail} ({refusal.reason})" for r in rule.recipients
                    if recipient_kind(r) in POSTED
                    and (refusal := notifier.webhook_refusal(r)) is not None]
        if refusals:
            reason = (f"recipients: {len(refusals)} refused when resolved now "
                      f"({'; '.join(refusals)}); they would get no notification")
            known = next((i for i, b in enumerate(broken) if b.name == rule.name), None)
            if known is None:
                broken.append(BrokenRule(rule.name, reason))
            else:
                broken[known] = BrokenRule(rule.name, f"{broken[known].reason}; {reason}")
    extra = f" + {len(also)} from [alerts] level1/alertmanager_url" if also else ""
    bad = {b.name: b.reason for b in broken}
    for rule in rules:
        mark = "WARN" if rule.name in bad else "OK  "
        print(f"{mark} {rule.name}: {rule.metric} {rule.operator} {rule.threshold:g} over "
              f"{rule.window:g}s, for {rule.for_seconds:g}s, {rule.severity}, targets "
              f"{', '.join(targets(rule, accounts))}, {len(rule.recipients)} recipient(s){extra}"
              + (f" ({bad[rule.name]})" if rule.name in bad else ""))
    names = {r.name for r in rules}
    for b in broken:
        if b.name not in names:
            print(f"BAD  {b.name}: {b.reason}")
    skipped = len(rows) - len(rules) - len([b for b in broken if b.name not in names])
    print(f"{len(rules)} usable, {len(broken)} with problems, {skipped} not alert rows")
    return 1 if broken else 0


def _simulate(args: argparse.Namespace) -> int:
    from sms_monitor.simulator.server import SimulatorServer
    from sms_monitor.simulator.state import (
        DEMO_ACCOUNT_SID,
        DEMO_API_KEY_SECRET,
        DEMO_API_KEY_SID,
        DEMO_AUTH_TOKEN,
        DEMO_PHONE_NUMBER,
        SimState,
    )

    host, port = parse_listen_address("--listen", args.listen)
    for name, value in (("--subaccounts", args.subaccounts), ("--latency", args.latency),
                        ("--concurrency-limit", args.concurrency_limit),
                        ("--subaccount-rate", args.subaccount_rate)):
        if value < 0:
            print(f"sms-monitor: configuration error: {name} must not be negative",
                  file=sys.stderr)
            return EXIT_CONFIG
    state = SimState(rate_per_minute=args.rate, history_seconds=args.history,
                     scenario=args.scenario)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    state.add_api_key(DEMO_ACCOUNT_SID, DEMO_API_KEY_SID, DEMO_API_KEY_SECRET)
    state.add_subaccounts(DEMO_ACCOUNT_SID, args.subaccounts,
                          rate_per_minute=args.subaccount_rate)
    state.set_faults({"delay": args.latency, "concurrency_limit": args.concurrency_limit})
    state.advance()
    try:
        server = SimulatorServer((host, port), state)
    except OSError as exc:
        print(f"sms-monitor: configuration error: --listen {args.listen}: {exc.strerror}",
              file=sys.stderr)
        return EXIT_CONFIG
    print(f"Twilio simulator at {server.url} (scenario {args.scenario}).\n"
          f"  TWILIO_ACCOUNT_SID={DEMO_ACCOUNT_SID}\n"
          f"  TWILIO_AUTH_TOKEN=<the simulator's demo token, see sms_monitor/simulator/state.py>\n"
          f"  TWILIO_PHONE_NUMBER={DEMO_PHONE_NUMBER}\n"
          f"  SMS_MONITOR_TWILIO_API_URL={server.url}\n"
          f"  API key of the account: {DEMO_API_KEY_SID} (its secret: see state.py)\n"
          + (f"  {args.subaccounts} subaccounts: GET /2010-04-01/Accounts.json with the "
             f"account's credentials\n" if args.subaccounts else "")
          + f"Switch scenarios at {server.url}/", file=sys.stderr, flush=True)
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return 0


def _demo(args: argparse.Namespace, env: Mapping[str, str], web: WebConfig | None = None) -> int:
    from sms_monitor.demo import start_demo

    data = load_file(args.config) if args.config else None
    demo = start_demo(args.scenario, env, data, args.listen_address)
    logs.configure(args.log_level, secrets=demo.settings.secrets())
    print(f"sms-monitor demo: scenario {args.scenario}; simulator at {demo.simulator.url}/; "
          f"practice database {demo.database_path}", file=sys.stderr, flush=True)
    try:
        return _run(demo.settings, web=web, demo=demo)
    finally:
        demo.stop()


if __name__ == "__main__":
    raise SystemExit(main())
