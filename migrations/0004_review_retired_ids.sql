-- The highest session and device ids there were when an account was
-- deleted (its sessions and devices go by ON DELETE CASCADE). Without it
-- SQLite hands the next row the largest id left plus one, so a new login
-- could take the id of a deleted account's session: the event log would
-- then mix two accounts under one session or device id, and the daemon,
-- which tracks live sessions by id, would take the deleted account's still
-- connected session for the new one and never cut it. New rows take ids
-- past these.
CREATE TABLE retired_ids (
    tbl     TEXT PRIMARY KEY CHECK (tbl = 'sessions' OR tbl = 'devices'),
    max_id  INTEGER NOT NULL
);
