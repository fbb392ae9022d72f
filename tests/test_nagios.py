"""``check --nagios``: one line, the verdict and performance data in the plugin format."""

from __future__ import annotations

import re

import pytest

from sms_monitor.cli import main
from sms_monitor.core.thresholds import DEFAULT_THRESHOLDS
from sms_monitor.outputs.check import nagios_line
from sms_monitor.simulator.server import SimulatorServer
from tests.conftest import demo_env
from tests.snapshots import T0, account, message, snapshot

# 'label'=value[UOM];[warn];[crit];[min];[max] (Nagios plugin development guidelines)
PERF = re.compile(r"'[^'=]+'=-?[0-9.e+-]+(s|%)?(;[0-9.e+-]*:?){0,4}")


def test_one_line_with_ranges_in_the_plugin_syntax() -> None:
    # 20 outbound messages, 19 delivered: a 95 % delivery rate sits on the yellow boundary
    records = [message(f"SM{i:032x}", T0 - 600 + i, "delivered" if i else "failed")
               for i in range(20)]
    line = nagios_line(snapshot(account("primary", records)), DEFAULT_THRESHOLDS)
    assert "\n" not in line
    status, _, perf = line.partition(" | ")
    assert status.startswith("OVERALL: ") and "|" not in status
    fields = perf.split(" ")
    assert all(PERF.fullmatch(f) for f in fields), fields
    by_label = {f.split("=")[0].strip("'"): f.split("=", 1)[1] for f in fields}
    assert by_label["delivery_rate"] == "0.95;0.95:;0.9:;0;1"  # warn below 0.95, crit below 0.9
    assert by_label["error_rate"] == "0;0.02;0.05;0;1"  # higher is worse: warn above 0.02
    assert by_label["delivery_latency"].split(";")[0].endswith("s")


def test_a_check_two_groups_share_is_labelled_by_group() -> None:
    line = nagios_line(snapshot(account("east"), account("west")), DEFAULT_THRESHOLDS)
    labels = {f.split("=")[0].strip("'") for f in line.partition(" | ")[2].split(" ")}
    assert "east/balance" in labels and "west/balance" in labels and "balance" not in labels


def test_check_nagios_against_the_simulator(live_simulator: SimulatorServer,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", "--nagios"], env=demo_env(live_simulator.url))
    out = capsys.readouterr().out
    assert rc == 0 and out.count("\n") == 1 and out.startswith("OVERALL: GREEN - ")
    assert "'delivery_rate'=" in out and "'balance'=" in out


def test_could_not_run_is_unknown_on_standard_output(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sms_monitor.app

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no cycle | today")

    monkeypatch.setattr(sms_monitor.app, "build", broken)
    rc = main(["check", "--nagios"], env=demo_env("http://127.0.0.1:9"))
    out = capsys.readouterr().out
    assert rc == 3
    assert out == "OVERALL: UNKNOWN - check could not run: RuntimeError: no cycle / today\n"
