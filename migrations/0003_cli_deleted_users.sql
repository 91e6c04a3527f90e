-- Accounts removed with `user delete`. The account's row goes (and with it,
-- by ON DELETE CASCADE, its groups, password history, SSH keys, devices,
-- sessions, code secrets, backup codes and links); its security events stay
-- under the same user id, and this row marks that id as a deleted account.
-- New accounts never reuse an id listed here.
CREATE TABLE deleted_users (
    id          INTEGER PRIMARY KEY,     -- the users.id the account had
    username    TEXT NOT NULL COLLATE NOCASE,
    deleted_at  INTEGER NOT NULL,
    deleted_by  TEXT NOT NULL            -- the actor, e.g. "cli:root"
);
CREATE INDEX deleted_users_name ON deleted_users (username);
