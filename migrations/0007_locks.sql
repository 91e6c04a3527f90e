-- Account locks say who made them, and logins remember where the owner
-- completed a full login (every required factor).
--
-- lock_source: 'sysop' (the CLI: absolute, until unlocked or its time) or
-- 'rule' (a playbook: bounded by locks.max_duration, and the owner still
-- gets in from a known address with every factor). Locks made before this
-- migration were the sysop's.
ALTER TABLE users ADD COLUMN lock_source TEXT CHECK (lock_source IS NULL OR lock_source = 'sysop' OR lock_source = 'rule');
-- The incident a rule lock answers (no foreign key: incidents are kept in
-- their own table and a lock must not depend on it).
ALTER TABLE users ADD COLUMN lock_incident_id INTEGER;
UPDATE users SET lock_source = 'sysop' WHERE locked_until IS NOT NULL;

-- One row per account and address (IPv4 per address, IPv6 per /64, as
-- core::admission::AddressKey prints them) where a login passed every
-- required factor; updated on every full login, so the table holds at most
-- one row per place the owner logs in from.
CREATE TABLE known_addresses (
    user_id             INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    ip_key              TEXT NOT NULL,
    first_full_login_at INTEGER NOT NULL,
    last_full_login_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, ip_key)
) WITHOUT ROWID;
