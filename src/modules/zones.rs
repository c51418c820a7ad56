//! Time zones for the `_genesys.session` time helpers (`timeInZone`,
//! `dateInZone`, `dayInZone`, `isSpecialDay`). Scripts name zones the way
//! Genesys Time Zone objects and Composer do (`PST`, `ECT`, the Java short
//! ids) or by IANA name; `[platform.time_zones]` adds or overrides names.
//! Offsets come from the tz database bundled with `jiff`: when the server
//! starts, each known zone's UTC offsets from then on (ten years of
//! transitions) are written into the session prelude as one string
//! constant, so a session start costs nothing and a lookup parses only the
//! zone it asks for.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The Java short time-zone ids Genesys configurations use, as IANA names.
/// `EST`, `MST` and `HST` are read as the regions (with daylight saving
/// where it applies), which is what routing strategies mean by them.
pub const DEFAULT_ALIASES: &[(&str, &str)] = &[
    ("ACT", "Australia/Darwin"),
    ("AET", "Australia/Sydney"),
    ("AGT", "America/Argentina/Buenos_Aires"),
    ("ART", "Africa/Cairo"),
    ("AST", "America/Anchorage"),
    ("BET", "America/Sao_Paulo"),
    ("BST", "Asia/Dhaka"),
    ("CAT", "Africa/Harare"),
    ("CNT", "America/St_Johns"),
    ("CST", "America/Chicago"),
    ("CTT", "Asia/Shanghai"),
    ("EAT", "Africa/Addis_Ababa"),
    ("ECT", "Europe/Paris"),
    ("EST", "America/New_York"),
    ("GMT", "Etc/GMT"),
    ("HST", "Pacific/Honolulu"),
    ("IET", "America/Indiana/Indianapolis"),
    ("IST", "Asia/Kolkata"),
    ("JST", "Asia/Tokyo"),
    ("MIT", "Pacific/Apia"),
    ("MST", "America/Denver"),
    ("NET", "Asia/Yerevan"),
    ("NST", "Pacific/Auckland"),
    ("PLT", "Asia/Karachi"),
    ("PNT", "America/Phoenix"),
    ("PRT", "America/Puerto_Rico"),
    ("PST", "America/Los_Angeles"),
    ("SST", "Pacific/Guadalcanal"),
    ("UTC", "UTC"),
    ("VST", "Asia/Ho_Chi_Minh"),
];

/// How far ahead offsets are tabled, in seconds (ten years).
const HORIZON_SECS: i64 = 10 * 366 * 86_400;

/// The IANA name `name` stands for: a configured alias, a default alias,
/// or an IANA name itself; `None` when the tz database has no such zone.
pub fn resolve(aliases: &BTreeMap<String, String>, name: &str) -> Option<String> {
    let iana = aliases
        .get(name)
        .cloned()
        .or_else(|| {
            DEFAULT_ALIASES
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(name))
                .map(|(_, z)| z.to_string())
        })
        .unwrap_or_else(|| name.to_string());
    TimeZone::get(&iana).ok().map(|_| iana)
}

/// Every zone name scripts may use (default aliases, configured aliases
/// and their IANA names, and `default_zone`) with its IANA name.
pub fn known_zones(
    aliases: &BTreeMap<String, String>,
    default_zone: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let names = DEFAULT_ALIASES
        .iter()
        .flat_map(|(a, z)| [a.to_string(), z.to_string()])
        .chain(aliases.iter().flat_map(|(a, z)| [a.clone(), z.clone()]))
        .chain(std::iter::once(default_zone.to_string()));
    for name in names {
        if let Some(iana) = resolve(aliases, &name) {
            out.insert(name, iana);
        }
    }
    out
}

/// The offsets of an IANA zone from `from` on: `(utc_ms, offset_secs)`
/// pairs in time order, the first at `from`, then one per transition
/// within the horizon.
pub fn offsets(iana: &str, from: Timestamp) -> Vec<(i64, i32)> {
    let Ok(tz) = TimeZone::get(iana) else {
        return Vec::new();
    };
    let mut out = vec![(from.as_millisecond(), tz.to_offset(from).seconds())];
    let end = from.as_second().saturating_add(HORIZON_SECS);
    for t in tz.following(from) {
        if t.timestamp().as_second() > end {
            break;
        }
        out.push((t.timestamp().as_millisecond(), t.offset().seconds()));
    }
    out
}

/// The zone table the prelude's helpers read: `;NAME=ms:secs,ms:secs;…`,
/// one entry per known name, offsets from one day before `now`.
pub fn table(aliases: &BTreeMap<String, String>, default_zone: &str, now: Timestamp) -> String {
    let from = now
        .checked_sub(jiff::SignedDuration::from_hours(24))
        .unwrap_or(now);
    let mut by_iana: BTreeMap<String, String> = BTreeMap::new();
    let mut out = String::from(";");
    for (name, iana) in known_zones(aliases, default_zone) {
        let entry = by_iana.entry(iana.clone()).or_insert_with(|| {
            offsets(&iana, from)
                .iter()
                .map(|(ms, secs)| format!("{ms}:{secs}"))
                .collect::<Vec<_>>()
                .join(",")
        });
        out.push_str(&name);
        out.push('=');
        out.push_str(entry);
        out.push(';');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_and_iana_names_resolve_and_unknown_ones_do_not() {
        let aliases = BTreeMap::from([("HQ".to_string(), "Europe/Berlin".to_string())]);
        assert_eq!(
            resolve(&aliases, "PST").as_deref(),
            Some("America/Los_Angeles")
        );
        assert_eq!(resolve(&aliases, "HQ").as_deref(), Some("Europe/Berlin"));
        assert_eq!(
            resolve(&aliases, "Asia/Tokyo").as_deref(),
            Some("Asia/Tokyo")
        );
        assert_eq!(resolve(&aliases, "Nowhere/Special"), None);
    }

    #[test]
    fn offsets_follow_daylight_saving() {
        let jan: Timestamp = "2026-01-10T12:00:00Z".parse().unwrap();
        let table = offsets("America/New_York", jan);
        assert_eq!(table[0].1, -5 * 3600);
        // The next transition is the March switch to daylight time.
        let (at, secs) = table[1];
        assert_eq!(secs, -4 * 3600);
        assert_eq!(
            Timestamp::from_millisecond(at).unwrap().to_string(),
            "2026-03-08T07:00:00Z"
        );
        assert!(
            table.len() > 15,
            "ten years of transitions: {}",
            table.len()
        );
        assert_eq!(offsets("Asia/Tokyo", jan).len(), 1, "no transitions");
    }

    #[test]
    fn the_table_names_every_zone_once() {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let t = table(&BTreeMap::new(), "UTC", now);
        assert!(t.starts_with(';') && t.ends_with(';'));
        assert!(t.contains(";PST="));
        assert!(t.contains(";America/Los_Angeles="));
        assert!(t.contains(";UTC="));
    }
}
