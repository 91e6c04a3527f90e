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
    Migration { name: "0014_incident_types", sql: include_str!("../../migrations/0014_incident_types.sql") },
    Migration { name: "0015_webauthn", sql: include_str!("../../migrations/0015_webauthn.sql") },
    Migration { name: "0016_key_trust", sql: include_str!("../../migrations/0016_key_trust.sql") },
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
        assert_eq!(err, "unknown migration \"0099_nope\" (known: 0001_init, 0002_mfa_mail, 0003_cli_deleted_users, 0004_review_retired_ids, 0005_ip_blocks, 0006_incidents, 0007_locks, 0008_webhooks, 0009_incidents_rule, 0010_devices, 0011_event_chain, 0012_scans, 0013_metrics_daily, 0014_incident_types, 0015_webauthn, 0016_key_trust)");
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

    /// 0014 rebuilds `incidents` (and the two tables that point at it) on
    /// a database that holds incidents: every row, link and timeline entry
    /// stays; the new type is taken, an unknown one still refused; the
    /// evidence trigger, the one-open index and the foreign keys (with
    /// their cascade) work as before; nothing is left of the rebuild.
    #[test]
    fn incident_types_rebuild_keeps_every_row_and_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        let before = MIGRATIONS.iter().position(|m| m.name == "0014_incident_types").expect("0014");
        assert_eq!(store.migrate(Some(MIGRATIONS[before - 1].name)).expect("up to the one before").len(), before);
        let insert = "INSERT INTO incidents (title, incident_type, severity, priority, status, subject_key, subject_kind, subject_name, first_event_at, created_at, updated_at, resolved_at, evidence, rule)
             VALUES (?1, ?2, 'high', 'P2', ?3, ?4, 'address', '192.0.2.7', 1, 2, 3, ?5, '{\"events\":[1]}', ?6)";
        {
            let conn = store.conn();
            conn.execute(insert, rusqlite::params!["open", "brute_force_ip", "open", "address:192.0.2.7", None::<i64>, "brute_force_ip"]).expect("an open incident");
            conn.execute(insert, rusqlite::params!["done", "manual", "resolved", "gate", Some(9), None::<String>]).expect("a resolved one");
            assert!(conn.execute(insert, rusqlite::params!["new", "sysop_factor_level", "open", "account:4", None::<i64>, None::<String>]).is_err(), "not a type before 0014");
            assert!(conn.execute(insert, rusqlite::params!["new", "risky_login", "open", "account:4", None::<i64>, None::<String>]).is_err(), "not a type before 0014");
            conn.execute_batch(
                "INSERT INTO incident_events (incident_id, event_id) VALUES (1, 10), (1, 11), (2, 12);
                 INSERT INTO incident_timeline (incident_id, at, kind, actor, text) VALUES (1, 2, 'created', 'detection', 'a'), (2, 2, 'created', 'cli:root', 'b'), (2, 9, 'resolved', 'cli:root', 'c');",
            )
            .expect("links and entries");
        }
        let rows = |store: &Store| -> Vec<String> {
            let conn = store.conn();
            let mut all = Vec::new();
            for q in [
                "SELECT json_array(id, title, incident_type, severity, priority, status, subject_key, subject_kind, subject_user_id, subject_name, description, assigned_to, event_count, max_event_id, first_event_at, created_at, updated_at, resolved_at, resolution_notes, escalations, escalated_at, evidence, rule) FROM incidents ORDER BY id",
                "SELECT json_array(incident_id, event_id) FROM incident_events ORDER BY incident_id, event_id",
                "SELECT json_array(id, incident_id, at, kind, actor, text, details) FROM incident_timeline ORDER BY id",
            ] {
                let mut st = conn.prepare(q).expect("prepare");
                all.extend(st.query_map([], |r| r.get::<_, String>(0)).expect("query").map(|r| r.expect("row")));
            }
            all
        };
        let kept = rows(&store);
        assert_eq!(kept.len(), 2 + 3 + 3);
        assert_eq!(store.migrate(None).expect("migrate"), MIGRATIONS[before..].iter().map(|m| m.name.to_owned()).collect::<Vec<_>>());
        assert_eq!(rows(&store), kept, "every row as it was");

        let conn = store.conn();
        conn.execute(insert, rusqlite::params!["sysop", "sysop_factor_level", "open", "account:4", None::<i64>, "scan_sysop_below_required_level"]).expect("the new type");
        assert!(conn.execute(insert, rusqlite::params!["again", "sysop_factor_level", "open", "account:4", None::<i64>, None::<String>]).is_err(), "one open per type and subject");
        assert!(conn.execute(insert, rusqlite::params!["x", "made_up", "open", "gate", None::<i64>, None::<String>]).is_err(), "an unknown type");
        let err = conn.execute("UPDATE incidents SET evidence = '{}' WHERE id = 1", []).expect_err("the evidence trigger");
        assert!(err.to_string().contains("the evidence of an incident is kept unchanged"), "{err}");
        assert!(conn.execute("INSERT INTO incident_timeline (incident_id, at, kind, actor, text) VALUES (99, 1, 'note', 'x', 'y')", []).is_err(), "a foreign key to incidents");
        conn.execute("DELETE FROM incidents WHERE id = 2", []).expect("delete");
        let left: (i64, i64) = conn.query_row("SELECT (SELECT COUNT(*) FROM incident_events), (SELECT COUNT(*) FROM incident_timeline)", [], |r| Ok((r.get(0)?, r.get(1)?))).expect("count");
        assert_eq!(left, (2, 1), "the cascade still runs");
        let leftovers: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE '%_new' OR sql LIKE '%_new(%'", [], |r| r.get(0)).expect("schema");
        assert_eq!(leftovers, 0);
        let objects: Vec<String> = {
            let mut st = conn.prepare("SELECT name FROM sqlite_schema WHERE tbl_name IN ('incidents', 'incident_events', 'incident_timeline') AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name").expect("prepare");
            st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect()
        };
        assert_eq!(
            objects,
            ["incident_events", "incident_events_event", "incident_timeline", "incident_timeline_incident", "incidents", "incidents_created_at", "incidents_evidence_unchanged", "incidents_one_open", "incidents_resolved_at", "incidents_subject", "incidents_unresolved"]
        );
        let broken: i64 = conn.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).expect("foreign key check");
        assert_eq!(broken, 0);
        // Every type the model names is one the table takes.
        for t in crate::model::IncidentType::ALL {
            conn.execute(
                "INSERT INTO incidents (title, incident_type, severity, priority, subject_key, subject_kind, first_event_at, created_at, updated_at, status, resolved_at) VALUES ('t', ?1, 'high', 'P2', 'gate', 'gate', 1, 1, 1, 'resolved', 1)",
                [t.as_str()],
            )
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
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
