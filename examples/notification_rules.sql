-- The runbook's recommended alert rules, one per line of its "Key Metrics to Monitor" table.
-- Load into the application database:  psql "$DATABASE_URL" -f examples/notification_rules.sql
-- Replace the recipients: e-mail addresses and/or https:// webhook URLs (never phone numbers).
-- sms-monitor reads the table every cycle; `sms-monitor rules check` validates it.

INSERT INTO notification_rules (rule_name, rule_type, trigger_conditions, recipients) VALUES
  ('Low SMS Delivery Rate', 'alert',
   '{"metric": "sms_delivery_rate", "threshold": 90, "window": "1 hour"}',
   ARRAY['oncall@practice.example']),
  ('Slow SMS Delivery', 'alert',
   '{"metric": "sms_delivery_time", "threshold": 30, "window": "1 hour", "for": "10m"}',
   ARRAY['oncall@practice.example']),
  ('Slow Twilio API', 'alert',
   '{"metric": "api_response_time", "threshold": 7, "for": "5m"}',
   ARRAY['oncall@practice.example']),
  ('Low Twilio Balance', 'alert',
   '{"metric": "account_balance", "threshold": 20, "severity": "critical"}',
   ARRAY['oncall@practice.example', 'billing@practice.example']),
  ('High SMS Error Rate', 'alert',
   '{"metric": "sms_error_rate", "threshold": 5, "window": "1 hour"}',
   ARRAY['oncall@practice.example']);
