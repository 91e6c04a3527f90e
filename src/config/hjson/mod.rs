//! Hjson (<https://hjson.github.io/syntax.html>) parser that keeps source
//! positions, plus a serde deserializer over the parsed tree. This file holds
//! the error type and the tree; `parser` builds the tree, `deserializer`
//! reads serde types out of it.
//!
//! * [`parse`] builds a [`Spanned`] tree; every node and key knows the
//!   1-based line and column (counted in characters) of its first character.
//! * [`from_str`] / [`from_spanned`] / [`from_spanned_at`] deserialize any
//!   `serde::Deserialize` type from source text or from an already parsed
//!   subtree.
//!
//! Parsing follows the reference implementation (hjson-js):
//! * comments `#`, `//`, `/* */`; commas between members/elements optional;
//! * the root is an object with or without braces, or a braced array;
//!   empty input is an empty object (a braceless root object is placed at 1:1);
//! * a quoteless value runs to the end of the line (trailing whitespace
//!   trimmed) unless the text read so far is exactly `true`, `false`, `null`
//!   or a JSON number when a `,`, `}`, `]`, `#`, `//`, `/*` or the line end is
//!   reached. So `42abc` and `hello, world` are strings, `1, b: 2` is `1`
//!   followed by another member, and `x }` is the string "x }".
//! * `'''` multiline strings strip up to the opening column of indentation
//!   from each line and drop the first and last newline.
//! * duplicate keys in one object are an error.
//!
//! Deserialization notes: integers are kept exact (the number text is kept)
//! and range-checked per target type; a number or boolean is accepted where a
//! string is expected (its source text is used).
//!
//! Error paths: keys are joined with `.`; array elements are `[index]`. A key
//! is written bare when it is non-empty and consists only of ASCII letters,
//! digits, `_` and `-`; any other key is written as `["key"]` (quoted with
//! Rust/JSON-style escapes), e.g. `menus.login.next[0].acs`,
//! `art["FOO.BAR"].file`, `[2].name` (root array).

mod deserializer;
mod parser;

pub use deserializer::{from_spanned, from_spanned_at, from_str};
pub use parser::parse;

use serde::de::{self, Expected, Unexpected};
use std::fmt;

/// Maximum nesting of arrays/objects accepted by the parser.
const MAX_DEPTH: usize = 128;

// ---------------------------------------------------------------------------
// Error
// ---------------------------------------------------------------------------

/// A parse or deserialization error with its source position and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// 1-based line (0 only while the error has not been placed yet).
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    /// Key path from the root (see module docs); empty for the root itself
    /// and for syntax errors.
    pub path: String,
    pub message: String,
}

impl Error {
    pub fn new(line: usize, col: usize, path: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            line,
            col,
            path: path.into(),
            message: message.into(),
        }
    }

    fn unplaced(message: String) -> Self {
        Error::new(0, 0, String::new(), message)
    }

    /// Sets position and path unless a (more precise, inner) one is already set.
    fn place(mut self, line: usize, col: usize, path: &str) -> Self {
        if self.line == 0 {
            self.line = line;
            self.col = col;
            self.path = path.to_string();
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.col, self.message)
        } else {
            write!(f, "{}:{}: {}: {}", self.line, self.col, self.path, self.message)
        }
    }
}

impl std::error::Error for Error {}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn one_of(expected: &[&str], what: &str) -> String {
    match expected {
        [] => format!("there are no {what}"),
        [one] => format!("expected {}", quote(one)),
        _ => {
            let list: Vec<String> = expected.iter().map(|s| quote(s)).collect();
            format!("expected one of {}", list.join(", "))
        }
    }
}

