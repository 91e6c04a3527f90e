//! Rendering of BBS "art" files (CP437 `.ans` and UTF-8 `.asc`) for a terminal.
//!
//! Pipeline used by [`render`]:
//!
//! 1. [`strip_sauce`] removes the SAUCE metadata trailer (and the 0x1A EOF marker).
//! 2. The bytes are decoded into a stream of *units*: control bytes that art uses as
//!    controls (ESC, CR, LF, BS, TAB, plus BEL/NUL which are later dropped) and
//!    printable characters. CP437 bytes 0x01-0x1F that are not controls are the
//!    CP437 glyphs (☺ ☻ ♥ ...), 0x7F is ⌂.
//! 3. Escape sequences are filtered through an allow-list (see [`render`]); anything
//!    else (OSC, DCS, APC, PM, SOS, device reports, mode changes, charset switches,
//!    resets, ...) is dropped, so a hostile art file cannot retitle the window, set
//!    the clipboard, make the terminal answer back, or change its modes.
//! 4. Lines are normalised to CRLF and clipped to the terminal width.
//! 5. The result is encoded for the terminal: UTF-8, or raw CP437.

/// CP437 glyphs for 0x00-0x1F (0x00 is never displayed; it is dropped).
const CP437_LOW: [char; 32] = [
    '\0', '☺', '☻', '♥', '♦', '♣', '♠', '•', '◘', '○', '◙', '♂', '♀', '♪', '♫', '☼', //
    '►', '◄', '↕', '‼', '¶', '§', '▬', '↨', '↑', '↓', '→', '←', '∟', '↔', '▲', '▼',
];

/// CP437 0x80-0xFF.
const CP437_HIGH: [char; 128] = [
    'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å', //
    'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ', //
    'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»', //
    '░', '▒', '▓', '│', '┤', '╡', '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐', //
    '└', '┴', '┬', '├', '─', '┼', '╞', '╟', '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧', //
    '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘', '┌', '█', '▄', '▌', '▐', '▀', //
    'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ', '∞', 'φ', 'ε', '∩', //
    '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²', '■', '\u{a0}',
];

/// The complete code page: index = CP437 byte, value = glyph.
const CP437: [char; 256] = build_cp437();

const fn build_cp437() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut i = 0;
    while i < 32 {
        t[i] = CP437_LOW[i];
        i += 1;
    }
    while i < 0x7f {
        t[i] = i as u8 as char;
        i += 1;
    }
    t[0x7f] = '⌂';
    let mut j = 0;
    while j < 128 {
        t[0x80 + j] = CP437_HIGH[j];
        j += 1;
    }
    t
}

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// C0 bytes that art files use as controls rather than glyphs.
/// ESC, CR, LF, BS and TAB are acted on; BEL and NUL are dropped.
fn is_art_control(b: u8) -> bool {
    matches!(b, 0x00 | 0x07 | 0x08 | 0x09 | 0x0a | 0x0d | 0x1b)
}

// ---------------------------------------------------------------------------
// SAUCE
// ---------------------------------------------------------------------------

const SAUCE_LEN: usize = 128;
const COMNT_ID: &[u8] = b"COMNT";
const COMNT_LINE: usize = 64;
/// Largest possible SAUCE tail: EOF + COMNT block with 255 lines + record.
const MAX_SAUCE_TAIL: usize = 1 + 5 + 255 * COMNT_LINE + SAUCE_LEN;

/// Offset of the SAUCE record if `bytes` ends with a real "SAUCE00" trailer.
fn sauce_record(bytes: &[u8]) -> Option<usize> {
    let start = bytes.len().checked_sub(SAUCE_LEN)?;
    (&bytes[start..start + 7] == b"SAUCE00").then_some(start)
}

/// Removes a SAUCE trailer: the 128-byte "SAUCE00" record at the very end, the
/// optional "COMNT" block (5 + 64*n bytes, n = the record's comment count) before
/// it, and the 0x1A EOF marker before that.
///
/// Without a real trailer, the data is cut at the first 0x1A only when what follows
/// looks like a damaged SAUCE tail: nothing, only 0x1A/NUL padding, or a truncated
/// or oversized "SAUCE"/"COMNT" block. Everything else is returned unchanged (a
/// 0x1A in the middle of art is the CP437 glyph →).
pub fn strip_sauce(bytes: &[u8]) -> &[u8] {
    if let Some(start) = sauce_record(bytes) {
        let mut end = start;
        let comments = usize::from(bytes[start + 104]);
        if comments > 0 {
            let block = 5 + comments * COMNT_LINE;
            if let Some(cstart) = end.checked_sub(block) {
                if &bytes[cstart..cstart + 5] == COMNT_ID {
                    end = cstart;
                }
            }
        }
        if end > 0 && bytes[end - 1] == 0x1a {
            end -= 1;
        }
        return &bytes[..end];
    }
    if let Some(pos) = bytes.iter().position(|&b| b == 0x1a) {
        let tail = &bytes[pos + 1..];
        let padding = tail.iter().all(|&b| b == 0x1a || b == 0);
        let damaged = tail.len() <= MAX_SAUCE_TAIL
            && (tail.starts_with(b"SAUCE") || tail.starts_with(COMNT_ID));
        if padding || damaged {
            return &bytes[..pos];
        }
    }
    bytes
}

/// Character width of the art according to its SAUCE record (TInfo1 of a
/// Character/ASCII, ANSi or ANSiMation file), if there is a usable one.
pub fn sauce_columns(bytes: &[u8]) -> Option<u32> {
    let start = sauce_record(bytes)?;
    let rec = &bytes[start..];
    let (data_type, file_type) = (rec[94], rec[95]);
    let cols = u16::from_le_bytes([rec[96], rec[97]]);
    (data_type == 1 && file_type <= 2 && (1..=1000).contains(&cols)).then_some(u32::from(cols))
}

// ---------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------

