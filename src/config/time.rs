//! Times as people read them: `2026-12-01 19:14` in the configured time
//! zone (`timezone`, an IANA name; unset: the machine's), with a relative
//! hint ("3 hours ago") where it helps. Machines get RFC 3339 UTC
//! (`Millis::rfc3339`), which nothing here changes.

use crate::model::Millis;

/// The time zone screens, mails and CLI tables use.
#[derive(Clone, Debug)]
pub struct Clock {
    tz: jiff::tz::TimeZone,
    name: String,
}

impl Clock {
    /// `name` an IANA time zone ("Europe/Stockholm", "UTC"); `None`: the
    /// machine's (`TZ`, then /etc/localtime; UTC when neither is set).
    pub fn new(name: Option<&str>) -> Result<Clock, String> {
        match name {
            Some(n) => match jiff::tz::TimeZone::get(n) {
                Ok(tz) => Ok(Clock { tz, name: n.to_owned() }),
                Err(_) => Err(format!("unknown time zone {n:?}: expected an IANA name such as \"Europe/Stockholm\", \"America/New_York\" or \"UTC\"")),
            },
            None => {
                let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
                let name = tz.iana_name().unwrap_or("the machine's").to_owned();
                Ok(Clock { tz, name })
            }
        }
    }

    pub fn utc() -> Clock {
        Clock { tz: jiff::tz::TimeZone::UTC, name: "UTC".into() }
    }

    /// The zone's name, as configured or found.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `2026-12-01 19:14` in this zone.
    pub fn show(&self, t: Millis) -> String {
        match jiff::Timestamp::from_millisecond(t.0) {
            Ok(ts) => ts.to_zoned_datetime(self.tz.clone()).strftime("%Y-%m-%d %H:%M").to_string(),
            Err(_) => t.rfc3339(),
        }
    }

    /// `2026-12-01 19:14 (Europe/Stockholm)`: for mails, read anywhere.
    pub fn show_zoned(&self, t: Millis) -> String {
        format!("{} ({})", self.show(t), self.name)
    }

    /// `2026-12-01 19:14 (3 hours ago)`.
    pub fn show_ago(&self, t: Millis, now: Millis) -> String {
        format!("{} ({})", self.show(t), ago(t, now))
    }
}

/// How long before `now`, in the largest whole unit: "just now", "1 minute
/// ago", "3 hours ago", "2 days ago"; "in 5 minutes" for a time ahead.
pub fn ago(t: Millis, now: Millis) -> String {
    let diff = now.0 - t.0;
    let secs = diff.unsigned_abs() / 1000;
    if secs < 60 {
        return "just now".into();
    }
    let (n, unit) = match secs {
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 60 * 86_400 => (s / 86_400, "day"),
        s if s < 730 * 86_400 => (s / (30 * 86_400), "month"),
        s => (s / (365 * 86_400), "year"),
    };
    let amount = format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if diff >= 0 { format!("{amount} ago") } else { format!("in {amount}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_a_zone() {
        let t = Millis(1_764_616_440_000); // 2025-12-01T19:14:00Z
        assert_eq!(Clock::utc().show(t), "2025-12-01 19:14");
        assert_eq!(Clock::new(Some("Europe/Stockholm")).unwrap().show(t), "2025-12-01 20:14");
        assert_eq!(Clock::new(Some("America/New_York")).unwrap().show(t), "2025-12-01 14:14");
        // Summer time.
        assert_eq!(Clock::new(Some("Europe/Stockholm")).unwrap().show(Millis(1_751_397_240_000)), "2025-07-01 21:14");
        assert_eq!(Clock::new(Some("Mars/Olympus")).unwrap_err(), "unknown time zone \"Mars/Olympus\": expected an IANA name such as \"Europe/Stockholm\", \"America/New_York\" or \"UTC\"");
        assert_eq!(Clock::new(Some("Europe/Stockholm")).unwrap().show_zoned(t), "2025-12-01 20:14 (Europe/Stockholm)");
        assert_eq!(Clock::utc().show_ago(t, Millis(t.0 + 3 * 3_600_000 + 5000)), "2025-12-01 19:14 (3 hours ago)");
    }

    #[test]
    fn relative_hints() {
        let now = Millis(1_800_000_000_000);
        let cases = [(0, "just now"), (59_000, "just now"), (60_000, "1 minute ago"), (125_000, "2 minutes ago"), (3_600_000, "1 hour ago"), (86_400_000, "1 day ago"), (3 * 86_400_000, "3 days ago"), (90 * 86_400_000, "3 months ago"), (800 * 86_400_000, "2 years ago"), (-300_000, "in 5 minutes")];
        for (before, want) in cases {
            assert_eq!(ago(Millis(now.0 - before), now), want, "{before}");
        }
    }
}
