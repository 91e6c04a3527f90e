//! ACS: access condition strings in the style of ENiGMA½ (SPEC §12).
//!
//! An ACS string is parsed once (at config load) into a tree and then
//! evaluated against an [`AcsContext`] as often as needed. Any unknown code
//! or syntax error is an [`AcsError`] carrying the 0-based character offset
//! of the problem; nothing is ever silently read as false.
//!
//! # Syntax
//!
//! * A *code* is two capital letters (`AR`, `GM`, ...) with an argument of
//!   the kind that code takes: none (`SC`), a decimal number (`AR2`,
//!   `NC10`) or a bracketed list (`GM[sysops,users]`, `PV[name,value]`).
//!   Where ENiGMA½ takes either, so does this: `ID`, `AS` and `WD` take a
//!   bare number (`ID1`, `AS2`, `WD0`) as a list of one. List items are
//!   trimmed and may not be empty; quotes have no special meaning. See
//!   [`CODES`] for every code.
//! * ENiGMA½ codes this gate does not implement ([`ENIGMA_ONLY`]: `AE`,
//!   `NP`, `UP`, ...) are refused with a message saying so, not as unknown.
//! * `!` is NOT (prefix), `&` is AND, two terms side by side (`AR2AF2`,
//!   `AR2 AF2`) are also AND, `|` is OR, `(` `)` group.
//! * Precedence is the documented one: `!` binds tightest, then AND (both
//!   `&` and juxtaposition), then OR. So `F & F | T` is `(F & F) | T`, which
//!   is true. (ENiGMA½'s own parser reads it as `F & (F | T)`, against its
//!   docs; [`Acs::mixes_and_or_unparenthesised`] lets `config check` warn
//!   about expressions the two implementations read differently.)
//! * Whitespace (any Unicode whitespace, including newlines) is
//!   insignificant, also between a code and its argument (`AR 2`).
//!
//! # Choices
//!
//! * An empty (or all-whitespace) string is an error: ENiGMA½ denies
//!   `acs: ""` while a missing `acs` allows, and a gate must not read one
//!   as the other. Leave `acs` out to allow everyone. An empty `()` is an
//!   error too.
//! * Codes are case-sensitive: `ar2` is an error (with a hint naming `AR`).
//! * Group names (`GM`), terminal types (`TT`) and account statuses (`AS`)
//!   compare case-insensitively (ENiGMA½ compares `GM` and `TT`
//!   case-sensitively: `GM[Sysops]` matches the group `sysops` here, not there). `GM` names are handed to
//!   [`AcsContext::in_group`] lower-cased. `PV` names and values are
//!   compared exactly as written.
//! * `AS` takes the words in [`ACCOUNT_STATUSES`] or their numbers (index in
//!   that list: 0 disabled, 1 inactive, 2 active, 3 locked); any other word
//!   is an error, so a typo never silently denies.
//! * Number ranges are checked at parse time: `AR`/`AF` 1–3, `EC` 0–1,
//!   `MM` 0–1439, `RS` 0–100, `WD` items 0–6; `TW`/`TH` fit in `u32`,
//!   `NC`/`AA` in `u64`, `ID` items in `i64` (a leading `-` is accepted).
//! * Limits: at most [`MAX_SOURCE_CHARS`] characters and [`MAX_DEPTH`]
//!   levels of nesting (each `(` and each `!` counts one); beyond those the
//!   parse fails, so neither parsing nor evaluation can exhaust the stack.

use std::fmt;

/// Longest accepted ACS string, in characters.
pub const MAX_SOURCE_CHARS: usize = 4096;

/// Deepest accepted nesting; every `(` and every `!` is one level.
pub const MAX_DEPTH: usize = 64;

/// Account statuses `AS` accepts; a number in `AS[..]` is an index here
/// (ENiGMA½'s numbering: 0 disabled, 1 inactive, 2 active, 3 locked).
pub const ACCOUNT_STATUSES: &[&str] = &["disabled", "inactive", "active", "locked"];

/// ENiGMA½ codes that Portcullis does not implement (they describe BBS
/// features a gate does not have: posts, files, nodes, themes, ...). They
/// are refused with their own message rather than as unknown codes.
pub const ENIGMA_ONLY: &[&str] = &["AE", "SE", "AG", "NN", "NP", "UP", "DL", "BU", "BD", "NR", "KR", "PC", "AC", "AP", "TM", "ML", "SU"];

/// Every code with a one-line description (for docs and `config check --help`).
pub const CODES: &[(&str, &str)] = &[
    ("AR", "ARn: the user's required factor level is at least n (1 password or key, 2 one-time code, 3 hardware key)"),
    ("AF", "AFn: this session has passed factor level n or higher (1-3)"),
    ("GM", "GM[g,...]: the user is a member of any listed group (case-insensitive here; ENiGMA½ is case-sensitive)"),
    ("SC", "SC: the connection is secure"),
    ("LC", "LC: the connection is local"),
    ("AS", "ASn or AS[s,...]: the account status is n or one of the list (active, inactive, locked, disabled, or 0-3)"),
    ("NC", "NCn: the user has logged in at least n times"),
    ("AA", "AAn: the account is at least n days old"),
    ("ID", "IDn or ID[n,...]: the user's id is n or one of the list"),
    ("MM", "MMn: it is at least n minutes past midnight (0-1439)"),
    ("WD", "WDn or WD[n,...]: today is weekday n or one of the list (0 Sunday .. 6 Saturday)"),
    ("TT", "TT[t,...]: the terminal type is one of the list (case-insensitive here, ENiGMA½ is case-sensitive; e.g. xterm, ansi, vt100)"),
    ("TW", "TWn: the terminal is at least n columns wide"),
    ("TH", "THn: the terminal is at least n rows high"),
    ("EC", "ECn: the terminal encoding is n (0 CP437, 1 UTF-8)"),
    ("PV", "PV[name,value]: the user property name equals value (exact)"),
    ("DT", "DT: this device is trusted (Portcullis extension)"),
    ("RS", "RSn: this login's risk score is at least n (0-100; Portcullis extension)"),
];