/// Converts CP437 bytes to UTF-8.
///
/// 0x80-0xFF and the 0x01-0x1F glyphs are translated, 0x7F becomes ⌂. The bytes art
/// uses as controls are not glyphs: ESC, CR, LF, BS and TAB are kept as the control
/// characters (so ANSI sequences survive), BEL and NUL are dropped.
pub fn cp437_to_utf8(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + bytes.len() / 2);
    for &b in bytes {
        match b {
            0x00 | BEL => {}
            _ if is_art_control(b) => s.push(char::from(b)),
            _ => s.push(CP437[usize::from(b)]),
        }
    }
    s
}

/// The CP437 byte for `c`, if the code page has it.
///
/// ASCII (including control characters) maps to itself. The glyphs that share a
/// position with a control art uses (• ◘ ○ ◙ ♪ ←, i.e. 0x07 0x08 0x09 0x0A 0x0D
/// 0x1B) have no mapping: sending those bytes would act as BEL/BS/TAB/LF/CR/ESC.
fn cp437_byte(c: char) -> Option<u8> {
    if c.is_ascii() {
        return Some(c as u8);
    }
    if c == '⌂' {
        return Some(0x7f);
    }
    CP437
        .iter()
        .enumerate()
        .skip(1)
        .filter(|&(i, _)| !(0x20..0x80).contains(&i))
        .find(|&(i, &g)| g == c && !is_art_control(i as u8))
        .map(|(i, _)| i as u8)
}

/// Converts text to CP437; characters without a CP437 mapping become `?`.
/// Round-trips with [`cp437_to_utf8`] for every byte except the control bytes.
pub fn utf8_to_cp437(s: &str) -> Vec<u8> {
    s.chars().map(|c| cp437_byte(c).unwrap_or(b'?')).collect()
}

// ---------------------------------------------------------------------------
// Widths
// ---------------------------------------------------------------------------

/// Combining marks and zero-width characters (a small, common subset).
const ZERO_WIDTH: &[(u32, u32)] = &[
    (0x0300, 0x036f), // combining diacritical marks
    (0x200b, 0x200f), // zero width space/joiners, direction marks
    (0x2060, 0x2064), // word joiner, invisible operators
    (0x20d0, 0x20ff), // combining marks for symbols
    (0xfe00, 0xfe0f), // variation selectors
    (0xfe20, 0xfe2f), // combining half marks
    (0xfeff, 0xfeff), // BOM / zero width no-break space
];

/// East Asian Wide/Fullwidth blocks and the main emoji blocks (approximate).
const WIDE: &[(u32, u32)] = &[
    (0x1100, 0x115f),   // Hangul Jamo initials
    (0x231a, 0x231b),   // watch, hourglass
    (0x2329, 0x232a),   // angle brackets
    (0x23e9, 0x23ec),   // media controls
    (0x23f0, 0x23f0),   // alarm clock
    (0x23f3, 0x23f3),   // hourglass
    (0x25fd, 0x25fe),   // small squares
    (0x2614, 0x2615),   // umbrella, hot beverage
    (0x2648, 0x2653),   // zodiac
    (0x267f, 0x267f),   // wheelchair
    (0x2693, 0x2693),   // anchor
    (0x26a1, 0x26a1),   // high voltage
    (0x26aa, 0x26ab),   // circles
    (0x26bd, 0x26be),   // balls
    (0x26c4, 0x26c5),   // snowman, sun
    (0x26ce, 0x26ce),   // ophiuchus
    (0x26d4, 0x26d4),   // no entry
    (0x26ea, 0x26ea),   // church
    (0x26f2, 0x26f5),   // fountain .. sailboat
    (0x26fa, 0x26fa),   // tent
    (0x26fd, 0x26fd),   // fuel pump
    (0x2705, 0x2705),   // check mark
    (0x270a, 0x270b),   // fists
    (0x2728, 0x2728),   // sparkles
    (0x274c, 0x274c),   // cross mark
    (0x274e, 0x274e),   // cross mark
    (0x2753, 0x2755),   // question marks
    (0x2757, 0x2757),   // exclamation
    (0x2795, 0x2797),   // plus/minus/divide
    (0x27b0, 0x27b0),   // curly loop
    (0x27bf, 0x27bf),   // double curly loop
    (0x2b1b, 0x2b1c),   // large squares
    (0x2b50, 0x2b50),   // star
    (0x2b55, 0x2b55),   // circle
    (0x2e80, 0x303e),   // CJK radicals, symbols and punctuation
    (0x3041, 0x33ff),   // kana, CJK compatibility
    (0x3400, 0x4dbf),   // CJK extension A
    (0x4e00, 0x9fff),   // CJK unified ideographs
    (0xa000, 0xa4cf),   // Yi
    (0xa960, 0xa97f),   // Hangul Jamo extended A
    (0xac00, 0xd7a3),   // Hangul syllables
    (0xf900, 0xfaff),   // CJK compatibility ideographs
    (0xfe10, 0xfe19),   // vertical forms
    (0xfe30, 0xfe6f),   // CJK compatibility forms, small forms
    (0xff00, 0xff60),   // fullwidth forms
    (0xffe0, 0xffe6),   // fullwidth signs
    (0x16fe0, 0x18cff), // Tangut etc.
    (0x1b000, 0x1b2ff), // kana supplement/extended
    (0x1f004, 0x1f004), // mahjong
    (0x1f0cf, 0x1f0cf), // joker
    (0x1f18e, 0x1f18e), // AB button
    (0x1f191, 0x1f19a), // squared words
    (0x1f200, 0x1f2ff), // enclosed ideographic supplement
    (0x1f300, 0x1f64f), // misc symbols & pictographs, emoticons
    (0x1f680, 0x1f6ff), // transport & map
    (0x1f7e0, 0x1f7eb), // coloured circles/squares
    (0x1f90c, 0x1f9ff), // supplemental symbols & pictographs
    (0x1fa70, 0x1faff), // symbols & pictographs extended A
    (0x20000, 0x2fffd), // CJK extensions B..
    (0x30000, 0x3fffd), // CJK extension G..
];

