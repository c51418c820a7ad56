//! The `[platform]` section family: what the platform modules' simulated
//! backends answer (treatment durations and collected digits, classification,
//! web-service and statistic rules), the list objects and special days the
//! `_genesys.session` helpers read, and the time zones they know. Every key
//! has a default, so a configuration without `[platform]` runs.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::server::config::ConfigError;

/// The top-level sections the platform extension reads (`[platform]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `[platform]` and its subsections.
    pub platform: PlatformSettings,
}

/// `[platform]`: the platform modules' simulators and object model.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformSettings {
    /// The time zone `isSpecialDay` uses when the script names none: a
    /// name of `time_zones` or an IANA name (default `UTC`).
    pub time_zone: String,
    /// Time zone names the scripts may use, mapped to IANA names; laid
    /// over the built-in Genesys/Java short names (`PST`, `ECT`, ...).
    pub time_zones: BTreeMap<String, String>,
    /// The simulated dialog (treatment) backend.
    pub dialog: DialogSettings,
    /// The simulated classification server.
    pub classification: ClassificationSettings,
    /// The simulated web services.
    pub ws: WsSettings,
    /// The simulated statistics.
    pub statistics: StatisticSettings,
    /// List objects by name (`_genesys.session.lists`): each maps item
    /// names to a table of keys and values (or to a single value).
    pub lists: BTreeMap<String, Map<String, Value>>,
    /// Statistical days of statistical tables, for `isSpecialDay`.
    pub special_days: Vec<SpecialDay>,
}

impl Default for PlatformSettings {
    fn default() -> Self {
        PlatformSettings {
            time_zone: "UTC".into(),
            time_zones: BTreeMap::new(),
            dialog: DialogSettings::default(),
            classification: ClassificationSettings::default(),
            ws: WsSettings::default(),
            statistics: StatisticSettings::default(),
            lists: BTreeMap::new(),
            special_days: Vec::new(),
        }
    }
}

/// `[platform.dialog]`: how long simulated treatments take and what the
/// simulated caller enters.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialogSettings {
    /// How long a treatment takes when its kind has no entry in
    /// `durations`, in ms.
    pub default_duration_ms: u64,
    /// How long each treatment kind takes (`play`, `playsound`, `collect`,
    /// `playandcollect`, `pause`, `remote`, `start`), in ms. An action's
    /// own `duration` attribute wins.
    pub durations: BTreeMap<String, u64>,
    /// The digits a collect returns when no override applies.
    pub digits: String,
    /// Digits by prompt: a collect whose `<dialog:prompt>` names this
    /// `intid`, `number`, `userannid` or `text` value returns them.
    pub prompt_digits: BTreeMap<String, String>,
    /// Digits by interaction id: a collect on this interaction returns
    /// them (a prompt override wins).
    pub interaction_digits: BTreeMap<String, String>,
}

impl Default for DialogSettings {
    fn default() -> Self {
        DialogSettings {
            default_duration_ms: 2000,
            durations: BTreeMap::new(),
            digits: "1".into(),
            prompt_digits: BTreeMap::new(),
            interaction_digits: BTreeMap::new(),
        }
    }
}

impl DialogSettings {
    /// How long a treatment of `kind` takes, in ms.
    pub fn duration_ms(&self, kind: &str) -> u64 {
        self.durations
            .get(kind)
            .copied()
            .unwrap_or(self.default_duration_ms)
    }
}

/// `[platform.classification]`: the rules the simulated classification
/// server applies, in order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassificationSettings {
    /// Rules (`[[platform.classification.rules]]`).
    pub rules: Vec<ClassificationRule>,
}

/// A category a text falls in when it contains any of the keywords.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationRule {
    /// The category's name.
    pub category: String,
    /// The category's id (default: its name).
    #[serde(default)]
    pub id: Option<String>,
    /// Words or phrases, matched ignoring case; any one is enough.
    pub keywords: Vec<String>,
    /// Relevancy reported for a match, 1–100 (default 80).
    #[serde(default = "default_relevancy")]
    pub relevancy: u8,
    /// The root category the rule belongs to; a classify naming another
    /// `root` skips it (default: any root).
    #[serde(default)]
    pub root: Option<String>,
}

fn default_relevancy() -> u8 {
    80
}

