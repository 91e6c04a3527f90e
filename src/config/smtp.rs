//! The SMTP URL of `email.smtp`: parsed with the `url` crate and checked
//! for safety (no plaintext to a remote host unless allowed). Messages are
//! lowercase, name the URL with its password hidden, and never hold the
//! password.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Redacts the password of an SMTP URL for display: `smtp://user:***@host:25`.
/// Everything up to the last `@` counts as user information, so a password
/// holding `@`, `/` or `?` is still hidden.
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => format!("{prefix}{}:***{}", &userinfo[..colon], &rest[at..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// The parts of an SMTP URL that decide its safety.
struct UrlParts {
    scheme: String,
    host: String,
    tls: Option<String>,
}

/// Parses `scheme://[userinfo@]host[:port][/path][?query][#fragment]`.
fn split_url(url: &str) -> Result<UrlParts, String> {
    let shown = redact_url(url);
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("smtp url {shown:?} contains whitespace or a control character"));
    }
    let not_a_url = || format!("smtp url {shown:?} is not a url (expected smtp://host:port or smtps://host:port)");
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(url::ParseError::EmptyHost) => return Err(format!("smtp url {shown:?} has no host")),
        Err(url::ParseError::InvalidPort) => {
            return Err(format!("smtp url {shown:?} has an invalid port {:?}", port_text(url)));
        }
        Err(
            url::ParseError::InvalidIpv4Address
            | url::ParseError::InvalidIpv6Address
            | url::ParseError::InvalidDomainCharacter
            | url::ParseError::IdnaError,
        ) => return Err(format!("smtp url {shown:?} has an invalid host")),
        Err(_) => return Err(not_a_url()),
    };
    if parsed.cannot_be_a_base() || !url.contains("://") {
        return Err(not_a_url());
    }
    let scheme = parsed.scheme().to_owned();
    if scheme != "smtp" && scheme != "smtps" {
        return Err(format!("smtp url {shown:?} has unknown scheme {scheme:?} (expected smtp or smtps)"));
    }
    let host = match parsed.host() {
        None | Some(url::Host::Domain("")) => return Err(format!("smtp url {shown:?} has no host")),
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Domain(d)) => {
            if !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_') {
                return Err(format!("smtp url {shown:?} has an invalid host"));
            }
            d.to_owned()
        }
    };
    if parsed.port() == Some(0) {
        return Err(format!("smtp url {shown:?} has an invalid port \"0\""));
    }
    let tls = parsed.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
    Ok(UrlParts { scheme, host, tls })
}

/// The port text of a URL whose port did not parse, for the message: what
/// follows the last `:` of the host part.
fn port_text(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rfind('@').map_or(authority, |at| &authority[at + 1..]);
    let after_host = host_port.rfind(']').map_or(host_port, |i| &host_port[i + 1..]);
    after_host.rsplit_once(':').map_or("", |(_, p)| p)
}

fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// Checks an SMTP URL without connecting: it parses; a plaintext `smtp://`
/// URL (neither `smtps://` nor `?tls=required` / `?tls=opportunistic`) to a
/// host that is not loopback (127.0.0.0/8, ::1, "localhost") is refused
/// unless `allow_plaintext`.
pub fn check_url(url: &str, allow_plaintext: bool) -> Result<(), String> {
    let parts = split_url(url)?;
    let shown = redact_url(url);
    let encrypted = match (parts.scheme.as_str(), parts.tls.as_deref()) {
        ("smtps", _) => true,
        ("smtp", None) => false,
        ("smtp", Some("required" | "opportunistic")) => true,
        (_, Some(mode)) => {
            return Err(format!("smtp url {shown:?} has unknown tls mode {mode:?} (expected required or opportunistic)"));
        }
        (_, None) => false,
    };
    if !encrypted && !allow_plaintext && !is_loopback_host(&parts.host) {
        return Err(format!(
            "smtp url {shown:?} would send mail unencrypted to {}; use smtps:// or ?tls=required, or set allow_plaintext",
            parts.host
        ));
    }
    Ok(())
}