fn in_ranges(cp: u32, ranges: &[(u32, u32)]) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Terminal columns taken by `c`: 0 for controls and combining/zero-width marks,
/// 2 for East Asian wide characters and emoji, 1 otherwise.
fn char_width(c: char) -> usize {
    let cp = u32::from(c);
    if cp < 0x20 || (0x7f..0xa0).contains(&cp) {
        0
    } else if cp < 0x300 {
        1
    } else if in_ranges(cp, ZERO_WIDTH) {
        0
    } else if in_ranges(cp, WIDE) {
        2
    } else {
        1
    }
}

/// Visible width of UTF-8 text that may contain ANSI escape sequences.
///
/// Escape sequences (CSI, OSC/DCS/APC/PM/SOS strings, two-byte escapes) and
/// control characters count 0 columns; this includes cursor movements such as
/// `ESC[5C`, which move rather than draw. Combining marks and zero-width
/// characters count 0; East Asian wide/fullwidth characters and emoji count 2
/// (from a small range table, not the full Unicode width data); everything
/// else counts 1 (CP437 glyphs are all 1).
pub fn visible_width(s: &str) -> usize {
    let units = str_units(s);
    let mut i = 0;
    let mut w = 0;
    while i < units.len() {
        match units[i] {
            Unit::Ctrl(ESC) => i = parse_escape(&units, i).0,
            Unit::Ctrl(_) => i += 1,
            Unit::Char(c) => {
                w += char_width(c);
                i += 1;
            }
        }
    }
    w
}

/// Makes user-supplied text safe to print inside the terminal flow: removes ESC
/// and every other C0 control (0x00-0x1F, including TAB, CR and LF), DEL and the
/// C1 controls (U+0080-U+009F), so the text cannot start escape sequences or
/// move the cursor. Everything else is kept.
pub fn sanitize_user_text(s: &str) -> String {
    s.chars().filter(|&c| !c.is_control()).collect()
}

// ---------------------------------------------------------------------------
// Escape-sequence parsing
// ---------------------------------------------------------------------------

/// One decoded element of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// A C0 control, DEL, or (from UTF-8 input) a C1 control as 0x80-0x9F.
    Ctrl(u8),
    /// A printable character.
    Char(char),
}

fn cp437_units(bytes: &[u8]) -> Vec<Unit> {
    bytes
        .iter()
        .map(|&b| {
            if is_art_control(b) {
                Unit::Ctrl(b)
            } else {
                Unit::Char(CP437[usize::from(b)])
            }
        })
        .collect()
}

fn str_units(s: &str) -> Vec<Unit> {
    s.chars()
        .map(|c| {
            if c.is_control() {
                Unit::Ctrl(u32::from(c) as u8)
            } else {
                Unit::Char(c)
            }
        })
        .collect()
}

/// CSI final bytes that are passed through: SGR, cursor movement, erase,
/// save/restore cursor.
const CSI_ALLOWED: &[u8] = b"mABCDHfJKsu";
/// Longer CSI sequences are dropped.
const CSI_MAX_LEN: usize = 64;

/// An allowed CSI sequence.
#[derive(Debug)]
struct Csi {
    final_byte: u8,
    params: Vec<u32>,
    text: String,
}

impl Csi {
    /// Parameter `idx`, with `default` for a missing or zero value.
    fn param(&self, idx: usize, default: u32) -> u32 {
        match self.params.get(idx) {
            Some(&n) if n > 0 => n,
            _ => default,
        }
    }
}

fn ascii_at(units: &[Unit], i: usize) -> Option<u8> {
    match units.get(i) {
        Some(Unit::Char(c)) if c.is_ascii() => Some(*c as u8),
        _ => None,
    }
}

/// Parses the escape sequence starting with the ESC at `units[i]`.
/// Returns the index just after what was consumed and the sequence if it is
/// allowed. Whatever is consumed but not returned is dropped. A sequence cut short
/// by a control or non-ASCII character is dropped up to (not including) it.
fn parse_escape(units: &[Unit], i: usize) -> (usize, Option<Csi>) {
    let j = i + 1;
    match ascii_at(units, j) {
        Some(b'[') => parse_csi(units, j + 1),
        // OSC, DCS, SOS, PM, APC: control strings, always dropped.
        Some(b']' | b'P' | b'X' | b'^' | b'_') => (skip_string(units, j + 1), None),
        // ESC intermediates final (charset designation, DECALN, ...): dropped.
        Some(0x20..=0x2f) => {
            let mut k = j;
            while let Some(0x20..=0x2f) = ascii_at(units, k) {
                k += 1;
            }
            match ascii_at(units, k) {
                Some(0x30..=0x7e) => (k + 1, None),
                _ => (k, None),
            }
        }
        // Two-byte escapes (ESC c reset, ESC 7/8, ESC M, ESC =, ...): dropped.
        Some(0x30..=0x7e) => (j + 1, None),
        // Lone ESC: dropped, the next unit is processed normally.
        _ => (j, None),
    }
}

fn parse_csi(units: &[Unit], start: usize) -> (usize, Option<Csi>) {
    let mut k = start;
    while let Some(0x20..=0x3f) = ascii_at(units, k) {
        k += 1;
    }
    let Some(final_byte @ 0x40..=0x7e) = ascii_at(units, k) else {
        return (k, None);
    };
    let end = k + 1;
    let body: String = units[start..k]
        .iter()
        .map(|u| match u {
            Unit::Char(c) => *c,
            Unit::Ctrl(_) => '?',
        })
        .collect();
    let params_ok = match final_byte {
        b'm' => body
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b';' || b == b':'),
        b's' | b'u' => body.is_empty(),
        _ => body.bytes().all(|b| b.is_ascii_digit() || b == b';'),
    };
    if !CSI_ALLOWED.contains(&final_byte) || !params_ok || end - start + 2 > CSI_MAX_LEN {
        return (end, None);
    }
    let params = body
        .split(';')
        .map(|p| {
            p.bytes()
                .take_while(u8::is_ascii_digit)
                .fold(0u32, |n, d| (n * 10 + u32::from(d - b'0')).min(9999))
        })
        .collect();
    let text = format!("\x1b[{body}{}", char::from(final_byte));
    (
        end,
        Some(Csi {
            final_byte,
            params,
            text,
        }),
    )
}

