-- Security incidents: opened by a detection rule (at most one not resolved
-- per rule and subject; later events attach to it) or by hand; their links
-- to the events behind them, and their timeline. Evidence is captured once,
-- when the incident opens, and never changed afterwards.

CREATE TABLE incidents (
    id               INTEGER PRIMARY KEY,
    title            TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    incident_type    TEXT NOT NULL CHECK (
        incident_type = 'brute_force_account' OR incident_type = 'brute_force_ip' OR
        incident_type = 'credential_stuffing' OR incident_type = 'password_spraying' OR
        incident_type = 'account_takeover' OR incident_type = 'username_enumeration' OR
        incident_type = 'injection_attempt' OR incident_type = 'cloned_authenticator' OR
        incident_type = 'manual'),
    severity         TEXT NOT NULL CHECK (severity = 'low' OR severity = 'medium' OR severity = 'high' OR severity = 'critical'),
    priority         TEXT NOT NULL CHECK (priority = 'P1' OR priority = 'P2' OR priority = 'P3' OR priority = 'P4'),
    status           TEXT NOT NULL DEFAULT 'open' CHECK (status = 'open' OR status = 'investigating' OR status = 'resolved'),
    -- model::Subject::key(): "account:7", "account:name:root",
    -- "address:192.0.2.7", "network:192.0.2.0/24", "gate".
    subject_key      TEXT NOT NULL,
    subject_kind     TEXT NOT NULL CHECK (subject_kind = 'account' OR subject_kind = 'address' OR subject_kind = 'network' OR subject_kind = 'gate'),
    subject_user_id  INTEGER,                -- an account subject's id (no foreign key: incidents outlive accounts)
    subject_name     TEXT,                   -- the username (as attempted), address or network
    description      TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 4000),
    assigned_to      TEXT,
    -- Events attached so far (linked in incident_events up to a bound,
    -- counted beyond it).
    event_count      INTEGER NOT NULL DEFAULT 0,
    max_event_id     INTEGER NOT NULL DEFAULT 0,
    first_event_at   INTEGER NOT NULL,       -- MTTD = created_at - first_event_at
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    resolved_at      INTEGER,                -- MTTR = resolved_at - created_at
    resolution_notes TEXT,
    escalations      INTEGER NOT NULL DEFAULT 0,
    escalated_at     INTEGER,
    -- What was known when the incident opened (a JSON object): the related
    -- events, the account's devices and sessions, the address's history.
    evidence         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(evidence)),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
-- One not-resolved incident per rule and subject (manual ones are exempt:
-- a sysop may open several at once).
CREATE UNIQUE INDEX incidents_one_open ON incidents (incident_type, subject_key)
    WHERE status <> 'resolved' AND incident_type <> 'manual';
CREATE INDEX incidents_unresolved ON incidents (created_at) WHERE status <> 'resolved';
CREATE INDEX incidents_resolved_at ON incidents (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX incidents_created_at ON incidents (created_at);

-- The evidence is what was known at creation: it is never rewritten.
CREATE TRIGGER incidents_evidence_unchanged BEFORE UPDATE OF evidence ON incidents
    WHEN NEW.evidence IS NOT OLD.evidence
BEGIN
    SELECT RAISE(ABORT, 'the evidence of an incident is kept unchanged');
END;

-- No foreign key to security_events: retention may remove old events, and
-- the evidence keeps copies of the related ones.
CREATE TABLE incident_events (
    incident_id  INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    event_id     INTEGER NOT NULL,
    PRIMARY KEY (incident_id, event_id)
) WITHOUT ROWID;
CREATE INDEX incident_events_event ON incident_events (event_id);

CREATE TABLE incident_timeline (
    id           INTEGER PRIMARY KEY,
    incident_id  INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (
        kind = 'created' OR kind = 'attached' OR kind = 'note' OR kind = 'assigned' OR
        kind = 'status' OR kind = 'action' OR kind = 'escalated' OR kind = 'resolved'),
    actor        TEXT NOT NULL,              -- "cli:root", "detection", "playbook:NAME"
    text         TEXT NOT NULL CHECK (length(text) <= 4000),
    details      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id);
