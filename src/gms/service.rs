//! GMS service definitions (`[gms.services.NAME]`) and the checks a
//! Callback create request passes before a session starts: the service's
//! options are its default configuration overlaid with what is configured,
//! mandatory options must be present and well formed, and the request must
//! carry `_customer_number`. Request keys starting with `_` go to the
//! session as options; the others are the customer's user data. A request
//! may change only the options its service lists in
//! `_overwritable_options`; numeric options are range-checked wherever
//! they come from.

use serde_json::{Map, Value};

use crate::backends::target::{TargetStep, parse_target_option};

/// The name of the demo service `ors serve` offers with no configuration.
pub const DEMO_SERVICE: &str = "chat-immediate";

/// Options every Callback service must end up with.
pub const MANDATORY_OPTIONS: &[&str] = &[
    "_type",
    "_media_type",
    "_wait_for_agent",
    "_wait_for_user_confirm",
    "_ttl",
    "_target",
    "_urs_virtual_queue",
];

/// `_`-parameters every create request may carry: they describe the
/// request (who, which device), not the service.
pub const REQUEST_PARAMETERS: &[&str] = &[
    "_customer_number",
    "_desired_time",
    "_device_os",
    "_device_notification_id",
    "_verbose",
    "_subject",
];

/// Options no request may change, even when listed as overwritable: they
/// decide what the service is and which document runs it.
pub const FIXED_OPTIONS: &[&str] = &[
    "_type",
    "_service",
    "_service_type",
    "_media_type",
    "_overwritable_options",
];

/// A built-in default value of an option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionDefault {
    /// None: unset unless configured.
    Unset,
    /// Text.
    Text(&'static str),
    /// A whole number.
    Number(i64),
    /// `true` or `false`.
    Flag(bool),
}

/// One callback service option: its name, GMS's built-in default, the
/// range a number must lie in (inclusive, in the option's own unit), and
/// what `ors` does with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptionSpec {
    /// The option (`_ttl`, ...).
    pub name: &'static str,
    /// Its built-in default.
    pub default: OptionDefault,
    /// For a number: the values it may take.
    pub range: Option<(i64, i64)>,
    /// What `ors` does with it.
    pub acts: &'static str,
}

const fn spec(
    name: &'static str,
    default: OptionDefault,
    range: Option<(i64, i64)>,
    acts: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        default,
        range,
        acts,
    }
}

use OptionDefault::{Flag, Number, Text, Unset};

