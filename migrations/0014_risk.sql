-- Risk scoring (SPEC §9): a login refused for its risk score opens an
-- incident of the new type 'risky_login'. SQLite cannot change a CHECK
-- constraint in place, so the incidents table is rebuilt with the longer
-- list. Foreign keys are on (and cannot be turned off inside the
-- migration's transaction): dropping `incidents` would cascade into its
-- links and timeline, so those two are copied aside, dropped first and
-- rebuilt after, every row and id kept. The `rule` column of 0009 is part
-- of the new definition.

CREATE TABLE incidents_new (
    id               INTEGER PRIMARY KEY,
    title            TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    incident_type    TEXT NOT NULL CHECK (
        incident_type = 'brute_force_account' OR incident_type = 'brute_force_ip' OR
        incident_type = 'credential_stuffing' OR incident_type = 'password_spraying' OR
        incident_type = 'account_takeover' OR incident_type = 'username_enumeration' OR
        incident_type = 'injection_attempt' OR incident_type = 'cloned_authenticator' OR
        incident_type = 'risky_login' OR incident_type = 'manual'),
    severity         TEXT NOT NULL CHECK (severity = 'low' OR severity = 'medium' OR severity = 'high' OR severity = 'critical'),
    priority         TEXT NOT NULL CHECK (priority = 'P1' OR priority = 'P2' OR priority = 'P3' OR priority = 'P4'),
    status           TEXT NOT NULL DEFAULT 'open' CHECK (status = 'open' OR status = 'investigating' OR status = 'resolved'),
    subject_key      TEXT NOT NULL,
    subject_kind     TEXT NOT NULL CHECK (subject_kind = 'account' OR subject_kind = 'address' OR subject_kind = 'network' OR subject_kind = 'gate'),
    subject_user_id  INTEGER,
    subject_name     TEXT,
    description      TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 4000),
    assigned_to      TEXT,
    event_count      INTEGER NOT NULL DEFAULT 0,
    max_event_id     INTEGER NOT NULL DEFAULT 0,
    first_event_at   INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    resolved_at      INTEGER,
    resolution_notes TEXT,
    escalations      INTEGER NOT NULL DEFAULT 0,
    escalated_at     INTEGER,
    evidence         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(evidence)),
    rule             TEXT CHECK (rule IS NULL OR length(rule) BETWEEN 1 AND 64),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
INSERT INTO incidents_new (id, title, incident_type, severity, priority, status, subject_key, subject_kind, subject_user_id, subject_name,
                           description, assigned_to, event_count, max_event_id, first_event_at, created_at, updated_at, resolved_at,
                           resolution_notes, escalations, escalated_at, evidence, rule)
    SELECT id, title, incident_type, severity, priority, status, subject_key, subject_kind, subject_user_id, subject_name,
           description, assigned_to, event_count, max_event_id, first_event_at, created_at, updated_at, resolved_at,
           resolution_notes, escalations, escalated_at, evidence, rule
    FROM incidents;

CREATE TABLE incident_events_copy AS SELECT incident_id, event_id FROM incident_events;
CREATE TABLE incident_timeline_copy AS SELECT id, incident_id, at, kind, actor, text, details FROM incident_timeline;
DROP TABLE incident_events;
DROP TABLE incident_timeline;
DROP TABLE incidents;
ALTER TABLE incidents_new RENAME TO incidents;

CREATE UNIQUE INDEX incidents_one_open ON incidents (incident_type, subject_key)
    WHERE status <> 'resolved' AND incident_type <> 'manual';
CREATE INDEX incidents_unresolved ON incidents (created_at) WHERE status <> 'resolved';
CREATE INDEX incidents_resolved_at ON incidents (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX incidents_created_at ON incidents (created_at);
-- New: the risk score asks whether an address or network has an incident
-- open or resolved lately (`store::risk`), by subject.
CREATE INDEX incidents_subject ON incidents (subject_key, created_at);

CREATE TRIGGER incidents_evidence_unchanged BEFORE UPDATE OF evidence ON incidents
    WHEN NEW.evidence IS NOT OLD.evidence
BEGIN
    SELECT RAISE(ABORT, 'the evidence of an incident is kept unchanged');
END;

CREATE TABLE incident_events (
    incident_id  INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    event_id     INTEGER NOT NULL,
    PRIMARY KEY (incident_id, event_id)
) WITHOUT ROWID;
CREATE INDEX incident_events_event ON incident_events (event_id);
INSERT INTO incident_events (incident_id, event_id) SELECT incident_id, event_id FROM incident_events_copy;

CREATE TABLE incident_timeline (
    id           INTEGER PRIMARY KEY,
    incident_id  INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (
        kind = 'created' OR kind = 'attached' OR kind = 'note' OR kind = 'assigned' OR
        kind = 'status' OR kind = 'action' OR kind = 'escalated' OR kind = 'resolved'),
    actor        TEXT NOT NULL,
    text         TEXT NOT NULL CHECK (length(text) <= 4000),
    details      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id);
INSERT INTO incident_timeline (id, incident_id, at, kind, actor, text, details)
    SELECT id, incident_id, at, kind, actor, text, details FROM incident_timeline_copy;

DROP TABLE incident_events_copy;
DROP TABLE incident_timeline_copy;
