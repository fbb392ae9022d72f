"""`sms-monitor demo`: the simulator, an embedded practice database and the daemon together.

Scenarios switch from the landing page (``POST /demo/scenario``): Twilio's stories are the
simulator's (:data:`~sms_monitor.simulator.scenarios.SCENARIOS`), the practice database's
are the demo's own (:data:`STORIES`: their problems are seeded into the database and the
simulator's message log when the demo switches to them, and taken out when it leaves). Each
switch restarts the monitor's statistics window (:meth:`sms_monitor.app.App.restart_window`),
so the page shows the new story within a minute rather than once the old messages have left
the 10-minute window; the page says so.
"""

from __future__ import annotations

import html
import math
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine

from sms_monitor.config import Settings, load_settings
from sms_monitor.inputs.webhooks import INBOUND_PATH, STATUS_PATH
from sms_monitor.simulator.practice_db import (
    DEMO_LIVE_STOP,
    DEMO_OPTED_OUT,
    DEMO_UNPROCESSED_STOP,
    log_sends,
    seed_demo,
    seed_invalid_numbers,
    unseed_invalid_numbers,
)
from sms_monitor.simulator.scenarios import DEMO_SCENARIOS, SCENARIOS, STORIES
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    SimState,
)
from sms_monitor.storage.sqlite import ensure_directory

if TYPE_CHECKING:
    from sms_monitor.app import App

RATE_PER_MINUTE = 120.0
WINDOW = "10m"
WINDOW_SECONDS = 600.0
POLL_INTERVAL = "5s"
CANARY_HANDSET = "+15558675310"  # the demo's test handset (a fictional 555 number)
OPTOUT_GRACE = "1m"  # the demo's application gets a minute to process a STOP
OPTOUT_GRACE_SECONDS = 60.0
# Ratio checks judge at least this many messages (half a minute of the demo's traffic), so
# the first seconds after a switch are "too few messages", not a colour drawn from ten.
MIN_SAMPLES = 60
# The demo's application logs an SMS at most 12 s before Twilio has it (practice_db.log_rows)
RECONCILE_LAG = "15s"
# Share of Twilio's outbound messages the demo application logs (the rest would be other
# senders on the same account): keeps the reconciliation ratio a little above 1.
LOGGED_SHARE = 0.95
# The demo's SMS budget (USD a month): its 120 messages a minute cost about 40,000 a month,
# so the budget check and its panels have data and are green (projected about 2/3 of it).
MONTHLY_BUDGET = 60000
# While ``optout_violations`` plays, the application messages its opted-out client this often.
OPTED_OUT_EVERY = 60.0
SCENARIO_PATH, STOP_PATH = "/demo/scenario", "/demo/stop"
REMINDER = "Riverside Family Practice: reminder of your appointment. Reply STOP to opt out."


def describe(name: str) -> str:
    return STORIES[name].description if name in STORIES else SCENARIOS[name].description


def demo_settings(env: Mapping[str, str], file_data: Mapping[str, Any] | None,
                  listen_address: str | None, sim_url: str, db_url: str, state_dir: Path
                  ) -> Settings:
    """The demo's settings: the user's SMS_MONITOR_* variables and file, pointed at the
    simulator and the practice database (a ConfigError for a bad value)."""
    demo_env = {k: v for k, v in env.items()
                if k.startswith("SMS_MONITOR_")
                and k not in ("SMS_MONITOR_TWILIO_API_URL", "SMS_MONITOR_DATABASE_URL",
                              "SMS_MONITOR_STATUSPAGE_URL")}
    demo_env.update({
        "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": DEMO_PHONE_NUMBER,
        "SMS_MONITOR_TWILIO_API_URL": sim_url,
        "SMS_MONITOR_DATABASE_URL": db_url,
        "SMS_MONITOR_STATUSPAGE_URL": f"{sim_url}/statuspage",
    })
    demo_env.setdefault("SMS_MONITOR_POLL_INTERVAL", POLL_INTERVAL)
    demo_env.setdefault("SMS_MONITOR_STATE_DIR", str(state_dir))
    demo_env.setdefault("SMS_MONITOR_LISTEN_ADDRESS", "127.0.0.1:9839")
    data = {"window": WINDOW, "request_timeout": "6s", "number_type": "toll_free",
            "monthly_budget": MONTHLY_BUDGET,
            "alerts": {"max_window": "1h"}, "statuspage_interval": "10s",
            "database": {"optout_grace": OPTOUT_GRACE, "reconcile_lag": RECONCILE_LAG},
            "canary": {"to": CANARY_HANDSET, "interval": "30s", "timeout": "2m"},
            **(file_data or {})}
    data.pop("accounts", None)
    data.setdefault("min_samples", MIN_SAMPLES)
    return load_settings(demo_env, data, listen_address=listen_address)