/// `[platform.ws]`: the simulated web services.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsSettings {
    /// Rules (`[[platform.ws.rules]]`), the first match answers; a
    /// request no rule matches fails with `error.ws.<action>` (`notfound`).
    pub rules: Vec<WsRule>,
}

/// A canned answer for requests matching a method and a URL pattern.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsRule {
    /// The HTTP method (any when absent), ignoring case.
    #[serde(default)]
    pub method: Option<String>,
    /// The URL, where `*` matches any run of characters.
    pub url: String,
    /// The status reported (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// The content returned (any JSON value; default null).
    #[serde(default)]
    pub content: Value,
    /// How long the answer takes, in ms (default 0).
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer with `error.ws.<action>` and this `error` code instead.
    #[serde(default)]
    pub error: Option<String>,
    /// The `message` of that error.
    #[serde(default)]
    pub message: Option<String>,
}

fn default_status() -> u16 {
    200
}

/// `[platform.statistics]`: statistic values by target and name.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatisticSettings {
    /// The value of a statistic no entry names.
    pub default: f64,
    /// Values by target (`Billing@StatServer.GA`), then statistic name.
    pub values: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Default for StatisticSettings {
    fn default() -> Self {
        StatisticSettings {
            default: 0.0,
            values: BTreeMap::new(),
        }
    }
}

impl StatisticSettings {
    /// The value of `statistic` for `target`.
    pub fn value(&self, target: &str, statistic: &str) -> f64 {
        self.values
            .get(target)
            .and_then(|s| s.get(statistic))
            .copied()
            .unwrap_or(self.default)
    }
}

/// A statistical day of a statistical table (`[[platform.special_days]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialDay {
    /// The statistical table's name.
    pub table: String,
    /// The statistical day's name.
    pub day: String,
    /// Dates it falls on: `MM-DD` (every year) or `YYYY-MM-DD`.
    #[serde(default)]
    pub dates: Vec<String>,
    /// Days of the week it falls on (0 Sunday … 6 Saturday).
    #[serde(default)]
    pub weekdays: Vec<u8>,
    /// Start of its time range, `HH:MM` (checked when the script asks to
    /// use the time; default `00:00`).
    #[serde(default)]
    pub from: Option<String>,
    /// End of its time range, `HH:MM`, exclusive (default `24:00`).
    #[serde(default)]
    pub until: Option<String>,
}

impl Settings {
    /// Checks what serde cannot: zone names, dates, times, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.platform.validate()
    }
}

impl PlatformSettings {
    /// Checks what serde cannot: zone names, dates, times, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Invalid(format!("platform.{what}")));
        for (alias, iana) in &self.time_zones {
            if jiff::tz::TimeZone::get(iana).is_err() {
                return bad(format!("time_zones.{alias}: unknown time zone '{iana}'"));
            }
        }
        if super::zones::resolve(&self.time_zones, &self.time_zone).is_none() {
            return bad(format!("time_zone: unknown time zone '{}'", self.time_zone));
        }
        for (i, rule) in self.classification.rules.iter().enumerate() {
            if rule.keywords.iter().all(|k| k.trim().is_empty()) {
                return bad(format!("classification.rules[{i}]: 'keywords' is empty"));
            }
            if !(1..=100).contains(&rule.relevancy) {
                return bad(format!(
                    "classification.rules[{i}]: relevancy must be 1-100"
                ));
            }
        }
        for (i, rule) in self.ws.rules.iter().enumerate() {
            if rule.url.trim().is_empty() {
                return bad(format!("ws.rules[{i}]: 'url' is empty"));
            }
            if !(100..600).contains(&rule.status) {
                return bad(format!("ws.rules[{i}]: status must be 100-599"));
            }
        }
        for (i, day) in self.special_days.iter().enumerate() {
            for d in &day.dates {
                if super::session::helpers::parse_day(d).is_none() {
                    return bad(format!(
                        "special_days[{i}]: date '{d}' is not MM-DD or YYYY-MM-DD"
                    ));
                }
            }
            if day.weekdays.iter().any(|w| *w > 6) {
                return bad(format!("special_days[{i}]: weekdays are 0-6"));
            }
            for t in day.from.iter().chain(day.until.iter()) {
                if super::session::helpers::parse_minutes(t).is_none() {
                    return bad(format!("special_days[{i}]: time '{t}' is not HH:MM"));
                }
            }
        }
        Ok(())
    }
}
