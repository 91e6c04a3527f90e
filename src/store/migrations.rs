//! Numbered migrations from `migrations/`, embedded in order. Each runs in
//! its own transaction and is recorded in `schema_migrations`; a landed
//! migration is never edited.

use super::{Context, Error, Result, Store};
use crate::model::Millis;

pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

/// In order. A new migration is appended here with the next number.
pub const MIGRATIONS: &[Migration] = &[
    Migration { name: "0001_init", sql: include_str!("../../migrations/0001_init.sql") },
    Migration { name: "0002_mfa_mail", sql: include_str!("../../migrations/0002_mfa_mail.sql") },
    Migration { name: "0003_cli_deleted_users", sql: include_str!("../../migrations/0003_cli_deleted_users.sql") },
    Migration { name: "0004_review_retired_ids", sql: include_str!("../../migrations/0004_review_retired_ids.sql") },
    Migration { name: "0005_ip_blocks", sql: include_str!("../../migrations/0005_ip_blocks.sql") },
    Migration { name: "0006_incidents", sql: include_str!("../../migrations/0006_incidents.sql") },
    Migration { name: "0007_locks", sql: include_str!("../../migrations/0007_locks.sql") },
    Migration { name: "0008_webhooks", sql: include_str!("../../migrations/0008_webhooks.sql") },
    Migration { name: "0009_incidents_rule", sql: include_str!("../../migrations/0009_incidents_rule.sql") },
    Migration { name: "0010_devices", sql: include_str!("../../migrations/0010_devices.sql") },
    Migration { name: "0011_event_chain", sql: include_str!("../../migrations/0011_event_chain.sql") },
    Migration { name: "0012_scans", sql: include_str!("../../migrations/0012_scans.sql") },
    Migration { name: "0013_metrics_daily", sql: include_str!("../../migrations/0013_metrics_daily.sql") },
    Migration { name: "0014_risk", sql: include_str!("../../migrations/0014_risk.sql") },
];

