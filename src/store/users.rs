//! Accounts, groups, password history and SSH keys.

use super::{Context, Error, Result, Store};
use crate::model::{Millis, Secret, SshKey, User};
use rusqlite::{params, OptionalExtension, Row};

const USER_COLUMNS: &str = "id, username, email, password_hash, password_changed_at, must_reset_password,
    locked_until, lock_reason, imposed_level, login_count, last_login_at, last_login_ip, created_at, lock_source, lock_incident_id";

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        email: r.get(2)?,
        password_hash: r.get::<_, Option<String>>(3)?.map(Secret::new),
        password_changed_at: r.get::<_, Option<i64>>(4)?.map(Millis),
        must_reset_password: r.get(5)?,
        locked_until: r.get::<_, Option<i64>>(6)?.map(Millis),
        lock_reason: r.get(7)?,
        imposed_level: r.get(8)?,
        login_count: r.get(9)?,
        last_login_at: r.get::<_, Option<i64>>(10)?.map(Millis),
        last_login_ip: r.get(11)?,
        created_at: Millis(r.get(12)?),
        lock_source: r.get::<_, Option<String>>(13)?.and_then(|s| crate::model::LockSource::parse(&s)),
        lock_incident_id: r.get(14)?,
        groups: Vec::new(),
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub password_hash: &'a str,
    pub groups: &'a [String],
    pub now: Millis,
}

