//! The only module that knows SQL. One SQLite file in WAL mode, shared by
//! the daemon and the CLI; numbered migrations embedded in the binary; one
//! event writer thread with group commit.

pub mod blocks;
pub mod chain;
pub mod devices;
pub mod events;
pub mod incidents;
pub mod locks;
pub mod metrics;
pub mod mfa;
pub mod migrations;
pub mod risk;
pub mod scans;
pub mod sessions;
pub mod users;
pub mod webauthn;
pub mod webhooks;
pub mod writer;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use writer::EventWriter;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Sqlite {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("database is not migrated: {0} (run `portcullis migrate run`)")]
    NotMigrated(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attaches what was being attempted to a rusqlite error.
/// `execute` through the connection's statement cache: the hot single-row
/// writes (a code step burnt, the throttle recorded) skip re-preparing
/// their SQL on every call.
pub(crate) trait CachedExecute {
    fn prepare_cached_execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl CachedExecute for Connection {
    fn prepare_cached_execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

pub(crate) trait Context<T> {
    fn doing(self, what: &str) -> Result<T>;
}
impl<T> Context<T> for std::result::Result<T, rusqlite::Error> {
    fn doing(self, what: &str) -> Result<T> {
        self.map_err(|source| Error::Sqlite { what: what.to_owned(), source })
    }
}

/// Every write transaction in the store is IMMEDIATE: it takes the write
/// lock at BEGIN (waiting up to the busy timeout), so a transaction that
/// reads and then writes cannot fail with SQLITE_BUSY_SNAPSHOT when the
/// event writer committed in between.
///
/// A handle on the database file. Short queries run under one connection
/// guarded by a mutex; the event writer owns a second connection.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).doing(&format!("opening database {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT).doing("setting busy timeout")?;
    conn.pragma_update(None, "journal_mode", "WAL").doing("enabling WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL").doing("setting synchronous")?;
    conn.pragma_update(None, "foreign_keys", "ON").doing("enabling foreign keys")?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| Error::Conflict(format!("creating {}: {e}", parent.display())))?;
            }
        }
        let conn = open_connection(path)?;
        Ok(Store { path: path.to_path_buf(), conn: Mutex::new(conn) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable:
        // every write runs in a transaction that rolls back on drop.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String> {
        self.conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .doing("checking integrity")
    }

    /// Fails unless every embedded migration has been applied.
    pub fn require_migrated(&self) -> Result<()> {
        let pending: Vec<String> = self.migration_status()?.into_iter().filter(|m| m.applied_at.is_none()).map(|m| m.name).collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::NotMigrated(format!("pending: {}", pending.join(", "))))
        }
    }
}
