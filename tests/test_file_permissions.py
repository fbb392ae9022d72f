"""sms-monitor's own files (the SQLite alert and audit stores and SQLite's journal, WAL and
shared-memory files beside them) are 0600 in a 0700 directory, whatever the umask."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sms_monitor.alerts.store import AlertStore
from sms_monitor.core.events import InboundEvent
from sms_monitor.simulator.state import DEMO_ACCOUNT_SID
from sms_monitor.storage import sqlite as storage
from sms_monitor.storage.audit import KeywordAudit

SID = "SM" + "7a" * 16


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual umask: files 0644 and directories 0755 by default
    storage._warned.clear()
    yield None
    os.umask(old)


def write_audit(url: str) -> KeywordAudit:
    audit = KeywordAudit(url)
    audit.record(InboundEvent(DEMO_ACCOUNT_SID, SID, "+15550100001", "optout", "STOP", 1.0))
    assert audit.flush()
    return audit


def test_new_stores_are_private_with_their_sidecars(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_audit(f"sqlite:///{state / 'audit.db'}").close()
    store = AlertStore(f"sqlite:///{state / 'alerts.db'}")
    store.migrate()
    store.close()
    assert mode(state) == 0o700
    assert mode(state / "audit.db") == mode(state / "alerts.db") == 0o600
    # SQLite's other files take the database's permissions: a rollback journal, and WAL
    db = sqlite3.connect(state / "audit.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("INSERT INTO sms_monitor_keyword_events (received_at, account, message_sid, "
               "kind, keyword, number_masked) VALUES (2, 'p', 'SM2', 'help', 'HELP', '+*1')")
    db.commit()
    sidecars = sorted(p.name for p in state.iterdir() if p.name.startswith("audit.db-"))
    assert sidecars == ["audit.db-shm", "audit.db-wal"]
    assert {mode(state / name) for name in sidecars} == {0o600}
    db.close()
    assert {oct(mode(p)) for p in state.iterdir()} == {oct(0o600)}


def test_files_left_open_are_tightened_and_so_is_a_directory_of_stores(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    for name in ("audit.db", "audit.db-journal", "alerts.db"):
        (state / name).touch()
    os.chmod(state / "audit.db", 0o664)
    url = f"sqlite:///{state / 'audit.db'}"
    with capture_logs() as logs:
        storage.ensure_directory(url)  # what the audit does before it first opens the file
    assert mode(state) == 0o700
    assert mode(state / "audit.db") == mode(state / "audit.db-journal") == 0o600
    assert mode(state / "alerts.db") == 0o644  # another store's file: its own store's job
    assert [e["event"] for e in logs] == ["state_directory_made_private",
                                          "store_file_made_private", "store_file_made_private"]
    (state / "audit.db-journal").unlink()  # (an empty journal is no journal)
    write_audit(url).close()
    assert mode(state / "audit.db") == 0o600


def test_an_existing_file_open_to_others_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = state / "alerts.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    store = AlertStore(f"sqlite:///{path}")
    store.migrate()
    store.close()
    assert mode(path) == 0o600


def test_a_shared_directory_is_warned_about_never_changed(tmp_path: Path) -> None:
    shared = tmp_path / "project"
    shared.mkdir()
    os.chmod(shared, 0o755)
    (shared / "README").write_text("someone else's file\n")
    with capture_logs() as logs:
        write_audit(f"sqlite:///{shared / 'audit.db'}").close()
        write_audit(f"sqlite:///{shared / 'audit.db'}").close()
    assert mode(shared) == 0o755  # not ours to change
    assert mode(shared / "audit.db") == 0o600  # the file is private all the same
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["path"], e["mode"]) for e in warnings] == [
        ("store_permissions_open", str(shared), "0o755")]  # once


def test_a_sticky_directory_is_never_changed(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    write_audit(f"sqlite:///{sticky / 'audit.db'}").close()
    assert mode(sticky) == 0o1777
    assert mode(sticky / "audit.db") == 0o600


def test_other_databases_and_read_only_files_are_left_alone(tmp_path: Path) -> None:
    storage.ensure_directory("postgresql+psycopg://u:p@db/x")
    storage.ensure_directory("sqlite://")
    path = tmp_path / "ro.db"
    storage.ensure_directory(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert not path.exists()
