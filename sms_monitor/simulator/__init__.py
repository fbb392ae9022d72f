"""A stateful Twilio API simulator: the subset sms-monitor reads, with switchable scenarios."""
