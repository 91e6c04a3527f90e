//! The hjson parser: source text to a [`Spanned`] tree with positions.

use super::*;

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

fn is_punct(c: char) -> bool {
    matches!(c, '{' | '}' | '[' | ']' | ',' | ':')
}

fn show_char(c: char) -> String {
    format!("'{}'", c.escape_debug())
}

fn is_json_number(t: &str) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

fn literal(t: &str) -> Option<Node> {
    match t {
        "true" => Some(Node::Bool(true)),
        "false" => Some(Node::Bool(false)),
        "null" => Some(Node::Null),
        _ if is_json_number(t) && t.parse::<f64>().is_ok_and(f64::is_finite) => {
            Some(Node::Number(Number { text: t.to_string() }))
        }
        _ => None,
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    col: usize,
    depth: usize,
}

impl Parser {
    fn new(src: &str) -> Self {
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        Parser {
            chars: src.chars().collect(),
            pos: 0,
            line: 1,
            col: 1,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += 1;
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
    }

    fn err_here<T>(&self, msg: impl Into<String>) -> Result<T, Error> {
        Err(Error::new(self.line, self.col, "", msg))
    }

    fn unexpected<T>(&self) -> Result<T, Error> {
        match self.peek() {
            None => self.err_here("unexpected end of input"),
            Some(c) => self.err_here(format!("unexpected {}", show_char(c))),
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    /// Skips whitespace (including newlines) and comments.
    fn skip_ws(&mut self) -> Result<(), Error> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => self.bump(),
                Some('#') => self.skip_line(),
                Some('/') if self.peek_at(1) == Some('/') => self.skip_line(),
                Some('/') if self.peek_at(1) == Some('*') => {
                    let (line, col) = (self.line, self.col);
                    self.bump();
                    self.bump();
                    loop {
                        match self.peek() {
                            None => return Err(Error::new(line, col, "", "unterminated comment")),
                            Some('*') if self.peek_at(1) == Some('/') => {
                                self.bump();
                                self.bump();
                                break;
                            }
                            Some(_) => self.bump(),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err_here("nesting too deep");
        }
        Ok(())
    }

    fn root(&mut self) -> Result<Spanned, Error> {
        self.skip_ws()?;
        match self.peek() {
            Some('{') | Some('[') => {
                let v = self.value("")?;
                self.skip_ws()?;
                if self.peek().is_some() {
                    return self.unexpected();
                }
                Ok(v)
            }
            _ => {
                let members = self.object_body(false, "", (1, 1))?;
                Ok(Spanned {
                    line: 1,
                    col: 1,
                    node: Node::Object(members),
                })
            }
        }
    }

    fn value(&mut self, path: &str) -> Result<Spanned, Error> {
        let (line, col) = (self.line, self.col);
        let node = match self.peek() {
            None => return self.err_here("unexpected end of input, expected a value"),
            Some('{') => {
                self.enter()?;
                self.bump();
                let members = self.object_body(true, path, (line, col))?;
                self.depth -= 1;
                Node::Object(members)
            }
            Some('[') => {
                self.enter()?;
                self.bump();
                let items = self.array_body(path, (line, col))?;
                self.depth -= 1;
                Node::Array(items)
            }
            Some('"') => Node::String(self.quoted('"')?),
            Some('\'') => {
                if self.peek_at(1) == Some('\'') && self.peek_at(2) == Some('\'') {
                    Node::String(self.multiline()?)
                } else {
                    Node::String(self.quoted('\'')?)
                }
            }
            Some(c) if is_punct(c) => return self.unexpected(),
            Some(_) => self.quoteless(),
        };
        Ok(Spanned { line, col, node })
    }

    fn object_body(
        &mut self,
        braced: bool,
        path: &str,
        open: (usize, usize),
    ) -> Result<Vec<(SpannedKey, Spanned)>, Error> {
        let mut members: Vec<(SpannedKey, Spanned)> = Vec::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                None if braced => {
                    return self.err_here(format!(
                        "unexpected end of input, expected '}}' to close the object at {}:{}",
                        open.0, open.1
                    ))
                }
                None => return Ok(members),
                Some('}') if braced => {
                    self.bump();
                    return Ok(members);
                }
                _ => {}
            }
            let key = self.key()?;
            let key_path = join_key(path, &key.name);
            if members.iter().any(|(k, _)| k.name == key.name) {
                return Err(Error::new(
                    key.line,
                    key.col,
                    key_path,
                    format!("duplicate key {}", quote(&key.name)),
                ));
            }
            self.skip_ws()?;
            if self.peek() != Some(':') {
                return self.err_here(format!("expected ':' after key {}", quote(&key.name)));
            }
            self.bump();
            self.skip_ws()?;
            let value = self.value(&key_path)?;
            members.push((key, value));
            self.skip_ws()?;
            if self.peek() == Some(',') {
                self.bump();
            }
        }
    }

    fn array_body(&mut self, path: &str, open: (usize, usize)) -> Result<Vec<Spanned>, Error> {
        let mut items = Vec::new();
        loop {
            self.skip_ws()?;
            match self.peek() {
                None => {
                    return self.err_here(format!(
                        "unexpected end of input, expected ']' to close the array at {}:{}",
                        open.0, open.1
                    ))
                }
                Some(']') => {
                    self.bump();
                    return Ok(items);
                }
                _ => {}
            }
            let item = self.value(&join_index(path, items.len()))?;
            items.push(item);
            self.skip_ws()?;
            if self.peek() == Some(',') {
                self.bump();
            }
        }
    }

    fn key(&mut self) -> Result<SpannedKey, Error> {
        let (line, col) = (self.line, self.col);
        let name = match self.peek() {
            Some(q @ ('"' | '\'')) => self.quoted(q)?,
            _ => {
                let mut name = String::new();
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || is_punct(c) {
                        break;
                    }
                    name.push(c);
                    self.bump();
                }
                if name.is_empty() {
                    return self.unexpected();
                }
                name
            }
        };
        Ok(SpannedKey { line, col, name })
    }

    fn quoteless(&mut self) -> Node {
        let mut s = String::new();
        loop {
            let c = self.peek();
            let eol = matches!(c, None | Some('\n') | Some('\r'));
            let stop = eol
                || matches!(c, Some(',' | '}' | ']' | '#'))
                || (c == Some('/') && matches!(self.peek_at(1), Some('/' | '*')));
            if stop {
                if let Some(node) = literal(s.trim_end()) {
                    return node;
                }
            }
            match c {
                Some(c) if !eol => {
                    s.push(c);
                    self.bump();
                }
                _ => {
                    s.truncate(s.trim_end().len());
                    return Node::String(s);
                }
            }
        }
    }

    fn hex4(&mut self, at: (usize, usize)) -> Result<u32, Error> {
        let mut v = 0;
        for _ in 0..4 {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(d) => {
                    v = v * 16 + d;
                    self.bump();
                }
                None => return Err(Error::new(at.0, at.1, "", "invalid unicode escape")),
            }
        }
        Ok(v)
    }

    fn unicode_escape(&mut self, at: (usize, usize)) -> Result<char, Error> {
        let bad = || Error::new(at.0, at.1, "", "invalid unicode escape");
        let hi = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.peek() != Some('\\') || self.peek_at(1) != Some('u') {
                return Err(bad());
            }
            self.bump();
            self.bump();
            let lo = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(bad());
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(bad)
    }

    /// A `"` or `'` quoted string with JSON escapes (plus `\'`).
    fn quoted(&mut self, q: char) -> Result<String, Error> {
        let (line, col) = (self.line, self.col);
        let unterminated = || Error::new(line, col, "", "unterminated string");
        self.bump();
        let mut s = String::new();
        loop {
            match self.peek() {
                None | Some('\n') | Some('\r') => return Err(unterminated()),
                Some(c) if c == q => {
                    self.bump();
                    return Ok(s);
                }
                Some('\\') => {
                    let at = (self.line, self.col);
                    self.bump();
                    let e = self.peek();
                    self.bump();
                    let c = match e {
                        Some('"') => '"',
                        Some('\'') => '\'',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape(at)?,
                        None | Some('\n') | Some('\r') => return Err(unterminated()),
                        Some(c) => {
                            return Err(Error::new(
                                at.0,
                                at.1,
                                "",
                                format!("invalid escape '\\{}'", c.escape_debug()),
                            ))
                        }
                    };
                    s.push(c);
                }
                Some(c) => {
                    s.push(c);
                    self.bump();
                }
            }
        }
    }

    /// A `'''` string; we are at the first quote.
    fn multiline(&mut self) -> Result<String, Error> {
        let (line, col) = (self.line, self.col);
        let indent = col - 1;
        for _ in 0..3 {
            self.bump();
        }
        while let Some(c) = self.peek() {
            if c == '\n' || !c.is_whitespace() {
                break;
            }
            self.bump();
        }
        if self.peek() == Some('\n') {
            self.bump();
            self.skip_indent(indent);
        }
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err(Error::new(line, col, "", "unterminated multiline string")),
                Some('\'') if self.peek_at(1) == Some('\'') && self.peek_at(2) == Some('\'') => {
                    for _ in 0..3 {
                        self.bump();
                    }
                    if s.ends_with('\n') {
                        s.pop();
                    }
                    return Ok(s);
                }
                Some('\n') => {
                    s.push('\n');
                    self.bump();
                    self.skip_indent(indent);
                }
                Some('\r') => self.bump(),
                Some(c) => {
                    s.push(c);
                    self.bump();
                }
            }
        }
    }

    fn skip_indent(&mut self, n: usize) {
        for _ in 0..n {
            match self.peek() {
                Some(c) if c != '\n' && c.is_whitespace() => self.bump(),
                _ => break,
            }
        }
    }
}

/// Parses hjson source into a tree with positions.
pub fn parse(src: &str) -> Result<Spanned, Error> {
    Parser::new(src).root()
}
