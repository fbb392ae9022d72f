"""sms-monitor's own SQLite files: their directory is made on first use."""

from __future__ import annotations

import os
from pathlib import Path


def ensure_directory(url: str) -> None:
    """Create the directory of an ``sqlite:///PATH`` store (nothing for other URLs or an
    in-memory database); raises OSError when it cannot be made."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///PATH`` URL (None for other URLs or an in-memory database)."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


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
