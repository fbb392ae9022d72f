"""A throwaway PostgreSQL cluster for tests that stop, break and restart their database.

The shared server on 127.0.0.1:5432 is never touched: the cluster lives in a temporary
directory, on a free port, with trust authentication, and is stopped (``-m immediate``) and
removed by :meth:`Cluster.destroy` (also at interpreter exit, should a test run be cut short).
``initdb`` refuses to run as root, so as root every server command runs as the ``postgres``
OS user (``runuser``) in a directory that user owns.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

ADMIN_ROLE = "postgres"
MONITOR_ROLE = "monitor"
DATABASE = "practice"


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries here (Debian's layout first, then PATH)."""
    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parts[-3]
        return tuple(int(p) for p in part.split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One cluster: ``init()`` once, then ``start()`` / ``stop_hard()`` as often as needed."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="smsm-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.logfile = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root: run them as postgres
            user = pwd.getpwnam("postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
            self.sockets.mkdir()
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        else:
            self.sockets.mkdir()
        self._engines: list[Engine] = []
        atexit.register(self.destroy)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, str(self.bindir / tool), *args], check=check,
                              capture_output=True, text=True, timeout=60)

    def init(self) -> Cluster:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", ADMIN_ROLE,
                  "-E", "UTF8", "--locale=C", "--no-sync")
        return self

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.logfile),
                  "-w", "-t", "30", "start")

    def stop_hard(self) -> None:
        """The server dies as in a crash: no checkpoint, clients cut off."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def url(self, role: str = ADMIN_ROLE, database: str = DATABASE) -> str:
        return f"postgresql+psycopg://{role}@127.0.0.1:{self.port}/{database}"

    def engine(self, role: str = ADMIN_ROLE, database: str = DATABASE, **kw: object) -> Engine:
        engine = create_engine(self.url(role, database), pool_pre_ping=True, **kw)
        self._engines.append(engine)
        return engine

    def sql(self, *statements: str) -> None:
        """Statements run as the superuser, each committed."""
        with self.engine(isolation_level="AUTOCOMMIT").connect() as conn:
            for statement in statements:
                conn.execute(text(statement))

    def create_database(self) -> None:
        admin = create_engine(self.url(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
                conn.execute(text(f"CREATE ROLE {MONITOR_ROLE} LOGIN"))
        finally:
            admin.dispose()

    def destroy(self) -> None:
        """Stop the server (immediately) and remove every file of the cluster."""
        for engine in self._engines:
            with contextlib.suppress(Exception):
                engine.dispose()
        self._engines.clear()
        if self.data.exists() and self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop",
                      check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.destroy)
