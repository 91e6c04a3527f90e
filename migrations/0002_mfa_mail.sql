-- Two factors and mail: one-time-code secrets, backup codes, single-use
-- emailed tokens, and the durable mail outbox.

CREATE TABLE otp_secrets (
    user_id          INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    method           TEXT NOT NULL CHECK (method IN ('totp', 'hotp')),
    algorithm        TEXT NOT NULL CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits           INTEGER NOT NULL CHECK (digits IN (6, 8)),
    secret_sealed    BLOB NOT NULL,          -- AEAD-sealed with the key in data/
    enabled          INTEGER NOT NULL DEFAULT 0 CHECK (enabled IN (0, 1)),
    last_step        INTEGER,                -- TOTP: newest accepted step (burnt)
    next_counter     INTEGER NOT NULL DEFAULT 0, -- HOTP: next expected counter
    step_failures    INTEGER NOT NULL DEFAULT 0, -- failures within the current step
    failure_step     INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    closed_until     INTEGER,                -- code factor closed after repeated failures
    closures         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    enabled_at       INTEGER
);

CREATE TABLE backup_codes (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,               -- keyed hash; codes are shown once
    created_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX backup_codes_user ON backup_codes (user_id);

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,        -- SHA-256 of the 256-bit token
    purpose     TEXT NOT NULL CHECK (purpose IN ('otp_enroll', 'webauthn_enroll', 'password_reset', 'login_approval')),
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    data        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(data)),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX tokens_user ON tokens (user_id, purpose);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    recipient        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    -- Bodies hold single-use links: sealed with the key in data/ and
    -- cleared once the mail is sent.
    body_sealed      BLOB,
    template         TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    sent_at          INTEGER,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;