/// The callback service options `ors` knows, in one table: the
/// *Chat-Immediate* configuration of GMS's Service Management UI, and the
/// options of GMS's option reference (*Callback* sections
/// *Queue_Management*, *Scheduled_Call*, *GMS-callback*, *URS_Queueing*)
/// it acts on, with GMS's defaults (the throttle defaults as the public
/// functional tests against GMS 8.5 state them,
/// `_request_execution_time_buffer` as their configuration sets it). A
/// service's options are these defaults, under the `[callback]`
/// section's, under its own ([`resolve_options`]); options not listed
/// here are kept and passed to the session as they are.
pub const OPTIONS: &[OptionSpec] = &[
    // What the service is.
    spec("_type", Text("ors"), None, "must be ors"),
    spec("_service_type", Text("callback"), None, "informational"),
    spec(
        "_service",
        Unset,
        None,
        "the SCXML document the callback session runs (default: the shipped callback.scxml)",
    ),
    spec(
        "_media_type",
        Text("chat"),
        None,
        "chat or voice; given to the routing backend",
    ),
    spec(
        "_wait_for_agent",
        Flag(false),
        None,
        "checked (true or false); Chat Immediate does not wait",
    ),
    spec(
        "_wait_for_user_confirm",
        Flag(false),
        None,
        "checked (true or false); not acted on",
    ),
    spec(
        "_user_confirm_timeout",
        Number(30),
        Some((1, 3_600)),
        "checked; not acted on",
    ),
    spec(
        "_ttl",
        Number(86_400),
        Some((60, 2_592_000)),
        "seconds a record is kept after its desired time",
    ),
    spec(
        "_overwritable_options",
        Unset,
        None,
        "the options a request may change",
    ),
    spec(
        "_redirect",
        Unset,
        None,
        "creates are made on the named service",
    ),
    spec(
        "_customer_lookup_keys",
        Unset,
        None,
        "extra keys listed records carry",
    ),
    // Routing.
    spec(
        "_target",
        Unset,
        None,
        "the URS target (or list of steps) the routing backend reserves from; mandatory",
    ),
    spec(
        "_urs_virtual_queue",
        Unset,
        None,
        "the virtual queue; mandatory",
    ),
    spec(
        "_urs_queued_ttl",
        Number(14_400),
        Some((1, 604_800)),
        "seconds the callback waits for its chat",
    ),
    spec(
        "_agent_reserve_timeout",
        Number(30),
        Some((1, 3_600)),
        "seconds the routing backend keeps the agent reserved",
    ),
    spec(
        "_urs_request_timeout",
        Unset,
        Some((1, 3_600)),
        "checked; not acted on",
    ),
    spec(
        "_urs_vq_priority",
        Unset,
        Some((0, 1_000_000)),
        "the request's priority in its virtual queue",
    ),
    spec(
        "_urs_vq_priority_increment",
        Unset,
        Some((0, 1_000_000)),
        "checked; not acted on",
    ),
    spec(
        "_urs_vq_priority_increment_interval",
        Unset,
        Some((1, 86_400)),
        "checked; not acted on",
    ),
    spec(
        "_urs_prioritization_strategy",
        Text("WaitForTarget"),
        None,
        "informational (no URS)",
    ),
    spec(
        "_urs_strategy_update_sub_routine",
        Text("SetRouteDelay"),
        None,
        "informational (no URS)",
    ),
    spec(
        "_use_debug_push_certificate",
        Flag(false),
        None,
        "informational (no push service)",
    ),
    // Limits and throttles.
    spec(
        "_max_queued_callbacks_per_service",
        Unset,
        Some((0, 1_000_000_000)),
        "most QUEUED callbacks (0 refuses every create)",
    ),
    spec(
        "_throttle_callbacks_per_service_1",
        Number(500),
        Some((0, 1_000_000_000)),
        "most creates per _throttle_ttl_1 seconds",
    ),
    spec(
        "_throttle_ttl_1",
        Number(300),
        Some((1, 2_592_000)),
        "the first throttle window, seconds",
    ),
    spec(
        "_throttle_callbacks_per_service_2",
        Number(1_000),
        Some((0, 1_000_000_000)),
        "most creates per _throttle_ttl_2 seconds",
    ),
    spec(
        "_throttle_ttl_2",
        Number(3_600),
        Some((1, 2_592_000)),
        "the second throttle window, seconds",
    ),
    spec(
        "_throttle_request_parameters",
        Text("_customer_number"),
        None,
        "parameters whose values are throttled per day",
    ),
    spec(
        "_throttle_request_parameters_limit",
        Number(6),
        Some((0, 1_000_000_000)),
        "creates per value per calendar day (UTC)",
    ),
    spec(
        "_enable_throttle_header_parameters",
        Text("true"),
        None,
        "a request header names a throttled parameter's value first",
    ),
    spec(
        "_enable_in_queue_checking",
        Text("true"),
        None,
        "unfinished callbacks per number: true 2, strict 1, false [gms.limits]",
    ),
    spec(
        "_disallow_premium_phone_numbers",
        Text("true"),
        None,
        "refuses premium-rate numbers",
    ),
    spec(
        "_disallow_impossible_phone_numbers",
        Text("true"),
        None,
        "refuses numbers that cannot be numbers of _default_country",
    ),
    spec(
        "_default_country",
        Text("US"),
        None,
        "the country national numbers are read in (ISO 3166)",
    ),
    // Scheduling.
    spec(
        "_request_execution_time_buffer",
        Number(120),
        Some((0, 86_400)),
        "seconds before its desired time a scheduled callback is submitted",
    ),
    spec(
        "_reject_future_desired_time",
        Text("1M"),
        None,
        "how far ahead a desired time may be (1y, 1M, 1w, 1d, 1h, 1m)",
    ),
    spec(
        "_queue_poll_period_recovery",
        Text("-1440,-120"),
        None,
        "minutes: a scheduled callback missed while down is submitted within the far end",
    ),
    spec(
        "_business_hours",
        Unset,
        None,
        "the open hours availability offers (e.g. mon-fri 09:00-17:00)",
    ),
    spec(
        "_business_hours_time_zone",
        Unset,
        None,
        "the time zone of _business_hours (IANA; default UTC)",
    ),
    spec(
        "_request_time_bucket",
        Number(5),
        None,
        "availability slot length, minutes (5, 10, 15, 20, 30, 60, 120)",
    ),
    spec(
        "_max_request_by_time_bucket",
        Number(100),
        None,
        "callbacks one availability slot takes",
    ),
    // Recovery.
    spec(
        "_queue_ping_ors_period",
        Text("-120,-2"),
        None,
        "minutes: a queued callback whose session ended is submitted again within the far end",
    ),
    spec(
        "_max_ors_submit_attempts",
        Number(3),
        Some((1, 10)),
        "most submits of one callback",
    ),
    // Notifications.
    spec(
        "_enable_status_notification",
        Unset,
        None,
        "notify (or subscribe_notify) turns notifications on",
    ),
    spec(
        "_status_notification_type",
        Text("httpcb"),
        None,
        "httpcb (POST to a URL) or orscb (events to an ORS session)",
    ),
    spec(
        "_status_notification_target",
        Unset,
        None,
        "the URL notifications are POSTed to (httpcb), or the ORS session id they are sent to (orscb)",
    ),
    spec(
        "_max_notify_delivery_attempts",
        Number(3),
        None,
        "tries per notification",
    ),
    spec(
        "_callback_events_list",
        Unset,
        None,
        "a [gms.event_lists] table: which events, with which notify_params",
    ),
];

