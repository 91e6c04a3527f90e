//! The HTML pages. Plain HTML5, no script, one stylesheet served by the
//! daemon. Every interpolated value goes through `escape`.

use std::fmt::Write as _;

use crate::core::mfa::EnrollView;

/// The stylesheet served at `/static/style.css` (the CSP forbids inline styles).
pub(super) const STYLE_CSS: &str = "\
:root { color-scheme: light dark; }
body { font-family: system-ui, sans-serif; line-height: 1.5; margin: 0; padding: 1rem; }
main { max-width: 40rem; margin: 0 auto; }
h1 { font-size: 1.5rem; }
code, .secret, .codes { font-family: ui-monospace, monospace; }
.secret { font-size: 1.2rem; letter-spacing: 0.05em; word-spacing: 0.4em; overflow-wrap: anywhere; }
.qr svg { width: 16rem; height: 16rem; max-width: 100%; background: #fff; padding: 0.5rem; }
.error { border-left: 0.3rem solid #c00; padding: 0.5rem 1rem; background: rgba(200, 0, 0, 0.08); }
.note { border-left: 0.3rem solid #c80; padding: 0.5rem 1rem; background: rgba(200, 130, 0, 0.08); }
.codes li { font-size: 1.1rem; }
label { display: block; font-weight: bold; margin-top: 1rem; }
input[type=text] { font-size: 1.3rem; font-family: ui-monospace, monospace; width: 12ch; padding: 0.3rem; }
#key-name { width: 24ch; font-family: inherit; font-size: 1rem; }
[hidden] { display: none !important; }
button { font-size: 1rem; padding: 0.4rem 1.2rem; margin-top: 0.8rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: bold; }
dd { margin: 0; }
";

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn escape(s: &str) -> String {
    crate::model::html_escape(s)
}

/// The secret in groups of four for typing by hand.
pub(super) fn group4(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().filter(|c| !c.is_whitespace() && *c != '=').collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The otpauth URI as an inline SVG QR code (no XML declaration, with an
/// accessible name). None when the URI does not fit in a QR code.
pub(super) fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    let start = svg.find("<svg")?;
    let svg = &svg[start..];
    Some(svg.replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"QR code to scan with your authenticator app\" ",
        1,
    ))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"referrer\" content=\"no-referrer\">\n\
<title>{title} · Portcullis</title>\n\
<link rel=\"icon\" href=\"data:,\">\n\
<link rel=\"stylesheet\" href=\"/static/style.css\">\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

fn method_label(method: &str) -> &'static str {
    match method {
        "totp" => "time-based (TOTP)",
        "hotp" => "counter-based (HOTP)",
        _ => "one-time codes",
    }
}

/// What the link itself shows (GET): a button and nothing secret, so
/// that mail scanners and link previews that fetch it learn nothing. The
/// secret appears only after the POST this form sends (with the CSRF value).
pub(super) fn enroll_continue(csrf: &str) -> String {
    let mut b = String::new();
    b.push_str("<h1>Set up one-time codes</h1>\n");
    b.push_str(
        "<p>This link turns on two-factor sign-in for your account. Continue to see the key \
to add to your authenticator app.</p>\n",
    );
    let _ = writeln!(
        b,
        "<form method=\"post\">\n<input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
<button type=\"submit\">Continue</button>\n</form>",
        escape(csrf)
    );
    page("Set up one-time codes", &b)
}

/// The enrollment page: QR code, secret for manual entry, and the form.
/// `error` (plain text) is shown above the form.
pub(super) fn enroll(view: &EnrollView, csrf: &str, error: Option<&str>) -> String {
    let mut b = String::new();
    b.push_str("<h1>Set up one-time codes</h1>\n");
    let _ = writeln!(
        b,
        "<p>Account <strong>{}</strong> at <strong>{}</strong>. Add it to your authenticator app, \
then type the code the app shows to finish.</p>",
        escape(&view.username),
        escape(&view.issuer)
    );
    b.push_str("<h2>1. Scan this code</h2>\n");
    match qr_svg(&view.otpauth_uri) {
        Some(svg) => {
            let _ = writeln!(b, "<div class=\"qr\">{svg}</div>");
        }
        None => b.push_str("<p>The QR code could not be drawn; use the key below.</p>\n"),
    }
    b.push_str("<h2>2. Or enter the key by hand</h2>\n<dl>\n");
    let _ = writeln!(
        b,
        "<dt>Key</dt><dd><code class=\"secret\">{}</code></dd>",
        escape(&group4(&view.secret_base32))
    );
    let _ = writeln!(b, "<dt>Type</dt><dd>{}</dd>", escape(method_label(view.method.as_str())));
    let _ = writeln!(b, "<dt>Digits</dt><dd>{}</dd>", view.digits);
    b.push_str("</dl>\n<h2>3. Confirm</h2>\n");
    if let Some(error) = error {
        let _ = writeln!(b, "<p class=\"error\" role=\"alert\">{}</p>", escape(error));
    }
    let _ = writeln!(
        b,
        "<form method=\"post\">\n<input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
<label for=\"code\">Code from your app</label>\n\
<input type=\"text\" id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" \
maxlength=\"{}\" required autofocus>\n<button type=\"submit\">Turn on two-factor sign-in</button>\n</form>",
        escape(csrf),
        view.digits.saturating_add(4)
    );
    page("Set up one-time codes", &b)
}

/// After a correct code: the backup codes, shown this once.
pub(super) fn confirmed(codes: &[String]) -> String {
    let mut b = String::from("<h1>Two-factor sign-in is on</h1>\n");
    b.push_str(
        "<p>From now on you sign in with your password and a code from your app.</p>\n\
<h2>Your backup codes</h2>\n<p class=\"note\" role=\"note\">Store these codes somewhere safe now (a password \
manager or on paper). Each works once, in place of a code from your app, if you lose your phone. \
<strong>They will not be shown again.</strong></p>\n<ol class=\"codes\">\n",
    );
    for code in codes {
        let _ = writeln!(b, "<li><code>{}</code></li>", escape(code));
    }
    b.push_str("</ol>\n");
    page("Two-factor sign-in is on", &b)
}

fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1>\n<p>{}</p>\n", escape(title), escape(text)),
    )
}

/// Same page for unknown, used, expired or wrong-purpose links.
pub(super) fn invalid_link() -> String {
    message(
        "Link not valid",
        "This link is not valid: it may have expired or been used. Ask for a new one from the account menu.",
    )
}

pub(super) fn too_many_tries() -> String {
    message(
        "Too many wrong codes",
        "Too many wrong codes were entered for this link. Ask for a new link from the account menu.",
    )
}

pub(super) fn unavailable() -> String {
    message(
        "Temporarily unavailable",
        "The service cannot answer right now. Please try again in a few minutes.",
    )
}

pub(super) fn csrf_failed() -> String {
    page(
        "Security check failed",
        "<h1>Security check failed</h1>\n<p>This form could not be verified: its security value is \
missing or does not match the one from the page. Nothing was changed.</p>\n<p>Open the link again \
(<a href=\"\">reload this page</a>), and make sure your browser accepts cookies from this site.</p>\n",
    )
}

pub(super) fn not_found() -> String {
    message("Not found", "There is no page at this address.")
}

pub(super) fn too_large() -> String {
    message("Request too large", "The form sent was too large.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        let cases = [
            ("", ""),
            ("plain text 123", "plain text 123"),
            ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
            ("a & b", "a &amp; b"),
            ("\"quoted\" 'single'", "&quot;quoted&quot; &#39;single&#39;"),
            ("&amp;", "&amp;amp;"),
            ("\" onmouseover=\"x", "&quot; onmouseover=&quot;x"),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "{input:?}");
        }
    }

    #[test]
    fn group4_table() {
        let cases = [
            ("", ""),
            ("ABC", "ABC"),
            ("ABCD", "ABCD"),
            ("ABCDEFGHIJ", "ABCD EFGH IJ"),
            ("JBSWY3DPEHPK3PXP", "JBSW Y3DP EHPK 3PXP"),
            ("JBSW Y3DP====", "JBSW Y3DP"),
        ];
        for (input, want) in cases {
            assert_eq!(group4(input), want, "{input:?}");
        }
    }

    fn view(name: &str) -> EnrollView {
        EnrollView {
            username: name.into(),
            method: crate::core::mfa::Method::Totp,
            secret_base32: "JBSWY3DPEHPK3PXP".into(),
            otpauth_uri: "otpauth://totp/Portcullis:alice?secret=JBSWY3DPEHPK3PXP&issuer=Portcullis".into(),
            digits: 6,
            issuer: "Portcullis <&>".into(),
        }
    }

    #[test]
    fn enroll_page_escapes_and_embeds_svg() {
        let html = enroll(&view("<b>alice</b>"), "tok\"en", Some("Wrong <code>"));
        assert!(html.contains("&lt;b&gt;alice&lt;/b&gt;"));
        assert!(!html.contains("<b>alice"));
        assert!(html.contains("Portcullis &lt;&amp;&gt;"));
        assert!(html.contains("value=\"tok&quot;en\""));
        assert!(html.contains("Wrong &lt;code&gt;"));
        assert!(html.contains("<svg role=\"img\""));
        assert!(!html.contains("<?xml"));
        assert!(html.contains("JBSW Y3DP EHPK 3PXP"));
        assert!(html.contains("time-based (TOTP)"));
        assert!(!html.contains("style="), "the CSP forbids inline styles");
        assert!(!html.contains("<script"));
    }

    #[test]
    fn continue_page_holds_no_secret() {
        let html = enroll_continue("tok\"en");
        assert!(html.contains("value=\"tok&quot;en\""));
        assert!(html.contains(">Continue</button>"));
        for absent in ["secret", "otpauth", "<svg", "name=\"code\"", "<script"] {
            assert!(!html.contains(absent), "{absent}");
        }
    }

    #[test]
    fn confirmed_page_lists_codes_escaped() {
        let html = confirmed(&["1111-2222".into(), "<x>".into()]);
        assert!(html.contains("<li><code>1111-2222</code></li>"));
        assert!(html.contains("<li><code>&lt;x&gt;</code></li>"));
        assert!(html.contains("will not be shown again"));
    }

    #[test]
    fn qr_of_a_huge_uri_is_none() {
        assert!(qr_svg(&"x".repeat(10_000)).is_none());
    }
}

