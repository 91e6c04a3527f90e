//! The menu graph: `config::menu` definitions compiled into menus whose
//! ACS strings are parsed, art names resolved and `next` links checked.
//! Every problem is reported with its position; a flow that could loop
//! without the user doing anything, or a `next` that can match nothing, is
//! a config error rather than a runtime surprise.

use crate::config::menu::{position, ArtSpec, LoadedMenu, MenuSource, NextItem, NextSpec, Step};
use crate::acs::Acs;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const START: &str = "login";

/// The compiled menus, replaced as a whole on SIGHUP.
pub type SharedMenus = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Menus>>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Module {
    /// Show the art, wait `pause` seconds for a key (0: none), go on.
    Art,
    Welcome,
    Menu,
    LoginTwoFactorAuthOtp,
    Account,
    Exec,
    Telnet,
    Logoff,
}

impl Module {
    fn parse(s: &str) -> Option<Module> {
        Some(match s {
            "art" => Module::Art,
            "welcome" => Module::Welcome,
            "menu" => Module::Menu,
            "loginTwoFactorAuthOTP" => Module::LoginTwoFactorAuthOtp,
            "account" => Module::Account,
            "exec" => Module::Exec,
            "telnet" => Module::Telnet,
            "logoff" => Module::Logoff,
            _ => return None,
        })
    }
    /// Modules that move on without the user doing anything.
    fn automatic(&self) -> bool {
        matches!(self, Module::Art)
    }
}

pub const MODULES: &[&str] = &["art", "welcome", "menu", "loginTwoFactorAuthOTP", "account", "exec", "telnet", "logoff"];

#[derive(Debug, Clone)]
pub enum Next {
    End,
    One(String),
    Random(Vec<String>),
    FirstMatch(Vec<(Option<Acs>, String)>),
}

#[derive(Debug, Clone)]
pub struct MenuOption {
    pub key: char,
    pub text: String,
    pub next: String,
    pub acs: Option<Acs>,
}

#[derive(Debug, Clone)]
pub struct Menu {
    pub name: String,
    pub art: Vec<(Option<Acs>, String)>,
    pub prompt: Option<String>,
    pub module: Module,
    pub guard: Option<Acs>,
    pub next: Next,
    pub options: Vec<MenuOption>,
    pub config: crate::config::menu::MenuConfig,
}

#[derive(Debug, Clone)]
pub struct Menus {
    pub menus: BTreeMap<String, Menu>,
    /// Warnings `config check` prints (e.g. ambiguous ACS precedence).
    pub warnings: Vec<String>,
}

struct Ctx<'a> {
    problems: Vec<String>,
    warnings: Vec<String>,
    art_exists: &'a dyn Fn(&str) -> bool,
}