/// What an ACS expression is evaluated against.
pub trait AcsContext {
    /// The user's required factor level (1-3).
    fn required_level(&self) -> u8;
    /// The highest factor level this session has passed.
    fn factors_passed(&self) -> u8;
    /// Membership test; `group` arrives lower-cased, compare case-insensitively.
    fn in_group(&self, group: &str) -> bool;
    fn secure_connection(&self) -> bool;
    fn local_connection(&self) -> bool;
    /// "active", "locked", ... (compared case-insensitively).
    fn account_status(&self) -> &str;
    fn login_count(&self) -> u64;
    fn account_age_days(&self) -> u64;
    fn user_id(&self) -> i64;
    fn minutes_past_midnight(&self) -> u32;
    /// 0 = Sunday.
    fn weekday(&self) -> u8;
    fn terminal_type(&self) -> &str;
    fn terminal_width(&self) -> u32;
    fn terminal_height(&self) -> u32;
    /// 0 CP437, 1 UTF-8.
    fn encoding(&self) -> u8;
    fn property(&self, name: &str) -> Option<String>;
    fn device_trusted(&self) -> bool;
    fn risk_score(&self) -> u8;
}

/// The message for `acs: ""`.
pub const EMPTY_ACS: &str = "empty ACS string: ENiGMA½ denies everyone for it; leave acs out to allow everyone, or write a condition";

/// A parse error: where (0-based character offset into the source) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcsError {
    pub offset: usize,
    pub message: String,
}

impl AcsError {
    fn new(offset: usize, message: impl Into<String>) -> AcsError {
        AcsError {
            offset,
            message: message.into(),
        }
    }
}

impl fmt::Display for AcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.offset + 1, self.message)
    }
}

impl std::error::Error for AcsError {}

/// A parsed ACS expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acs {
    src: String,
    root: Node,
    mixed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Always,
    Cond(Cond),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    RequiredLevel(u8),
    FactorsPassed(u8),
    Groups(Vec<String>),
    Secure,
    Local,
    Status(Vec<String>),
    LoginCount(u64),
    AccountAge(u64),
    UserId(Vec<i64>),
    Minutes(u32),
    Weekday(Vec<u8>),
    TermType(Vec<String>),
    TermWidth(u32),
    TermHeight(u32),
    Encoding(u8),
    Property(String, String),
    DeviceTrusted,
    RiskScore(u8),
}

impl Acs {
    /// Parse an ACS string. An empty or all-whitespace string is an error
    /// (ENiGMA½ denies it; leave `acs` out to allow everyone).
    ///
    /// # Errors
    ///
    /// An unknown code, a wrong argument, a syntax error or a limit
    /// ([`MAX_SOURCE_CHARS`], [`MAX_DEPTH`]) exceeded, with its position.
    pub fn parse(src: &str) -> Result<Acs, AcsError> {
        if src.chars().take(MAX_SOURCE_CHARS + 1).count() > MAX_SOURCE_CHARS {
            return Err(AcsError::new(
                MAX_SOURCE_CHARS,
                format!("expression too long (more than {MAX_SOURCE_CHARS} characters)"),
            ));
        }
        let chars: Vec<char> = src.chars().collect();
        let mut p = Parser {
            s: &chars,
            pos: 0,
            depth: 0,
            mixed: false,
        };
        if p.peek().is_none() {
            return Err(AcsError::new(0, EMPTY_ACS));
        }
        let root = p.parse_or()?;
        if let Some(c) = p.peek() {
            return Err(AcsError::new(
                p.pos,
                format!("unexpected '{}'", c.escape_debug()),
            ));
        }
        Ok(Acs {
            src: src.to_string(),
            root,
            mixed: p.mixed,
        })
    }

    /// Evaluate against `ctx`.
    #[must_use]
    pub fn eval(&self, ctx: &dyn AcsContext) -> bool {
        eval_node(&self.root, ctx)
    }

    /// True when the expression mixes `&`/juxtaposition and `|` at the same
    /// level without parentheses, e.g. `A & B | C` — ENiGMA's own parser
    /// reads that as `A & (B | C)` against its docs, so `config check` warns.
    #[must_use]
    pub fn mixes_and_or_unparenthesised(&self) -> bool {
        self.mixed
    }

    /// The text this was parsed from.
    pub fn source(&self) -> &str {
        &self.src
    }
}

impl fmt::Display for Acs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.src)
    }
}