class Demo:
    """The demo's pieces, and its controls: the scenario in play, switched from the page."""

    def __init__(self, settings: Settings, simulator: SimulatorServer, database_path: Path,
                 writer: Engine, scenario: str, started_at: float) -> None:
        self.settings = settings
        self.simulator = simulator
        self.state: SimState = simulator.state
        self.database_path = database_path
        self.writer = writer
        self.scenario = scenario
        self.started_at = started_at
        self.switched_at: float | None = None  # None: in play since the demo started
        self.app: App | None = None
        self.stops = 0  # STOPs sent from the page
        self._lock = threading.RLock()
        self._last_opted_out_send = -math.inf
        simulator.on_scenario = self._switched_on_simulator

    # -- wiring -----------------------------------------------------------
    def attach(self, app: App) -> None:
        """The monitor whose window a switch restarts."""
        self.app = app

    @property
    def actions(self) -> dict[str, Callable[[Mapping[str, str]], str]]:
        """The landing page's controls, served by the exporter (``POST``, then back to /)."""
        return {SCENARIO_PATH: self._post_scenario, STOP_PATH: self._post_stop}

    def stop(self) -> None:
        self.simulator.stop()
        self.writer.dispose()
        shutil.rmtree(self.database_path.parent, ignore_errors=True)

    def _now(self) -> float:
        return self.app.clock() if self.app is not None else self.state.clock()

    # -- switching --------------------------------------------------------
    def switch(self, name: str) -> None:
        """Play ``name`` from now: leave the current story, restart the window, seed the new
        story. Raises ValueError for an unknown name."""
        if name not in DEMO_SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(DEMO_SCENARIOS)}")
        with self._lock:
            self.state.set_scenario(name if name in SCENARIOS else "healthy")
            self._enter(name)

    def _switched_on_simulator(self, name: str) -> None:
        """The simulator's own page switched Twilio's story: the demo follows it."""
        with self._lock:
            self._enter(name)

    def _enter(self, name: str) -> None:
        self._leave(self.scenario)
        # The next whole second (after the previous switch's): Twilio dates messages to the
        # second, so the old story's messages fall before the restarted window and the new
        # story's, dated then, in it.
        previous = self.switched_at if self.switched_at is not None else -math.inf
        at = float(max(math.floor(self._now()) + 1, previous + 1))
        if self.app is not None:
            self.app.restart_window(at)
        self.scenario, self.switched_at = name, at
        self._seed(name, at)

    def _leave(self, name: str) -> None:
        if name == "invalid_numbers":
            unseed_invalid_numbers(self.writer)
        # optout_violations leaves nothing to undo: its messages are in Twilio's log, before
        # the restarted window's start, and the application stops messaging the client

    def _seed(self, name: str, at: float) -> None:
        """The story's problems, from ``at`` (a story's messages are dated then)."""
        if name == "invalid_numbers":
            seed_invalid_numbers(self.writer)
        elif name == "optout_violations":
            sid = next(iter(self.state.accounts))
            # the STOP arrives (and is posted to the inbound webhook) as the clock reaches it
            self.state.insert_message(sid, at, outbound=False, peer=DEMO_UNPROCESSED_STOP,
                                      body="Stop")
            self._last_opted_out_send = -math.inf
            self._message_opted_out(at)

    def _message_opted_out(self, at: float | None = None) -> None:
        """While ``optout_violations`` plays, a reminder to the opted-out client every
        :data:`OPTED_OUT_EVERY` seconds (called as the simulator creates messages)."""
        now = self.state.clock() if at is None else at
        if self.scenario != "optout_violations" or now - self._last_opted_out_send \
                < OPTED_OUT_EVERY:
            return
        self._last_opted_out_send = now
        sid = next(iter(self.state.accounts))
        self.state.insert_message(sid, now, outbound=True, peer=DEMO_OPTED_OUT, body=REMINDER)

    def on_outbound(self, sent: list[float]) -> None:
        """The simulator created outbound messages: the practice's application at work."""
        if self.scenario == "optout_violations" and self._lock.acquire(blocking=False):
            try:
                self._message_opted_out()
            finally:
                self._lock.release()

    # -- the page's controls ------------------------------------------------
    def _post_scenario(self, form: Mapping[str, str]) -> str:
        self.switch(form.get("name", ""))
        return "/"

    def _post_stop(self, form: Mapping[str, str]) -> str:
        sid = next(iter(self.state.accounts))
        self.state.receive(sid, DEMO_LIVE_STOP, "STOP")
        self.stops += 1
        return "/"

    def _settled_since(self) -> str:
        snap = self.app.holder.current if self.app is not None else None
        stats = [a.stats for a in snap.accounts if a.stats is not None] if snap else []
        if not stats:
            return "no settled message read yet"
        return f"{sum(st.settled for st in stats)} settled outbound messages read"

    def extra_html(self) -> str:
        """The demo's part of the landing page: the scenario in play, what a switch did, and
        the buttons."""
        with self._lock:
            name, switched = self.scenario, self.switched_at
        now = self._now()
        window = WINDOW_SECONDS / 60
        if switched is None:
            since = "since the demo started"
            restart = (f"Message statistics cover the last {window:g} minutes, as a monitor of "
                       f"a real account does.")
        else:
            stamp = datetime.fromtimestamp(switched, UTC).strftime("%H:%M:%S UTC")
            ago = max(0.0, now - switched)
            since = f"switched at {stamp}, {ago:.0f} s ago"
            outbound_per_second = RATE_PER_MINUTE * (1 - self.state.inbound_share) / 60
            wait = self.settings.min_samples / outbound_per_second
            restart = (
                f"<b>The demo restarted the monitor's statistics at the switch:</b> message "
                f"statistics count only messages created since then "
                f"({min(ago, WINDOW_SECONDS):.0f} s of the {window:g}-minute window; "
                f"{self._settled_since()}), and the ratio checks wait for "
                f"{self.settings.min_samples} settled messages (about {wait:.0f} s) before "
                f"they judge. A monitor of a real account weighs its whole window, so a "
                f"change like this one takes minutes to show there; the Balance, Account "
                f"and number probes change on the next poll either way.")
        buttons = "".join(
            f"<button name='name' value='{html.escape(n)}' title='{html.escape(describe(n))}'"
            f"{' disabled' if n == name else ''}>{html.escape(n)}</button> "
            for n in DEMO_SCENARIOS)
        stop = (f"<form method='post' action='{STOP_PATH}'><p>Make an opted-in client reply "
                f"STOP: the application here never processes it, so "
                f"<code>optout_unprocessed</code> turns red {OPTOUT_GRACE} later, at that "
                f"second. <button>a client replies STOP</button>"
                + (f" ({self.stops} sent)" if self.stops else "") + "</p></form>")
        sim = self.simulator.url
        return (
            f"<h2>Demo</h2><p class='demo-scenario'>Scenario: <b>{html.escape(name)}</b> "
            f"({html.escape(since)}): {html.escape(describe(name))}</p>"
            f"<p>{restart}</p>"
            f"<form method='post' action='{SCENARIO_PATH}'><p>Switch to: {buttons}</p></form>"
            f"{stop}"
            f"<p>Built-in Twilio simulator at <a href='{sim}/'>{sim}</a>; it posts signed "
            f"status callbacks and incoming messages to this process, so delivery times come "
            f"from callbacks. Practice database (SQLite) at "
            f"<code>{html.escape(str(self.database_path))}</code>.</p>")


