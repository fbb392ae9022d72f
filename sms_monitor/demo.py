"""`sms-monitor demo`: the simulator, an embedded practice database and the daemon together."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from sms_monitor.config import Settings, load_settings
from sms_monitor.inputs.webhooks import INBOUND_PATH, STATUS_PATH
from sms_monitor.simulator.practice_db import (
    DEMO_LIVE_STOP,
    DEMO_OPTED_OUT,
    DEMO_UNPROCESSED_STOP,
    log_sends,
    seed_demo,
)
from sms_monitor.simulator.scenarios import SCENARIOS
from sms_monitor.simulator.server import SimulatorServer
from sms_monitor.simulator.state import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_PHONE_NUMBER,
    SimState,
)
from sms_monitor.storage.sqlite import ensure_directory

RATE_PER_MINUTE = 120.0
WINDOW = "10m"
WINDOW_SECONDS = 600.0
POLL_INTERVAL = "5s"
CANARY_HANDSET = "+15558675310"  # the demo's test handset (a fictional 555 number)
OPTOUT_GRACE = "1m"  # the demo's application gets a minute to process a STOP
# Share of Twilio's outbound messages the demo application logs (the rest would be other
# senders on the same account): keeps the reconciliation ratio a little above 1.
LOGGED_SHARE = 0.95
# The demo's SMS budget (USD a month): its 120 messages a minute cost about 40,000 a month,
# so the budget check and its panels have data and are green (projected about 2/3 of it).
MONTHLY_BUDGET = 60000


@dataclass
class Demo:
    settings: Settings
    simulator: SimulatorServer
    database_path: Path
    extra_html: str

    def stop(self) -> None:
        self.simulator.stop()
        shutil.rmtree(self.database_path.parent, ignore_errors=True)


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
            "database": {"optout_grace": OPTOUT_GRACE},
            "canary": {"to": CANARY_HANDSET, "interval": "30s", "timeout": "2m"},
            **(file_data or {})}
    data.pop("accounts", None)
    return load_settings(demo_env, data, listen_address=listen_address)


def start_demo(scenario: str, env: Mapping[str, str], file_data: Mapping[str, Any] | None,
               listen_address: str | None) -> Demo:
    # every value is checked before anything starts; the real URLs are filled in below
    demo_settings(env, file_data, listen_address, "http://127.0.0.1:9", "sqlite://",
                  Path(tempfile.gettempdir()))
    state = SimState(rate_per_minute=RATE_PER_MINUTE, history_seconds=WINDOW_SECONDS,
                     scenario=scenario)
    state.add_account(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_PHONE_NUMBER)
    state.advance()
    now = state.clock()
    # The story the database checks find: a STOP the application never processed, and
    # reminders still going to a client who opted out.
    state.insert_message(DEMO_ACCOUNT_SID, now - 420, outbound=False, peer=DEMO_UNPROCESSED_STOP,
                         body="Stop")
    for ago in (480, 240, 60):
        state.insert_message(DEMO_ACCOUNT_SID, now - ago, outbound=True, peer=DEMO_OPTED_OUT,
                             body="Riverside Family Practice: reminder of your appointment.")

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

    def application_logs(sent: list[float]) -> None:
        log_sends(writer, [t for t in sent if rng.random() < LOGGED_SHARE], rng)

    state.on_outbound = application_logs
    sim = SimulatorServer(("127.0.0.1", 0), state).start()

    settings = demo_settings(env, file_data, listen_address, sim.url, url, db_path.parent)
    # The simulator plays Twilio's webhooks: signed status callbacks for every message and
    # the incoming messages, posted to the demo's own endpoints as its story unfolds.
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.listen_host,
                                                                       settings.listen_host)
    host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    public = settings.public_url or f"http://{host}:{settings.listen_port}"
    settings = settings.model_copy(update={"public_url": public})
    sim.webhooks.configure(status_url=f"{public}{STATUS_PATH}",
                           inbound_url=f"{public}{INBOUND_PATH}")
    buttons = "".join(
        f"<form method='post' action='{sim.url}/_simulator/scenario' style='display:inline'>"
        f"<input type='hidden' name='name' value='{name}'><button>{name}</button></form> "
        for name in SCENARIOS)
    stop = (f"<form method='post' action='{sim.url}/_simulator/inbound' style='display:inline'>"
            f"<input type='hidden' name='from' value='{DEMO_LIVE_STOP}'>"
            f"<input type='hidden' name='body' value='STOP'>"
            f"<button>a client replies STOP</button></form>")
    extra = (f"<h2>Demo</h2><p>Built-in Twilio simulator at <a href='{sim.url}/'>{sim.url}</a>; "
             f"practice database (SQLite) at <code>{db_path}</code>. Switch the simulator's "
             f"scenario (the window is {WINDOW}; probes change on the next poll, message "
             f"statistics as new messages arrive):</p><p>{buttons}</p>"
             f"<p>The simulator posts signed status callbacks and incoming messages to this "
             f"process, so delivery times come from callbacks. Make an opted-in client reply "
             f"STOP: the application here never processes it, so <code>optout_unprocessed"
             f"</code> goes up {OPTOUT_GRACE} later, at that second: {stop}</p>")
    return Demo(settings, sim, db_path, extra)