/// The numeric options and the range each must lie in (from
/// [`OPTIONS`]).
pub fn numeric_options() -> impl Iterator<Item = (&'static str, i64, i64)> {
    OPTIONS
        .iter()
        .filter_map(|o| o.range.map(|(min, max)| (o.name, min, max)))
}

/// The built-in defaults: every [`OPTIONS`] entry with one.
pub fn chat_immediate_defaults() -> Map<String, Value> {
    OPTIONS
        .iter()
        .filter_map(|o| {
            let v = match o.default {
                Unset => return None,
                Text(t) => Value::from(t),
                Number(n) => Value::from(n),
                Flag(b) => Value::from(b),
            };
            Some((o.name.to_string(), v))
        })
        .collect()
}

/// The demo service's configured options (its routing target and queue).
pub fn demo_service_options() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("_target".into(), Value::from("Chat_Agents@StatServer.GA"));
    m.insert(
        "_urs_virtual_queue".into(),
        Value::from("VQ_Chat_Immediate"),
    );
    m
}

/// Why a service or a request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A mandatory option is missing from the service's configuration.
    #[error("service '{service}': mandatory option {option} is not configured")]
    MissingOption {
        /// The service.
        service: String,
        /// The option.
        option: String,
    },
    /// An option has a value of the wrong kind.
    #[error("service '{service}': option {option}: {message}")]
    BadOption {
        /// The service.
        service: String,
        /// The option.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The request lacks a mandatory parameter.
    #[error("parameter {0} is mandatory")]
    MissingParameter(String),
    /// The request sets an option its service does not let it change.
    #[error(
        "option {0} may not be set by a request to this service (it is not in the \
         service's _overwritable_options)"
    )]
    NotOverwritable(String),
}

/// Words that mark an option as a secret (a credential or a key) wherever
/// they appear in its name.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "credential",
    "private_key",
];

/// Whether a service option holds a secret: its name (ignoring case and a
/// leading `_`) contains one of the words above or equals one of `extra`
/// (`[gms] secret_options`). Secret options never reach a session's data.
pub fn is_secret_option(name: &str, extra: &[String]) -> bool {
    let bare = name.trim_start_matches('_').to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| bare.contains(w))
        || extra
            .iter()
            .any(|e| e.trim_start_matches('_').eq_ignore_ascii_case(&bare))
}

/// A service ready to take requests: its options and its parsed target.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its name (the last path segment of its URL).
    pub name: String,
    /// Every option, defaults overlaid with the configuration.
    pub options: Map<String, Value>,
    /// The `_target` steps.
    pub target: Vec<TargetStep>,
}

/// Whether an option value is empty (unset text or null).
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Whether an option value is GMS's "the default" marker, `-1`.
fn is_default_marker(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64() == Some(-1),
        Value::String(s) => s.trim() == "-1",
        _ => false,
    }
}

