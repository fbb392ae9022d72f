"""The composition root: every part of sms-monitor is built here, from the settings.

Adding an input is its own modules (the reading edge under ``inputs/``, its pure checks
under ``core/``, its metric area under ``outputs/metrics/``), its tests, and one line in
:data:`UNITS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from sms_monitor.config import Settings
from sms_monitor.core.keywords import KeywordMatcher
from sms_monitor.core.sharding import ShardPlan
from sms_monitor.core.snapshot import Snapshot, SnapshotHolder
from sms_monitor.cycle import run_cycle
from sms_monitor.inputs import account, database_input, statuspage, stores, webhook_input
from sms_monitor.inputs import canary as canary_input
from sms_monitor.inputs.account import AccountInput, cycle_budget
from sms_monitor.inputs.base import Input, Wiring
from sms_monitor.inputs.canary import CanaryInput, CanaryProber
from sms_monitor.inputs.database_input import DATABASE_QUERIES, DatabaseInput
from sms_monitor.inputs.telemetry import RequestLog
from sms_monitor.inputs.webhook_input import WebhookInput
from sms_monitor.inputs.webhooks import CallbackInbox
from sms_monitor.outputs.metrics import (
    AccountArea,
    Area,
    CanaryArea,
    CostArea,
    DatabaseArea,
    RequestArea,
    ShardArea,
    StatusPageArea,
    WebhookArea,
    WindowArea,
)
from sms_monitor.storage.audit import KeywordAudit

log = structlog.get_logger("sms_monitor.app")

if TYPE_CHECKING:
    from sms_monitor.alerts.engine import AlertEngine
    from sms_monitor.alerts.sender import Sender
    from sms_monitor.outputs.http import ExporterServer

Clock = Callable[[], float]
Factory = Callable[[Settings, Wiring], Sequence[Input]]


@dataclass(frozen=True)
class Unit:
    """One kind of input: how it is built, and the metric areas that show its part."""

    name: str
    build: Factory
    areas: tuple[type[Area], ...] = ()


UNITS: tuple[Unit, ...] = (
    Unit("webhooks", webhook_input.build, (WebhookArea,)),
    Unit("twilio", account.build, (AccountArea, WindowArea, CostArea, RequestArea)),
    Unit("database", database_input.build, (DatabaseArea,)),
    Unit("statuspage", statuspage.build, (StatusPageArea,)),
    Unit("canary", canary_input.build, (CanaryArea,)),
    Unit("stores", stores.build),
)


def shard_plan(settings: Settings) -> ShardPlan:
    """The configured accounts this replica polls, and those it leaves to the others."""
    return ShardPlan.of(settings.sharding,
                        [(a.name, a.account_sid) for a in settings.accounts])


def shard_settings(settings: Settings, plan: ShardPlan) -> Settings:
    """``settings`` as this replica's inputs see them: only the accounts it owns, and the
    canary only on the replica that polls the account it sends from."""
    if not plan.skipped:
        return settings
    owned = set(plan.owned)
    canary = settings.canary if settings.canary and settings.canary.account in owned else None
    return settings.model_copy(update={
        "accounts": tuple(a for a in settings.accounts if a.name in owned), "canary": canary})


def build_alert_engine(settings: Settings, clock: Clock,
                       plan: ShardPlan | None = None) -> AlertEngine:
    from sms_monitor.alerts.engine import AlertEngine
    from sms_monitor.alerts.leader import LOCK_KEY, Leadership
    from sms_monitor.alerts.notify import notifier_for, smtp_auth_warning
    from sms_monitor.alerts.store import AlertStore

    cfg = settings.alerts
    assert cfg is not None
    store = AlertStore(cfg.store_url, cfg.prefix, cfg.store_schema)  # created on first use
    warning = smtp_auth_warning(settings.smtp_url, cfg.smtp_allow_plain_auth)
    if warning:
        log.warning("smtp_credentials_without_tls", reason=warning)
    plan = plan or shard_plan(settings)
    sharding = plan.sharding
    # sharded: each shard has a leader of its own, which evaluates the alerts of the
    # accounts its shard polls (shard 0 also the database's); the roll-up is Prometheus's
    return AlertEngine(
        config=cfg, accounts=[a.name for a in settings.accounts],
        notifier=notifier_for(settings),
        store=store, leadership=Leadership(cfg.store_url, sharding.lock_key(LOCK_KEY)),
        clock=clock, min_samples=settings.min_samples,
        owned=frozenset(plan.owned) if sharding.sharded else None,
        shared=sharding.shared)


@dataclass
class App:
    """Everything one process runs: the inputs, the snapshot holder, the alert engine."""

    settings: Settings
    inputs: tuple[Input, ...]
    wiring: Wiring
    areas: tuple[type[Area], ...]
    alerts: AlertEngine | None = None
    holder: SnapshotHolder = field(default_factory=SnapshotHolder)
    cycles: int = 0
    sender: Sender | None = None  # the outbox's own thread, once started (the daemon)

    @property
    def clock(self) -> Clock:
        return self.wiring.clock

    @property
    def requests_log(self) -> RequestLog:
        return self.wiring.requests_log

    def run_cycle(self) -> Snapshot:
        """One poll cycle; then the notifications it queued are handed to the sender thread.
        Without a started sender (tests, one-off embedding) they are sent here, after the
        cycle has published everything."""
        self.cycles += 1
        snapshot = run_cycle(self.inputs, holder=self.holder,
                             requests_log=self.wiring.requests_log, clock=self.wiring.clock,
                             cycles=self.cycles, alerts=self.alerts)
        if self.sender is not None:
            self.sender.wake()
        elif self.alerts is not None:
            try:
                self.alerts.deliver()
                self.alerts.publish_sent(self.holder)
            except Exception as exc:  # a bug in sending must not stop monitoring
                log.exception("alert_sender_failed", error=type(exc).__name__)
        return snapshot

    def restart_window(self, at: float) -> None:
        """Forget the messages created before ``at``: every statistics window starts there
        (or ``window`` back, once that is later). The demo calls it when it switches
        scenario, so what it shows is the new story's alone."""
        self.wiring.window_floor = at

    def start_sender(self) -> None:
        """Send notifications from a thread of their own from now on (the daemon)."""
        if self.alerts is not None and self.sender is None:
            from sms_monitor.alerts.sender import Sender

            alerts, holder = self.alerts, self.holder
            self.sender = Sender(alerts, after_round=lambda: alerts.publish_sent(holder))
            self.sender.start()

    def stop_sender(self, timeout: float) -> bool:
        """Stop the sender within ``timeout``; False when a send in flight was abandoned."""
        return self.sender.stop(timeout) if self.sender is not None else True

    def exporter(self, address: tuple[str, int], **kwargs: Any) -> ExporterServer:
        """The HTTP server for this app: its snapshot, its metric areas, its webhooks."""
        from sms_monitor.outputs.http import ExporterServer

        settings = self.settings
        kwargs.setdefault("max_cycle_age", settings.liveness_intervals * settings.poll_interval
                          + worst_cycle(settings))
        kwargs.setdefault("webhook_address", settings.webhook_listen)
        kwargs.setdefault("limits", settings.web)
        kwargs.setdefault("per_account_request_histograms",
                          settings.per_account_request_histograms)
        if settings.alerts is not None:  # the incident page's escalation times
            kwargs.setdefault("page_options", {"levels": settings.alerts.levels})
        return ExporterServer(address, self.holder, callbacks=self.callbacks, areas=self.areas,
                              **kwargs)

    def close(self) -> None:
        self.stop_sender(1.0)
        for inp in self.inputs:
            inp.close()
        if self.alerts is not None:
            self.alerts.close()

    # Handles for the daemon, the HTTP server and tests.
    @property
    def accounts(self) -> list[AccountInput]:
        return [i for i in self.inputs if isinstance(i, AccountInput)]

    @property
    def webhooks(self) -> WebhookInput:
        return next(i for i in self.inputs if isinstance(i, WebhookInput))

    @property
    def callbacks(self) -> CallbackInbox:
        return self.webhooks.inbox

    @property
    def audit(self) -> KeywordAudit | None:
        return self.webhooks.audit

    @property
    def database(self) -> DatabaseInput | None:
        return next((i for i in self.inputs if isinstance(i, DatabaseInput)), None)

    @property
    def canary(self) -> CanaryProber | None:
        return next((i.prober for i in self.inputs if isinstance(i, CanaryInput)), None)

    @property
    def on_deadline(self) -> Callable[[float], None] | None:
        return self.wiring.on_deadline

    @on_deadline.setter
    def on_deadline(self, hook: Callable[[float], None] | None) -> None:
        self.wiring.on_deadline = hook