/// Skips a control string (OSC etc.) up to and including its terminator: BEL,
/// ST (`ESC \` or C1 0x9C), or CAN/SUB. Another ESC ends the string without being
/// consumed; so does the end of the input.
fn skip_string(units: &[Unit], start: usize) -> usize {
    let mut k = start;
    loop {
        match units.get(k) {
            None => return k,
            Some(Unit::Ctrl(BEL | 0x9c | 0x18 | 0x1a)) => return k + 1,
            Some(Unit::Ctrl(ESC)) => {
                return if ascii_at(units, k + 1) == Some(b'\\') {
                    k + 2
                } else {
                    k
                };
            }
            Some(_) => k += 1,
        }
    }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// Character encoding of the user's terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// A CP437 ("ANSI-BBS") terminal: bytes are sent as CP437.
    Cp437,
    /// A UTF-8 terminal.
    Utf8,
}

/// Kind of art file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `.ans`: CP437 text with ANSI escape sequences, drawn on an 80-column canvas
    /// (or the width in its SAUCE record).
    Ansi,
    /// `.asc`: UTF-8 or ASCII text (possibly with ANSI sequences). Input that is
    /// not valid UTF-8 is read as CP437.
    Ascii,
}

/// Renders an art file for a terminal.
///
/// - SAUCE is stripped ([`strip_sauce`]).
/// - `.ans` on a UTF-8 terminal is converted from CP437; on a CP437 terminal its
///   bytes are sent unchanged. `.asc` on a CP437 terminal is converted to CP437
///   (`?` where there is no mapping, including wide characters).
/// - Line ends become CRLF (a lone LF becomes CRLF, a lone CR stays CR).
/// - Kept escape sequences: CSI with final byte `m` (SGR, params digits `;` `:`),
///   `A B C D H f J K` (params digits and `;`), and `s`/`u` without params; no
///   private markers (`?` `<` `=` `>`) or intermediates. Dropped: every other CSI
///   (device status report `n`, modes `h`/`l`, window ops `t`, ...), OSC, DCS,
///   SOS, PM, APC strings, and all other ESC sequences. BEL and NUL are dropped;
///   from `.asc` all C0 controls other than ESC CR LF BS TAB are dropped, as are
///   DEL and C1 controls. On a CP437 terminal the glyphs at 0x05, 0x0E and 0x0F
///   (♣ ♫ ☼) are sent as `?`, since VT-style terminals would act on them as
///   ENQ (answerback), SO and SI (charset shift).
/// - Width: `.ans` art relies on auto-wrap at the canvas edge (80 columns, or
///   the SAUCE width); a line running past it gets an explicit CRLF there. Then
///   every line is clipped to `width` visible columns (`width` 0 = no clipping):
///   characters past the edge are not sent, escape sequences still are (so colours
///   stay right). Sequences are zero-width, `ESC[nC` moves n columns right, `ESC[nD`
///   and BS move left, TAB moves to the next multiple of 8, `H`/`f` set the column,
///   `s`/`u` save and restore it. A move left from beyond the edge is rewritten as
///   CR + `ESC[nC` so the terminal's clamped cursor lines up again.
pub fn render(bytes: &[u8], source: Source, target: Encoding, width: u32) -> Vec<u8> {
    let canvas = match source {
        Source::Ansi => sauce_columns(bytes).unwrap_or(80) as usize,
        Source::Ascii => usize::MAX,
    };
    let body = strip_sauce(bytes);
    let (units, from_utf8) = match (source, std::str::from_utf8(body)) {
        (Source::Ascii, Ok(s)) => (str_units(s), true),
        _ => (cp437_units(body), false),
    };
    let mut r = Renderer {
        out: Vec::with_capacity(body.len() + body.len() / 4),
        target,
        width: if width == 0 {
            usize::MAX
        } else {
            width as usize
        },
        canvas,
        col: 0,
        saved_col: 0,
        prev_cr: false,
    };
    let mut i = 0;
    while i < units.len() {
        let unit = units[i];
        i += 1;
        match unit {
            Unit::Ctrl(ESC) => {
                let (next, csi) = parse_escape(&units, i - 1);
                i = next;
                if let Some(csi) = csi {
                    r.sequence(&csi);
                }
            }
            Unit::Ctrl(b'\r') => {
                r.out.push(b'\r');
                r.col = 0;
                r.prev_cr = true;
                continue;
            }
            Unit::Ctrl(b'\n') => {
                if !r.prev_cr {
                    r.out.push(b'\r');
                }
                r.out.push(b'\n');
                r.col = 0;
            }
            Unit::Ctrl(0x08) => r.move_left(1, b"\x08"),
            Unit::Ctrl(b'\t') => {
                let stop = (r.col / 8 + 1) * 8;
                if r.col < r.width {
                    r.out.push(b'\t');
                }
                r.col = stop.min(r.last_col());
            }
            Unit::Ctrl(_) => {}
            Unit::Char(c) => r.glyph(c, from_utf8),
        }
        r.prev_cr = false;
    }
    r.out
}

struct Renderer {
    out: Vec<u8>,
    target: Encoding,
    /// Clip width (usize::MAX = none).
    width: usize,
    /// Canvas width of the source; reaching it wraps (usize::MAX = never).
    canvas: usize,
    /// Logical cursor column on the source canvas; `canvas` = pending wrap.
    col: usize,
    saved_col: usize,
    prev_cr: bool,
}

impl Renderer {
    fn last_col(&self) -> usize {
        self.canvas.saturating_sub(1)
    }