/// A step in Rust that runs after a migration's SQL, in its transaction
/// (work SQL alone cannot do, such as hashing rows).
type RustStep = fn(&rusqlite::Transaction<'_>) -> Result<()>;

fn rust_step(name: &str) -> Option<RustStep> {
    match name {
        "0011_event_chain" => Some(super::chain::hash_existing_events),
        _ => None,
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationState {
    pub name: String,
    pub applied_at: Option<String>,
}

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL) WITHOUT ROWID";

impl Store {
    /// Applies pending migrations in order, up to and including `target`
    /// when given. Returns the names applied. Safe to run again.
    pub fn migrate(&self, target: Option<&str>) -> Result<Vec<String>> {
        if let Some(t) = target {
            if !MIGRATIONS.iter().any(|m| m.name == t) {
                let known: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
                return Err(Error::NotFound(format!("unknown migration {t:?} (known: {})", known.join(", "))));
            }
        }
        let mut conn = self.conn();
        conn.execute_batch(LEDGER).doing("creating the migrations ledger")?;
        let mut applied = Vec::new();
        for m in MIGRATIONS {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a migration")?;
            let done: bool = tx
                .query_row("SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE name = ?1)", [m.name], |r| r.get(0))
                .doing("reading the migrations ledger")?;
            if !done {
                tx.execute_batch(m.sql).doing(&format!("applying migration {}", m.name))?;
                if let Some(step) = rust_step(m.name) {
                    step(&tx)?;
                }
                tx.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?1, ?2)", rusqlite::params![m.name, Millis::now().0])
                    .doing("recording a migration")?;
                tx.commit().doing(&format!("committing migration {}", m.name))?;
                applied.push(m.name.to_owned());
            }
            if Some(m.name) == target {
                break;
            }
        }
        Ok(applied)
    }

    pub fn migration_status(&self) -> Result<Vec<MigrationState>> {
        let conn = self.conn();
        conn.execute_batch(LEDGER).doing("creating the migrations ledger")?;
        let mut out = Vec::new();
        for m in MIGRATIONS {
            let at: Option<i64> = conn
                .query_row("SELECT applied_at FROM schema_migrations WHERE name = ?1", [m.name], |r| r.get(0))
                .map(Some)
                .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })
                .doing("reading the migrations ledger")?;
            out.push(MigrationState { name: m.name.to_owned(), applied_at: at.map(|t| Millis(t).rfc3339()) });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_on_an_empty_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        assert!(store.require_migrated().is_err());
        let first = store.migrate(None).expect("migrate");
        assert_eq!(first, MIGRATIONS.iter().map(|m| m.name.to_owned()).collect::<Vec<_>>());
        let again = store.migrate(None).expect("migrate again");
        assert!(again.is_empty(), "re-run applied {again:?}");
        store.require_migrated().expect("migrated");
        assert!(store.migration_status().expect("status").iter().all(|m| m.applied_at.is_some()));
        assert_eq!(store.integrity_check().expect("check"), "ok");
    }

    #[test]
    fn unknown_target_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        let err = store.migrate(Some("0099_nope")).unwrap_err().to_string();
        assert_eq!(err, "unknown migration \"0099_nope\" (known: 0001_init, 0002_mfa_mail, 0003_cli_deleted_users, 0004_review_retired_ids, 0005_ip_blocks, 0006_incidents, 0007_locks, 0008_webhooks, 0009_incidents_rule, 0010_devices, 0011_event_chain, 0012_scans, 0013_metrics_daily, 0014_risk)");
    }

    /// 0009 on a database that already holds incidents: the old rows stay
    /// and read back without a rule; a rule is kept when given, and an
    /// empty one is refused.
    #[test]
    fn incidents_rule_lands_on_a_database_with_incidents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        assert_eq!(store.migrate(Some("0008_webhooks")).expect("up to 0008").len(), 8);
        let old: i64 = {
            let conn = store.conn();
            conn.execute(
                "INSERT INTO incidents (title, incident_type, severity, priority, subject_key, subject_kind, subject_name, first_event_at, created_at, updated_at)
                 VALUES ('old', 'brute_force_ip', 'medium', 'P3', 'address:192.0.2.7', 'address', '192.0.2.7', 1, 2, 2)",
                [],
            )
            .expect("an incident before 0009");
            conn.last_insert_rowid()
        };
        let later: Vec<&str> = MIGRATIONS[8..].iter().map(|m| m.name).collect();
        assert_eq!(later[0], "0009_incidents_rule");
        assert_eq!(store.migrate(None).expect("migrate"), later);
        let read = store.incident(old).expect("read").expect("still there");
        assert_eq!((read.title.as_str(), read.rule.as_deref()), ("old", None));
        let conn = store.conn();
        conn.execute("UPDATE incidents SET rule = 'brute_force_ip' WHERE id = ?1", [old]).expect("a rule");
        assert!(conn.execute("UPDATE incidents SET rule = '' WHERE id = ?1", [old]).is_err(), "an empty rule");
        assert!(conn.execute("UPDATE incidents SET rule = ?2 WHERE id = ?1", rusqlite::params![old, "r".repeat(65)]).is_err(), "a rule over 64");
        drop(conn);
        assert_eq!(store.incident(old).expect("read").expect("there").rule.as_deref(), Some("brute_force_ip"));
        assert_eq!(store.integrity_check().expect("check"), "ok");
    }

    /// 0014 rebuilds `incidents` for the new type: on a database holding
    /// incidents with links and a timeline, every row and id stays (the
    /// foreign keys' cascades took nothing), the evidence trigger still
    /// guards, and every type the model names is accepted.
    #[test]
    fn risk_migration_keeps_incidents_links_and_timeline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(Some("0013_metrics_daily")).expect("up to 0013");
        let old: i64 = {
            let conn = store.conn();
            conn.execute(
                "INSERT INTO incidents (title, incident_type, severity, priority, subject_key, subject_kind, subject_name, first_event_at, created_at, updated_at, evidence, rule)
                 VALUES ('old', 'brute_force_ip', 'medium', 'P3', 'address:192.0.2.7', 'address', '192.0.2.7', 1, 2, 2, '{\"kept\":true}', 'brute_force_ip')",
                [],
            )
            .expect("an incident before 0014");
            let id = conn.last_insert_rowid();
            conn.execute("INSERT INTO incident_events (incident_id, event_id) VALUES (?1, 41), (?1, 42)", [id]).expect("links");
            conn.execute("INSERT INTO incident_timeline (id, incident_id, at, kind, actor, text) VALUES (77, ?1, 2, 'created', 'detection', 'opened')", [id]).expect("timeline");
            assert!(conn.execute("INSERT INTO incidents (title, incident_type, severity, priority, subject_key, subject_kind, first_event_at, created_at, updated_at) VALUES ('r', 'risky_login', 'high', 'P2', 'account:1', 'account', 1, 1, 1)", []).is_err());
            id
        };
        assert_eq!(store.migrate(None).expect("migrate"), vec!["0014_risk".to_owned()]);
        let read = store.incident(old).expect("read").expect("still there");
        assert_eq!((read.title.as_str(), read.rule.as_deref()), ("old", Some("brute_force_ip")));
        assert_eq!(store.incident_event_ids(old, 10).expect("links"), vec![41, 42]);
        let timeline = store.incident_timeline(old).expect("timeline");
        assert_eq!(timeline.iter().map(|t| t.id).collect::<Vec<_>>(), vec![77]);
        assert_eq!(store.incident_evidence(old).expect("evidence"), Some(serde_json::json!({ "kept": true })));
        let conn = store.conn();
        assert!(conn.execute("UPDATE incidents SET evidence = '{}' WHERE id = ?1", [old]).is_err(), "the evidence trigger is back");
        for t in crate::model::IncidentType::ALL {
            conn.execute(
                "INSERT INTO incidents (title, incident_type, severity, priority, subject_key, subject_kind, first_event_at, created_at, updated_at, status, resolved_at) VALUES ('t', ?1, 'high', 'P2', 'gate', 'gate', 1, 1, 1, 'resolved', 1)",
                [t.as_str()],
            )
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        // The cascades still work on the rebuilt tables.
        conn.execute("DELETE FROM incidents WHERE id = ?1", [old]).expect("delete");
        let left: i64 = conn.query_row("SELECT (SELECT COUNT(*) FROM incident_events) + (SELECT COUNT(*) FROM incident_timeline)", [], |r| r.get(0)).expect("count");
        assert_eq!(left, 0);
        drop(conn);
        assert_eq!(store.integrity_check().expect("check"), "ok");
    }

    #[test]
    fn check_constraints_refuse_unknown_enums() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(None).expect("migrate");
        let conn = store.conn();
        let bad = conn.execute(
            "INSERT INTO security_events (event_type, category, severity, description, created_at) VALUES ('made_up', 'system', 'info', 'x', 0)",
            [],
        );
        assert!(bad.is_err());
        let bad = conn.execute(
            "INSERT INTO security_events (event_type, category, severity, description, created_at) VALUES ('login_failed', 'authentication', 'dire', 'x', 0)",
            [],
        );
        assert!(bad.is_err());
    }
}