/// A service's options from three layers, as GMS resolves them: the
/// built-in defaults ([`chat_immediate_defaults`]), then the server-wide
/// `[callback]` section's `_`-options, then the service's own. `-1` in
/// either layer means the built-in default. An empty value leaves what
/// the layers below gave, for the options whose built-in default is a
/// number or that have none (GMS's throttles, as the public functional
/// tests against GMS 8.5 observe); for an option with a text default
/// (`_default_country`), empty means empty.
pub fn resolve_options(
    section: &Map<String, Value>,
    configured: &Map<String, Value>,
) -> Map<String, Value> {
    let builtin = chat_immediate_defaults();
    let text_default = |k: &str| {
        builtin.get(k).is_some_and(|b| match b {
            Value::String(s) => s.trim().parse::<f64>().is_err(),
            _ => false,
        })
    };
    let mut options = builtin.clone();
    let put = |options: &mut Map<String, Value>, k: &String, v: &Value| {
        if is_default_marker(v) {
            match builtin.get(k) {
                Some(b) => options.insert(k.clone(), b.clone()),
                None => options.remove(k),
            };
        } else if !is_empty_value(v) || text_default(k) {
            options.insert(k.clone(), v.clone());
        }
    };
    for (k, v) in section.iter().filter(|(k, _)| k.starts_with('_')) {
        put(&mut options, k, v);
    }
    for (k, v) in configured {
        put(&mut options, k, v);
    }
    options
}

impl Service {
    /// Builds a service from its configured options over the `[callback]`
    /// section's and the built-in defaults ([`resolve_options`]).
    pub fn configured(
        name: &str,
        configured: &Map<String, Value>,
        section: &Map<String, Value>,
    ) -> Result<Service, ServiceError> {
        Service::new(name, &resolve_options(section, configured))
    }

    /// Builds a service from its configured options over the Chat-Immediate
    /// defaults, checking the mandatory ones.
    pub fn new(name: &str, configured: &Map<String, Value>) -> Result<Service, ServiceError> {
        let mut options = chat_immediate_defaults();
        for (k, v) in configured {
            options.insert(k.clone(), v.clone());
        }
        for option in MANDATORY_OPTIONS {
            let present = match options.get(*option) {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(_) => true,
            };
            if !present {
                return Err(ServiceError::MissingOption {
                    service: name.to_string(),
                    option: option.to_string(),
                });
            }
        }
        let bad = |option: &str, message: String| ServiceError::BadOption {
            service: name.to_string(),
            option: option.to_string(),
            message,
        };
        for option in ["_wait_for_agent", "_wait_for_user_confirm"] {
            if as_bool(&options[option]).is_none() {
                return Err(bad(option, "must be true or false".into()));
            }
        }
        if as_u64(&options["_ttl"]).is_none() {
            return Err(bad("_ttl", "must be a whole number of seconds".into()));
        }
        for (option, min, max) in numeric_options() {
            let value = match options.get(option) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) if s.trim().is_empty() => continue,
                Some(v) => v,
            };
            let n = match value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if (min..=max).contains(&n) => {}
                _ => {
                    return Err(bad(
                        option,
                        format!("must be a whole number from {min} to {max}, not {value}"),
                    ));
                }
            }
        }
        if let Some(v) = options.get("_reject_future_desired_time") {
            let text = value_name(v);
            if !text.trim().is_empty() && super::scheduler::future_limit_ms(&text).is_none() {
                return Err(bad(
                    "_reject_future_desired_time",
                    format!(
                        "must be a count and a unit (y, M, w, d, h, m), such as 1M; not '{text}'"
                    ),
                ));
            }
        }
        match options["_media_type"].as_str() {
            Some("chat" | "voice") => {}
            _ => return Err(bad("_media_type", "must be chat or voice".into())),
        }
        let target = match &options["_target"] {
            Value::String(s) => parse_target_option(s),
            other => parse_target_option(&other.to_string()),
        }
        .map_err(|e| bad("_target", e.0))?;
        Ok(Service {
            name: name.to_string(),
            options,
            target,
        })
    }

    /// The option names this service lets a request change: its
    /// `_overwritable_options` (names separated by commas or spaces, or a
    /// list), less the [`FIXED_OPTIONS`].
    pub fn overwritable(&self) -> Vec<String> {
        let names: Vec<String> = match self.options.get("_overwritable_options") {
            Some(Value::Array(items)) => items.iter().map(value_name).collect(),
            Some(v) => value_name(v)
                .split([',', ' ', ';'])
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        names
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty() && !FIXED_OPTIONS.contains(&n.as_str()))
            .collect()
    }

    /// The options of a create request that change this service's, once
    /// checked: a [`REQUEST_PARAMETERS`] entry is not an override; an
    /// option listed in `_overwritable_options` is; any other `_` option
    /// is refused ([`ServiceError::NotOverwritable`], naming it) unless it
    /// repeats the service's own value (stock clients send their
    /// scenario's options with every create).
    pub fn request_overrides(
        &self,
        request_options: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ServiceError> {
        let overwritable = self.overwritable();
        let mut overrides = Map::new();
        for (k, v) in request_options {
            if REQUEST_PARAMETERS.contains(&k.as_str()) {
                continue;
            }
            if overwritable.iter().any(|o| o == k) {
                overrides.insert(k.clone(), v.clone());
                continue;
            }
            let same = self
                .options
                .get(k)
                .is_some_and(|mine| value_name(mine).trim() == value_name(v).trim());
            if !same {
                return Err(ServiceError::NotOverwritable(k.clone()));
            }
        }
        Ok(overrides)
    }

    /// An option as text, trimmed (numbers and flags as JSON); `None`
    /// when unset or empty.
    pub fn text(&self, option: &str) -> Option<String> {
        match self.options.get(option)? {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.trim().to_string()),
            other => Some(other.to_string()),
        }
    }

    /// A boolean option (`true`/`false`, also as strings).
    pub fn flag(&self, option: &str) -> bool {
        self.options.get(option).and_then(as_bool).unwrap_or(false)
    }
}

