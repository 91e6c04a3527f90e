//! The usernames attackers try (`dictionary_usernames.txt`, its source in
//! `dictionary_usernames.SOURCE.md`) plus the sysop's additions. A name is
//! compared lower-cased; whether it is an account here is decided by the
//! event (a `login_failed` with reason `unknown_user` has no `user_id`),
//! never by the list: an account that exists is never a hit.

use std::collections::HashSet;

const SHIPPED: &str = include_str!("dictionary_usernames.txt");

pub(crate) struct Dictionary {
    names: HashSet<String>,
}

impl Dictionary {
    pub fn new(extra: &[String]) -> Dictionary {
        let mut names: HashSet<String> = SHIPPED.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        names.extend(extra.iter().map(|n| n.to_lowercase()));
        Dictionary { names }
    }

    pub fn contains(&self, username: &str) -> bool {
        // Names longer than any listed one are not looked up (and not
        // lower-cased): attacker input costs nothing here.
        username.len() <= 64 && self.names.contains(&username.to_lowercase())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// The shipped list, for `dictionary_list_is_clean` and the docs.
pub fn shipped() -> impl Iterator<Item = &'static str> {
    SHIPPED.lines()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_list_is_clean() {
        let lines: Vec<&str> = shipped().collect();
        assert!(lines.len() >= 300, "a few hundred names: {}", lines.len());
        for l in &lines {
            assert!(!l.is_empty() && l.len() <= 64, "{l:?}");
            assert_eq!(*l, l.to_lowercase(), "lower-case: {l:?}");
            assert!(!l.chars().any(|c| c.is_whitespace() || c.is_control()), "{l:?}");
        }
        for pair in lines.windows(2) {
            assert!(pair[0] < pair[1], "sorted and unique: {:?} then {:?}", pair[0], pair[1]);
        }
        for must in ["root", "admin", "test", "oracle", "ubuntu", "pi", "postgres", "ftpuser", "ec2-user", "git"] {
            assert!(lines.contains(&must), "{must} is listed");
        }
        // Personal names were left out on purpose (see the SOURCE file).
        for personal in ["bob", "alex", "david", "john", "maria", "alice", "scott"] {
            assert!(!lines.contains(&personal), "{personal} is a person's name");
        }
        let d = Dictionary::new(&["Minecraft-Server".to_owned()]);
        assert!(d.contains("ROOT") && d.contains("minecraft-server") && !d.contains("alice"));
        assert_eq!(d.len(), lines.len() + 1);
    }
}
