"""Named stories the simulator can play, switchable while it runs (:data:`SCENARIOS`), and
the stories of the practice's own data that the demo plays beside them (:data:`STORIES`)."""

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
            "About 80% delivered, well under the runbook's 90% alert threshold (red); half "
            "the failures carry no error code.",
            delivered=0.80,
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


@dataclass(frozen=True)
class Story:
    """A demo scenario of the practice database's (``sms-monitor demo``): its problems are
    seeded into the practice database and the simulator's message log while it plays, and
    Twilio itself plays ``healthy``."""

    name: str
    description: str


STORIES: dict[str, Story] = {s.name: s for s in (
    Story("optout_violations",
          "Twilio is healthy; the practice's application is not: a client's STOP is never "
          "processed (optout_unprocessed turns red when the application's one-minute grace "
          "period ends) and reminders keep going to a client who opted out (sent_to_opted_out, "
          "red at once)."),
    Story("invalid_numbers",
          "Six clients' numbers are typed in national formats, not E.164 "
          "(invalid_phone_numbers, yellow); Twilio is healthy."),
)}
# Every name `sms-monitor demo --scenario` and the demo page's buttons take.
DEMO_SCENARIOS: tuple[str, ...] = (*SCENARIOS, *STORIES)