impl std::str::FromStr for Acs {
    type Err = AcsError;
    fn from_str(s: &str) -> Result<Acs, AcsError> {
        Acs::parse(s)
    }
}

fn eval_node(node: &Node, ctx: &dyn AcsContext) -> bool {
    match node {
        Node::Always => true,
        Node::Cond(c) => eval_cond(c, ctx),
        Node::Not(n) => !eval_node(n, ctx),
        Node::And(ns) => ns.iter().all(|n| eval_node(n, ctx)),
        Node::Or(ns) => ns.iter().any(|n| eval_node(n, ctx)),
    }
}

fn caseless_eq(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

fn eval_cond(c: &Cond, ctx: &dyn AcsContext) -> bool {
    match c {
        Cond::RequiredLevel(n) => ctx.required_level() >= *n,
        Cond::FactorsPassed(n) => ctx.factors_passed() >= *n,
        Cond::Groups(gs) => gs.iter().any(|g| ctx.in_group(g)),
        Cond::Secure => ctx.secure_connection(),
        Cond::Local => ctx.local_connection(),
        Cond::Status(ss) => {
            let st = ctx.account_status();
            ss.iter().any(|s| caseless_eq(s, st))
        }
        Cond::LoginCount(n) => ctx.login_count() >= *n,
        Cond::AccountAge(n) => ctx.account_age_days() >= *n,
        Cond::UserId(ids) => ids.contains(&ctx.user_id()),
        Cond::Minutes(n) => ctx.minutes_past_midnight() >= *n,
        Cond::Weekday(ds) => ds.contains(&ctx.weekday()),
        Cond::TermType(ts) => {
            let tt = ctx.terminal_type();
            ts.iter().any(|t| caseless_eq(t, tt))
        }
        Cond::TermWidth(n) => ctx.terminal_width() >= *n,
        Cond::TermHeight(n) => ctx.terminal_height() >= *n,
        Cond::Encoding(n) => ctx.encoding() == *n,
        Cond::Property(name, value) => ctx.property(name).as_deref() == Some(value.as_str()),
        Cond::DeviceTrusted => ctx.device_trusted(),
        Cond::RiskScore(n) => ctx.risk_score() >= *n,
    }
}

/// The argument a code takes.
#[derive(Clone, Copy)]
enum ArgKind {
    Flag,
    Num { min: u64, max: u64 },
    Words,
    Statuses,
    Ids,
    Weekdays,
    Pair,
}

fn arg_kind(code: &str) -> Option<ArgKind> {
    use ArgKind::*;
    Some(match code {
        "AR" | "AF" => Num { min: 1, max: 3 },
        "GM" | "TT" => Words,
        "SC" | "LC" | "DT" => Flag,
        "AS" => Statuses,
        "NC" | "AA" => Num {
            min: 0,
            max: u64::MAX,
        },
        "ID" => Ids,
        "MM" => Num { min: 0, max: 1439 },
        "WD" => Weekdays,
        "TW" | "TH" => Num {
            min: 0,
            max: u64::from(u32::MAX),
        },
        "EC" => Num { min: 0, max: 1 },
        "PV" => Pair,
        "RS" => Num { min: 0, max: 100 },
        _ => return Option::None,
    })
}

fn list_example(code: &str) -> &'static str {
    match code {
        "GM" => "a list like GM[sysops,users]",
        "TT" => "a list like TT[xterm,ansi]",
        "AS" => "a number or a list like AS2 or AS[active,inactive]",
        "ID" => "a number or a list like ID1 or ID[1,2]",
        "WD" => "a number or a list like WD1 or WD[1,2,3]",
        _ => "a list like PV[name,value]",
    }
}