/// The hardware key page of an enrollment link. Fetching it starts
/// nothing: the ceremony begins when a button is pressed (a POST from the
/// gate's script with the CSRF value). Without script, it says so.
pub(super) fn key_enroll(view: &crate::core::webauthn::KeyEnrollView, csrf: &str, base: &str) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<div id=\"key-enroll\" data-csrf=\"{}\" data-base=\"{}\">", escape(csrf), escape(base));
    b.push_str("<h1>Register a hardware key</h1>\n");
    let _ = writeln!(
        b,
        "<p>Account <strong>{}</strong>. {}</p>",
        escape(&view.username),
        match view.keys {
            0 => "It has no hardware key yet.".to_owned(),
            1 => "It has 1 hardware key; this adds another.".to_owned(),
            n => format!("It has {n} hardware keys; this adds another."),
        }
    );
    b.push_str("<noscript><p class=\"error\">Registering a key needs JavaScript (the browser talks to the key): turn it on for this page.</p></noscript>\n");
    b.push_str(
        "<form>\n<label for=\"key-name\">A name for the key (optional)</label>\n\
<input type=\"text\" id=\"key-name\" name=\"name\" maxlength=\"64\" autocomplete=\"off\" placeholder=\"Blue YubiKey\">\n\
<p><button type=\"button\" data-platform=\"false\" id=\"use-security-key\" disabled>Use a security key</button>\n\
<button type=\"button\" data-platform=\"true\" id=\"use-this-device\" disabled>Use this device (Touch ID, Windows Hello, passkey)</button></p>\n</form>\n",
    );
    b.push_str("<p id=\"status\" class=\"note\" role=\"status\" hidden></p>\n");
    b.push_str(
        "<div id=\"done\" hidden>\n<h2>Key registered</h2>\n<p>The key <strong class=\"key-name\"></strong> is now on your account. \
You can close this page; the link does not work again.</p>\n</div>\n",
    );
    b.push_str("</div>\n<script src=\"/static/webauthn.js\"></script>\n");
    page("Register a hardware key", &b)
}

