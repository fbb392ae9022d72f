"""Which accounts this replica polls: the shard area (core/sharding.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from prometheus_client.core import GaugeMetricFamily, Metric

from sms_monitor.core.sharding import ShardPlan
from sms_monitor.core.snapshot import Snapshot
from sms_monitor.outputs.metrics.base import Area


class ShardArea(Area):
    """This replica's shard, and each configured account as owned (1) or left to another
    replica (0): summed over the replicas, every account's ``sms_monitor_account_owned`` is
    1 when each is polled by exactly one (the mixin's ``SmsMonitorAccountCoverage``).

    Sample::

        sms_monitor_shard_info{shard="1",total_shards="3"} 1.0
        sms_monitor_shard_accounts{state="owned"} 1.0
        sms_monitor_shard_accounts{state="skipped"} 2.0
        sms_monitor_account_owned{account="clinic-west"} 1.0
        sms_monitor_account_owned{account="backup"} 0.0
    """

    plan: ClassVar[ShardPlan] = ShardPlan()

    @classmethod
    def of(cls, plan: ShardPlan) -> type[ShardArea]:
        """The area of one replica's plan (areas are built without arguments)."""
        return type("ShardArea", (cls,), {"plan": plan})

    def collect(self, snap: Snapshot) -> Iterator[Metric]:
        plan = self.plan
        info = GaugeMetricFamily("sms_monitor_shard_info",
                                 "This replica's shard and how many replicas divide the accounts",
                                 labels=["shard", "total_shards"])
        info.add_metric([str(plan.sharding.shard), str(plan.sharding.total)], 1)
        counts = GaugeMetricFamily("sms_monitor_shard_accounts",
                                   "Configured accounts this replica polls (owned) and leaves to "
                                   "the other shards (skipped)", labels=["state"])
        counts.add_metric(["owned"], len(plan.owned))
        counts.add_metric(["skipped"], len(plan.skipped))
        owned = GaugeMetricFamily("sms_monitor_account_owned",
                                  "1 when this replica polls the account, 0 when another shard "
                                  "does", labels=["account"])
        for name in plan.owned:
            owned.add_metric([name], 1)
        for name in plan.skipped:
            owned.add_metric([name], 0)
        yield from (info, counts, owned)

    def page_lines(self, snap: Snapshot) -> list[str]:
        s = self.plan.sharding
        if not s.sharded:
            return []
        return [f"Shard {s.shard} of {s.total}: polls {len(self.plan.owned)} of "
                f"{len(self.plan.owned) + len(self.plan.skipped)} accounts"]