fn describe(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Bool(b) => format!("boolean {b}"),
        Unexpected::Unsigned(n) => format!("integer {n}"),
        Unexpected::Signed(n) => format!("integer {n}"),
        Unexpected::Float(f) => format!("number {f}"),
        Unexpected::Char(c) => format!("character {c:?}"),
        Unexpected::Str(s) => format!("string {}", quote(s)),
        Unexpected::Bytes(_) => "bytes".to_string(),
        Unexpected::Unit => "null".to_string(),
        Unexpected::Option => "option".to_string(),
        Unexpected::NewtypeStruct => "newtype struct".to_string(),
        Unexpected::Seq => "array".to_string(),
        Unexpected::Map => "object".to_string(),
        Unexpected::Enum => "enum".to_string(),
        Unexpected::UnitVariant => "unit variant".to_string(),
        Unexpected::NewtypeVariant => "newtype variant".to_string(),
        Unexpected::TupleVariant => "tuple variant".to_string(),
        Unexpected::StructVariant => "struct variant".to_string(),
        Unexpected::Other(s) => s.to_string(),
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::unplaced(msg.to_string())
    }
    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Error::unplaced(format!("invalid type: {}, expected {}", describe(&unexp), exp))
    }
    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Error::unplaced(format!("invalid value: {}, expected {}", describe(&unexp), exp))
    }
    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        Error::unplaced(format!("invalid length {len}, expected {exp}"))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error::unplaced(format!("unknown variant {}, {}", quote(variant), one_of(expected, "variants")))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error::unplaced(format!("unknown field {}, {}", quote(field), one_of(expected, "fields")))
    }
    fn missing_field(field: &'static str) -> Self {
        Error::unplaced(format!("missing field {}", quote(field)))
    }
    fn duplicate_field(field: &'static str) -> Self {
        Error::unplaced(format!("duplicate field {}", quote(field)))
    }
}

// ---------------------------------------------------------------------------
// Tree
// ---------------------------------------------------------------------------

/// A value with the position of its first character.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub line: usize,
    pub col: usize,
    pub node: Node,
}

/// An object key with the position of its first character (the opening
/// quote for quoted keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpannedKey {
    pub line: usize,
    pub col: usize,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Spanned>),
    /// Members in source order; keys are unique.
    Object(Vec<(SpannedKey, Spanned)>),
}

/// A number, stored as its (valid JSON number) source text so that integers
/// of any width stay exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number {
    text: String,
}

enum IntVal {
    Exact(i128),
    Fraction(f64),
    TooBig,
}

impl Number {
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// True when written without fraction or exponent.
    pub fn is_integer(&self) -> bool {
        !self.text.contains(['.', 'e', 'E'])
    }
    pub fn as_i64(&self) -> Option<i64> {
        if self.is_integer() { self.text.parse().ok() } else { None }
    }
    pub fn as_u64(&self) -> Option<u64> {
        if self.is_integer() { self.text.parse().ok() } else { None }
    }
    pub fn as_f64(&self) -> f64 {
        self.text.parse().unwrap_or(f64::NAN)
    }
    fn integer(&self) -> IntVal {
        if self.is_integer() {
            return match self.text.parse::<i128>() {
                Ok(i) => IntVal::Exact(i),
                Err(_) => IntVal::TooBig,
            };
        }
        let f = self.as_f64();
        if f.fract() != 0.0 {
            IntVal::Fraction(f)
        } else if f.abs() < 1.0e38 {
            IntVal::Exact(f as i128)
        } else {
            IntVal::TooBig
        }
    }
    fn unexpected(&self) -> Unexpected<'_> {
        if let Some(u) = self.as_u64() {
            Unexpected::Unsigned(u)
        } else if let Some(i) = self.as_i64() {
            Unexpected::Signed(i)
        } else {
            Unexpected::Float(self.as_f64())
        }
    }
}

