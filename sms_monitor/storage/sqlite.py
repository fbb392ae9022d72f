"""sms-monitor's own SQLite files: where they live, and their directory and file made
private on first use.

A store's file is created 0600 before SQLite opens it (SQLite gives its ``-journal``,
``-wal`` and ``-shm`` files the database file's permissions), in a directory created 0700.
Files and a directory left looser by an older version or another tool are tightened when
they are sms-monitor's own; a directory that may be shared is only warned about (see
:func:`ensure_directory`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog
from sqlalchemy.engine import make_url

log = structlog.get_logger("sms_monitor.storage")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SIDECARS = ("-journal", "-wal", "-shm")
# what a directory of sms-monitor's own holds: SQLite databases and their sidecars
_STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3", *(f".db{s}" for s in SIDECARS),
                   *(f".sqlite{s}" for s in SIDECARS), *(f".sqlite3{s}" for s in SIDECARS))
_warned: set[Path] = set()


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite store writes; None for other databases, in-memory ones and
    read-only ones (``file:...?mode=ro&uri=true``: nothing will be created)."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if str(parsed.query.get("uri", "")).lower() in ("true", "1"):  # file:path?mode=...
        if parsed.query.get("mode") in ("ro", "memory") or not name.startswith("file:"):
            return None
        name = name[len("file:"):]
    return Path(name)


def ensure_directory(url: str) -> None:
    """Before an SQLite store is first opened: its directory made (0700) and its file
    created 0600, and existing ones tightened; raises OSError naming the directory when it
    cannot be made. Nothing happens for other databases.

    An existing directory open to others is tightened to 0700 only when it is ours: owned
    by this user, without the sticky bit (``/tmp``), and holding nothing but SQLite
    databases. Any other (a home directory, a project's, a shared volume) is left as it is,
    with a warning: changing it could break someone else, and the files in it are 0600
    whatever it is.
    """
    path = sqlite_file(url)
    if path is None:
        return
    directory = path.parent
    made = not directory.exists()
    try:
        directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"{directory}: {exc.strerror}") from None
    if made:
        _chmod(directory, PRIVATE_DIR)  # whatever the umask left
    else:
        _tighten_directory(directory, path.name)
    try:  # created before SQLite creates it with 0644 (an empty file is an empty database)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                         PRIVATE_FILE))
    except FileExistsError:
        _tighten_file(path)
    except OSError:
        pass  # SQLite will say why it cannot open it, as before
    for suffix in SIDECARS:
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists():
            _tighten_file(sidecar)


def _chmod(path: Path, mode: int) -> bool:
    try:
        os.chmod(path, mode)
        return True
    except OSError:
        return False


def _tighten_file(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if not mode & 0o077:
        return
    if _chmod(path, mode & ~0o077):
        log.info("store_file_made_private", path=str(path), was=oct(mode))
    else:
        _warn(path, mode, "a store file others may read; sms-monitor cannot change it")


def _tighten_directory(directory: Path, own: str) -> None:
    try:
        st = directory.stat()
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return
    ours = st.st_uid == getattr(os, "geteuid", lambda: -1)()
    if ours and not mode & stat.S_ISVTX and _only_stores(directory, own) \
            and _chmod(directory, mode & ~0o077):
        log.info("state_directory_made_private", path=str(directory), was=oct(mode))
        return
    _warn(directory, mode, "the stores' directory is open to others and holds other "
                           "files (or is not ours): give sms-monitor a directory of its own, "
                           "mode 0700")


def _only_stores(directory: Path, own: str) -> bool:
    """Whether ``directory`` holds nothing but SQLite databases (``own`` is the store's
    file name, whatever it ends with) and their sidecars."""
    mine = {own, *(own + s for s in SIDECARS)}
    try:
        with os.scandir(directory) as entries:
            for n, entry in enumerate(entries):
                if n >= 1000 or not entry.is_file(follow_symlinks=False) or not (
                        entry.name in mine or entry.name.endswith(_STORE_SUFFIXES)):
                    return False
    except OSError:
        return False
    return True


def _warn(path: Path, mode: int, advice: str) -> None:
    if path in _warned:
        return
    _warned.add(path)
    log.warning("store_permissions_open", path=str(path), mode=oct(mode), advice=advice)


def missing_file_problem(path: Path) -> str | None:
    """For a store file not created yet: None when it can be (the nearest existing directory
    is writable), else why not. Nothing is created."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create files in {parent}"
    return None
