"""``sms-monitor mixin render``: the rules file and the dashboard for your selector and URLs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sms_monitor.mixin.promql import DEFAULT_SELECTOR, SelectorError
from sms_monitor.mixin.render import (
    DASHBOARD_FILE,
    DEFAULT_DASHBOARD_URL,
    DEFAULT_RUNBOOK_URL,
    RULES_FILE,
    MixinConfig,
    write,
)

EXIT_USAGE = 2


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The ``mixin`` subcommand on the CLI's subparsers (``parents``: the options every
    command takes; it reads no configuration)."""
    mixin = sub.add_parser(
        "mixin", parents=parents, help=f"render {RULES_FILE} and {DASHBOARD_FILE} for your Prometheus: "
                      "selector, runbook URL, dashboard URL")
    mixin.add_argument("action", choices=["render"],
                       help=f"render: write {RULES_FILE} and {DASHBOARD_FILE} under --out")
    mixin.add_argument("--selector", default=DEFAULT_SELECTOR, metavar="MATCHERS",
                       help="label matchers that select sms-monitor's own series, as in PromQL's "
                            "braces; every expression uses them and aggregations keep their "
                            f"labels (default '{DEFAULT_SELECTOR}', the job_name of your "
                            "scrape config)")
    mixin.add_argument("--runbook-url", default=DEFAULT_RUNBOOK_URL, metavar="URL",
                       help="where your team reads docs/runbook.md; each alert's runbook_url "
                            f"is URL#<alert name in lowercase> (default {DEFAULT_RUNBOOK_URL}, "
                            "the repository's copy)")
    mixin.add_argument("--dashboard-url", default=DEFAULT_DASHBOARD_URL, metavar="URL",
                       help="the dashboard in your Grafana, linked from each alert's dashboard "
                            "annotation (?var-account=... added for an account's alert; "
                            f"default {DEFAULT_DASHBOARD_URL})")
    mixin.add_argument("--out", default=".", metavar="DIR", type=Path,
                       help=f"directory to write {RULES_FILE} and {DASHBOARD_FILE} into "
                            "(default: the current directory)")


def run(args: argparse.Namespace) -> int:
    try:
        config = MixinConfig.of(args.selector, args.runbook_url, args.dashboard_url)
    except (SelectorError, ValueError) as exc:
        print(f"sms-monitor: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        written = write(config, args.out)
    except OSError as exc:
        print(f"sms-monitor: cannot write under {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    for path in written:
        print(path)
    return 0
