-- Devices know more than the client's version string (SPEC §9): the HASSH
-- of the client's first KEXINIT and the public key's fingerprint when a key
-- was used. The device's `fingerprint` (unique per account) becomes a hash
-- over the version string, the HASSH and the key fingerprint
-- (fingerprint_version 2, see core/devices.rs).
--
-- Rows recorded before this migration keep their fingerprint (the SHA-256
-- of the version string alone, fingerprint_version 1) and an unknown HASSH
-- (NULL). The first login from such a client takes the row over (the same
-- account and version string, not trusted), so upgrading announces no
-- device as new and loses no history.
ALTER TABLE devices ADD COLUMN fingerprint_version INTEGER NOT NULL DEFAULT 1
    CHECK (fingerprint_version = 1 OR fingerprint_version = 2);
-- 32 lowercase hex digits; NULL: unknown (recorded before HASSH, or the
-- client's KEXINIT could not be read).
ALTER TABLE devices ADD COLUMN hassh TEXT CHECK (hassh IS NULL OR length(hassh) = 32);
-- "kex;encryption;mac;compression" as offered (client to server), bounded.
ALTER TABLE devices ADD COLUMN hassh_algorithms TEXT
    CHECK (hassh_algorithms IS NULL OR length(hassh_algorithms) <= 2048);
-- "SHA256:..." of the public key the login used; NULL for a password login.
ALTER TABLE devices ADD COLUMN key_fingerprint TEXT
    CHECK (key_fingerprint IS NULL OR length(key_fingerprint) <= 128);
-- When and by whom (an actor: "cli:root", "user:7") it was last trusted.
ALTER TABLE devices ADD COLUMN trusted_at INTEGER;
ALTER TABLE devices ADD COLUMN trusted_by TEXT;
-- risk_score (0-100, already there) stays 0 until risk scoring lands.

-- Takes a version-1 row over by its version string.
CREATE INDEX devices_user_version ON devices (user_id, client_version) WHERE fingerprint_version = 1;
-- A device's open sessions (ended when the device is removed).
CREATE INDEX sessions_device_open ON sessions (device_id) WHERE ended_at IS NULL;
