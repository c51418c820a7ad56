//! Events as the interpreter queues them and exposes them as `_event`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `_event.type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Raised by the platform (errors, `done.*`).
    Platform,
    /// Raised with `<raise>` or `<send target="#_internal">`.
    Internal,
    /// Arrived through the external queue.
    External,
}

impl EventKind {
    /// The name ECMAScript sees in `_event.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Platform => "platform",
            EventKind::Internal => "internal",
            EventKind::External => "external",
        }
    }
}

/// One event with all the fields of `_event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event name (dotted tokens).
    pub name: Arc<str>,
    /// Platform, internal or external.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// `sendid` of the `<send>` that produced it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendid: Option<Arc<str>>,
    /// Where a reply can be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Arc<str>>,
    /// The I/O processor type of `origin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origintype: Option<Arc<str>>,
    /// The invoke id when it came from an invoked child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invokeid: Option<Arc<str>>,
    /// The payload; `None` is ECMAScript `undefined`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The message as the I/O processor received it (`_event.raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Arc<str>>,
}

impl Event {
    /// An event with just a name and kind.
    pub fn new(name: impl Into<Arc<str>>, kind: EventKind) -> Event {
        Event {
            name: name.into(),
            kind,
            sendid: None,
            origin: None,
            origintype: None,
            invokeid: None,
            data: None,
            raw: None,
        }
    }

    /// An external event carrying `data`.
    pub fn external(name: impl Into<Arc<str>>, data: Option<Value>) -> Event {
        Event {
            data,
            ..Event::new(name, EventKind::External)
        }
    }
}

/// Parses a CSS2 time (`2s`, `500ms`, `.5s`, `1.25s`) into milliseconds.
pub fn parse_delay(text: &str) -> Option<u64> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix("min") {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (t, 1.0)
    };
    let number = number.trim();
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let ms = value * scale;
    if !ms.is_finite() {
        return None;
    }
    // Saturates at [`MAX_DELAY_MS`] (a due time must stay representable as
    // a signed 64-bit millisecond timestamp in the store).
    Some(ms.round().min(MAX_DELAY_MS as f64) as u64)
}

/// The longest delay a `<send>` can have: 100 years, in ms. Longer ones
/// are taken as this (they never fire in practice).
pub const MAX_DELAY_MS: u64 = 100 * 365 * 24 * 3_600_000;

#[cfg(test)]
mod tests {
    use super::parse_delay;

    #[test]
    fn parses_css2_times() {
        assert_eq!(parse_delay("1s"), Some(1000));
        assert_eq!(parse_delay(".5s"), Some(500));
        assert_eq!(parse_delay("500ms"), Some(500));
        assert_eq!(parse_delay("1.25s"), Some(1250));
        assert_eq!(parse_delay("0"), Some(0));
        assert_eq!(parse_delay("fast"), None);
        assert_eq!(parse_delay("-1s"), None);
        assert_eq!(parse_delay("NaN"), None);
        assert_eq!(
            parse_delay("99999999999999999999s"),
            Some(super::MAX_DELAY_MS)
        );
        assert_eq!(
            parse_delay("18446744073709551615ms"),
            Some(super::MAX_DELAY_MS)
        );
    }
}