/// The approval page of an SSH login waiting for a hardware key: the code
/// to compare with the terminal's, who, from where, with what; approve
/// (a touch) or refuse.
pub(super) fn key_approve(view: &crate::core::webauthn::ApprovalView, csrf: &str, base: &str) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<div id=\"key-approve\" data-csrf=\"{}\" data-base=\"{}\">", escape(csrf), escape(base));
    b.push_str("<h1>Approve a login</h1>\n");
    let _ = writeln!(b, "<p class=\"secret\" id=\"code\">{}</p>", escape(&view.code));
    b.push_str("<p>Check that your terminal shows this same code. Approve only a login you are making yourself, now.</p>\n<dl>\n");
    let _ = writeln!(b, "<dt>Account</dt><dd id=\"account\">{}</dd>", escape(&view.username));
    let _ = writeln!(b, "<dt>From</dt><dd id=\"address\">{}</dd>", escape(&view.ip));
    let _ = writeln!(b, "<dt>Client</dt><dd id=\"client\">{}</dd>", escape(&crate::model::escape_control(&view.client)));
    let _ = writeln!(b, "<dt>Expires in</dt><dd>{}:{:02}</dd>", view.seconds_left / 60, view.seconds_left % 60);
    b.push_str("</dl>\n<noscript><p class=\"error\">Approving needs JavaScript (the browser talks to the key): turn it on for this page.</p></noscript>\n");
    b.push_str(
        "<p class=\"actions\"><button type=\"button\" id=\"approve\" disabled>Approve with my key</button>\n\
<button type=\"button\" id=\"deny\" disabled>This was not me</button></p>\n",
    );
    b.push_str("<p id=\"status\" class=\"note\" role=\"status\" hidden></p>\n<div id=\"done\" hidden><p></p></div>\n");
    b.push_str("</div>\n<script src=\"/static/webauthn.js\"></script>\n");
    page("Approve a login", &b)
}

/// An approval link that is unknown, used, expired, or whose login stopped waiting.
pub(super) fn approval_gone() -> String {
    message(
        "Approval not valid",
        "This approval is not valid any more: it was used, it expired, or the login that asked for it has ended. Connect again for a new link.",
    )
}
