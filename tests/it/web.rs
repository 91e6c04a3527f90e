//! The web front end against the real daemon.

use crate::harness::{curl, Gate};

fn config(web_extra: &str) -> String {
    format!(
        "data_dir: data\nssh: {{\n  listen: \"127.0.0.1:0\"\n  auth_rejection_time: 50ms\n  max_startups_per_address: 100\n  penalties: {{\n    max_failures: 1000\n  }}\n}}\npasswords: {{\n  iterations: 1000\n}}\nweb: {{\n  listen: \"127.0.0.1:0\"\n{web_extra}}}\n"
    )
}

/// `web.metrics_from_loopback: false` (a reverse proxy on the same host):
/// loopback needs the token like everyone else.
#[test]
fn metrics_from_loopback_can_be_turned_off() {
    const TOKEN: &str = "metrics-token-0123456789";
    let off = "  metrics_from_loopback: false\n".to_owned();
    let off_with_token = format!("{off}  metrics_token: {TOKEN}\n");
    let bearer = format!("Bearer {TOKEN}");
    // (config, Authorization header, status)
    let cases: Vec<(&str, Option<&str>, u16)> = vec![
        ("", None, 200),
        (&off, None, 403),
        (&off_with_token, None, 401),
        (&off_with_token, Some("Bearer wrong-token-0123456789"), 401),
        (&off_with_token, Some(&bearer), 200),
    ];
    for (extra, auth, status) in &cases {
        let mut g = Gate::start_with(&config(extra));
        let header = auth.map(|a| format!("Authorization: {a}"));
        let mut args = vec!["-k"];
        if let Some(h) = &header {
            args.extend(["-H", h.as_str()]);
        }
        let r = curl(&g.web_url("/metrics"), &args);
        assert_eq!(r.status, *status, "{extra:?} {auth:?}: {r:#?}");
        if *status == 200 {
            assert!(r.body.contains("portcullis_users"), "{}", r.body);
        } else {
            assert!(!r.body.contains("portcullis_users"), "{}", r.body);
        }
        g.stop();
    }
}