/// Codes whose argument may be a bare number as well as a list (as in
/// ENiGMA½, where `ID1` is `ID[1]`).
fn takes_bare_number(kind: ArgKind) -> bool {
    matches!(kind, ArgKind::Statuses | ArgKind::Ids | ArgKind::Weekdays)
}

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
    depth: usize,
    mixed: bool,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_whitespace() {
            self.pos += 1;
        }
    }

    /// Next non-whitespace character (whitespace is consumed).
    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn enter(&mut self, at: usize) -> Result<(), AcsError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(AcsError::new(
                at,
                format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    fn unexpected(&self, c: char) -> AcsError {
        AcsError::new(self.pos, format!("unexpected '{}'", c.escape_debug()))
    }

    fn parse_or(&mut self) -> Result<Node, AcsError> {
        let (first, first_multi) = self.parse_and()?;
        let mut alts = vec![first];
        let mut any_multi = first_multi;
        while self.peek() == Some('|') {
            self.pos += 1;
            let (n, multi) = self.parse_and()?;
            any_multi |= multi;
            alts.push(n);
        }
        if alts.len() == 1 {
            return Ok(alts.pop().unwrap_or(Node::Always));
        }
        if any_multi {
            self.mixed = true;
        }
        Ok(Node::Or(alts))
    }

    /// Returns the node and whether it joined two or more factors.
    fn parse_and(&mut self) -> Result<(Node, bool), AcsError> {
        let mut factors = vec![self.parse_unary()?];
        loop {
            match self.peek() {
                Some('&') => {
                    self.pos += 1;
                    factors.push(self.parse_unary()?);
                }
                Some(c) if c == '!' || c == '(' || c.is_alphabetic() => {
                    factors.push(self.parse_unary()?);
                }
                _ => break,
            }
        }
        if factors.len() == 1 {
            Ok((factors.pop().unwrap_or(Node::Always), false))
        } else {
            Ok((Node::And(factors), true))
        }
    }

    fn parse_unary(&mut self) -> Result<Node, AcsError> {
        match self.peek() {
            None => Err(AcsError::new(self.pos, "unexpected end of expression")),
            Some('!') => {
                self.enter(self.pos)?;
                self.pos += 1;
                let inner = self.parse_unary()?;
                self.depth -= 1;
                Ok(Node::Not(Box::new(inner)))
            }
            Some('(') => {
                let open = self.pos;
                self.enter(open)?;
                self.pos += 1;
                if self.peek() == Some(')') {
                    return Err(AcsError::new(open, "empty parentheses '()'"));
                }
                let inner = self.parse_or()?;
                if self.peek() != Some(')') {
                    return Err(AcsError::new(
                        self.pos,
                        format!("expected ')' to close '(' at column {}", open + 1),
                    ));
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(inner)
            }
            Some(c) if c.is_alphabetic() => self.parse_code().map(Node::Cond),
            Some(c) => Err(self.unexpected(c)),
        }
    }

    fn parse_code(&mut self) -> Result<Cond, AcsError> {
        let start = self.pos;
        let mut name = String::new();
        while name.chars().count() < 2
            && self.pos < self.s.len()
            && self.s[self.pos].is_alphabetic()
        {
            name.push(self.s[self.pos]);
            self.pos += 1;
        }
        let kind = match arg_kind(&name) {
            Some(k) => k,
            None if ENIGMA_ONLY.contains(&name.as_str()) => {
                return Err(AcsError::new(
                    start,
                    format!("\"{name}\" is an ENiGMA½ code that Portcullis does not support"),
                ));
            }
            None => {
                let upper = name.to_uppercase();
                let msg = if upper != name && arg_kind(&upper).is_some() {
                    format!("unknown ACS code \"{name}\" (codes are upper case: \"{upper}\")")
                } else {
                    format!("unknown ACS code \"{name}\"")
                };
                return Err(AcsError::new(start, msg));
            }
        };
        let code = name.as_str();
        match kind {
            ArgKind::Flag => {
                if let Some(c) = self.peek() {
                    if c.is_ascii_digit() || c == '[' {
                        return Err(AcsError::new(
                            self.pos,
                            format!("\"{code}\" takes no argument"),
                        ));
                    }
                }
                Ok(match code {
                    "SC" => Cond::Secure,
                    "LC" => Cond::Local,
                    _ => Cond::DeviceTrusted,
                })
            }
            ArgKind::Num { min, max } => {
                let n = self.parse_number(code, min, max)?;
                // The range checks above make these conversions lossless.
                let small = |n: u64| u8::try_from(n).unwrap_or(u8::MAX);
                let mid = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
                Ok(match code {
                    "AR" => Cond::RequiredLevel(small(n)),
                    "AF" => Cond::FactorsPassed(small(n)),
                    "NC" => Cond::LoginCount(n),
                    "AA" => Cond::AccountAge(n),
                    "MM" => Cond::Minutes(mid(n)),
                    "TW" => Cond::TermWidth(mid(n)),
                    "TH" => Cond::TermHeight(mid(n)),
                    "EC" => Cond::Encoding(small(n)),
                    _ => Cond::RiskScore(small(n)),
                })
            }
            list_kind if takes_bare_number(list_kind) && self.peek().is_some_and(|c| c.is_ascii_digit()) => {
                let at = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits: String = self.s[at..self.pos].iter().collect();
                self.convert_list(code, list_kind, at, vec![(at, digits)])
            }
            list_kind => {
                let (open, items) = self.parse_list(code)?;
                self.convert_list(code, list_kind, open, items)
            }
        }
    }

    fn parse_number(&mut self, code: &str, min: u64, max: u64) -> Result<u64, AcsError> {
        let at = match self.peek() {
            Some(c) if c.is_ascii_digit() => self.pos,
            _ => {
                return Err(AcsError::new(
                    self.pos,
                    format!("\"{code}\" takes a number like {code}2"),
                ));
            }
        };
        let mut n: u64 = 0;
        let mut overflow = false;
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
            let d = u64::from(self.s[self.pos] as u8 - b'0');
            match n.checked_mul(10).and_then(|v| v.checked_add(d)) {
                Some(v) => n = v,
                None => overflow = true,
            }
            self.pos += 1;
        }
        if overflow || n < min || n > max {
            let msg = if max == u64::MAX {
                format!("number too large for \"{code}\"")
            } else {
                format!("\"{code}\" takes a number from {min} to {max}")
            };
            return Err(AcsError::new(at, msg));
        }
        Ok(n)
    }

    /// Parses `[a, b, ...]`; returns the '[' offset and (offset, trimmed item) pairs.
    fn parse_list(&mut self, code: &str) -> Result<(usize, Vec<(usize, String)>), AcsError> {
        if self.peek() != Some('[') {
            return Err(AcsError::new(
                self.pos,
                format!("\"{code}\" takes {}", list_example(code)),
            ));
        }
        let open = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            let item_start = self.pos;
            while self.pos < self.s.len() && !matches!(self.s[self.pos], ',' | ']' | '[') {
                self.pos += 1;
            }
            let Some(&end_char) = self.s.get(self.pos) else {
                return Err(AcsError::new(
                    self.pos,
                    format!("expected ']' to close '[' at column {}", open + 1),
                ));
            };
            if end_char == '[' {
                return Err(self.unexpected('['));
            }
            let raw = &self.s[item_start..self.pos];
            let lead = raw.iter().take_while(|c| c.is_whitespace()).count();
            let text: String = raw.iter().collect::<String>().trim().to_string();
            if text.is_empty() {
                if items.is_empty() && end_char == ']' {
                    return Err(AcsError::new(open, format!("empty list in \"{code}\"")));
                }
                return Err(AcsError::new(item_start, "empty item in list"));
            }
            if let Some(i) = text.chars().position(char::is_control) {
                return Err(AcsError::new(
                    item_start + lead + i,
                    "control character in list item",
                ));
            }
            items.push((item_start + lead, text));
            self.pos += 1;
            if end_char == ']' {
                return Ok((open, items));
            }
        }
    }

    fn convert_list(
        &self,
        code: &str,
        kind: ArgKind,
        open: usize,
        items: Vec<(usize, String)>,
    ) -> Result<Cond, AcsError> {
        match kind {
            ArgKind::Words => {
                let words = items.into_iter().map(|(_, w)| w.to_lowercase()).collect();
                Ok(if code == "GM" {
                    Cond::Groups(words)
                } else {
                    Cond::TermType(words)
                })
            }
            ArgKind::Statuses => {
                let mut out = Vec::with_capacity(items.len());
                for (at, item) in items {
                    let lower = item.to_lowercase();
                    let word = if let Ok(i) = lower.parse::<usize>() {
                        ACCOUNT_STATUSES.get(i).copied()
                    } else {
                        ACCOUNT_STATUSES.iter().copied().find(|s| *s == lower)
                    };
                    match word {
                        Some(w) => out.push(w.to_string()),
                        None => {
                            return Err(AcsError::new(
                                at,
                                format!(
                                "unknown account status \"{item}\" (expected one of {} or 0-{})",
                                ACCOUNT_STATUSES.join(", "),
                                ACCOUNT_STATUSES.len() - 1
                            ),
                            ))
                        }
                    }
                }
                Ok(Cond::Status(out))
            }
            ArgKind::Ids => {
                let mut out = Vec::with_capacity(items.len());
                for (at, item) in items {
                    let ok = item
                        .strip_prefix('-')
                        .unwrap_or(&item)
                        .chars()
                        .all(|c| c.is_ascii_digit());
                    match item.parse::<i64>() {
                        Ok(n) if ok => out.push(n),
                        _ => {
                            return Err(AcsError::new(
                                at,
                                format!("\"ID\" takes user ids (numbers), not \"{item}\""),
                            ))
                        }
                    }
                }
                Ok(Cond::UserId(out))
            }
            ArgKind::Weekdays => {
                let mut out = Vec::with_capacity(items.len());
                for (at, item) in items {
                    let ok = item.chars().all(|c| c.is_ascii_digit());
                    match item.parse::<u8>() {
                        Ok(n) if ok && n <= 6 => out.push(n),
                        _ => {
                            return Err(AcsError::new(
                                at,
                                "\"WD\" takes weekdays from 0 (Sunday) to 6 (Saturday)",
                            ))
                        }
                    }
                }
                Ok(Cond::Weekday(out))
            }
            _ => {
                if items.len() != 2 {
                    return Err(AcsError::new(
                        open,
                        "\"PV\" takes a name and a value like PV[name,value]",
                    ));
                }
                let mut it = items.into_iter().map(|(_, s)| s);
                let name = it.next().unwrap_or_default();
                let value = it.next().unwrap_or_default();
                Ok(Cond::Property(name, value))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed context: secure, not local, AR2 with factor 1 passed, groups
    /// users+Elite, active, 5 logins, 30 days old, id 7, 600 minutes past
    /// midnight (10:00), Wednesday, xterm 80x24 UTF-8, property theme=dark,
    /// trusted device, risk score 40.
    struct Ctx;

    impl AcsContext for Ctx {
        fn required_level(&self) -> u8 {
            2
        }
        fn factors_passed(&self) -> u8 {
            1
        }
        fn in_group(&self, group: &str) -> bool {
            ["users", "Elite"]
                .iter()
                .any(|g| g.eq_ignore_ascii_case(group))
        }
        fn secure_connection(&self) -> bool {
            true
        }
        fn local_connection(&self) -> bool {
            false
        }
        fn account_status(&self) -> &str {
            "Active"
        }
        fn login_count(&self) -> u64 {
            5
        }
        fn account_age_days(&self) -> u64 {
            30
        }
        fn user_id(&self) -> i64 {
            7
        }
        fn minutes_past_midnight(&self) -> u32 {
            600
        }
        fn weekday(&self) -> u8 {
            3
        }
        fn terminal_type(&self) -> &str {
            "XTerm"
        }
        fn terminal_width(&self) -> u32 {
            80
        }
        fn terminal_height(&self) -> u32 {
            24
        }
        fn encoding(&self) -> u8 {
            1
        }
        fn property(&self, name: &str) -> Option<String> {
            (name == "theme").then(|| "dark".to_string())
        }
        fn device_trusted(&self) -> bool {
            true
        }
        fn risk_score(&self) -> u8 {
            40
        }
    }

    fn check(cases: &[(&str, bool)]) {
        for &(src, want) in cases {
            let acs = Acs::parse(src).unwrap_or_else(|e| panic!("{src:?} failed to parse: {e}"));
            assert_eq!(acs.eval(&Ctx), want, "{src:?}");
        }
    }

    #[test]
    fn truth_table_per_code() {
        check(&[
            ("AR1", true),
            ("AR2", true),
            ("AR3", false),
            ("AF1", true),
            ("AF2", false),
            ("GM[users]", true),
            ("GM[USERS]", true),
            ("GM[elite]", true),
            ("GM[sysops]", false),
            ("GM[sysops, users]", true),
            ("SC", true),
            ("LC", false),
            ("AS[active]", true),
            ("AS[ACTIVE]", true),
            ("AS[2]", true),
            ("AS[locked,inactive]", false),
            ("AS[3]", false),
            ("NC5", true),
            ("NC6", false),
            ("AA30", true),
            ("AA31", false),
            ("ID[7]", true),
            ("ID[1,7]", true),
            ("ID[1,-7]", false),
            ("MM600", true),
            ("MM601", false),
            ("MM0", true),
            ("WD[3]", true),
            ("WD[0,6]", false),
            ("TT[xterm]", true),
            ("TT[ansi, XTERM]", true),
            ("TT[vt100,ansi]", false),
            ("TW80", true),
            ("TW81", false),
            ("TH24", true),
            ("TH25", false),
            ("EC1", true),
            ("EC0", false),
            ("PV[theme,dark]", true),
            ("PV[ theme , dark ]", true),
            ("PV[theme,Dark]", false),
            ("PV[colour,dark]", false),
            ("DT", true),
            ("!DT", false),
            ("RS40", true),
            ("RS41", false),
            ("RS0", true),
        ]);
    }

    #[test]
    fn every_code_in_codes_parses() {
        for (code, desc) in CODES {
            let src = match arg_kind(code) {
                Some(ArgKind::Flag) => code.to_string(),
                Some(ArgKind::Num { min, .. }) => format!("{code}{min}"),
                Some(ArgKind::Pair) => format!("{code}[a,b]"),
                Some(ArgKind::Statuses) => format!("{code}[active]"),
                Some(_) => format!("{code}[1]"),
                None => panic!("{code} listed in CODES but unknown"),
            };
            assert!(Acs::parse(&src).is_ok(), "{src}");
            assert!(desc.starts_with(code), "{code}: {desc}");
        }
    }

    #[test]
    fn precedence_and_whitespace() {
        // T = SC (true), F = LC (false).
        check(&[
            ("LC & LC | SC", true), // documented: (F & F) | T
            ("SC | LC & LC", true),
            ("LC&LC|SC", true),
            ("LC & (LC | SC)", false), // ENiGMA's reading, spelled out
            ("!LC & SC", true),
            ("!SC & SC", false),
            ("!(LC | SC)", false),
            ("!(LC | LC)", true),
            ("!!SC", true),
            ("LC SC | SC", true), // (F T) | T
            ("SC SC | LC", true),
            ("LC | SC LC", false), // F | (T F)
            ("SC | LC LC", true),
            ("((SC))", true),
            ("(LC | (SC & !LC)) & (DT | LC)", true),
            ("((LC | LC) | (LC & SC))", false),
            ("AR2AF2", false),
            ("AR2AF1", true),
            ("AR2 AF1", true),
            ("AR2&AF1", true),
            ("  AR2  &  AF1  ", true),
            ("AR 2 & AF\t1", true),
            ("GM [users]", true),
            ("GM[users]AR2", true),
            ("GM[users]!AR2", false),
            ("SCDT", true),
            ("SC(LC|DT)", true),
            ("AR2\n|\nAF3", true),
            ("ID[1,\n 7]", true),
        ]);
    }

    #[test]
    fn mixes_and_or() {
        for &(src, want) in &[
            ("SC & LC | DT", true),
            ("(SC & LC) | DT", false),
            ("SC | LC", false),
            ("SC LC | DT", true),
            ("SC & LC", false),
            ("SC | LC DT", true),
            ("!(SC & LC | DT)", true),
            ("(SC | LC) & DT", false),
        ] {
            let acs = Acs::parse(src).expect(src);
            assert_eq!(acs.mixes_and_or_unparenthesised(), want, "{src:?}");
        }
    }

    #[test]
    fn source_and_display() {
        let acs = Acs::parse(" AR2 | GM[sysops] ").expect("parses");
        assert_eq!(acs.source(), " AR2 | GM[sysops] ");
        assert_eq!(acs.to_string(), " AR2 | GM[sysops] ");
        let parsed: Acs = "SC".parse().expect("parses");
        assert!(parsed.eval(&Ctx));
    }

    fn check_err(cases: &[(&str, usize, &str)]) {
        for &(src, column, message) in cases {
            match Acs::parse(src) {
                Ok(_) => panic!("{src:?} parsed but should fail"),
                Err(e) => {
                    assert_eq!(
                        (e.offset + 1, e.message.as_str()),
                        (column, message),
                        "{src:?}"
                    );
                    assert_eq!(e.to_string(), format!("column {column}: {message}"));
                }
            }
        }
    }

    #[test]
    fn errors_with_columns() {
        check_err(&[
            ("XX", 1, "unknown ACS code \"XX\""),
            ("AR2 & XX1", 7, "unknown ACS code \"XX\""),
            ("ar2", 1, "unknown ACS code \"ar\" (codes are upper case: \"AR\")"),
            ("A", 1, "unknown ACS code \"A\""),
            ("A2", 1, "unknown ACS code \"A\""),
            ("AR", 3, "\"AR\" takes a number like AR2"),
            ("AR & SC", 4, "\"AR\" takes a number like AR2"),
            ("AR[2]", 3, "\"AR\" takes a number like AR2"),
            ("AR0", 3, "\"AR\" takes a number from 1 to 3"),
            ("AF4", 3, "\"AF\" takes a number from 1 to 3"),
            ("EC2", 3, "\"EC\" takes a number from 0 to 1"),
            ("MM1440", 3, "\"MM\" takes a number from 0 to 1439"),
            ("RS101", 3, "\"RS\" takes a number from 0 to 100"),
            ("TW4294967296", 3, "\"TW\" takes a number from 0 to 4294967295"),
            ("AR99999999999999999999", 3, "\"AR\" takes a number from 1 to 3"),
            ("NC99999999999999999999", 3, "number too large for \"NC\""),
            ("GM2", 3, "\"GM\" takes a list like GM[sysops,users]"),
            ("GM", 3, "\"GM\" takes a list like GM[sysops,users]"),
            ("WD", 3, "\"WD\" takes a number or a list like WD1 or WD[1,2,3]"),
            ("ID & SC", 4, "\"ID\" takes a number or a list like ID1 or ID[1,2]"),
            ("AS[", 4, "expected ']' to close '[' at column 3"),
            ("TT1", 3, "\"TT\" takes a list like TT[xterm,ansi]"),
            ("SC1", 3, "\"SC\" takes no argument"),
            ("DT [x]", 4, "\"DT\" takes no argument"),
            ("GM[]", 3, "empty list in \"GM\""),
            ("GM[ ]", 3, "empty list in \"GM\""),
            ("GM[a,]", 6, "empty item in list"),
            ("GM[,a]", 4, "empty item in list"),
            ("GM[a,", 6, "expected ']' to close '[' at column 3"),
            ("GM[a[b]]", 5, "unexpected '['"),
            ("GM[a\u{7}b]", 5, "control character in list item"),
            ("PV[x]", 3, "\"PV\" takes a name and a value like PV[name,value]"),
            ("PV[a,b,c]", 3, "\"PV\" takes a name and a value like PV[name,value]"),
            ("ID[x]", 4, "\"ID\" takes user ids (numbers), not \"x\""),
            ("ID[1, +2]", 7, "\"ID\" takes user ids (numbers), not \"+2\""),
            ("WD[7]", 4, "\"WD\" takes weekdays from 0 (Sunday) to 6 (Saturday)"),
            ("AS[gone]", 4, "unknown account status \"gone\" (expected one of disabled, inactive, active, locked or 0-3)"),
            ("AS[4]", 4, "unknown account status \"4\" (expected one of disabled, inactive, active, locked or 0-3)"),
            ("(AR2", 5, "expected ')' to close '(' at column 1"),
            ("SC & (AR2 | (LC)", 17, "expected ')' to close '(' at column 6"),
            ("(SC]", 4, "expected ')' to close '(' at column 1"),
            ("AR2)", 4, "unexpected ')'"),
            ("AR2 &", 6, "unexpected end of expression"),
            ("AR2 |", 6, "unexpected end of expression"),
            ("& AR2", 1, "unexpected '&'"),
            ("| AR2", 1, "unexpected '|'"),
            ("AR2 || AF2", 6, "unexpected '|'"),
            ("AR2 && AF2", 6, "unexpected '&'"),
            ("!", 2, "unexpected end of expression"),
            ("!)", 2, "unexpected ')'"),
            ("()", 1, "empty parentheses '()'"),
            ("SC & ( )", 6, "empty parentheses '()'"),
            ("AR2 3", 5, "unexpected '3'"),
            ("AR2 ]", 5, "unexpected ']'"),
            ("SC , LC", 4, "unexpected ','"),
            ("SC \u{1b}", 4, "unexpected '\\u{1b}'"),
            ("ÄR2", 1, "unknown ACS code \"ÄR\""),
            ("SC & ÄR2 & XX", 6, "unknown ACS code \"ÄR\""),
        ]);
    }

    #[test]
    fn bare_number_arguments_as_in_enigma() {
        // ENiGMA½'s shipped menus and docs: `ID1`, `AS2`, `ID1SC`,
        // `(GM[sysops] | ID1) & SC`. The context is user 7, active, Wednesday (3).
        check(&[
            ("ID7", true),
            ("ID1", false),
            ("ID 7", true),
            ("ID7SC", true),
            ("ID1SC", false),
            ("ID7 | GM[sysops]", true),
            ("(GM[sysops] | ID7) & SC", true),
            ("(GM[sysops] | ID1) & SC", false),
            ("AS2", true),
            ("AS3", false),
            ("AS0 | AS1", false),
            ("!AS3", true),
            ("WD3", true),
            ("WD0", false),
            ("WD3&ID7", true),
            ("ID[7]", true),
            ("AS[2]", true),
        ]);
        check_err(&[
            ("WD7", 3, "\"WD\" takes weekdays from 0 (Sunday) to 6 (Saturday)"),
            ("WD12", 3, "\"WD\" takes weekdays from 0 (Sunday) to 6 (Saturday)"),
            ("AS4", 3, "unknown account status \"4\" (expected one of disabled, inactive, active, locked or 0-3)"),
            ("SC & ID99999999999999999999", 8, "\"ID\" takes user ids (numbers), not \"99999999999999999999\""),
            ("ID-1", 3, "\"ID\" takes a number or a list like ID1 or ID[1,2]"),
            ("ID7]", 4, "unexpected ']'"),
        ]);
    }

    #[test]
    fn an_empty_acs_is_an_error() {
        check_err(&[
            ("", 1, EMPTY_ACS),
            ("   ", 1, EMPTY_ACS),
            ("\n\t", 1, EMPTY_ACS),
        ]);
        assert_eq!(
            Acs::parse("").map(|_| ()).map_err(|e| e.to_string()),
            Err("column 1: empty ACS string: ENiGMA½ denies everyone for it; leave acs out to allow everyone, or write a condition".to_string())
        );
    }

    #[test]
    fn enigma_codes_we_do_not_implement_say_so() {
        for code in ENIGMA_ONLY {
            assert!(arg_kind(code).is_none(), "{code} is implemented, so not ENiGMA-only");
            for (src, column) in [(format!("{code}1"), 1), (format!("SC & {code}[a]"), 6), (code.to_string(), 1)] {
                let e = Acs::parse(&src).expect_err(&src);
                assert_eq!(
                    (e.offset + 1, e.message.as_str()),
                    (column, format!("\"{code}\" is an ENiGMA½ code that Portcullis does not support").as_str()),
                    "{src}"
                );
            }
        }
        check_err(&[
            ("NP5", 1, "\"NP\" is an ENiGMA½ code that Portcullis does not support"),
            ("GM[users] & TM[luciano_blocktronics]", 13, "\"TM\" is an ENiGMA½ code that Portcullis does not support"),
            ("ZZ1", 1, "unknown ACS code \"ZZ\""),
            ("np5", 1, "unknown ACS code \"np\""),
        ]);
    }

    #[test]
    fn limits() {
        // Nesting: 64 levels parse, 65 do not; `!` counts too.
        let ok = format!("{}SC{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        check(&[(ok.as_str(), true)]);
        let deep = format!(
            "{}SC{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let nots = format!("{}SC", "!".repeat(MAX_DEPTH + 1));
        let mixed = format!("{}SC{}", "!(".repeat(40), ")".repeat(40));
        let too_deep = "expression nested too deeply (more than 64 levels)";
        check_err(&[
            (deep.as_str(), 65, too_deep),
            (nots.as_str(), 65, too_deep),
            (mixed.as_str(), 65, too_deep),
        ]);
        check(&[(format!("{}SC", "!".repeat(MAX_DEPTH)).as_str(), true)]);

        // Length: 4096 characters parse (also multi-byte ones), 4097 do not.
        let long_ok = format!("SC{}", " ".repeat(MAX_SOURCE_CHARS - 2));
        check(&[(long_ok.as_str(), true)]);
        let wide_ok = format!("SC{}", "\u{3000}".repeat(MAX_SOURCE_CHARS - 2));
        check(&[(wide_ok.as_str(), true)]);
        let long = format!("SC{}", " ".repeat(MAX_SOURCE_CHARS - 1));
        check_err(&[(
            long.as_str(),
            4097,
            "expression too long (more than 4096 characters)",
        )]);
        let huge = "SC&".repeat(100_000);
        assert!(Acs::parse(&huge).is_err());

        // Long flat chains are not nesting and do not recurse.
        let chain = format!("SC{}", " & SC | LC".repeat(300));
        check(&[(chain.as_str(), true)]);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let samples = [
            "[",
            "]",
            "[]",
            "GM[",
            "GM[,",
            "GM[]]",
            "((",
            "))",
            "!(",
            "&|",
            "A",
            "AR-1",
            "AR2.5",
            "GM[\u{0}]",
            "\u{0}",
            "ÿÿ",
            "🦀",
            "AR2🦀",
            "PV[,]",
            "ID[-]",
            "ID[--1]",
            "WD[-1]",
            "AS[-1]",
            "AR 2 2",
            "SC!",
            "SC(",
            "(SC)(LC)",
            "!!!",
            "GM[a]GM[b]",
        ];
        for s in samples {
            let _ = Acs::parse(s).map(|a| a.eval(&Ctx));
        }
        // Every prefix of a valid expression either parses or reports a column inside it (or one past it).
        let full = "!(AR2 & GM[sysops, users]) | (PV[theme,dark] TT[xterm]) & !RS50";
        let chars: Vec<char> = full.chars().collect();
        for n in 0..=chars.len() {
            let s: String = chars[..n].iter().collect();
            if let Err(e) = Acs::parse(&s) {
                assert!(e.offset <= n, "{s:?}: {e}");
            }
        }
    }
}
