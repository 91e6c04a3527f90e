-- The tamper-evident event log (issue 9 item 7): each event carries the
-- SHA-256 of the previous event's hash and its own canonical bytes (the
-- encoding is defined in src/store/chain.rs). NULL only for rows written
-- around the store (a hand-made INSERT); `security events verify` reports
-- such a row. Rows that exist when this migration runs are hashed by its
-- Rust step (store::chain::hash_existing_events), in id order, in this
-- same transaction: the whole kept log is one chain.
ALTER TABLE security_events ADD COLUMN hash BLOB;

-- Where the kept chain begins: its first event's id and the hash that
-- event chains to (32 zero bytes at the start of the log; the hash of the
-- last deleted event once retention removed the oldest ones). One row.
-- When no event is kept, the next one is written with id `first_id`.
CREATE TABLE security_event_chain (
    one          INTEGER PRIMARY KEY CHECK (one = 1),
    first_id     INTEGER NOT NULL CHECK (first_id >= 1),
    hash_before  BLOB NOT NULL CHECK (length(hash_before) = 32)
);
INSERT INTO security_event_chain (one, first_id, hash_before)
    SELECT 1, COALESCE(MIN(id), 1), zeroblob(32) FROM security_events;
