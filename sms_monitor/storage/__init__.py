"""The application's database as sms-monitor sees it: remappable names, runbook fixture."""