fn at(m: &LoadedMenu, steps: &[Step<'_>]) -> String {
    let (line, col) = position(&m.node, steps);
    format!("{}:{line}:{col}", m.file)
}

fn path_of(m: &LoadedMenu, steps: &[Step<'_>]) -> String {
    let mut p = m.path.clone();
    for s in steps {
        match s {
            Step::Key(k) => p = crate::config::hjson::join_key(&p, k),
            Step::Index(i) => p = crate::config::hjson::join_index(&p, *i),
        }
    }
    p
}

impl Ctx<'_> {
    fn acs(&mut self, m: &LoadedMenu, steps: &[Step<'_>], text: &Option<String>) -> Option<Acs> {
        let text = text.as_ref()?;
        match Acs::parse(text) {
            Ok(a) => {
                if a.mixes_and_or_unparenthesised() {
                    self.warnings.push(format!(
                        "{}: {}: {:?} mixes '&' and '|' without parentheses: Portcullis reads it as (a & b) | c, ENiGMA½ as a & (b | c); add parentheses",
                        at(m, steps),
                        path_of(m, steps),
                        text
                    ));
                }
                Some(a)
            }
            Err(e) => {
                // The position of the string, and the column inside it.
                self.problems.push(format!("{}: {}: {e}", at(m, steps), path_of(m, steps)));
                None
            }
        }
    }

    fn art(&mut self, m: &LoadedMenu, steps: &[Step<'_>], name: &str) {
        if !(self.art_exists)(name) {
            self.problems.push(format!("{}: {}: no art named {name:?} (looked for {name}.ans and {name}.asc)", at(m, steps), path_of(m, steps)));
        }
    }
}

/// Compiles loaded menus. `art_exists` says whether an art name resolves.
pub fn compile(source: &MenuSource, art_exists: &dyn Fn(&str) -> bool) -> Result<Menus, Vec<String>> {
    let mut cx = Ctx { problems: Vec::new(), warnings: Vec::new(), art_exists };
    let mut menus = BTreeMap::new();
    for (name, m) in &source.menus {
        let d = &m.def;
        let module = match &d.module {
            None => Module::Art,
            Some(s) => match Module::parse(s) {
                Some(x) => x,
                None => {
                    cx.problems.push(format!("{}: {}: unknown module {s:?}, expected one of {}", at(m, &[Step::Key("module")]), path_of(m, &[Step::Key("module")]), MODULES.join(", ")));
                    Module::Art
                }
            },
        };
        let mut art = Vec::new();
        match &d.art {
            None => {}
            Some(ArtSpec::Name(n)) => {
                cx.art(m, &[Step::Key("art")], n);
                art.push((None, n.clone()));
            }
            Some(ArtSpec::Conditional(list)) => {
                for (i, c) in list.iter().enumerate() {
                    let acs = cx.acs(m, &[Step::Key("art"), Step::Index(i), Step::Key("acs")], &c.acs);
                    cx.art(m, &[Step::Key("art"), Step::Index(i), Step::Key("art")], &c.art);
                    art.push((acs, c.art.clone()));
                }
            }
        }
        let guard = cx.acs(m, &[Step::Key("config"), Step::Key("acs")], &d.config.acs);
        let next = match &d.next {
            None => Next::End,
            Some(NextSpec::One(n)) => Next::One(n.clone()),
            Some(NextSpec::Many(items)) if items.iter().all(|i| matches!(i, NextItem::Name(_))) => {
                Next::Random(items.iter().filter_map(|i| if let NextItem::Name(n) = i { Some(n.clone()) } else { None }).collect())
            }
            Some(NextSpec::Many(items)) => {
                let mut list = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        NextItem::Conditional(c) => {
                            let acs = cx.acs(m, &[Step::Key("next"), Step::Index(i), Step::Key("acs")], &c.acs);
                            list.push((acs.or(None), c.next.clone(), c.acs.is_some()));
                        }
                        NextItem::Name(n) => list.push((None, n.clone(), false)),
                    }
                }
                if list.last().is_some_and(|(_, _, has_acs)| *has_acs) {
                    cx.problems.push(format!(
                        "{}: {}: every entry has an acs, so a user matching none has nowhere to go; end the list with an entry without acs",
                        at(m, &[Step::Key("next")]),
                        path_of(m, &[Step::Key("next")])
                    ));
                }
                Next::FirstMatch(list.into_iter().map(|(a, n, _)| (a, n)).collect())
            }
        };
        let mut options = Vec::new();
        let mut keys = BTreeSet::new();
        for (i, o) in d.options.iter().enumerate() {
            let mut chars = o.key.chars();
            let key = match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_alphanumeric() => c.to_ascii_uppercase(),
                _ => {
                    cx.problems.push(format!("{}: {}: a key is one letter or digit", at(m, &[Step::Key("options"), Step::Index(i), Step::Key("key")]), path_of(m, &[Step::Key("options"), Step::Index(i), Step::Key("key")])));
                    continue;
                }
            };
            if !keys.insert(key) {
                cx.problems.push(format!("{}: {}: key {key:?} is used twice", at(m, &[Step::Key("options"), Step::Index(i), Step::Key("key")]), path_of(m, &[Step::Key("options"), Step::Index(i), Step::Key("key")])));
            }
            let acs = cx.acs(m, &[Step::Key("options"), Step::Index(i), Step::Key("acs")], &o.acs);
            options.push(MenuOption { key, text: o.text.clone(), next: o.next.clone(), acs });
        }
        match module {
            Module::Menu if options.is_empty() => cx.problems.push(format!("{}: {}: a menu module needs options", at(m, &[]), m.path)),
            Module::Exec if d.config.program.is_none() => cx.problems.push(format!("{}: {}: an exec door needs config.program", at(m, &[Step::Key("config")]), path_of(m, &[Step::Key("config")]))),
            Module::Telnet if d.config.host.is_none() || d.config.port.is_none() => {
                cx.problems.push(format!("{}: {}: a telnet door needs config.host and config.port", at(m, &[Step::Key("config")]), path_of(m, &[Step::Key("config")])))
            }
            _ => {}
        }
        menus.insert(name.clone(), Menu { name: name.clone(), art, prompt: d.prompt.clone(), module, guard, next, options, config: d.config.clone() });
    }
    // Every link leads somewhere.
    for (name, menu) in &menus {
        let m = &source.menus[name];
        let mut check = |target: &str, steps: &[Step<'_>]| {
            if !menus.contains_key(target) {
                cx.problems.push(format!("{}: {}: unknown menu {target:?}", at(m, steps), path_of(m, steps)));
            }
        };
        match &menu.next {
            Next::End => {}
            Next::One(n) => check(n, &[Step::Key("next")]),
            Next::Random(list) => list.iter().enumerate().for_each(|(i, n)| check(n, &[Step::Key("next"), Step::Index(i)])),
            Next::FirstMatch(list) => list.iter().enumerate().for_each(|(i, (_, n))| check(n, &[Step::Key("next"), Step::Index(i), Step::Key("next")])),
        }
        for (i, o) in menu.options.iter().enumerate() {
            check(&o.next, &[Step::Key("options"), Step::Index(i), Step::Key("next")]);
        }
    }
    if !menus.contains_key(START) && cx.problems.is_empty() {
        cx.problems.push(format!("menus: no menu named {START:?}: the flow starts there"));
    }
    // A cycle through menus that move on by themselves would spin forever.
    if cx.problems.is_empty() {
        for name in menus.keys() {
            if let Some(cycle) = automatic_cycle(&menus, name) {
                let m = &source.menus[name];
                cx.problems.push(format!("{}: {}: the menus {} lead back to each other without waiting for the user", at(m, &[]), m.path, cycle.join(" -> ")));
                break;
            }
        }
    }
    if cx.problems.is_empty() {
        Ok(Menus { menus, warnings: cx.warnings })
    } else {
        Err(cx.problems)
    }
}

