-- Portcullis schema, first cut: accounts, password history, SSH keys,
-- devices, sessions and the security event log.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC); the CLI
-- prints them as RFC 3339. Enumerations are enforced with CHECK constraints.

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE COLLATE NOCASE
                         CHECK (length(username) BETWEEN 1 AND 32),
    email                TEXT,
    password_hash        TEXT,
    password_changed_at  INTEGER,
    must_reset_password  INTEGER NOT NULL DEFAULT 0 CHECK (must_reset_password IN (0, 1)),
    locked_until         INTEGER,            -- NULL: not locked
    lock_reason          TEXT,
    imposed_level        INTEGER NOT NULL DEFAULT 1 CHECK (imposed_level BETWEEN 1 AND 3),
    login_count          INTEGER NOT NULL DEFAULT 0,
    last_login_at        INTEGER,
    last_login_ip        TEXT,
    created_at           INTEGER NOT NULL
);

CREATE TABLE user_groups (
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    group_name  TEXT NOT NULL CHECK (length(group_name) BETWEEN 1 AND 32),
    PRIMARY KEY (user_id, group_name)
) WITHOUT ROWID;

CREATE TABLE password_history (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE INDEX password_history_user ON password_history (user_id, created_at);

CREATE TABLE ssh_keys (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    algorithm     TEXT NOT NULL,
    public_key    TEXT NOT NULL,             -- OpenSSH "alg base64" without comment
    fingerprint   TEXT NOT NULL UNIQUE,      -- SHA256:...
    comment       TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX ssh_keys_user ON ssh_keys (user_id);

CREATE TABLE devices (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    fingerprint    TEXT NOT NULL,            -- hash of what the client said of itself
    device_name    TEXT NOT NULL,
    device_type    TEXT NOT NULL CHECK (device_type IN ('ssh', 'web')),
    client_version TEXT NOT NULL DEFAULT '',
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL,
    last_ip        TEXT,
    login_count    INTEGER NOT NULL DEFAULT 0,
    failure_count  INTEGER NOT NULL DEFAULT 0,
    is_trusted     INTEGER NOT NULL DEFAULT 0 CHECK (is_trusted IN (0, 1)),
    risk_score     INTEGER NOT NULL DEFAULT 0 CHECK (risk_score BETWEEN 0 AND 100),
    UNIQUE (user_id, fingerprint)
);

CREATE TABLE device_ips (
    device_id      INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    ip             TEXT NOT NULL,
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL,
    PRIMARY KEY (device_id, ip)
) WITHOUT ROWID;

CREATE TABLE sessions (
    id                INTEGER PRIMARY KEY,
    user_id           INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id         INTEGER REFERENCES devices(id) ON DELETE SET NULL,
    protocol          TEXT NOT NULL CHECK (protocol IN ('ssh', 'web')),
    ip                TEXT NOT NULL,
    client_version    TEXT NOT NULL DEFAULT '',
    auth_method       TEXT NOT NULL,
    factors           INTEGER NOT NULL CHECK (factors BETWEEN 0 AND 3),
    started_at        INTEGER NOT NULL,      -- when the connection was accepted
    authenticated_at  INTEGER NOT NULL,
    last_activity_at  INTEGER NOT NULL,
    ended_at          INTEGER,
    end_reason        TEXT
);
CREATE INDEX sessions_user ON sessions (user_id, started_at);
CREATE INDEX sessions_open ON sessions (ended_at) WHERE ended_at IS NULL;

CREATE TABLE security_events (
    id             INTEGER PRIMARY KEY,
    -- Enumerations are written as OR chains: SQLite evaluates an IN list in
    -- a CHECK by building a temporary table per row, several times slower.
    event_type     TEXT NOT NULL CHECK (
        event_type = 'login_success' OR event_type = 'login_failed' OR event_type = 'otp_success' OR
        event_type = 'otp_failed' OR event_type = 'otp_replay' OR event_type = 'backup_code_used' OR
        event_type = 'mfa_enrollment_sent' OR event_type = 'mfa_enabled' OR event_type = 'mfa_disabled' OR
        event_type = 'password_changed' OR event_type = 'password_rejected' OR event_type = 'account_locked' OR
        event_type = 'account_unlocked' OR event_type = 'ip_blocked' OR event_type = 'ip_unblocked' OR
        event_type = 'device_new' OR event_type = 'device_trusted' OR event_type = 'device_untrusted' OR
        event_type = 'device_removed' OR event_type = 'webauthn_registered' OR event_type = 'webauthn_used' OR
        event_type = 'webauthn_removed' OR event_type = 'webauthn_counter_regression' OR event_type = 'session_started' OR
        event_type = 'session_ended' OR event_type = 'session_revoked' OR event_type = 'incident_created' OR
        event_type = 'incident_resolved' OR event_type = 'playbook_action' OR event_type = 'scan_completed' OR
        event_type = 'suspicious_input' OR event_type = 'user_created' OR event_type = 'user_updated' OR
        event_type = 'ssh_key_added' OR event_type = 'ssh_key_removed' OR event_type = 'connection_refused' OR
        event_type = 'config_reloaded'),
    category       TEXT NOT NULL CHECK (
        category = 'authentication' OR category = 'authorization' OR category = 'device' OR
        category = 'suspicious' OR category = 'admin' OR category = 'system'),
    severity       TEXT NOT NULL CHECK (
        severity = 'info' OR severity = 'low' OR severity = 'medium' OR severity = 'high' OR severity = 'critical'),
    user_id        INTEGER,                  -- no foreign key: events outlive accounts
    username       TEXT,                     -- as attempted; attacker-supplied text
    ip             TEXT,
    device_id      INTEGER,
    session_id     INTEGER,
    description    TEXT NOT NULL,
    -- A JSON object, always serialised by the store itself (no json_valid
    -- check here: it costs a fifth of the insert rate on the hottest table).
    details        TEXT NOT NULL DEFAULT '{}',
    risk_score     INTEGER NOT NULL DEFAULT 0 CHECK (risk_score >= 0 AND risk_score <= 100),
    is_suspicious  INTEGER NOT NULL DEFAULT 0 CHECK (is_suspicious = 0 OR is_suspicious = 1),
    created_at     INTEGER NOT NULL
);
-- Hot queries: an account's recent failures, an address's recent failures,
-- the newest events, the suspicious ones.
-- (user_id, created_at) rather than a covering (user_id, event_type, ...):
-- it serves both "this account's events, newest first" and "its failures
-- in a window" (a few rows checked for their type), with smaller keys.
CREATE INDEX security_events_user ON security_events (user_id, created_at);
CREATE INDEX security_events_ip ON security_events (ip, created_at);
CREATE INDEX security_events_time ON security_events (created_at);
CREATE INDEX security_events_suspicious ON security_events (created_at) WHERE is_suspicious = 1;
