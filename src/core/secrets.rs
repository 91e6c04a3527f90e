//! The gate's own key, in `<data_dir>/secret.key` (32 random bytes, mode
//! 0600), and what it protects: one-time-code secrets and queued mail
//! bodies are sealed with AES-256-GCM (so a copy of the database alone
//! reveals neither), and backup codes are stored as keyed hashes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use std::path::Path;

pub struct Keyring {
    aead: Aes256Gcm,
    mac_key: [u8; 32],
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(<secret>)")
    }
}

pub const KEY_FILE: &str = "secret.key";

impl Keyring {
    /// Loads the key, creating it (mode 0600, created exclusively so two
    /// processes never write different keys) when missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Keyring, String> {
        let path = data_dir.join(KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => {
                check_private(&path)?;
                b
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| format!("generating the secret key: {e}"))?;
                match write_new(&path, &key) {
                    Ok(()) => key.to_vec(),
                    // Another process won the race: use its key.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?,
                    Err(e) => return Err(format!("writing {}: {e}", path.display())),
                }
            }
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        if bytes.len() != 32 {
            return Err(format!("{} must hold exactly 32 bytes (it holds {})", path.display(), bytes.len()));
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes);
        Ok(Keyring::from_key(&k))
    }

    pub fn from_key(key: &[u8; 32]) -> Keyring {
        // Two keys derived from the one on disk: one to seal, one to hash.
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac takes any key length"));
            m.update(label);
            let mut out = [0u8; 32];
            out.copy_from_slice(&m.finalize().into_bytes());
            out
        };
        let seal = derive(b"portcullis seal v1");
        Keyring {
            aead: Aes256Gcm::new_from_slice(&seal).unwrap_or_else(|_| unreachable!("32-byte key")),
            mac_key: derive(b"portcullis mac v1"),
        }
    }

    /// Encrypts `plain`, bound to `context` (e.g. "otp:42") so that a sealed
    /// value moved to another row does not open. Output: nonce ‖ ciphertext.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| format!("generating a nonce: {e}"))?;
        let n = Nonce::try_from(&nonce[..]).map_err(|_| "nonce length".to_string())?;
        let ct = self.aead.encrypt(&n, Payload { msg: plain, aad: context.as_bytes() }).map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < 12 + 16 {
            return Err("sealed value is too short".into());
        }
        let n = Nonce::try_from(&sealed[..12]).map_err(|_| "nonce length".to_string())?;
        self.aead
            .decrypt(&n, Payload { msg: &sealed[12..], aad: context.as_bytes() })
            .map_err(|_| "sealed value does not open with this key (wrong key, or moved between rows)".to_string())
    }

    /// HMAC-SHA256 under the gate's key, hex: for short secrets (backup
    /// codes) that must be checked fast yet not be guessable from the
    /// database alone.
    pub fn keyed_hash(&self, context: &str, value: &[u8]) -> String {
        let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.mac_key).unwrap_or_else(|_| unreachable!("hmac takes any key length"));
        m.update(context.as_bytes());
        m.update(&[0]);
        m.update(value);
        m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Refuses a key file that the group or others may read or write (as sshd
/// refuses such a host key): the message names the file and its mode.
pub fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is accessible by group or others (mode {mode:04o}); it holds a private key: run chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A random token of 256 bits, URL-safe base64 without padding, and the
/// SHA-256 (hex) that is stored in its place.
pub fn new_token() -> Result<(String, String), String> {
    use base64::Engine as _;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("generating a token: {e}"))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    Ok((token, hash))
}

pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let k = Keyring::from_key(&[7u8; 32]);
        let sealed = k.seal("otp:1", b"secret").expect("seal");
        assert_eq!(k.open("otp:1", &sealed).expect("open"), b"secret");
        assert!(k.open("otp:2", &sealed).is_err(), "context is bound");
        let other = Keyring::from_key(&[8u8; 32]);
        assert!(other.open("otp:1", &sealed).is_err(), "key is needed");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(k.open("otp:1", &tampered).is_err(), "tampering is seen");
        assert_ne!(k.seal("otp:1", b"secret").expect("seal"), sealed, "nonces differ");
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Keyring::load_or_create(dir.path()).expect("create");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = Keyring::load_or_create(dir.path()).expect("load");
        let sealed = a.seal("x", b"y").expect("seal");
        assert_eq!(b.open("x", &sealed).expect("same key"), b"y");
        assert_eq!(a.keyed_hash("c", b"v"), b.keyed_hash("c", b"v"));
        std::fs::write(dir.path().join(KEY_FILE), b"short").expect("write");
        assert!(Keyring::load_or_create(dir.path()).unwrap_err().contains("must hold exactly 32 bytes"));
    }

    #[test]
    fn key_files_open_to_group_or_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        Keyring::load_or_create(dir.path()).expect("create");
        let path = dir.path().join(KEY_FILE);
        for (mode, refused) in [(0o600, false), (0o400, false), (0o700, false), (0o640, true), (0o604, true), (0o644, true), (0o620, true), (0o666, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let r = Keyring::load_or_create(dir.path());
            assert_eq!(r.is_err(), refused, "mode {mode:o}");
            if refused {
                let e = r.unwrap_err();
                assert_eq!(e, format!("{} is accessible by group or others (mode {mode:04o}); it holds a private key: run chmod 600 {}", path.display(), path.display()));
            }
        }
    }

    #[test]
    fn tokens_are_256_bits_and_hashed() {
        let (t, h) = new_token().expect("token");
        assert_eq!(t.len(), 43);
        assert_eq!(h, token_hash(&t));
        assert_eq!(h.len(), 64);
        assert_ne!(new_token().expect("token").0, t);
    }
}