impl Store {
    /// Creates an account with its first password (also put in history).
    pub fn create_user(&self, new: &NewUser<'_>) -> Result<User> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to create a user")?;
        tx.execute(
            // The id is past every deleted account's, so a new account never
            // inherits the events of a deleted one.
            "INSERT INTO users (id, username, email, password_hash, password_changed_at, created_at) VALUES (
                MAX(COALESCE((SELECT MAX(id) FROM users), 0), COALESCE((SELECT MAX(id) FROM deleted_users), 0)) + 1,
                ?1, ?2, ?3, ?4, ?4)",
            params![new.username, new.email, new.password_hash, new.now.0],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict(format!("user {:?} already exists", new.username))
            } else {
                Error::Sqlite { what: "creating a user".into(), source: e }
            }
        })?;
        let id = tx.last_insert_rowid();
        tx.execute("INSERT INTO password_history (user_id, password_hash, created_at) VALUES (?1, ?2, ?3)", params![id, new.password_hash, new.now.0])
            .doing("recording password history")?;
        for g in new.groups {
            tx.execute("INSERT OR IGNORE INTO user_groups (user_id, group_name) VALUES (?1, ?2)", params![id, g]).doing("adding a group")?;
        }
        tx.commit().doing("committing a new user")?;
        drop(conn);
        self.user_by_id(id)?.ok_or_else(|| Error::NotFound(format!("user {id} vanished")))
    }

    fn load_groups(&self, user: &mut User) -> Result<()> {
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT group_name FROM user_groups WHERE user_id = ?1 ORDER BY group_name").doing("reading groups")?;
        user.groups = st.query_map([user.id], |r| r.get(0)).doing("reading groups")?.collect::<rusqlite::Result<_>>().doing("reading groups")?;
        Ok(())
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<User>> {
        let user = {
            let conn = self.conn();
            let mut st = conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1")).doing("reading a user")?;
            st.query_row([id], user_from_row).optional().doing("reading a user")?
        };
        self.with_groups(user)
    }

    /// Case-insensitive lookup.
    pub fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let user = {
            let conn = self.conn();
            let mut st = conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1")).doing("reading a user")?;
            st.query_row([name], user_from_row).optional().doing("reading a user")?
        };
        self.with_groups(user)
    }

    fn with_groups(&self, user: Option<User>) -> Result<Option<User>> {
        match user {
            Some(mut u) => {
                self.load_groups(&mut u)?;
                Ok(Some(u))
            }
            None => Ok(None),
        }
    }

    pub fn list_users(&self) -> Result<Vec<User>> {
        let mut users: Vec<User> = {
            let conn = self.conn();
            let mut st = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id")).doing("listing users")?;
            let rows = st.query_map([], user_from_row).doing("listing users")?.collect::<rusqlite::Result<Vec<_>>>().doing("listing users")?;
            rows
        };
        for u in &mut users {
            self.load_groups(u)?;
        }
        Ok(users)
    }

    /// The newest `limit` password hashes of a user, newest first.
    pub fn password_history(&self, user_id: i64, limit: usize) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT password_hash FROM password_history WHERE user_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2")
            .doing("reading password history")?;
        let rows = st.query_map(params![user_id, limit as i64], |r| r.get(0)).doing("reading password history")?;
        rows.collect::<rusqlite::Result<_>>().doing("reading password history")
    }

    /// Sets a new password, appends it to history and keeps only `keep`
    /// entries. `must_reset` is cleared.
    pub fn set_password(&self, user_id: i64, hash: &str, keep: usize, now: Millis) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a password change")?;
        let n = tx
            .execute(
                // A new password has no verdict yet (its next login gives one).
                "UPDATE users SET password_hash = ?2, password_changed_at = ?3, must_reset_password = 0,
                        password_weak = NULL, password_weak_reasons = NULL, password_checked_at = NULL WHERE id = ?1",
                params![user_id, hash, now.0],
            )
            .doing("changing a password")?;
        if n == 0 {
            return Err(Error::NotFound(format!("no user with id {user_id}")));
        }
        tx.execute("INSERT INTO password_history (user_id, password_hash, created_at) VALUES (?1, ?2, ?3)", params![user_id, hash, now.0])
            .doing("recording password history")?;
        tx.execute(
            "DELETE FROM password_history WHERE user_id = ?1 AND id NOT IN
               (SELECT id FROM password_history WHERE user_id = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2)",
            params![user_id, keep.max(1) as i64],
        )
        .doing("trimming password history")?;
        tx.commit().doing("committing a password change")
    }

    /// Replaces the stored hash without touching history or age (used when
    /// a login upgrades the iteration count of the same password).
    pub fn rehash_password(&self, user_id: i64, old_hash: &str, new_hash: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting a rehash")?;
        tx.execute("UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2", params![user_id, old_hash, new_hash])
            .doing("upgrading a password hash")?;
        tx.execute("UPDATE password_history SET password_hash = ?3 WHERE user_id = ?1 AND password_hash = ?2", params![user_id, old_hash, new_hash])
            .doing("upgrading a password hash")?;
        tx.commit().doing("committing a rehash")
    }

    pub fn set_must_reset(&self, user_id: i64, must: bool) -> Result<()> {
        self.conn().execute("UPDATE users SET must_reset_password = ?2 WHERE id = ?1", params![user_id, must]).doing("flagging a password reset")?;
        Ok(())
    }

    /// Raises the factor level imposed on an account to `level` (never
    /// lowers it); returns whether it changed.
    pub fn raise_imposed_level(&self, user_id: i64, level: u8) -> Result<bool> {
        let n = self
            .conn()
            .execute("UPDATE users SET imposed_level = ?2 WHERE id = ?1 AND imposed_level < ?2", params![user_id, level])
            .doing("raising the required factor level")?;
        Ok(n > 0)
    }

    pub fn record_login(&self, user_id: i64, ip: &str, now: Millis) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE users SET login_count = login_count + 1, last_login_at = ?2, last_login_ip = ?3 WHERE id = ?1",
                params![user_id, now.0, ip],
            )
            .doing("recording a login")?;
        Ok(())
    }

    /// Adds or removes a group; returns whether anything changed.
    pub fn set_group(&self, user_id: i64, group: &str, member: bool) -> Result<bool> {
        let conn = self.conn();
        let n = if member {
            conn.execute("INSERT OR IGNORE INTO user_groups (user_id, group_name) VALUES (?1, ?2)", params![user_id, group])
        } else {
            conn.execute("DELETE FROM user_groups WHERE user_id = ?1 AND group_name = ?2", params![user_id, group])
        }
        .doing("changing a group")?;
        Ok(n > 0)
    }

    pub fn add_ssh_key(&self, user_id: i64, algorithm: &str, public_key: &str, fingerprint: &str, comment: &str, now: Millis) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO ssh_keys (user_id, algorithm, public_key, fingerprint, comment, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![user_id, algorithm, public_key, fingerprint, comment, now.0],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict(format!("key {fingerprint} is already registered"))
            } else {
                Error::Sqlite { what: "adding an SSH key".into(), source: e }
            }
        })?;
        Ok(conn.last_insert_rowid())
    }

    pub fn ssh_keys(&self, user_id: i64) -> Result<Vec<SshKey>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT id, user_id, algorithm, public_key, fingerprint, comment, created_at, last_used_at FROM ssh_keys WHERE user_id = ?1 ORDER BY id")
            .doing("listing SSH keys")?;
        let rows = st
            .query_map([user_id], |r| {
                Ok(SshKey {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    algorithm: r.get(2)?,
                    public_key: r.get(3)?,
                    fingerprint: r.get(4)?,
                    comment: r.get(5)?,
                    created_at: Millis(r.get(6)?).rfc3339(),
                    last_used_at: r.get::<_, Option<i64>>(7)?.map(|t| Millis(t).rfc3339()),
                })
            })
            .doing("listing SSH keys")?;
        rows.collect::<rusqlite::Result<_>>().doing("listing SSH keys")
    }

    /// Removes a key; returns its owner and fingerprint.
    pub fn remove_ssh_key(&self, key_id: i64) -> Result<(i64, String)> {
        let conn = self.conn();
        let row: Option<(i64, String)> = conn
            .query_row("SELECT user_id, fingerprint FROM ssh_keys WHERE id = ?1", [key_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .doing("reading an SSH key")?;
        let row = row.ok_or_else(|| Error::NotFound(format!("no SSH key with id {key_id}")))?;
        conn.execute("DELETE FROM ssh_keys WHERE id = ?1", [key_id]).doing("removing an SSH key")?;
        Ok(row)
    }

    pub fn touch_ssh_key(&self, key_id: i64, now: Millis) -> Result<()> {
        self.conn().execute("UPDATE ssh_keys SET last_used_at = ?2 WHERE id = ?1", params![key_id, now.0]).doing("recording key use")?;
        Ok(())
    }

    /// Sets (or clears) an account's email address. Links already mailed
    /// (to the old address) stop working; returns how many did.
    pub fn set_email(&self, user_id: i64, email: Option<&str>, now: Millis) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting an email change")?;
        let n = tx.execute("UPDATE users SET email = ?2 WHERE id = ?1", params![user_id, email]).doing("changing an email address")?;
        if n == 0 {
            return Err(Error::NotFound(format!("no user with id {user_id}")));
        }
        let voided = tx
            .execute("UPDATE tokens SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL AND expires_at > ?2", params![user_id, now.0])
            .doing("voiding mailed links")?;
        tx.commit().doing("committing an email change")?;
        Ok(voided)
    }

    /// Deletes an account in one transaction: the row is marked in
    /// `deleted_users` and goes with
    /// everything that hangs off it (groups, password history, keys,
    /// devices, sessions, code secrets, backup codes, links). Security
    /// events stay. The account's open sessions are read in the same
    /// transaction and handed to `events`, whose events are written in it
    /// too; returns those sessions' ids.
    pub fn delete_user(&self, user_id: i64, username: &str, deleted_by: &str, now: Millis, events: impl FnOnce(&[i64]) -> Vec<crate::model::Event>) -> Result<Vec<i64>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).doing("starting to delete a user")?;
        let open: Vec<i64> = {
            let mut st = tx.prepare_cached("SELECT id FROM sessions WHERE user_id = ?1 AND ended_at IS NULL ORDER BY id").doing("reading open sessions")?;
            let rows = st.query_map([user_id], |r| r.get(0)).doing("reading open sessions")?;
            rows.collect::<rusqlite::Result<_>>().doing("reading open sessions")?
        };
        tx.execute(
            "INSERT INTO deleted_users (id, username, deleted_at, deleted_by) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, username, now.0, deleted_by],
        )
        .doing("marking a user deleted")?;
        // The account's sessions and devices go with it: keep their ids
        // from being handed out again (see migrations/0004_review_retired_ids.sql).
        for tbl in ["sessions", "devices"] {
            let max: Option<i64> = tx.query_row(&format!("SELECT MAX(id) FROM {tbl}"), [], |r| r.get(0)).doing("reading the highest id")?;
            if let Some(max) = max {
                tx.execute(
                    "INSERT INTO retired_ids (tbl, max_id) VALUES (?1, ?2) ON CONFLICT (tbl) DO UPDATE SET max_id = MAX(max_id, excluded.max_id)",
                    params![tbl, max],
                )
                .doing("retiring ids")?;
            }
        }
        let n = tx.execute("DELETE FROM users WHERE id = ?1", [user_id]).doing("deleting a user")?;
        if n == 0 {
            return Err(Error::NotFound(format!("no user with id {user_id}")));
        }
        super::events::insert_batch_tx(&tx, &events(&open))?;
        tx.commit().doing("committing a user deletion")?;
        Ok(open)
    }

    /// A deleted account by name (the newest, if the name was reused):
    /// its former id and when it was deleted.
    pub fn deleted_user(&self, name: &str) -> Result<Option<(i64, String, Millis)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare_cached("SELECT id, username, deleted_at FROM deleted_users WHERE username = ?1 ORDER BY deleted_at DESC, id DESC LIMIT 1")
            .doing("reading a deleted user")?;
        st.query_row([name], |r| Ok((r.get(0)?, r.get(1)?, Millis(r.get(2)?)))).optional().doing("reading a deleted user")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::devices::SeenDevice;
    use crate::store::sessions::NewSession;

    fn user(store: &Store, name: &str) -> i64 {
        store.create_user(&NewUser { username: name, email: None, password_hash: "$x", groups: &[], now: Millis(1) }).expect("create").id
    }

    fn login(store: &Store, user_id: i64) -> (i64, i64) {
        let (device, _) = store
            .see_device(&SeenDevice { user_id, fingerprint: "fp", device_name: "d", device_type: "ssh", client_version: "v", ip: "127.0.0.1", success: true, pending: false, now: Millis(2) })
            .expect("device");
        let session = store
            .start_session(&NewSession { user_id, device_id: Some(device), protocol: "ssh", ip: "127.0.0.1", client_version: "v", auth_method: "password", factors: 1, connected_at: Millis(2), now: Millis(2) })
            .expect("session");
        (session, device)
    }

    /// A deleted account's session and device ids (the newest ones here)
    /// are not handed to the next login: the daemon tracks live sessions by
    /// id and events name them.
    #[test]
    fn ids_of_a_deleted_account_are_never_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("p.db")).expect("open");
        store.migrate(None).expect("migrate");
        let bob = user(&store, "bob");
        let alice = user(&store, "alice");
        let (bob_session, bob_device) = login(&store, bob);
        let (alice_session, alice_device) = login(&store, alice);
        assert_eq!(store.delete_user(alice, "alice", "cli:test", Millis(3), |_| Vec::new()).expect("delete"), vec![alice_session]);
        let live: Vec<i64> = store.live_rows(&[bob_session, alice_session]).expect("rows").iter().filter(|r| !r.ended).map(|r| r.id).collect();
        assert_eq!(live, vec![bob_session]);
        let carol = user(&store, "carol");
        assert!(carol > alice, "user id {carol} reused");
        let (session, device) = login(&store, carol);
        assert!(session > alice_session, "session id {session} reused (alice had {alice_session})");
        assert!(device > alice_device, "device id {device} reused (alice had {alice_device})");
        let (again, same_device) = login(&store, bob);
        assert_eq!(same_device, bob_device);
        assert!(again > session, "{again} after {session}");
    }
}
