-- Address blocks: an address or network dropped right after TCP accept.
-- `network` is canonical (IpNetwork's text: "192.0.2.7", "192.0.2.0/24",
-- "2001:db8::/64"), one row per network. A row whose `expires_at` has
-- passed no longer blocks; the daemon deletes it (an `ip_unblocked` event
-- with reason "expired"). NULL `expires_at`: until lifted. `incident_id`
-- names the incident whose playbook made the block (no foreign key: the
-- incidents table comes with a later migration).
CREATE TABLE ip_blocks (
    id           INTEGER PRIMARY KEY,
    network      TEXT NOT NULL UNIQUE CHECK (length(network) BETWEEN 2 AND 64),
    reason       TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('manual', 'rule', 'import')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    incident_id  INTEGER,
    created_by   TEXT NOT NULL,
    -- Earlier blocks of the same network within blocks.repeat_window when
    -- this one was made (0: a first offence).
    repeat       INTEGER NOT NULL DEFAULT 0 CHECK (repeat >= 0)
);
CREATE INDEX ip_blocks_expiry ON ip_blocks (expires_at) WHERE expires_at IS NOT NULL;

-- Every block ever made (imports aside), kept after its unblock or expiry:
-- what makes durations grow for repeat offenders and the one-week tier
-- for recidivists.
CREATE TABLE ip_block_history (
    id          INTEGER PRIMARY KEY,
    network     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    source      TEXT NOT NULL CHECK (source IN ('manual', 'rule', 'import')),
    incident_id INTEGER
);
CREATE INDEX ip_block_history_network ON ip_block_history (network, created_at);

-- What changed, in order, whichever process changed it: the daemon follows
-- this by id (twice a second) to learn of blocks and unblocks made by the
-- CLI. `lift` asks the daemon to lift its in-memory penalty hold-off on
-- the network (`security ip unblock`); `reload` (an import) to reload every
-- block. Rows older than 30 days are pruned.
CREATE TABLE ip_block_changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    network  TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('block', 'unblock', 'lift', 'reload')),
    at       INTEGER NOT NULL
);
CREATE INDEX ip_block_changes_at ON ip_block_changes (at);
