-- Daily rollups of the security metrics (SPEC §11, `security metrics`),
-- one row per UTC day, computed from the tables of record (events,
-- incidents, accounts) by the daemon's daily job, at start for the days
-- missing, and on demand. A row is recomputed whole, never edited.
CREATE TABLE metrics_daily (
    day                  TEXT PRIMARY KEY CHECK (length(day) = 10),  -- "2026-12-01" (UTC)
    day_start            INTEGER NOT NULL,      -- ms, 00:00 UTC of `day`
    logins               INTEGER NOT NULL CHECK (logins >= 0),      -- login_success events
    failures             INTEGER NOT NULL CHECK (failures >= 0),    -- login_failed events
    attacking_addresses  INTEGER NOT NULL CHECK (attacking_addresses >= 0), -- distinct addresses of login_failed
    users                INTEGER NOT NULL CHECK (users >= 0),       -- accounts created before the day's end
    users_mfa            INTEGER NOT NULL CHECK (users_mfa >= 0),   -- of those, with one-time codes enabled
    events_info          INTEGER NOT NULL CHECK (events_info >= 0),
    events_low           INTEGER NOT NULL CHECK (events_low >= 0),
    events_medium        INTEGER NOT NULL CHECK (events_medium >= 0),
    events_high          INTEGER NOT NULL CHECK (events_high >= 0),
    events_critical      INTEGER NOT NULL CHECK (events_critical >= 0),
    incidents_opened     INTEGER NOT NULL CHECK (incidents_opened >= 0),
    incidents_resolved   INTEGER NOT NULL CHECK (incidents_resolved >= 0),
    mttd_ms              INTEGER,               -- mean, over the incidents resolved that day; NULL: none
    mttr_ms              INTEGER,
    blocked_addresses    INTEGER NOT NULL CHECK (blocked_addresses >= 0), -- distinct addresses/networks blocked that day
    computed_at          INTEGER NOT NULL
) WITHOUT ROWID;
