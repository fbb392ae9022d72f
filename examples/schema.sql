-- The application tables sms-monitor's database checks read, as the operations runbook's
-- diagnosis queries use them, with the meaning of every column the checks read.
--
-- PostgreSQL (what the runbook uses):   psql -d app -f examples/schema.sql
-- SQLite parses this file too; there the array columns hold JSON arrays as text
-- ('["sms","email"]', '[101,102]') and booleans 0/1.
--
-- sms-monitor only reads these tables (SELECT, in read-only transactions); give its role
-- SELECT on the four of them and nothing else. An application with other table or column
-- names maps them in [database.tables] / [database.columns.<table>] (docs/configuration.md);
-- `sms-monitor db check` verifies that mapping against the live database: each table,
-- each column and its type, and the SELECT privilege. Columns marked "not read" are the
-- runbook's and are here for completeness only.
-- The indexes that keep the checks fast on PostgreSQL are in the README
-- ("Recommended indexes").

CREATE TABLE clients (
    id             integer PRIMARY KEY,  -- not read
    -- not read by the checks; notification_logs.recipient_user_ids hold these ids
    portal_user_id integer,
    name           text,                 -- not read
    -- The client's numbers. invalid_phone_numbers counts non-NULL values that are not
    -- E.164 (^\+[1-9]\d{1,14}$). The opt-out checks match Twilio's numbers against both
    -- columns after normalising them (national formats, spaces and a missing + are fine,
    -- read in [database] default_region). NULL: no number.
    phone          text,
    cell_phone     text,                 -- map it to "" if your clients have one number
    -- true: the client opted out. sent_to_opted_out counts outbound Twilio messages in the
    -- window to numbers of clients with true; optout_unprocessed counts STOPs (older than
    -- [database] optout_grace) from numbers whose clients are all still false. NULL counts
    -- as false (opted in).
    has_opted_out  boolean NOT NULL DEFAULT false,
    last_sms_date  timestamptz           -- not read (the runbook's Issue 5 query sorts by it)
);

CREATE TABLE notification_logs (
    id                 integer PRIMARY KEY,  -- not read
    -- The text sent. The content check groups 7 days of SMS rows by this text with its
    -- digits, greeted names, e-mail addresses and links masked (a template); NULL: left out.
    message            text,
    -- The delivery outcome, as Twilio's status callback reports it. Only the content check
    -- reads it, compared without regard to case:
    --   'delivered', 'read'        delivered
    --   'undelivered', 'failed'    not delivered
    --   anything else ('queued', 'sent', 'accepted', NULL, your own values)
    --                              outcome not known: the row is counted as sent but not
    --                              judged.
    -- A template's delivery rate is delivered / (delivered + not delivered) over 7 days; a
    -- template with at least 10 rows with an outcome under the delivery_rate red bound
    -- (90 %) makes content yellow. An application that writes 'sent' and never records
    -- Twilio's outcome gets content unknown ("none with 10 delivery outcomes"), not a
    -- template "0/120 delivered".
    status             text,
    -- The channels of the notification; a row is an SMS when 'sms' is one of them
    -- ('sms' = ANY (sent_via)). Every check on this table reads SMS rows only.
    sent_via           text[],
    -- The recipients (portal user ids) the row stands for: reconciliation and
    -- unexpected_sends count one SMS per element (NULL: one).
    recipient_user_ids integer[],
    -- When the application queued the notification. The windows: queue_delay reads SMS
    -- rows created in the last hour, reconciliation and unexpected_sends the statistics
    -- window (less [database] reconcile_lag), content the last 7 days. (timestamptz: a
    -- column without a time zone is read in the database session's TimeZone.)
    created_at         timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- When the application handed the SMS to Twilio; NULL: not sent yet. queue_delay is the
    -- mean sent_at - created_at, or, when none was sent, how long the oldest unsent row has
    -- waited.
    sent_at            timestamptz
);

CREATE TABLE notification_rules (
    id                 integer PRIMARY KEY,  -- not read
    -- A rule's name: the alert's name in notifications and the alert store (at most 200
    -- characters, no line breaks or tabs).
    rule_name          text NOT NULL,
    -- Only rows with 'alert' are evaluated.
    rule_type          text NOT NULL,
    -- A JSON object: metric, threshold, window, operator, for, severity, account, repeat,
    -- runbook (README, "Alert rules"). json, jsonb or text holding JSON.
    trigger_conditions jsonb,
    -- E-mail addresses and https:// webhook URLs (never phone numbers). An array, or text
    -- holding a JSON array or '{a,b}'.
    recipients         text[]
);

CREATE TABLE appointment_notification_settings (
    id             integer PRIMARY KEY,  -- not read
    client_id      integer,              -- not read
    -- false: SMS switched off for this row (the runbook's rollback). sms_fallback is the
    -- share of rows with false; yellow from [database] fallback_share (90 %).
    send_via_sms   boolean NOT NULL DEFAULT true,
    send_via_email boolean NOT NULL DEFAULT true  -- not read
);