def start_demo(scenario: str, env: Mapping[str, str], file_data: Mapping[str, Any] | None,
               listen_address: str | None, clock: Callable[[], float] = time.time) -> Demo:
    """The simulator (started) and the seeded practice database, in ``scenario``; the
    caller builds the monitor from ``demo.settings`` and hands it to :meth:`Demo.attach`."""
    if scenario not in DEMO_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}")
    # every value is checked before anything starts; the real URLs are filled in below
    demo_settings(env, file_data, listen_address, "http://127.0.0.1:9", "sqlite://",
                  Path(tempfile.gettempdir()))
    state = SimState(clock=clock, rate_per_minute=RATE_PER_MINUTE,
                     history_seconds=WINDOW_SECONDS, even_outcomes=True,
                     scenario=scenario if scenario in SCENARIOS else "healthy")
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    state.advance()
    now = state.clock()

    db_path = Path(tempfile.mkdtemp(prefix="sms-monitor-demo-")) / "practice.db"
    url = f"sqlite:///{db_path}"
    ensure_directory(url)  # 0600, like every file sms-monitor writes
    writer = create_engine(url)
    with writer.connect() as conn:  # readers (the monitor) never block the demo's writes
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    seed_demo(writer, datetime.fromtimestamp(now, UTC),
              logs_per_minute=RATE_PER_MINUTE * (1 - state.inbound_share) * LOGGED_SHARE,
              log_span=WINDOW_SECONDS)
    rng = random.Random(5)
    sim = SimulatorServer(("127.0.0.1", 0), state).start()
    settings = demo_settings(env, file_data, listen_address, sim.url, url, db_path.parent)
    demo = Demo(settings, sim, db_path, writer, scenario, now)

    def application(sent: list[float]) -> None:
        log_sends(writer, [t for t in sent if rng.random() < LOGGED_SHARE], rng)
        demo.on_outbound(sent)

    state.on_outbound = application
    # The simulator plays Twilio's webhooks: signed status callbacks for every message and
    # the incoming messages, posted to the demo's own endpoints as its story unfolds.
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.listen_host,
                                                                       settings.listen_host)
    host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    public = settings.public_url or f"http://{host}:{settings.listen_port}"
    demo.settings = settings.model_copy(update={"public_url": public})
    sim.webhooks.configure(status_url=f"{public}{STATUS_PATH}",
                           inbound_url=f"{public}{INBOUND_PATH}")
    sim.home_url = f"{public}/"
    demo._seed(scenario, now)  # a story the demo starts in: its problems from the start
    return demo
