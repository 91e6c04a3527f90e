-- Scans (SPEC §11): the verdict on a password, taken at its last
-- successful login against the policy of that moment and the common list.
-- Only the verdict is kept: never the password, never a hash of it.
ALTER TABLE users ADD COLUMN password_weak INTEGER CHECK (password_weak IN (0, 1));
-- A JSON array of the failed rules' codes ("too_short", "common", ...).
ALTER TABLE users ADD COLUMN password_weak_reasons TEXT;
ALTER TABLE users ADD COLUMN password_checked_at INTEGER;