fn successors(menu: &Menu) -> Vec<&str> {
    match &menu.next {
        Next::End => vec![],
        Next::One(n) => vec![n.as_str()],
        Next::Random(l) => l.iter().map(String::as_str).collect(),
        Next::FirstMatch(l) => l.iter().map(|(_, n)| n.as_str()).collect(),
    }
}

fn automatic_cycle(menus: &BTreeMap<String, Menu>, start: &str) -> Option<Vec<String>> {
    fn walk<'a>(menus: &'a BTreeMap<String, Menu>, at: &'a str, start: &str, path: &mut Vec<&'a str>, seen: &mut BTreeSet<&'a str>) -> bool {
        let Some(m) = menus.get(at) else { return false };
        if !m.module.automatic() || m.config.pause.is_some_and(|p| p > 0) {
            return false;
        }
        for n in successors(m) {
            if n == start {
                path.push(n);
                return true;
            }
            if seen.insert(n) {
                path.push(n);
                if walk(menus, n, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = BTreeSet::new();
    if walk(menus, start, start, &mut path, &mut seen) {
        Some(path.into_iter().map(str::to_owned).collect())
    } else {
        None
    }
}

/// Loads and compiles the menus the settings name (built-in otherwise).
pub fn load(menus_path: Option<&Path>, art_dir: Option<&Path>) -> Result<Menus, Vec<String>> {
    let source = crate::config::menu::load(menus_path)?;
    compile(&source, &|name| super::art::exists(art_dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> Result<Menus, Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("menu.hjson");
        std::fs::write(&path, text).expect("write");
        let source = crate::config::menu::load(Some(&path)).map_err(|e| e.into_iter().map(|p| p.replace(&dir.path().display().to_string(), "")).collect::<Vec<_>>())?;
        compile(&source, &|name| ["CONNECT", "WELCOME", "OTP", "GOODBYE"].contains(&name)).map_err(|e| e.into_iter().map(|p| p.replace(&dir.path().display().to_string(), "")).collect())
    }

    #[test]
    fn shipped_menus_compile() {
        let menus = load(None, None).unwrap_or_else(|e| panic!("{e:#?}"));
        assert!(menus.menus.contains_key(START));
        assert!(menus.warnings.is_empty(), "{:?}", menus.warnings);
    }

    #[test]
    fn the_seed_example_works_as_written() {
        let text = r#"{
  menus: {
    login: {
      art: CONNECT
      next: [
        {
          // users with AR2+ must first pass 2FA/OTP
          acs: AR2
          next: loginTwoFactorAuthOTP
        }
        {
          // everyone else skips ahead
          next: fullLoginSequenceLoginArt
        }
      ]
    }
    loginTwoFactorAuthOTP: {
      art: OTP
      module: loginTwoFactorAuthOTP
      next: fullLoginSequenceLoginArt
    }
    fullLoginSequenceLoginArt: {
      art: WELCOME
      module: welcome
      next: logoff
    }
    logoff: {
      art: GOODBYE
      module: logoff
    }
  }
}
"#;
        let menus = compile_text(text).unwrap_or_else(|e| panic!("{e:#?}"));
        let Next::FirstMatch(list) = &menus.menus["login"].next else { panic!("first-match next") };
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].1, "loginTwoFactorAuthOTP");
        assert!(list[1].0.is_none());
    }

    #[test]
    fn bad_menus_are_refused_with_positions() {
        let base = |login: &str| format!("menus: {{\n  login: {{\n{login}\n  }}\n  logoff: {{\n    art: GOODBYE\n    module: logoff\n  }}\n}}\n");
        let cases: &[(&str, &str)] = &[
            (
                "    art: CONNECT\n    next: [\n      {\n        acs: XX2\n        next: logoff\n      }\n      {\n        next: logoff\n      }\n    ]",
                "/menu.hjson:6:14: menus.login.next[0].acs: column 1: unknown ACS code \"XX\"",
            ),
            ("    art: CONNECT\n    next: nowhere", "/menu.hjson:4:11: menus.login.next: unknown menu \"nowhere\""),
            ("    art: MISSING\n    next: logoff", "/menu.hjson:3:10: menus.login.art: no art named \"MISSING\" (looked for MISSING.ans and MISSING.asc)"),
            (
                "    art: CONNECT\n    next: [\n      {\n        acs: AR2\n        next: logoff\n      }\n    ]",
                "/menu.hjson:4:11: menus.login.next: every entry has an acs, so a user matching none has nowhere to go; end the list with an entry without acs",
            ),
            ("    art: CONNECT\n    module: frobnicate\n    next: logoff", "/menu.hjson:4:13: menus.login.module: unknown module \"frobnicate\", expected one of art, welcome, menu, loginTwoFactorAuthOTP, account, exec, telnet, logoff"),
            ("    art: CONNECT\n    colour: red", "/menu.hjson:4:5: menus.login.colour: unknown field \"colour\", expected one of \"art\", \"prompt\", \"module\", \"config\", \"next\", \"options\""),
            ("    art: CONNECT\n    next: login", "/menu.hjson:2:10: menus.login: the menus login -> login lead back to each other without waiting for the user"),
            (
                "    art: CONNECT\n    config: {\n      acs: \"AR2 & (AF1\"\n    }\n    next: logoff",
                "/menu.hjson:5:12: menus.login.config.acs: column 11: expected ')' to close '(' at column 7",
            ),
            (
                "    art: CONNECT\n    config: {\n      acs: \"\"\n    }\n    next: logoff",
                "/menu.hjson:5:12: menus.login.config.acs: column 1: empty ACS string: ENiGMA½ denies everyone for it; leave acs out to allow everyone, or write a condition",
            ),
            (
                "    art: CONNECT\n    next: [\n      {\n        acs: \"  \"\n        next: logoff\n      }\n      {\n        next: logoff\n      }\n    ]",
                "/menu.hjson:6:14: menus.login.next[0].acs: column 1: empty ACS string: ENiGMA½ denies everyone for it; leave acs out to allow everyone, or write a condition",
            ),
            (
                "    art: CONNECT\n    config: {\n      acs: NP5\n    }\n    next: logoff",
                "/menu.hjson:5:12: menus.login.config.acs: column 1: \"NP\" is an ENiGMA½ code that Portcullis does not support",
            ),
        ];
        for (login, want) in cases {
            match compile_text(&base(login)) {
                Ok(_) => panic!("menu should fail: {login}"),
                Err(e) => assert_eq!(e.join("\n"), *want, "menu {login:?}"),
            }
        }
    }

    #[test]
    fn ambiguous_precedence_warns() {
        let text = "menus: {\n  login: {\n    art: CONNECT\n    config: {\n      acs: \"AR1 & AF1 | SC\"\n    }\n    next: logoff\n  }\n  logoff: {\n    module: logoff\n  }\n}\n";
        let menus = compile_text(text).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(menus.warnings.len(), 1, "{:?}", menus.warnings);
        assert!(menus.warnings[0].contains("menus.login.config.acs"), "{}", menus.warnings[0]);
    }
}
