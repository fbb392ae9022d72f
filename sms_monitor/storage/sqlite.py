"""sms-monitor's own SQLite files: where they live, and their directory made on first use."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url


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
    """Create the directory of an SQLite store's file; raises OSError naming it when it
    cannot be made."""
    path = sqlite_file(url)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"{path.parent}: {exc.strerror}") from None


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
