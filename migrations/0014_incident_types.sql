-- Two new incident types: `risky_login` (a login refused for its risk
-- score, SPEC §9) and `sysop_factor_level` (`security scan mfa` found a
-- member of the sysops group whose factors are below the level their
-- policy requires; before, such incidents had the type `manual`, and they
-- keep it). And an index by subject: a login's risk score asks whether its
-- address or network had an incident lately (`store::risk`). SQLite cannot
-- change a CHECK constraint in place, so `incidents` is rebuilt with the
-- new list, every row kept as it was.
--
-- The migration runs in a transaction with foreign keys on, and dropping a
-- table deletes its rows first: dropping the old `incidents` would cascade
-- into the rows of `incident_events` and `incident_timeline` that point at
-- it. So the two tables that reference it are rebuilt too, pointing at the
-- new table from the start; then the old three are dropped (nothing points
-- at them any more) and the new ones take their names (a rename with
-- foreign keys on carries the references along). Indexes and the evidence
-- trigger are made again, as 0006 made them.

CREATE TABLE incidents_new (
    id               INTEGER PRIMARY KEY,
    title            TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    incident_type    TEXT NOT NULL CHECK (
        incident_type = 'brute_force_account' OR incident_type = 'brute_force_ip' OR
        incident_type = 'credential_stuffing' OR incident_type = 'password_spraying' OR
        incident_type = 'account_takeover' OR incident_type = 'username_enumeration' OR
        incident_type = 'injection_attempt' OR incident_type = 'cloned_authenticator' OR
        incident_type = 'risky_login' OR incident_type = 'sysop_factor_level' OR
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
    -- The detection rule whose finding opened it (0009).
    rule             TEXT CHECK (rule IS NULL OR length(rule) BETWEEN 1 AND 64),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
INSERT INTO incidents_new (id, title, incident_type, severity, priority, status, subject_key, subject_kind, subject_user_id,
        subject_name, description, assigned_to, event_count, max_event_id, first_event_at, created_at, updated_at,
        resolved_at, resolution_notes, escalations, escalated_at, evidence, rule)
    SELECT id, title, incident_type, severity, priority, status, subject_key, subject_kind, subject_user_id,
        subject_name, description, assigned_to, event_count, max_event_id, first_event_at, created_at, updated_at,
        resolved_at, resolution_notes, escalations, escalated_at, evidence, rule
    FROM incidents;

CREATE TABLE incident_events_new (
    incident_id  INTEGER NOT NULL REFERENCES incidents_new(id) ON DELETE CASCADE,
    event_id     INTEGER NOT NULL,
    PRIMARY KEY (incident_id, event_id)
) WITHOUT ROWID;
INSERT INTO incident_events_new (incident_id, event_id) SELECT incident_id, event_id FROM incident_events;

CREATE TABLE incident_timeline_new (
    id           INTEGER PRIMARY KEY,
    incident_id  INTEGER NOT NULL REFERENCES incidents_new(id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (
        kind = 'created' OR kind = 'attached' OR kind = 'note' OR kind = 'assigned' OR
        kind = 'status' OR kind = 'action' OR kind = 'escalated' OR kind = 'resolved'),
    actor        TEXT NOT NULL,              -- "cli:root", "detection", "playbook:NAME"
    text         TEXT NOT NULL CHECK (length(text) <= 4000),
    details      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);
INSERT INTO incident_timeline_new (id, incident_id, at, kind, actor, text, details)
    SELECT id, incident_id, at, kind, actor, text, details FROM incident_timeline;

-- Children first: then nothing references the old `incidents` when it goes.
DROP TABLE incident_events;
DROP TABLE incident_timeline;
DROP TABLE incidents;
ALTER TABLE incidents_new RENAME TO incidents;
ALTER TABLE incident_events_new RENAME TO incident_events;
ALTER TABLE incident_timeline_new RENAME TO incident_timeline;

-- One not-resolved incident per rule and subject (manual ones are exempt:
-- a sysop may open several at once).
CREATE UNIQUE INDEX incidents_one_open ON incidents (incident_type, subject_key)
    WHERE status <> 'resolved' AND incident_type <> 'manual';
CREATE INDEX incidents_unresolved ON incidents (created_at) WHERE status <> 'resolved';
CREATE INDEX incidents_resolved_at ON incidents (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX incidents_created_at ON incidents (created_at);
-- Recent incidents of an address or network, for the risk score.
CREATE INDEX incidents_subject ON incidents (subject_key, created_at);
CREATE INDEX incident_events_event ON incident_events (event_id);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id);

-- The evidence is what was known at creation: it is never rewritten.
CREATE TRIGGER incidents_evidence_unchanged BEFORE UPDATE OF evidence ON incidents
    WHEN NEW.evidence IS NOT OLD.evidence
BEGIN
    SELECT RAISE(ABORT, 'the evidence of an incident is kept unchanged');
END;
