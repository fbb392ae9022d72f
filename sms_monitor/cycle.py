"""One cycle: read every input (stage by stage) → snapshot → publish → alert engine.

The cycle only sequences; what is read is the inputs' business, what it means is the
core's, and how it is shown is the outputs'.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from types import MappingProxyType
from typing import TYPE_CHECKING

import structlog

from sms_monitor.core.snapshot import Part, Snapshot, SnapshotHolder
from sms_monitor.inputs.base import CycleContext, Input
from sms_monitor.inputs.telemetry import RequestLog

if TYPE_CHECKING:
    from sms_monitor.alerts.engine import AlertEngine

log = structlog.get_logger("sms_monitor.cycle")

MAX_PARALLEL = 8


def read_stage(inputs: Sequence[Input], ctx: CycleContext) -> list[Part]:
    """Read one stage's inputs, in parallel when there are several."""
    if len(inputs) == 1:
        return [inputs[0].read(ctx)]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(inputs))) as pool:
        return list(pool.map(lambda i: i.read(ctx), inputs))


def read_all(inputs: Sequence[Input], clock: Callable[[], float]) -> dict[str, Part]:
    """Every input's part, each stage seeing the parts of the stages before it."""
    parts: dict[str, Part] = {}
    for _, group in groupby(sorted(inputs, key=lambda i: i.stage), key=lambda i: i.stage):
        stage = list(group)
        ctx = CycleContext(now=clock(), parts=MappingProxyType(dict(parts)))
        for inp, part in zip(stage, read_stage(stage, ctx), strict=True):
            parts[inp.key] = part
    return parts


def last_success(inputs: Sequence[Input]) -> Mapping[str, float]:
    return {i.key: ts for i in inputs if (ts := i.last_success) is not None}


def run_cycle(inputs: Sequence[Input], *, holder: SnapshotHolder, requests_log: RequestLog,
              clock: Callable[[], float], cycles: int,
              alerts: AlertEngine | None = None) -> Snapshot:
    """Read, build the snapshot, publish it; then evaluate the alert rules against it and
    publish their state beside it. Returns the snapshot."""
    started = time.monotonic()
    parts = read_all(inputs, clock)
    snapshot = Snapshot(taken_at=clock(), parts=parts, requests=requests_log.freeze(),
                        last_success=last_success(inputs), cycles=cycles,
                        cycle_seconds=time.monotonic() - started)
    holder.publish(snapshot)
    if alerts is not None:
        try:
            holder.publish_alerts(alerts.cycle(snapshot))
        except Exception as exc:  # a bug in the engine must not stop monitoring
            log.exception("alert_engine_crashed", error=type(exc).__name__)
    return snapshot
