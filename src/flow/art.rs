//! Art files by name: `WELCOME` finds `WELCOME.ans` or `WELCOME.asc` in the
//! configured art folder, else the copy built into the binary.

use std::path::Path;

const BUILT_IN: &[(&str, &[u8])] = &[
    ("CONNECT.ans", include_bytes!("../../art/CONNECT.ans")),
    ("WELCOME.asc", include_bytes!("../../art/WELCOME.asc")),
    ("GOODBYE.ans", include_bytes!("../../art/GOODBYE.ans")),
    ("OTP.asc", include_bytes!("../../art/OTP.asc")),
    ("MAINMENU.asc", include_bytes!("../../art/MAINMENU.asc")),
    ("ACCOUNT.asc", include_bytes!("../../art/ACCOUNT.asc")),
    ("LOCKED.asc", include_bytes!("../../art/LOCKED.asc")),
];

/// The built-in art files (name with extension, bytes), for `config init`.
pub fn built_in_files() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    BUILT_IN.iter().copied()
}

/// The art's bytes and kind, or `None` when no file of that name exists
/// (`.ans` first, then `.asc`; in the art folder when one is configured,
/// then built in — so a sysop may replace some pieces and keep the rest).
pub fn load_raw(art_dir: Option<&Path>, name: &str) -> Option<(Vec<u8>, Source)> {
    // Names are plain words: no path can be smuggled into the art folder.
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    let kinds = [("ans", Source::Ansi), ("asc", Source::Ascii)];
    if let Some(dir) = art_dir {
        for (ext, source) in kinds {
            if let Ok(bytes) = std::fs::read(dir.join(format!("{name}.{ext}"))) {
                return Some((bytes, source));
            }
        }
    }
    for (ext, source) in kinds {
        let file = format!("{name}.{ext}");
        if let Some((_, bytes)) = BUILT_IN.iter().find(|(n, _)| *n == file) {
            return Some((bytes.to_vec(), source));
        }
    }
    None
}

/// The art as UTF-8 text (for tests and plain displays).
pub fn load(art_dir: Option<&Path>, name: &str) -> Option<String> {
    load_raw(art_dir, name).map(|(bytes, _)| String::from_utf8_lossy(&render_bytes(&bytes, Source::Ascii, 1, 0)).into_owned())
}

use super::ansi::{Encoding, Source};

fn render_bytes(bytes: &[u8], source: Source, encoding: u8, width: u32) -> Vec<u8> {
    let target = if encoding == 0 { Encoding::Cp437 } else { Encoding::Utf8 };
    super::ansi::render(bytes, source, target, width)
}

/// The art ready for a terminal: CRLF line ends, clipped to `width`
/// (0: no clipping), in the terminal's encoding (0 CP437, 1 UTF-8).
pub fn render(art_dir: Option<&Path>, name: &str, encoding: u8, width: u32) -> Option<Vec<u8>> {
    load_raw(art_dir, name).map(|(bytes, source)| render_bytes(&bytes, source, encoding, width))
}

/// Whether an art name resolves (in the folder, or built in).
pub fn exists(art_dir: Option<&Path>, name: &str) -> bool {
    load(art_dir, name).is_some()
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
    fn art_names_cannot_leave_the_folder() {
        assert!(load_raw(None, "../etc/passwd").is_none());
        assert!(load_raw(None, "").is_none());
    }

    #[test]
    fn ansi_art_is_converted_for_utf8_and_sent_raw_for_cp437() {
        let utf8 = render(None, "CONNECT", 1, 80).expect("art");
        let text = String::from_utf8(utf8).expect("utf-8");
        assert!(text.contains('█') || text.contains('║'), "box drawing converted");
        assert!(!text.contains("SAUCE00"), "sauce stripped");
        let raw = render(None, "CONNECT", 0, 0).expect("art");
        assert!(raw.iter().any(|b| *b >= 0x80), "CP437 bytes sent as they are");
    }
}
