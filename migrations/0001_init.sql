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
    event_type     TEXT NOT NULL CHECK (event_type IN (
        'login_success', 'login_failed', 'otp_success', 'otp_failed', 'otp_replay',
        'backup_code_used', 'mfa_enrollment_sent', 'mfa_enabled', 'mfa_disabled',
        'password_changed', 'password_rejected', 'account_locked', 'account_unlocked',
        'ip_blocked', 'ip_unblocked', 'device_new', 'device_trusted', 'device_untrusted',
        'device_removed', 'webauthn_registered', 'webauthn_used', 'webauthn_removed',
        'webauthn_counter_regression', 'session_started', 'session_ended',
        'session_revoked', 'incident_created', 'incident_resolved', 'playbook_action',
        'scan_completed', 'suspicious_input', 'user_created', 'user_updated',
        'ssh_key_added', 'ssh_key_removed', 'connection_refused', 'config_reloaded')),
    category       TEXT NOT NULL CHECK (category IN (
        'authentication', 'authorization', 'device', 'suspicious', 'admin', 'system')),
    severity       TEXT NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    user_id        INTEGER,                  -- no foreign key: events outlive accounts
    username       TEXT,                     -- as attempted; attacker-supplied text
    ip             TEXT,
    device_id      INTEGER,
    session_id     INTEGER,
    description    TEXT NOT NULL,
    details        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details)),
    risk_score     INTEGER NOT NULL DEFAULT 0 CHECK (risk_score BETWEEN 0 AND 100),
    is_suspicious  INTEGER NOT NULL DEFAULT 0 CHECK (is_suspicious IN (0, 1)),
    created_at     INTEGER NOT NULL
);
-- Hot queries: an account's recent failures, an address's recent failures,
-- the newest events, the suspicious ones.
CREATE INDEX security_events_user ON security_events (user_id, event_type, created_at);
CREATE INDEX security_events_ip ON security_events (ip, created_at);
CREATE INDEX security_events_time ON security_events (created_at);
CREATE INDEX security_events_suspicious ON security_events (created_at) WHERE is_suspicious = 1;