impl Spanned {
    /// "null", "boolean", "number", "string", "array" or "object".
    pub fn kind(&self) -> &'static str {
        match self.node {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Number(_) => "number",
            Node::String(_) => "string",
            Node::Array(_) => "array",
            Node::Object(_) => "object",
        }
    }
    /// Member `key` of an object node.
    pub fn get(&self, key: &str) -> Option<&Spanned> {
        match &self.node {
            Node::Object(m) => m.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// Key (with its position) and value of member `key` of an object node.
    pub fn get_entry(&self, key: &str) -> Option<(&SpannedKey, &Spanned)> {
        match &self.node {
            Node::Object(m) => m.iter().find(|(k, _)| k.name == key).map(|(k, v)| (k, v)),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.node {
            Node::String(s) => Some(s),
            _ => None,
        }
    }
    /// An error located at this node.
    pub fn error(&self, path: &str, message: impl Into<String>) -> Error {
        Error::new(self.line, self.col, path, message)
    }
    fn unexpected(&self) -> Unexpected<'_> {
        match &self.node {
            Node::Null => Unexpected::Unit,
            Node::Bool(b) => Unexpected::Bool(*b),
            Node::Number(n) => n.unexpected(),
            Node::String(s) => Unexpected::Str(s),
            Node::Array(_) => Unexpected::Seq,
            Node::Object(_) => Unexpected::Map,
        }
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Appends an object key to a path (see module docs for the quoting rule).
pub fn join_key(path: &str, key: &str) -> String {
    if !is_plain_key(key) {
        format!("{path}[{}]", quote(key))
    } else if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends an array index to a path.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The position of the key at a dotted `path` (plain keys only), for
/// errors found after deserialization.
pub fn position_of(src: &str, path: &str) -> Option<(usize, usize)> {
    let root = parse(src).ok()?;
    let mut node = &root;
    let mut at = None;
    for part in path.split('.') {
        let (key, value) = node.get_entry(part)?;
        at = Some((key.line, key.col));
        node = value;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, HashMap};

    /// Parses `input` and compares the tree (as JSON) with `expected` JSON.
    fn check(input: &str, expected: &str) {
        let tree = parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        let got: serde_json::Value =
            from_spanned(&tree).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        let want: serde_json::Value = serde_json::from_str(expected).unwrap();
        assert_eq!(got, want, "input: {input:?}");
    }

    #[test]
    fn parse_cases() {
        let cases: &[(&str, &str)] = &[
            ("", "{}"),
            ("# only a comment\n", "{}"),
            ("a: 1\nb: true\nc: null\nd: hello world  \n", r#"{"a":1,"b":true,"c":null,"d":"hello world"}"#),
            ("a:1", r#"{"a":1}"#),
            ("a   : x", r#"{"a":"x"}"#),
            // comments
            ("# c\n// c\n/* c\n */ a: 1 # t\nb: 2 // t\nc: 3 /* t */\nd: true#x\n", r#"{"a":1,"b":2,"c":3,"d":true}"#),
            // quoteless strings run to the end of the line
            ("url: http://x/y#frag // not a comment", r#"{"url":"http://x/y#frag // not a comment"}"#),
            ("a: hello # world", r#"{"a":"hello # world"}"#),
            ("a: hello, world", r#"{"a":"hello, world"}"#),
            ("a: b: c", r#"{"a":"b: c"}"#),
            ("a: 42abc", r#"{"a":"42abc"}"#),
            ("a: 42 abc", r#"{"a":"42 abc"}"#),
            ("a: true story", r#"{"a":"true story"}"#),
            ("a: nullable", r#"{"a":"nullable"}"#),
            ("a: 007", r#"{"a":"007"}"#),
            ("a: 1.", r#"{"a":"1."}"#),
            ("a: .5", r#"{"a":".5"}"#),
            ("a: 1e999", r#"{"a":"1e999"}"#),
            ("a: 1/2", r#"{"a":"1/2"}"#),
            // numbers
            ("a: 42 # c\nb: -1.5e3\nc: 0\nd: -0\ne: 2.5 ", r#"{"a":42,"b":-1500.0,"c":0,"d":0,"e":2.5}"#),
            ("a: 18446744073709551615\nb: -9223372036854775808", r#"{"a":18446744073709551615,"b":-9223372036854775808}"#),
            // one-line objects: literals end at ','
            ("{ a: 1, b: 2 }", r#"{"a":1,"b":2}"#),
            ("{a:true,b:null}", r#"{"a":true,"b":null}"#),
            ("{ a: 1, b: x\n}", r#"{"a":1,"b":"x"}"#),
            ("{\"a\":\"x\" \"b\":\"y\"}", r#"{"a":"x","b":"y"}"#),
            // arrays
            ("[1, 2, 3]", "[1,2,3]"),
            ("[1,2,]", "[1,2]"),
            ("[\n  a\n  b c\n  3\n]", r#"["a","b c",3]"#),
            ("a: []\nb: {}\nc: [[1], [2, [3]]]", r#"{"a":[],"b":{},"c":[[1],[2,[3]]]}"#),
            // quoted strings and keys
            (r#"a: "x\ty\u00e9\"\ud83d\ude00" "#, r#"{"a":"x\ty\u00e9\"\ud83d\ude00"}"#),
            ("a: 'single'\nb: 'it\\'s'\nc: 'has \"dq\"'\nd: ''", r#"{"a":"single","b":"it's","c":"has \"dq\"","d":""}"#),
            ("\"a b\": 1\n'c.d': 2", r#"{"a b":1,"c.d":2}"#),
            ("a: \"1\"", r#"{"a":"1"}"#),
            // multiline strings
            ("text:\n  '''\n  line one\n    indented\n\n  line three\n  '''\n", r#"{"text":"line one\n  indented\n\nline three"}"#),
            ("a: '''single'''", r#"{"a":"single"}"#),
            ("a: '''  first\n     second\n   '''", r#"{"a":"first\n  second"}"#),
            ("a: '''\r\n   x\r\n   y\r\n   '''", r#"{"a":"x\ny"}"#),
            ("a: '''it's ''ok'''", r#"{"a":"it's ''ok"}"#),
            // root with braces, CRLF, BOM
            ("{\n  a: 1\n}\n# end", r#"{"a":1}"#),
            ("\u{feff}a: x \r\nb: 2\r\n", r#"{"a":"x","b":2}"#),
            // nested arrays of objects over lines
            (
                "next: [\n  {\n    acs: AR2\n    next: loginTwoFactorAuthOTP\n  }\n  {\n    next: fullLoginSequenceLoginArt\n  }\n]\n",
                r#"{"next":[{"acs":"AR2","next":"loginTwoFactorAuthOTP"},{"next":"fullLoginSequenceLoginArt"}]}"#,
            ),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn parse_error_cases() {
        let cases: &[(&str, &str)] = &[
            ("listen x", r#"1:8: expected ':' after key "listen""#),
            ("listen", r#"1:7: expected ':' after key "listen""#),
            ("a: \"abc", "1:4: unterminated string"),
            ("a: \"abc\nb: 1", "1:4: unterminated string"),
            ("a: 'abc", "1:4: unterminated string"),
            ("a: 1\nb: '''\n  x", "2:4: unterminated multiline string"),
            ("a: 1 /* x", "1:6: unterminated comment"),
            ("a: \"\\q\"", r"1:5: invalid escape '\q'"),
            ("a: \"\\u12\"", "1:5: invalid unicode escape"),
            ("a: \"\\ud800\"", "1:5: invalid unicode escape"),
            ("a: 1\n}", "2:1: unexpected '}'"),
            ("{ a: 1 }}", "1:9: unexpected '}'"),
            ("a: }", "1:4: unexpected '}'"),
            ("a: ,", "1:4: unexpected ','"),
            ("[1,,2]", "1:4: unexpected ','"),
            (": 1", "1:1: unexpected ':'"),
            ("a:", "1:3: unexpected end of input, expected a value"),
            ("{ a: 1, b: x }", "1:15: unexpected end of input, expected '}' to close the object at 1:1"),
            ("x: [1, 2", "1:9: unexpected end of input, expected ']' to close the array at 1:4"),
            ("a: 1\nb: 2\na: 3", r#"3:1: a: duplicate key "a""#),
            ("s: {\n  x: 1\n  \"x\": 2\n}", r#"3:3: s.x: duplicate key "x""#),
        ];
        for (input, expected) in cases {
            match parse(input) {
                Ok(v) => panic!("{input:?}: expected error, got {v:?}"),
                Err(e) => assert_eq!(e.to_string(), *expected, "input: {input:?}"),
            }
        }
    }

    #[test]
    fn positions() {
        let src = "# head\nmenus: {\n  login: {\n    next: [\n      { acs: 1 }\n      'x'\n    ]\n  }\n}\n";
        let root = parse(src).unwrap();
        assert_eq!((root.line, root.col), (1, 1));
        let menus = root.get("menus").unwrap();
        assert_eq!((menus.line, menus.col), (2, 8));
        let (key, login) = menus.get_entry("login").unwrap();
        assert_eq!((key.line, key.col), (3, 3));
        assert_eq!((login.line, login.col), (3, 10));
        let next = login.get("next").unwrap();
        assert_eq!((next.line, next.col), (4, 11));
        let Node::Array(items) = &next.node else { panic!() };
        assert_eq!((items[0].line, items[0].col), (5, 7));
        assert_eq!((items[1].line, items[1].col), (6, 7));
        let acs = items[0].get("acs").unwrap();
        assert_eq!((acs.line, acs.col), (5, 14));
        assert!(matches!(&acs.node, Node::Number(n) if n.as_u64() == Some(1)));
        // a quoteless string swallows the rest of the line, including '}'
        let v = parse("a: [\n  { b: x }\n  }\n]").unwrap();
        let Node::Array(items) = &v.get("a").unwrap().node else { panic!() };
        assert_eq!(items[0].get("b").and_then(Spanned::as_str), Some("x }"));
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        listen: String,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        server: Server,
        #[serde(default)]
        menus: BTreeMap<String, Menu>,
        #[serde(default)]
        art: HashMap<String, Art>,
        #[serde(default)]
        mode: Mode,
        #[serde(default, deserialize_with = "de_duration")]
        timeout: u64,
    }

    #[derive(Deserialize, Debug, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Server {
        #[serde(default)]
        base_url: Option<String>,
        #[serde(default)]
        workers: u8,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Menu {
        #[serde(default)]
        next: Vec<Step>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Step {
        #[serde(default)]
        acs: Option<String>,
        next: String,
        #[serde(default)]
        timeout: u32,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Art {
        file: String,
    }

    #[derive(Deserialize, Debug, PartialEq, Default)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Normal,
        SlowMotion,
    }

    /// "30s" / "5m" → seconds.
    fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        let (num, mul) = match s.strip_suffix('s') {
            Some(n) => (n, 1),
            None => match s.strip_suffix('m') {
                Some(n) => (n, 60),
                None => (s.as_str(), 1),
            },
        };
        num.parse::<u64>()
            .map(|n| n * mul)
            .map_err(|_| serde::de::Error::custom(format!("invalid duration {s:?}")))
    }

    #[test]
    fn deserialize_ok() {
        let src = r#"
listen: 0.0.0.0:2323   # quoteless, with a comment-looking tail? no: ends the line
port: 2323
server: { base_url: "https://bbs.example", workers: 4 }
menus: {
  login: {
    next: [
      {
        acs: AR2
        next: loginTwoFactorAuthOTP
      }
      {
        next: fullLoginSequenceLoginArt
        timeout: 30
      }
    ]
  }
}
art: {
  "FOO.BAR": { file: foo.ans }
  plain: {
    file: plain.ans
  }
}
mode: slow_motion
timeout: 5m
"#;
        // `{ file: foo.ans }` on one line: the quoteless value runs to the
        // end of the line, swallowing the '}' — demonstrate the hjson rule.
        let err = from_str::<Cfg>(src).unwrap_err();
        assert_eq!(
            err.to_string(),
            "27:1: unexpected end of input, expected '}' to close the object at 19:6"
        );
        let src = src.replace("{ file: foo.ans }", "{ file: \"foo.ans\" }");
        let cfg: Cfg = from_str(&src).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:2323   # quoteless, with a comment-looking tail? no: ends the line");
        assert_eq!(cfg.port, 2323);
        assert_eq!(cfg.server.base_url.as_deref(), Some("https://bbs.example"));
        assert_eq!(cfg.server.workers, 4);
        let steps = &cfg.menus["login"].next;
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].acs.as_deref(), Some("AR2"));
        assert_eq!(steps[0].next, "loginTwoFactorAuthOTP");
        assert_eq!(steps[1].acs, None);
        assert_eq!(steps[1].timeout, 30);
        assert_eq!(cfg.art["FOO.BAR"].file, "foo.ans");
        assert_eq!(cfg.art["plain"].file, "plain.ans");
        assert_eq!(cfg.mode, Mode::SlowMotion);
        assert_eq!(cfg.timeout, 300);
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Wide {
        a: i8,
        b: u64,
        c: i64,
        d: u128,
        e: f64,
        f: u32,
        g: Option<u8>,
        h: Option<u8>,
        s: String,
        n: Newtype,
        t: (u8, String),
        keys: BTreeMap<u16, bool>,
        shape: Vec<Shape>,
        any: Vec<Any>,
        bytes: Vec<u8>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Newtype(String);

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Shape {
        Dot,
        Circle(f64),
        Rect { w: u32, h: u32 },
        Pair(u8, u8),
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Any {
        Int(i64),
        Float(f64),
        Text(String),
        List(Vec<Any>),
        Obj { x: i32 },
        Nothing(()),
        Flag(bool),
    }

    #[test]
    fn deserialize_many_types() {
        let src = r#"
a: -128
b: 18446744073709551615
c: -9223372036854775808
d: 1e3
e: 3
f: 4294967295
g: null
h: 7
s: 12345
n: newtype value
t: [1, "x"]
keys: { 80: true, 443: false }
shape: [
  dot
  { circle: 1.5 }
  { rect: { w: 2, h: 3 } }
  { pair: [1, 2] }
]
any: [1, -2, 2.5, "text", [1, "a"], { x: 5 }, null, true]
bytes: [1, 2, 255]
"#;
        let w: Wide = from_str(src).unwrap();
        assert_eq!(
            w,
            Wide {
                a: -128,
                b: u64::MAX,
                c: i64::MIN,
                d: 1000,
                e: 3.0,
                f: u32::MAX,
                g: None,
                h: Some(7),
                s: "12345".into(),
                n: Newtype("newtype value".into()),
                t: (1, "x".into()),
                keys: [(80, true), (443, false)].into_iter().collect(),
                shape: vec![
                    Shape::Dot,
                    Shape::Circle(1.5),
                    Shape::Rect { w: 2, h: 3 },
                    Shape::Pair(1, 2)
                ],
                any: vec![
                    Any::Int(1),
                    Any::Int(-2),
                    Any::Float(2.5),
                    Any::Text("text".into()),
                    Any::List(vec![Any::Int(1), Any::Text("a".into())]),
                    Any::Obj { x: 5 },
                    Any::Nothing(()),
                    Any::Flag(true),
                ],
                bytes: vec![1, 2, 255],
            }
        );
    }

    #[test]
    fn subtree_deserialize() {
        let root = parse("menus: {\n  main: {\n    next: [ { nxt: x\n } ]\n  }\n}").unwrap();
        let main = root.get("menus").and_then(|m| m.get("main")).unwrap();
        let err = from_spanned_at::<Menu>(main, "menus.main").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"3:15: menus.main.next[0].nxt: unknown field "nxt", expected one of "acs", "next", "timeout""#
        );
        let err = from_spanned::<Menu>(main).unwrap_err();
        assert_eq!(err.path, "next[0].nxt");
        assert_eq!(join_key("", "FOO.BAR"), r#"["FOO.BAR"]"#);
        assert_eq!(join_key("art", "a b"), r#"art["a b"]"#);
        assert_eq!(join_key("art", "ok_key-1"), "art.ok_key-1");
        assert_eq!(join_index("", 2), "[2]");
    }

    #[test]
    fn deserialize_error_cases() {
        let cases: &[(&str, &str)] = &[
            // unknown fields: at the key, path includes the key
            ("listn: x", r#"1:1: listn: unknown field "listn", expected one of "listen", "port", "server", "menus", "art", "mode", "timeout""#),
            ("listen: x\nserver: {\n  base_url: x\n  listn: 1\n}", r#"4:3: server.listn: unknown field "listn", expected one of "base_url", "workers""#),
            ("listen: x\nart: {\n  \"FOO.BAR\": {\n    file: a\n    size: 1\n  }\n}", r#"5:5: art["FOO.BAR"].size: unknown field "size", expected "file""#),
            // type errors at depth, with array index
            (
                "listen: x\nmenus: {\n  login: {\n    next: [\n      { next: a\n      }\n      {\n        next: b\n        timeout: soon\n      }\n    ]\n  }\n}",
                r#"9:18: menus.login.next[1].timeout: invalid type: string "soon", expected u32"#,
            ),
            ("listen: x\nmenus: { m: { next: [ { next: [] } ] } }", r#"2:31: menus.m.next[0].next: invalid type: array, expected a string"#),
            ("listen: x\nserver: 5", "2:9: server: invalid type: integer 5, expected struct Server"),
            ("listen: [1]", "1:9: listen: invalid type: array, expected a string"),
            // missing fields: at the object lacking it
            ("listen: x\nmenus: {\n  login: {\n    next: [\n      {\n        acs: AR2\n      }\n    ]\n  }\n}", r#"5:7: menus.login.next[0]: missing field "next""#),
            ("port: 1", r#"1:1: missing field "listen""#),
            ("{\n  port: 1\n}", r#"1:1: missing field "listen""#),
            // integers
            ("listen: x\nport: 70000", "2:7: port: integer 70000 is out of range for u16"),
            ("listen: x\nport: -1", "2:7: port: integer -1 is out of range for u16"),
            ("listen: x\nport: 80.5", "2:7: port: invalid type: number 80.5, expected u16"),
            ("listen: x\nport: 99999999999999999999999999999999999999999", "2:7: port: integer 99999999999999999999999999999999999999999 is out of range for u16"),
            ("listen: x\nport: eighty", r#"2:7: port: invalid type: string "eighty", expected u16"#),
            ("listen: x\nserver: { workers: 256 }", "2:20: server.workers: integer 256 is out of range for u8"),
            // enums
            ("listen: x\nmode: fast", r#"2:7: mode: unknown variant "fast", expected one of "normal", "slow_motion""#),
            ("listen: x\nmode: 3", "2:7: mode: invalid type: integer 3, expected enum Mode"),
            // deserialize_with custom error at the value
            ("listen: x\ntimeout: soonish", r#"2:10: timeout: invalid duration "soonish""#),
            // syntax errors pass through
            ("listen: x\nport 1", r#"2:6: expected ':' after key "port""#),
            ("listen: x\nlisten: y", r#"2:1: listen: duplicate key "listen""#),
        ];
        for (input, expected) in cases {
            match from_str::<Cfg>(input) {
                Ok(v) => panic!("{input:?}: expected error, got {v:?}"),
                Err(e) => assert_eq!(e.to_string(), *expected, "input: {input:?}"),
            }
        }
    }

    #[test]
    fn untagged_and_tagged_errors() {
        let e = from_str::<BTreeMap<String, Shape>>("s: { rect: { w: 1, h: x\n} }").unwrap_err();
        assert_eq!(e.to_string(), r#"1:23: s.rect.h: invalid type: string "x", expected u32"#);
        let e = from_str::<BTreeMap<String, Shape>>("s: { circle: 1, dot: 2 }").unwrap_err();
        assert_eq!(e.to_string(), "1:4: s: invalid type: object, expected enum Shape");
        let e = from_str::<BTreeMap<String, Shape>>("s: dot2").unwrap_err();
        assert_eq!(e.to_string(), r#"1:4: s: unknown variant "dot2", expected one of "dot", "circle", "rect", "pair""#);
        let e = from_str::<Vec<Any>>("[1, { y: 2 }]").unwrap_err();
        assert_eq!(e.to_string(), "1:5: [1]: data did not match any variant of untagged enum Any");
        let e = from_str::<(u8, u8)>("[1, 2, 3]").unwrap_err();
        assert_eq!(e.to_string(), "1:1: invalid length 3, expected fewer elements in array");
    }
}