    fn glyph(&mut self, c: char, from_utf8: bool) {
        let (w, encoded) = match self.target {
            Encoding::Utf8 => (if from_utf8 { char_width(c) } else { 1 }, None),
            Encoding::Cp437 => {
                let b = match cp437_byte(c) {
                    Some(0x05 | 0x0e | 0x0f) | None => b'?',
                    Some(b) => b,
                };
                (1, Some(b))
            }
        };
        if self.col.saturating_add(w) > self.canvas {
            self.out.extend_from_slice(b"\r\n");
            self.col = 0;
        }
        if self.col.saturating_add(w) <= self.width {
            match encoded {
                Some(b) => self.out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    self.out
                        .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        self.col = self.col.saturating_add(w);
    }

    /// Moves the cursor `n` columns left; `original` is what the art sent.
    fn move_left(&mut self, n: usize, original: &[u8]) {
        let new = self.col.min(self.last_col()).saturating_sub(n);
        if self.col >= self.width {
            // The terminal's cursor is clamped at its last column: nothing to do if
            // the move stays beyond the edge, else move there absolutely.
            if new < self.width {
                self.out.push(b'\r');
                if new > 0 {
                    self.out
                        .extend_from_slice(format!("\x1b[{new}C").as_bytes());
                }
            }
        } else {
            self.out.extend_from_slice(original);
        }
        self.col = new;
    }

    fn sequence(&mut self, csi: &Csi) {
        if csi.final_byte == b'D' {
            self.move_left(csi.param(0, 1) as usize, csi.text.as_bytes());
            return;
        }
        match csi.final_byte {
            b'C' => {
                let n = csi.param(0, 1) as usize;
                self.col = self.col.saturating_add(n).min(self.last_col());
            }
            b'H' | b'f' => self.col = (csi.param(1, 1) as usize - 1).min(self.last_col()),
            b'A' | b'B' => self.col = self.col.min(self.last_col()),
            b's' => self.saved_col = self.col,
            b'u' => self.col = self.saved_col,
            _ => {}
        }
        self.out.extend_from_slice(csi.text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a SAUCE tail: EOF, optional COMNT block, 128-byte record.
    fn sauce(title: &str, comments: &[&str], cols: u16, file_size: usize) -> Vec<u8> {
        fn field(v: &mut Vec<u8>, s: &str, len: usize) {
            let mut f = s.as_bytes().to_vec();
            f.resize(len, b' ');
            v.extend_from_slice(&f);
        }
        let mut v = vec![0x1a];
        if !comments.is_empty() {
            v.extend_from_slice(b"COMNT");
            for c in comments {
                field(&mut v, c, 64);
            }
        }
        v.extend_from_slice(b"SAUCE00");
        field(&mut v, title, 35);
        field(&mut v, "Portcullis", 20);
        field(&mut v, "Portcullis", 20);
        field(&mut v, "20240101", 8);
        v.extend_from_slice(&(file_size as u32).to_le_bytes());
        v.push(1); // DataType: Character
        v.push(1); // FileType: ANSi
        v.extend_from_slice(&cols.to_le_bytes());
        v.extend_from_slice(&25u16.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v.push(comments.len() as u8);
        v.push(0); // TFlags
        v.extend_from_slice(&[0; 22]);
        v
    }

    fn with_sauce(body: &[u8], comments: &[&str], cols: u16) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend(sauce("Test", comments, cols, body.len()));
        v
    }

    fn utf8(bytes: &[u8], width: u32) -> String {
        String::from_utf8(render(bytes, Source::Ansi, Encoding::Utf8, width)).unwrap()
    }

    #[test]
    fn sauce_record_is_128_bytes() {
        assert_eq!(sauce("T", &[], 80, 0).len(), 1 + 128);
        assert_eq!(sauce("T", &["a", "b"], 80, 0).len(), 1 + 5 + 128 + 128);
    }

    #[test]
    fn cp437_spot_checks() {
        let cases: &[(u8, char)] = &[
            (0xb0, '░'),
            (0xb1, '▒'),
            (0xb2, '▓'),
            (0xdb, '█'),
            (0xc9, '╔'),
            (0xbb, '╗'),
            (0xcd, '═'),
            (0xba, '║'),
            (0xc8, '╚'),
            (0xbc, '╝'),
            (0xc4, '─'),
            (0xb3, '│'),
            (0xdc, '▄'),
            (0xdf, '▀'),
            (0x01, '☺'),
            (0x02, '☻'),
            (0x03, '♥'),
            (0x0e, '♫'),
            (0x1a, '→'),
            (0x1f, '▼'),
            (0x7f, '⌂'),
            (0x80, 'Ç'),
            (0x81, 'ü'),
            (0x9e, '₧'),
            (0xe1, 'ß'),
            (0xe3, 'π'),
            (0xea, 'Ω'),
            (0xf1, '±'),
            (0xf9, '∙'),
            (0xfa, '·'),
            (0xfb, '√'),
            (0xfe, '■'),
            (0xff, '\u{a0}'),
            (b'A', 'A'),
            (b' ', ' '),
            (b'~', '~'),
        ];
        for &(b, c) in cases {
            assert_eq!(cp437_to_utf8(&[b]), c.to_string(), "byte {b:#04x}");
        }
    }

    #[test]
    fn cp437_control_bytes() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x1b[0m", "\x1b[0m"),
            (b"a\r\nb", "a\r\nb"),
            (b"a\x08b\tc", "a\x08b\tc"),
            (b"a\x07b", "ab"),
            (b"a\x00b", "ab"),
            (b"\x01\x0b\x0c\x1c", "☺♂♀∟"),
        ];
        for &(input, want) in cases {
            assert_eq!(cp437_to_utf8(input), want, "{input:?}");
        }
    }

    #[test]
    fn cp437_round_trip() {
        for b in 0x80..=0xffu8 {
            let s = cp437_to_utf8(&[b]);
            assert_eq!(s.chars().count(), 1);
            assert_eq!(utf8_to_cp437(&s), [b], "byte {b:#04x} via {s:?}");
        }
        for b in (0x01..=0x7fu8).filter(|&b| !is_art_control(b)) {
            assert_eq!(utf8_to_cp437(&cp437_to_utf8(&[b])), [b], "byte {b:#04x}");
        }
        // All 256 glyphs are distinct.
        let mut all: Vec<char> = CP437.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn utf8_to_cp437_cases() {
        let cases: &[(&str, &[u8])] = &[
            ("╔═╗", &[0xc9, 0xcd, 0xbb]),
            ("café", b"caf\x82"),
            ("☃ 日", b"? ?"),
            ("\x1b[1m\r\n", b"\x1b[1m\r\n"),
            // Glyphs sharing a position with a control are not mapped.
            ("•◘○◙♪←", b"??????"),
            ("☺♣", &[0x01, 0x05]),
            ("⌂", &[0x7f]),
        ];
        for &(input, want) in cases {
            assert_eq!(utf8_to_cp437(input), want, "{input:?}");
        }
    }

    #[test]
    fn strip_sauce_cases() {
        let art: &[u8] = b"\x1b[31m\xdb\xdb\r\n";
        let no_comments = with_sauce(art, &[], 80);
        let two_comments = with_sauce(art, &["first comment", "second"], 80);
        let mut no_eof = art.to_vec();
        no_eof.extend_from_slice(&sauce("T", &[], 80, 0)[1..]);
        let mut truncated = art.to_vec();
        truncated.extend_from_slice(&sauce("T", &[], 80, 0)[..60]);
        let mut damaged_comnt = art.to_vec();
        damaged_comnt.extend_from_slice(b"\x1aCOMNT only part");
        let mut mid_arrow = art.to_vec();
        mid_arrow.extend_from_slice(b"\x1a more art\r\n");
        let mut padded = art.to_vec();
        padded.extend_from_slice(b"\x1a\x1a\0\0");
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("no comments", &no_comments, art),
            ("two comments", &two_comments, art),
            ("no eof marker", &no_eof, art),
            ("truncated record", &truncated, art),
            ("damaged comnt", &damaged_comnt, art),
            ("eof at end", b"abc\x1a", b"abc"),
            ("eof padding", &padded, art),
            ("plain", art, art),
            ("empty", b"", b""),
            ("0x1a glyph mid-art", &mid_arrow, &mid_arrow),
        ];
        for &(name, input, want) in cases {
            assert_eq!(strip_sauce(input), want, "{name}");
        }
    }

    #[test]
    fn sauce_columns_cases() {
        assert_eq!(sauce_columns(&with_sauce(b"x", &[], 80)), Some(80));
        assert_eq!(sauce_columns(&with_sauce(b"x", &["c"], 132)), Some(132));
        assert_eq!(sauce_columns(&with_sauce(b"x", &[], 0)), None);
        assert_eq!(sauce_columns(b"plain"), None);
    }

    #[test]
    fn render_strips_sauce_and_converts() {
        let file = with_sauce(b"\x1b[1;34m\xc9\xcd\xbb\x1b[0m\r\n", &["hello"], 80);
        assert_eq!(utf8(&file, 80), "\x1b[1;34m╔═╗\x1b[0m\r\n");
    }

    #[test]
    fn line_endings() {
        let cases: &[(&[u8], &str)] = &[
            (b"a\nb", "a\r\nb"),
            (b"a\r\nb", "a\r\nb"),
            (b"a\rb", "a\rb"),
            (b"a\n\nb\n", "a\r\n\r\nb\r\n"),
            (b"a\r\r\nb", "a\r\r\nb"),
            (b"a\n\rb", "a\r\n\rb"),
            (b"a\r\x1b[0m\nb", "a\r\x1b[0m\r\nb"),
        ];
        for &(input, want) in cases {
            assert_eq!(utf8(input, 0), want, "{input:?}");
            let cp = render(input, Source::Ansi, Encoding::Cp437, 0);
            assert_eq!(cp, want.as_bytes(), "cp437 {input:?}");
        }
    }

    #[test]
    fn escape_sequences() {
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "sgr kept",
                b"\x1b[0;1;31;44mX\x1b[m",
                "\x1b[0;1;31;44mX\x1b[m",
            ),
            ("truecolor sgr", b"\x1b[38:2::1:2:3mX", "\x1b[38:2::1:2:3mX"),
            (
                "moves kept",
                b"\x1b[2J\x1b[H\x1b[3;5fA\x1b[2A\x1b[B\x1b[K",
                "\x1b[2J\x1b[H\x1b[3;5fA\x1b[2A\x1b[B\x1b[K",
            ),
            ("save restore", b"\x1b[sA\x1b[u", "\x1b[sA\x1b[u"),
            ("osc title bel", b"a\x1b]0;pwned\x07b", "ab"),
            ("osc title st", b"a\x1b]2;pwned\x1b\\b", "ab"),
            ("osc 52 clipboard", b"a\x1b]52;c;cm0gLXJmIC8=\x07b", "ab"),
            ("osc cut by esc", b"a\x1b]0;x\x1b[1mb", "a\x1b[1mb"),
            ("osc unterminated", b"a\x1b]0;title", "a"),
            ("dcs", b"a\x1bP+q544e\x1b\\b", "ab"),
            (
                "apc pm sos",
                b"a\x1b_x\x1b\\\x1b^y\x1b\\\x1bXz\x1b\\b",
                "ab",
            ),
            ("dsr", b"a\x1b[6nb", "ab"),
            ("da", b"a\x1b[cb\x1b[>cc", "abc"),
            ("mode set", b"a\x1b[?25l\x1b[?1049h\x1b[4hb", "ab"),
            ("window ops", b"a\x1b[21tb\x1b[1;2;3t", "ab"),
            ("private sgr", b"a\x1b[>4;2mb\x1b[=1m", "ab"),
            ("intermediate", b"a\x1b[2 qb\x1b[!p", "ab"),
            ("s with params", b"a\x1b[1;5sb\x1b[=1u", "ab"),
            ("reset", b"a\x1bcb", "ab"),
            ("charset", b"a\x1b(0b\x1b#8", "ab"),
            ("decsc", b"a\x1b7b\x1b8", "ab"),
            ("lone esc at end", b"a\x1b", "a"),
            ("double esc", b"a\x1b\x1b[1mb", "a\x1b[1mb"),
            ("csi cut by newline", b"a\x1b[1;3\nb", "a\r\nb"),
            ("csi cut by glyph", b"a\x1b[1\xdbb", "a█b"),
            ("csi unterminated", b"a\x1b[12", "a"),
            ("bel dropped", b"a\x07b", "ab"),
        ];
        for &(name, input, want) in cases {
            assert_eq!(utf8(input, 80), want, "{name}");
        }
        let long = format!("a\x1b[{}mb", "1;".repeat(40));
        assert_eq!(utf8(long.as_bytes(), 80), "ab", "overlong csi");
    }

    #[test]
    fn asc_controls_dropped() {
        let cases: &[(&str, &str)] = &[
            ("a\u{9b}6nb", "a6nb"),
            ("a\u{9d}0;t\u{9c}b", "a0;tb"),
            ("a\x05\x0e\x0f\x7fb", "ab"),
            ("a\x1b]0;t\x07b\x1b[32mc", "ab\x1b[32mc"),
            ("tab\there", "tab\there"),
        ];
        for &(input, want) in cases {
            let out = render(input.as_bytes(), Source::Ascii, Encoding::Utf8, 0);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn clipping() {
        let cases: &[(&str, &[u8], u32, &str)] = &[
            (
                "colours",
                b"\x1b[31mABCDEFGHIJKLMNO\x1b[0m\r\nxy",
                10,
                "\x1b[31mABCDEFGHIJ\x1b[0m\r\nxy",
            ),
            (
                "colour mid clip",
                b"ABCDEFGH\x1b[1mIJKL\x1b[0mM",
                10,
                "ABCDEFGH\x1b[1mIJ\x1b[0m",
            ),
            (
                "cursor forward",
                b"AB\x1b[5CCDEFGH\r\n",
                10,
                "AB\x1b[5CCDE\r\n",
            ),
            ("forward past edge", b"A\x1b[20CBC\nD", 10, "A\x1b[20C\r\nD"),
            ("exact width", b"ABCDEFGHIJ\r\n", 10, "ABCDEFGHIJ\r\n"),
            ("no clipping", b"ABCDEFGHIJKL", 0, "ABCDEFGHIJKL"),
            ("lone cr resets", b"ABCDEFGHIJKL\rXY", 10, "ABCDEFGHIJ\rXY"),
            (
                "back from beyond",
                b"ABCDEFGHIJKL\x1b[5DZ",
                10,
                "ABCDEFGHIJ\r\x1b[7CZ",
            ),
            ("back inside", b"ABC\x1b[2DZ", 10, "ABC\x1b[2DZ"),
            (
                "backspace beyond",
                b"ABCDEFGHIJK\x08\x08Z",
                10,
                "ABCDEFGHIJ\r\x1b[9CZ",
            ),
            ("absolute column", b"\x1b[1;9HABC", 10, "\x1b[1;9HAB"),
            ("tab", b"\tABCD", 10, "\tAB"),
            (
                "restore",
                b"AB\x1b[sCDEFGHIJKL\x1b[uX",
                10,
                "AB\x1b[sCDEFGHIJ\x1b[uX",
            ),
        ];
        for &(name, input, width, want) in cases {
            assert_eq!(utf8(input, width), want, "{name}");
        }
    }

    #[test]
    fn canvas_wrap() {
        let line = [b'x'; 100];
        let x = |n| "x".repeat(n);
        assert_eq!(utf8(&line, 0), format!("{}\r\n{}", x(80), x(20)));
        assert_eq!(utf8(&line, 60), format!("{}\r\n{}", x(60), x(20)));
        // Exactly 80 columns then CRLF: no extra line.
        let mut exact = vec![b'x'; 80];
        exact.extend_from_slice(b"\r\ny");
        assert_eq!(utf8(&exact, 0), format!("{}\r\ny", x(80)));
        // SAUCE width is honoured.
        let narrow = with_sauce(&[b'x'; 50], &[], 40);
        assert_eq!(utf8(&narrow, 0), format!("{}\r\n{}", x(40), x(10)));
        // .asc text has no canvas.
        let out = render(&line, Source::Ascii, Encoding::Utf8, 0);
        assert_eq!(out, line);
    }

    #[test]
    fn asc_wide_characters() {
        let cases: &[(&str, u32, &str)] = &[
            ("日本語", 5, "日本"),
            ("日本語", 6, "日本語"),
            ("ab😀cd", 3, "ab"),
            ("e\u{301}tait", 3, "e\u{301}ta"),
        ];
        for &(input, width, want) in cases {
            let out = render(input.as_bytes(), Source::Ascii, Encoding::Utf8, width);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{input:?} @ {width}");
        }
    }

    #[test]
    fn asc_to_cp437() {
        let cases: &[(&[u8], &[u8])] = &[
            ("╔═╗ café ☃\n".as_bytes(), b"\xc9\xcd\xbb caf\x82 ?\r\n"),
            ("☺♣♫☼".as_bytes(), b"\x01???"),
            ("\x1b[33m░\x1b]0;x\x07".as_bytes(), b"\x1b[33m\xb0"),
            // Not UTF-8 (0xB0 cannot start a UTF-8 sequence): read as CP437.
            (b"\xb0\xdb hi", b"\xb0\xdb hi"),
        ];
        for &(input, want) in cases {
            assert_eq!(
                render(input, Source::Ascii, Encoding::Cp437, 80),
                want,
                "{input:?}"
            );
        }
        let out = render(b"\xb0\xdb", Source::Ascii, Encoding::Utf8, 80);
        assert_eq!(String::from_utf8(out).unwrap(), "░█");
    }

    #[test]
    fn cp437_target_is_byte_identical() {
        let mut body: Vec<u8> = Vec::new();
        body.extend_from_slice(b"\x1b[0;1;36m\xc9");
        body.extend(std::iter::repeat_n(0xcd, 78));
        body.extend_from_slice(
            b"\xbb\r\n\xba\x1b[0;34m\xb0\xb1\xb2\xdb\x1b[37m Portcullis \x01\x03\x1a\x7f",
        );
        body.extend(
            (0x80..=0xffu8)
                .filter(|b| !(0xb0..=0xdf).contains(b))
                .take(56),
        );
        body.extend_from_slice(b"\x1b[1;36m\xba\r\n\x1b[10C\xc8\xcd\xbc\x1b[0m\r\n");
        let file = with_sauce(&body, &["comment line"], 80);
        assert_eq!(render(&file, Source::Ansi, Encoding::Cp437, 80), body);
        assert_eq!(render(&file, Source::Ansi, Encoding::Cp437, 0), body);
        // LF-only line ends come out as CRLF, otherwise identical.
        let lf: Vec<u8> = body.iter().copied().filter(|&b| b != b'\r').collect();
        let file = with_sauce(&lf, &[], 80);
        assert_eq!(render(&file, Source::Ansi, Encoding::Cp437, 80), body);
        // The UTF-8 rendering is the CP437 conversion of the same bytes.
        assert_eq!(utf8(&with_sauce(&body, &[], 80), 80), cp437_to_utf8(&body));
    }

    #[test]
    fn cp437_target_guards_enq_so_si() {
        let out = render(b"a\x05\x0e\x0f\x07\x00b", Source::Ansi, Encoding::Cp437, 80);
        assert_eq!(out, b"a???b");
        let out = render(b"a\x05\x0e\x0f\x07\x00b", Source::Ansi, Encoding::Utf8, 80);
        assert_eq!(String::from_utf8(out).unwrap(), "a♣♫☼b");
    }

    /// Every ESC in rendered output starts an allowed CSI, and no other
    /// controls than CR LF BS TAB appear.
    fn assert_safe(out: &[u8]) {
        let mut i = 0;
        while i < out.len() {
            match out[i] {
                ESC => {
                    assert_eq!(out.get(i + 1), Some(&b'['), "{out:?}");
                    let mut k = i + 2;
                    while k < out.len() && matches!(out[k], b'0'..=b'9' | b';' | b':') {
                        k += 1;
                    }
                    assert!(k < out.len() && CSI_ALLOWED.contains(&out[k]), "{out:?}");
                    i = k + 1;
                }
                b'\r' | b'\n' | 0x08 | b'\t' => i += 1,
                b => {
                    assert!(b >= 0x20 && b != 0x7f, "control {b:#04x} in {out:?}");
                    i += 1;
                }
            }
        }
        if let Ok(s) = std::str::from_utf8(out) {
            assert!(!s.chars().any(|c| ('\u{80}'..'\u{a0}').contains(&c)));
        }
    }

    #[test]
    fn hostile_input_is_neutralised() {
        // Deterministic pseudo-random bytes biased towards escape-sequence syntax.
        let alphabet: &[u8] = b"\x1b\x1b\x1b[[[]P^_X\\\x07\x9c\x9b\x9d;:?>=0123456789mnhltHJKCDsuq \r\n\x00\x05\x0e\x18\x1a\xdb\xc2";
        let mut seed: u64 = 0x5eed;
        for _ in 0..300 {
            let mut input = Vec::new();
            for _ in 0..200 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                input.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            for width in [0, 10, 80] {
                assert_safe(&render(&input, Source::Ansi, Encoding::Utf8, width));
                let asc = String::from_utf8_lossy(&input).into_owned();
                assert_safe(&render(
                    asc.as_bytes(),
                    Source::Ascii,
                    Encoding::Utf8,
                    width,
                ));
                let cp = render(&input, Source::Ansi, Encoding::Cp437, width);
                assert!(!cp
                    .iter()
                    .any(|b| matches!(b, 0x00 | 0x05 | 0x07 | 0x0e | 0x0f)));
                let mut i = 0;
                while let Some(p) = cp[i..].iter().position(|&b| b == ESC) {
                    assert_eq!(cp.get(i + p + 1), Some(&b'['));
                    i += p + 1;
                }
            }
        }
    }

    #[test]
    fn clipped_lines_fit() {
        let art = b"\x1b[0;1;33m\xdb\xdb\xb2\xb2\xb1\xb1\xb0\xb0 Portcullis gate \xb0\xb0\xb1\xb1\xb2\xb2\xdb\xdb\x1b[0m\r\n\
            \x1b[44m\xc9\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xbb\x1b[0m\n\
            short\r\n";
        for width in 1..40 {
            let out = utf8(art, width);
            for line in out.split("\r\n") {
                assert!(visible_width(line) <= width as usize, "{line:?} @ {width}");
            }
        }
    }

    #[test]
    fn visible_width_cases() {
        let cases: &[(&str, usize)] = &[
            ("", 0),
            ("abc", 3),
            ("\x1b[1;31mabc\x1b[0m", 3),
            ("╔═╗░▒▓", 6),
            ("\x1b]0;title\x07ok", 2),
            ("\x1b[5Cx", 1),
            ("a\tb\r\n", 2),
            ("日本", 4),
            ("한글", 4),
            ("ｆｕｌｌ", 8),
            ("😀!", 3),
            ("e\u{301}", 1),
            ("a\u{200b}b", 2),
            ("\u{9b}31m", 3),
        ];
        for &(input, want) in cases {
            assert_eq!(visible_width(input), want, "{input:?}");
        }
    }

    #[test]
    fn sanitize_user_text_cases() {
        let cases: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("héllo ☃ 日本", "héllo ☃ 日本"),
            ("hi\x1b[31mred", "hi[31mred"),
            ("\x1b]0;pwned\x07x", "]0;pwnedx"),
            ("a\tb\r\nc\x08\x00\x07", "abc"),
            ("\u{9b}6n\u{9d}", "6n"),
            ("del\x7f", "del"),
        ];
        for &(input, want) in cases {
            let got = sanitize_user_text(input);
            assert_eq!(got, want, "{input:?}");
            assert!(!got.chars().any(char::is_control));
        }
    }
}