def worst_cycle(settings: Settings) -> float:
    """How long one cycle may take when every outside system hangs as long as it is allowed
    to: the Twilio reads' budget and one request past it, the database's connection and
    statements, the status page and the alert store's ping. /healthz allows this on top of
    its liveness intervals, so a slow outage never gets a live daemon restarted."""
    db = settings.database
    database = db.connect_timeout + DATABASE_QUERIES * db.statement_timeout if db else 0.0
    return cycle_budget(settings) + settings.request_timeout + database + 2 * 5.0


def keyword_matcher(settings: Settings) -> KeywordMatcher:
    db, inbound = settings.database, settings.inbound
    return KeywordMatcher(
        **({"optout": db.optout_keywords} if db else {}),
        **({"optin": inbound.optin_keywords, "help_words": inbound.help_keywords}
           if inbound else {}))


def build(settings: Settings, *, clock: Clock = time.time,
          sleep: Callable[[float], None] = time.sleep,
          monotonic: Callable[[], float] = time.monotonic, alerts: bool = True,
          units: Sequence[Unit] = UNITS) -> App:
    """Build every part from the settings. ``alerts=False`` leaves the alert engine out (a
    one-off ``check`` reports; paging is the daemon's job)."""
    wiring = Wiring(clock=clock, sleep=sleep, monotonic=monotonic,
                    keywords=keyword_matcher(settings), one_shot=not alerts)
    plan = shard_plan(settings)
    if plan.sharding.sharded:
        log.info("shard", shard=plan.sharding.shard, total_shards=plan.sharding.total,
                 owned=len(plan.owned), skipped=len(plan.skipped))
    mine = shard_settings(settings, plan)
    inputs = tuple(i for unit in units for i in unit.build(mine, wiring))
    engine = build_alert_engine(settings, clock, plan) if alerts and settings.alerts else None
    return App(settings=settings, inputs=inputs, wiring=wiring,
               areas=(*(a for unit in units for a in unit.areas), ShardArea.of(plan)),
               alerts=engine)
