"""Named stories the simulator can play; switchable while it runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    delivered: float = 0.99  # share of outbound messages that end delivered
    failure_codes: tuple[tuple[int | None, float], ...] = ((30003, 0.6), (30005, 0.4))
    latency: float = 4.0  # mean seconds from creation to delivery
    balance: float = 120.0
    account_status: str = "active"
    number_present: bool = True
    number_sms: bool = True
    auth_failure: bool = False
    api_delay: float = 0.0  # extra seconds before every API answer
    outage: bool = False  # close connections without answering
    rate_limit_every: int = 0  # answer every Nth request with 429 (0: never)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("healthy", "Everything within the runbook's green band."),
        Scenario(
            "degraded_delivery",
            "About 87% delivered, under the runbook's 90% alert threshold (red); half the "
            "failures carry no error code.",
            delivered=0.87,
            failure_codes=((30003, 0.3), (30005, 0.2), (None, 0.5)),
            latency=6.0,
        ),
        Scenario(
            "carrier_filtering",
            "About 3% of messages filtered by carriers with error 30007 (yellow).",
            delivered=0.97,
            failure_codes=((30007, 1.0),),
        ),
        Scenario("low_balance", "Balance at 35.00, inside the warning band (yellow).",
                 balance=35.0),
        Scenario("out_of_credit", "Balance below zero (red).", balance=-0.42),
        Scenario("suspended", "The account is suspended (red).", account_status="suspended",
                 delivered=0.0, failure_codes=((30002, 1.0),)),
        Scenario("number_lost", "The sending number is gone from the account (red).",
                 number_present=False),
        Scenario("auth_failure", "Every request is refused with 401 / error 20003 (red).",
                 auth_failure=True),
        Scenario("slow_api", "Every answer takes about 4 seconds (yellow API response time).",
                 api_delay=4.0),
        Scenario("outage", "Connections are dropped without an answer (red).", outage=True),
        Scenario("rate_limited", "Every second request gets 429 / error 20429 with Retry-After.",
                 rate_limit_every=2),
    )
}
