//! Art files by name: `WELCOME` finds `WELCOME.ans` or `WELCOME.asc` in the
//! configured art folder, else the copy built into the binary.

use std::path::Path;

const BUILT_IN: &[(&str, &str)] = &[
    ("CONNECT.asc", include_str!("../../art/CONNECT.asc")),
    ("WELCOME.asc", include_str!("../../art/WELCOME.asc")),
    ("GOODBYE.asc", include_str!("../../art/GOODBYE.asc")),
    ("OTP.asc", include_str!("../../art/OTP.asc")),
    ("MAINMENU.asc", include_str!("../../art/MAINMENU.asc")),
    ("ACCOUNT.asc", include_str!("../../art/ACCOUNT.asc")),
];

/// The art's text, or `None` when no file of that name exists.
pub fn load(art_dir: Option<&Path>, name: &str) -> Option<String> {
    for ext in ["ans", "asc"] {
        let file = format!("{name}.{ext}");
        match art_dir {
            Some(dir) => {
                if let Ok(bytes) = std::fs::read(dir.join(&file)) {
                    return Some(String::from_utf8_lossy(strip_sauce(&bytes)).into_owned());
                }
            }
            None => {
                if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == file) {
                    return Some((*text).to_owned());
                }
            }
        }
    }
    None
}

/// Whether an art name resolves (in the folder, or built in).
pub fn exists(art_dir: Option<&Path>, name: &str) -> bool {
    load(art_dir, name).is_some()
}

/// Removes a SAUCE record (and the EOF marker before it) from art bytes.
pub fn strip_sauce(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0x1a).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_art_is_found_by_name() {
        assert!(load(None, "WELCOME").is_some());
        assert!(load(None, "GOODBYE").is_some());
        assert!(load(None, "NOPE").is_none());
    }

    #[test]
    fn sauce_is_stripped() {
        assert_eq!(strip_sauce(b"art\x1aSAUCE00..."), b"art");
        assert_eq!(strip_sauce(b"plain"), b"plain");
    }
}
