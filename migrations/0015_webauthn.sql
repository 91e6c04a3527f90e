-- Hardware keys (SPEC §6): one row per registered WebAuthn credential.
-- `credential` is webauthn-rs's own record of it (public key, signature
-- counter, flags, attestation), as JSON; the other columns are what the
-- CLI, the pages and the events show, kept beside it so that listing keys
-- never parses it. `credential_id` is the authenticator's id for the
-- credential: unique across all users (a key registered to one account
-- cannot be registered to another).
CREATE TABLE webauthn_credentials (
    id                       INTEGER PRIMARY KEY,
    user_id                  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name                     TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    credential_id            BLOB NOT NULL UNIQUE,
    credential               TEXT NOT NULL CHECK (json_valid(credential)),
    -- 'passkey': backup eligible (a synced credential, e.g. in a password
    -- manager); 'security_key': bound to one authenticator.
    credential_type          TEXT NOT NULL CHECK (credential_type IN ('security_key', 'passkey')),
    authenticator_attachment TEXT CHECK (authenticator_attachment IN ('platform', 'cross-platform')),
    transports               TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(transports)),
    aaguid                   TEXT,        -- lowercase hyphenated, as the authenticator reported it
    authenticator_name       TEXT,        -- from the shipped table of well-known AAGUIDs
    attestation_format       TEXT NOT NULL,
    attestation_verified     INTEGER NOT NULL DEFAULT 0 CHECK (attestation_verified IN (0, 1)),
    backup_eligible          INTEGER NOT NULL CHECK (backup_eligible IN (0, 1)),
    backup_state             INTEGER NOT NULL CHECK (backup_state IN (0, 1)),
    user_verified            INTEGER NOT NULL CHECK (user_verified IN (0, 1)),
    sign_count               INTEGER NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    created_at               INTEGER NOT NULL,
    last_used_at             INTEGER
);
CREATE INDEX webauthn_credentials_user ON webauthn_credentials (user_id);
