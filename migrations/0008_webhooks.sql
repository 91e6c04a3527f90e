-- Webhook deliveries and playbook escalations.
--
-- A durable queue like the mail outbox: a delivery is committed before it
-- is sent; the webhook worker signs it (HMAC-SHA256 with the webhook's
-- secret from the config, never stored here) when it sends, retries with
-- exponential backoff and gives up after the webhook's max_attempts. The
-- body is the JSON the receiver gets (incident fields, no secret).
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    webhook          TEXT NOT NULL CHECK (length(webhook) BETWEEN 1 AND 32),  -- the name under webhooks:
    event            TEXT NOT NULL CHECK (event IN ('playbook_action', 'escalation', 'test')),
    incident_id      INTEGER,
    playbook         TEXT,
    body             TEXT NOT NULL CHECK (json_valid(body)),
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_attempt_at  INTEGER,
    last_status      INTEGER,                 -- the receiver's HTTP status, if it answered
    last_error       TEXT,
    sent_at          INTEGER,
    gave_up_at       INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE sent_at IS NULL AND gave_up_at IS NULL;

-- Escalations already run, so the periodic check runs each once per
-- incident, even with the CLI and the daemon both checking.
CREATE TABLE playbook_escalations (
    incident_id   INTEGER NOT NULL,
    playbook      TEXT NOT NULL,
    action_index  INTEGER NOT NULL,
    done_at       INTEGER NOT NULL,
    PRIMARY KEY (incident_id, playbook, action_index)
) WITHOUT ROWID;
