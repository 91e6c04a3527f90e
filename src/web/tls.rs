//! The server certificate: loaded from PEM files, or created self-signed
//! (rcgen) on first start, and the rustls configuration around it.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Loads the certificate chain and key; when `generate_if_missing` is set
/// and BOTH files are missing, creates a self-signed certificate for
/// `hostnames` first. One file without the other is an error (we never
/// overwrite a key or certificate someone put there).
pub(super) fn load_or_create(
    cert_path: &Path,
    key_path: &Path,
    generate_if_missing: bool,
    hostnames: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_exists = exists(cert_path)?;
    let key_exists = exists(key_path)?;
    match (cert_exists, key_exists) {
        (true, true) => {}
        (false, false) if generate_if_missing => {
            generate(cert_path, key_path, hostnames)?;
            tracing::info!(cert = %cert_path.display(), "web: created a self-signed certificate");
        }
        (false, false) => {
            return Err(format!(
                "web: certificate {} and key {} are missing (and generating them is off)",
                cert_path.display(),
                key_path.display()
            ))
        }
        (true, false) => return Err(format!("web: key {} is missing (certificate exists)", key_path.display())),
        (false, true) => {
            return Err(format!("web: certificate {} is missing (key exists)", cert_path.display()))
        }
    }
    warn_if_key_readable_by_others(key_path);
    let cert_pem = fs::read(cert_path).map_err(|e| format!("web: reading {}: {e}", cert_path.display()))?;
    let key_pem = fs::read(key_path).map_err(|e| format!("web: reading {}: {e}", key_path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("web: {}: not a PEM certificate: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("web: {}: no certificate in the file", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("web: {}: no usable PEM private key: {e}", key_path.display()))?;
    Ok((certs, key))
}

/// rustls with aws-lc-rs, TLS 1.3 and 1.2 only, the provider's default
/// (AEAD, forward-secret) cipher suites, ALPN h2 then http/1.1.
pub(super) fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("web: TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("web: certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn exists(path: &Path) -> Result<bool, String> {
    path.try_exists()
        .map_err(|e| format!("web: checking {}: {e}", path.display()))
}

fn generate(cert_path: &Path, key_path: &Path, hostnames: &[String]) -> Result<(), String> {
    let names = if hostnames.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        hostnames.to_vec()
    };
    let mut params = rcgen::CertificateParams::new(names)
        .map_err(|e| format!("web: self-signed certificate names: {e}"))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "Portcullis (self-signed)");
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate().map_err(|e| format!("web: generating a key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("web: self-signing: {e}"))?;
    // Key first: a certificate never exists without its key.
    write_atomically(key_path, key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| format!("web: writing {}: {e}", key_path.display()))?;
    write_atomically(cert_path, cert.pem().as_bytes(), 0o644)
        .map_err(|e| format!("web: writing {}: {e}", cert_path.display()))?;
    Ok(())
}

/// Writes `data` to a fresh temporary file beside `path` (created with
/// `mode` from the start, so the key is never readable by others), syncs
/// it and renames it into place.
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(
        ".{}.{:016x}.tmp",
        name.to_string_lossy(),
        u64::from_le_bytes(suffix)
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn warn_if_key_readable_by_others(key_path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = fs::metadata(key_path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(key = %key_path.display(), "web: the TLS key file is readable by group or others; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = key_path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    }

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("web.crt");
        let key = dir.path().join("web.key");
        let (c1, _) = load_or_create(&cert, &key, true, &names()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "key mode {mode:o}");
        }
        assert!(fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"));
        assert!(fs::read_to_string(&cert).unwrap().contains("BEGIN CERTIFICATE"));
        let (c2, k2) = load_or_create(&cert, &key, true, &names()).unwrap();
        assert_eq!(c1, c2, "an existing certificate must be reused");
        server_config(c2, k2).unwrap();
        // No temporary files are left behind.
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn refusals_table() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("web.crt");
        let key = dir.path().join("web.key");
        let lonely = dir.path().join("lonely");
        fs::write(&lonely, "x").unwrap();
        let garbage_cert = dir.path().join("garbage.crt");
        let garbage_key = dir.path().join("garbage.key");
        fs::write(&garbage_cert, "not pem").unwrap();
        fs::write(&garbage_key, "not pem").unwrap();
        let cases: &[(&Path, &Path, bool, &str)] = &[
            (&cert, &key, false, "missing"),
            (&cert, &lonely, true, "certificate"),
            (&lonely, &key, true, "key"),
            (&garbage_cert, &garbage_key, true, "no certificate"),
        ];
        for (c, k, generate, want) in cases {
            let err = load_or_create(c, k, *generate, &names()).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        assert!(!cert.exists() && !key.exists(), "nothing generated when refusing");
    }
}