/// A create request split the GMS way.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRequest {
    /// `_`-prefixed parameters: options for this callback.
    pub options: Map<String, Value>,
    /// Every other parameter: the customer's user data.
    pub user_data: Map<String, Value>,
}

impl CallbackRequest {
    /// Splits request parameters and checks `_customer_number`.
    pub fn from_params(params: Map<String, Value>) -> Result<CallbackRequest, ServiceError> {
        let (options, user_data): (Map<String, Value>, Map<String, Value>) = params
            .into_iter()
            .map(|(k, v)| (k.trim().to_string(), v))
            .partition(|(k, _)| k.starts_with('_'));
        let number_given = match options.get("_customer_number") {
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(Value::Number(_)) => true,
            _ => false,
        };
        if !number_given {
            return Err(ServiceError::MissingParameter("_customer_number".into()));
        }
        Ok(CallbackRequest { options, user_data })
    }
}

/// An option's value as text (strings as they are, others as JSON).
fn value_name(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_table_is_consistent() {
        let mut names: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "an option is listed twice");
        for o in OPTIONS {
            assert!(o.name.starts_with('_'), "{}", o.name);
            assert!(!o.acts.is_empty(), "{}", o.name);
            if let (OptionDefault::Number(n), Some((min, max))) = (o.default, o.range) {
                assert!(
                    (min..=max).contains(&n),
                    "{}: {n} outside {min}..={max}",
                    o.name
                );
            }
        }
        for option in MANDATORY_OPTIONS {
            assert!(OPTIONS.iter().any(|o| o.name == *option), "{option}");
        }
        // The defaults alone make a service once the mandatory routing
        // options are given.
        assert!(Service::configured("x", &demo_service_options(), &Map::new()).is_ok());
    }

    #[test]
    fn options_resolve_service_over_section_over_built_in() {
        let map = |pairs: &[(&str, Value)]| -> Map<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let section = map(&[
            ("_ttl", Value::from(600)),
            ("_agent_reserve_timeout", Value::from(-1)),
            ("_urs_vq_priority", Value::from(5)),
            ("_urs_request_timeout", Value::from("")),
            ("filter-keys", Value::from("not an option")),
        ]);
        let service = map(&[
            ("_ttl", Value::from(900)),
            ("_urs_vq_priority", Value::from("")),
            ("_wait_for_agent", Value::from("-1")),
            ("_target", Value::from("A@StatServer.GA")),
        ]);
        let o = resolve_options(&section, &service);
        // The service's value wins.
        assert_eq!(o["_ttl"], 900);
        // Empty in the service: the section's.
        assert_eq!(o["_urs_vq_priority"], 5);
        // -1 in the section: the built-in default.
        assert_eq!(o["_agent_reserve_timeout"], 30);
        // -1 in the service: the built-in default, not the section's.
        assert_eq!(o["_wait_for_agent"], false);
        // Empty in the section, absent in the service, no built-in: unset.
        assert!(!o.contains_key("_urs_request_timeout"));
        // Only `_` keys of the section are options.
        assert!(!o.contains_key("filter-keys"));
        // An option with a text default takes an empty value as given.
        let no_country =
            resolve_options(&Map::new(), &map(&[("_default_country", Value::from(""))]));
        assert_eq!(no_country["_default_country"], "");
        let mut banana = demo_service_options();
        banana.insert("_reject_future_desired_time".into(), Value::from("banana"));
        let e = Service::new("x", &banana).unwrap_err().to_string();
        assert!(e.contains("_reject_future_desired_time"), "{e}");
        let no_section = resolve_options(&Map::new(), &service);
        assert_eq!(no_section["_ttl"], 900);
        assert!(!no_section.contains_key("_urs_vq_priority"));
    }

    #[test]
    fn secret_options_are_known_by_word_and_by_configured_name() {
        let extra = vec!["crm_pin".to_string()];
        for name in [
            "password",
            "_Provider_API_KEY",
            "oauth_token",
            "_crm_pin",
            "CRM_PIN",
        ] {
            assert!(is_secret_option(name, &extra), "{name}");
        }
        for name in ["_target", "_ttl", "_crm_region", "_urs_virtual_queue"] {
            assert!(!is_secret_option(name, &extra), "{name}");
        }
    }

    #[test]
    fn the_demo_service_is_chat_immediate_with_its_target() {
        let s = Service::new(DEMO_SERVICE, &demo_service_options()).unwrap();
        let same = Service::configured(DEMO_SERVICE, &demo_service_options(), &Map::new()).unwrap();
        assert_eq!(s.options, same.options);
        assert_eq!(s.options["_type"], "ors");
        assert_eq!(s.options["_media_type"], "chat");
        assert!(!s.flag("_wait_for_agent"));
        assert!(!s.flag("_wait_for_user_confirm"));
        assert_eq!(s.options["_ttl"], 86400);
        assert_eq!(s.options["_urs_prioritization_strategy"], "WaitForTarget");
        assert_eq!(
            s.options["_urs_strategy_update_sub_routine"],
            "SetRouteDelay"
        );
        assert_eq!(s.target.len(), 1);
        assert_eq!(s.target[0].target.text, "Chat_Agents@StatServer.GA");
    }

    #[test]
    fn configured_options_override_the_defaults_and_are_checked() {
        let mut cfg = demo_service_options();
        cfg.insert("_ttl".into(), Value::from("604800"));
        cfg.insert("_wait_for_agent".into(), Value::from("true"));
        let s = Service::new("x", &cfg).unwrap();
        assert!(s.flag("_wait_for_agent"));
        assert_eq!(s.options["_ttl"], "604800");

        let mut no_target = demo_service_options();
        no_target.remove("_target");
        assert_eq!(
            Service::new("x", &no_target).unwrap_err(),
            ServiceError::MissingOption {
                service: "x".into(),
                option: "_target".into()
            }
        );
        let mut empty_vq = demo_service_options();
        empty_vq.insert("_urs_virtual_queue".into(), Value::from(" "));
        let e = Service::new("x", &empty_vq).unwrap_err().to_string();
        assert!(e.contains("_urs_virtual_queue"), "{e}");
        let mut bad_target = demo_service_options();
        bad_target.insert("_target".into(), Value::from("Billing@StatServer.ZZ"));
        let e = Service::new("x", &bad_target).unwrap_err().to_string();
        assert!(
            e.contains("option _target") && e.contains("unknown target type 'ZZ'"),
            "{e}"
        );
        let mut bad_flag = demo_service_options();
        bad_flag.insert("_wait_for_agent".into(), Value::from("maybe"));
        assert!(
            Service::new("x", &bad_flag)
                .unwrap_err()
                .to_string()
                .contains("true or false")
        );
        let mut bad_media = demo_service_options();
        bad_media.insert("_media_type".into(), Value::from("fax"));
        assert!(Service::new("x", &bad_media).is_err());
    }

    #[test]
    fn requests_split_options_from_user_data_and_need_a_customer_number() {
        let params: Map<String, Value> = serde_json::from_str(
            r#"{"_customer_number":"6502388511","usr_customer_name":"Bob Markel",
                "usr_reason":"billing question","_device_os":"comet"}"#,
        )
        .unwrap();
        let r = CallbackRequest::from_params(params).unwrap();
        assert_eq!(r.options.len(), 2);
        assert_eq!(r.options["_device_os"], "comet");
        assert_eq!(r.user_data.len(), 2);
        assert_eq!(r.user_data["usr_reason"], "billing question");
        let missing: Map<String, Value> = serde_json::from_str(r#"{"usr_reason":"x"}"#).unwrap();
        assert_eq!(
            CallbackRequest::from_params(missing)
                .unwrap_err()
                .to_string(),
            "parameter _customer_number is mandatory"
        );
        let blank: Map<String, Value> =
            serde_json::from_str(r#"{"_customer_number":"  "}"#).unwrap();
        assert!(CallbackRequest::from_params(blank).is_err());
    }
}
