//! The hjson format of `menu.hjson`: menus (art, prompt, module, config,
//! next, options), shared by the login flow. This is the shape only; the
//! menu engine in `flow` parses ACS strings, resolves art and checks the
//! graph, reporting every problem with its position.

use super::hjson::{self, Spanned};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The built-in `config/menu.hjson`.
pub const DEFAULT_MENUS: &str = include_str!("../../config/menu.hjson");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuDef {
    /// An art name, or `[ { acs, art } ... ]` taken first-match.
    #[serde(default)]
    pub art: Option<ArtSpec>,
    /// Text shown after the art (menus with options).
    #[serde(default)]
    pub prompt: Option<String>,
    /// What the menu does; `art` (show art, then go on) when unset.
    #[serde(default)]
    pub module: Option<String>,
    #[serde(default)]
    pub config: MenuConfig,
    /// A menu name, an array of names (one picked at random), or an array
    /// of `{ acs, next }` taken first-match.
    #[serde(default)]
    pub next: Option<NextSpec>,
    /// Keys a `menu` module offers.
    #[serde(default)]
    pub options: Vec<OptionDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ArtSpec {
    Name(String),
    Conditional(Vec<ConditionalArt>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionalArt {
    #[serde(default)]
    pub acs: Option<String>,
    pub art: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NextSpec {
    One(String),
    Many(Vec<NextItem>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NextItem {
    Name(String),
    Conditional(ConditionalNext),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionalNext {
    #[serde(default)]
    pub acs: Option<String>,
    pub next: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuConfig {
    /// Who may enter this menu.
    #[serde(default)]
    pub acs: Option<String>,
    /// `exec` door: the program and its arguments.
    #[serde(default)]
    pub program: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// `telnet` door: the service behind the gate.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// `telnet` door: a line sent to the service first; `{username}` is
    /// replaced by the gate's user name.
    #[serde(default)]
    pub announce: Option<String>,
    /// Seconds to wait for a key on an art-only screen (0: go on at once).
    #[serde(default)]
    pub pause: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionDef {
    pub key: String,
    pub text: String,
    pub next: String,
    #[serde(default)]
    pub acs: Option<String>,
}

/// A menu with the source node it came from (for positions).
#[derive(Debug, Clone)]
pub struct LoadedMenu {
    pub name: String,
    pub def: MenuDef,
    pub node: Spanned,
    pub file: String,
    pub path: String,
}

/// All menus of a menu file and the files it includes.
#[derive(Debug, Clone, Default)]
pub struct MenuSource {
    pub menus: BTreeMap<String, LoadedMenu>,
}

/// Loads `menu.hjson` (the file, or the built-in copy when `path` is
/// `None`) and its `include`s (relative to the including file), reporting
/// every problem as `file:line:col: key.path: message`.
pub fn load(path: Option<&Path>) -> Result<MenuSource, Vec<String>> {
    let mut out = MenuSource::default();
    let mut problems = Vec::new();
    match path {
        Some(p) => load_file(p, &mut out, &mut problems, 0),
        None => load_text(DEFAULT_MENUS, "menu.hjson (built-in)", None, &mut out, &mut problems, 0),
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Like [`load`] for menu text named `name` (includes relative to the
/// working folder). For the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub fn load_str(text: &str, name: &str) -> Result<MenuSource, Vec<String>> {
    let mut out = MenuSource::default();
    let mut problems = Vec::new();
    load_text(text, name, None, &mut out, &mut problems, 0);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn load_file(path: &Path, out: &mut MenuSource, problems: &mut Vec<String>, depth: usize) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let name = path.display().to_string();
            load_text(&text, &name, path.parent().map(Path::to_path_buf), out, problems, depth)
        }
        Err(e) => problems.push(format!("{}: cannot read menu file: {e}", path.display())),
    }
}

fn load_text(text: &str, name: &str, folder: Option<PathBuf>, out: &mut MenuSource, problems: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        problems.push(format!("{name}: includes nested more than 8 deep"));
        return;
    }
    let root = match hjson::parse(text) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("{name}:{e}"));
            return;
        }
    };
    let hjson::Node::Object(members) = &root.node else {
        problems.push(format!("{name}:{}:{}: the menu file must be an object", root.line, root.col));
        return;
    };
    for (key, value) in members {
        match key.name.as_str() {
            "menus" => {
                let hjson::Node::Object(menus) = &value.node else {
                    problems.push(format!("{name}:{}:{}: menus: must be an object of menus", value.line, value.col));
                    continue;
                };
                for (mkey, mnode) in menus {
                    let path = hjson::join_key("menus", &mkey.name);
                    if out.menus.contains_key(&mkey.name) {
                        problems.push(format!("{name}:{}:{}: {path}: menu {:?} is defined twice", mkey.line, mkey.col, mkey.name));
                        continue;
                    }
                    match hjson::from_spanned_at::<MenuDef>(mnode, &path) {
                        Ok(def) => {
                            out.menus.insert(mkey.name.clone(), LoadedMenu { name: mkey.name.clone(), def, node: mnode.clone(), file: name.to_owned(), path });
                        }
                        Err(e) => problems.push(format!("{name}:{e}")),
                    }
                }
            }
            "include" => match hjson::from_spanned_at::<Vec<String>>(value, "include") {
                Ok(files) => {
                    for f in files {
                        let p = Path::new(&f);
                        let full = match (&folder, p.is_absolute()) {
                            (_, true) => p.to_path_buf(),
                            (Some(dir), false) => dir.join(p),
                            (None, false) => PathBuf::from(p),
                        };
                        load_file(&full, out, problems, depth + 1);
                    }
                }
                Err(e) => problems.push(format!("{name}:{e}")),
            },
            other => problems.push(format!("{name}:{}:{}: {other}: unknown field {other:?}, expected one of \"menus\", \"include\"", key.line, key.col)),
        }
    }
}

/// Position of a string value inside a menu node, following `steps`
/// (object keys and array indices), for error messages.
pub fn position(node: &Spanned, steps: &[Step<'_>]) -> (usize, usize) {
    let mut n = node;
    for s in steps {
        let next = match (s, &n.node) {
            (Step::Key(k), _) => n.get(k),
            (Step::Index(i), hjson::Node::Array(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(x) => n = x,
            None => break,
        }
    }
    (n.line, n.col)
}

pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}
