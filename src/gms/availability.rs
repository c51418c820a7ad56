//! `GET /genesys/1/service/callback/{service}/availability` (GMS 8.5
//! Callback Services API; parameters as public GMS clients send them):
//! the times a callback may be scheduled for, as `{"<slot start, ISO 8601
//! UTC>": places left, …}`, earliest first.
//!
//! Slots are `_request_time_bucket` minutes long (5, 10, 15, 20, 30, 60 or
//! 120; default 5) and hold `_max_request_by_time_bucket` callbacks
//! (default 100) less the unfinished callbacks of the service desired in
//! them. Only slots inside the service's `_business_hours` are offered:
//! rules separated by `;`, each days and a time range in
//! `_business_hours_time_zone` (an IANA name, default `UTC`), e.g.
//! `mon-fri 09:00-17:00; sat 10:00-14:00` (days: `mon`…`sun`, ranges and
//! lists, or `daily`); no `_business_hours` means always open. Parameters:
//! `start` (default now), `end` (default `start` + `number-of-days` days,
//! default 1; at most 31 days), `max-time-slots` (default 100, at most
//! 1 000). Slots that have begun, or are full, are left out.
//!
//! A create or reschedule that names a desired time is held to the same
//! slots ([`claim_slot`]): a time outside business hours, or in a full
//! slot, is refused with a 400.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::Gms;
use super::callback_api::exceptions;
use super::records::{self, CallbackQuery, iso_utc, parse_iso_utc};
use super::service::Service;
use crate::server::error::ApiError;

/// Bucket lengths GMS allows, in minutes.
pub const BUCKETS: &[i64] = &[5, 10, 15, 20, 30, 60, 120];
/// The longest window one request may ask about.
pub const MAX_DAYS: i64 = 31;
/// The most slots one answer holds.
pub const MAX_SLOTS: usize = 1_000;

fn bad(message: String) -> ApiError {
    ApiError::bad_parameter(message).with_exception(exceptions::CALLBACK)
}

/// One business-hours rule: the weekdays (Monday = 0) and the minutes of
/// the day it is open, `[from, until)`.
#[derive(Debug, Clone, PartialEq)]
pub struct HoursRule {
    /// Open on these weekdays (index 0 = Monday).
    pub days: [bool; 7],
    /// Opening minute of the day.
    pub from: u32,
    /// Closing minute of the day (exclusive; up to 1440).
    pub until: u32,
}

fn weekday_index(name: &str) -> Option<usize> {
    let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let lower = name.trim().to_ascii_lowercase();
    names.iter().position(|n| lower.starts_with(n))
}

fn minute(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// `_business_hours` as rules; an error names what is wrong.
pub fn parse_hours(text: &str) -> Result<Vec<HoursRule>, String> {
    let mut rules = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (days_text, range) = part
            .rsplit_once(' ')
            .ok_or_else(|| format!("'{part}': expected days and a time range"))?;
        let mut days = [false; 7];
        for item in days_text.split(',').map(str::trim) {
            if item.eq_ignore_ascii_case("daily") || item == "*" {
                days = [true; 7];
                continue;
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (
                        weekday_index(a).ok_or_else(|| format!("'{a}' is not a weekday"))?,
                        weekday_index(b).ok_or_else(|| format!("'{b}' is not a weekday"))?,
                    );
                    let mut d = a;
                    loop {
                        days[d] = true;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => {
                    days[weekday_index(item)
                        .ok_or_else(|| format!("'{item}' is not a weekday"))?] = true;
                }
            }
        }
        let (from, until) = range
            .split_once('-')
            .and_then(|(a, b)| Some((minute(a)?, minute(b)?)))
            .filter(|(a, b)| a < b)
            .ok_or_else(|| format!("'{range}': expected HH:MM-HH:MM"))?;
        rules.push(HoursRule { days, from, until });
    }
    Ok(rules)
}

/// Whether the minute `[at, at + len)` lies inside the rules, in `tz`
/// (`rules` empty: always).
fn open(rules: &[HoursRule], tz: &jiff::tz::TimeZone, at_ms: i64, len_min: i64) -> bool {
    if rules.is_empty() {
        return true;
    }
    let Ok(at) = jiff::Timestamp::from_millisecond(at_ms) else {
        return false;
    };
    let local = at.to_zoned(tz.clone());
    let day = local.weekday().to_monday_zero_offset() as usize;
    let minute = u32::from(local.hour() as u8) * 60 + u32::from(local.minute() as u8);
    let end = minute + len_min as u32;
    rules
        .iter()
        .any(|r| r.days[day] && minute >= r.from && end <= r.until)
}

/// The start of the slot holding `ms`: local midnight of its day in `tz`
/// plus whole slots of `bucket_ms`.
fn slot_of(ms: i64, tz: &jiff::tz::TimeZone, bucket_ms: i64) -> i64 {
    let Ok(at) = jiff::Timestamp::from_millisecond(ms) else {
        return ms;
    };
    let Ok(midnight) = at.to_zoned(tz.clone()).start_of_day() else {
        return ms;
    };
    let midnight = midnight.timestamp().as_millisecond();
    midnight + (ms - midnight).div_euclid(bucket_ms) * bucket_ms
}

fn number(service: &Service, name: &str, default: i64) -> i64 {
    service
        .options
        .get(name)
        .map(crate::modules::value_text)
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(default)
}

/// `GET /genesys/1/service/callback/{service}/availability`.
pub async fn availability(
    State(ctx): State<Arc<Gms>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(service) = ctx.services.get(&name) else {
        return Err(super::callback_api::unknown_service(&name));
    };
    ctx.customer(request.headers(), Some(service))?;
    let params: BTreeMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let now = ctx.settings.clock.now_ms();
    let time = |key: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(key)
            .map(|v| {
                parse_iso_utc(v)
                    .ok_or_else(|| bad(format!("{key} must be an ISO 8601 time, not '{v}'")))
            })
            .transpose()
    };
    let whole = |key: &str, default: i64, most: i64| -> Result<i64, ApiError> {
        match params.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=most).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "{key} must be a whole number from 1 to {most}, not '{v}'"
                    ))
                }),
        }
    };
    let start = time("start")?.unwrap_or(now).max(now);
    let days = whole("number-of-days", 1, MAX_DAYS)?;
    let end = time("end")?.unwrap_or(start + days * 86_400_000);
    if end <= start {
        return Err(bad("end must be after start".into()));
    }
    if end - start > MAX_DAYS * 86_400_000 {
        return Err(bad(format!("the window may span at most {MAX_DAYS} days")));
    }
    let max_slots = whole("max-time-slots", 100, MAX_SLOTS as i64)? as usize;
    let plan = SlotPlan::of(service, &name)?;
    let bucket_ms = plan.bucket_ms();
    // Slots run from local midnight, so they line up with business hours
    // whatever the zone's offset.
    let mut first = slot_of(start, &plan.tz, bucket_ms);
    if first < start {
        first = slot_of(first + bucket_ms, &plan.tz, bucket_ms).max(first + 1);
    }
    let taken = plan.taken(&ctx, &name, first, end, None).await?;
    let mut slots = Map::new();
    let mut at = first;
    while at + bucket_ms <= end && slots.len() < max_slots {
        if open(&plan.rules, &plan.tz, at, plan.bucket_min) {
            let left = plan.capacity - taken.get(&at).copied().unwrap_or(0);
            if left > 0 {
                slots.insert(iso_utc(at), Value::from(left));
            }
        }
        let next = slot_of(at + bucket_ms, &plan.tz, bucket_ms);
        at = if next > at { next } else { at + bucket_ms };
    }
    Ok(axum::Json(Value::Object(slots)).into_response())
}

/// A service's time slots: its business hours in their zone, the slot
/// length and the places in each.
struct SlotPlan {
    rules: Vec<HoursRule>,
    tz: jiff::tz::TimeZone,
    /// `_request_time_bucket`, minutes.
    bucket_min: i64,
    /// `_max_request_by_time_bucket`.
    capacity: i64,
}

impl SlotPlan {
    /// The plan of `service` (named `name`); options that do not read
    /// are a 500 (they were checked at start).
    fn of(service: &Service, name: &str) -> Result<SlotPlan, ApiError> {
        let bucket_min = number(service, "_request_time_bucket", 5);
        if !BUCKETS.contains(&bucket_min) {
            return Err(ApiError::internal(format!(
                "service {name}: _request_time_bucket {bucket_min} is not one of {BUCKETS:?}"
            )));
        }
        let rules = match service.text("_business_hours") {
            Some(t) => parse_hours(&t).map_err(ApiError::internal)?,
            None => Vec::new(),
        };
        let tz_name = service
            .text("_business_hours_time_zone")
            .unwrap_or_else(|| "UTC".into());
        let tz = jiff::tz::TimeZone::get(tz_name.trim()).map_err(ApiError::internal)?;
        Ok(SlotPlan {
            rules,
            tz,
            bucket_min,
            capacity: number(service, "_max_request_by_time_bucket", 100).max(0),
        })
    }

    fn bucket_ms(&self) -> i64 {
        self.bucket_min * 60_000
    }

    /// The places taken in each slot (by slot start) from `from` to
    /// `until`: the service's unfinished callbacks desired then, but the
    /// one with id `except`.
    async fn taken(
        &self,
        ctx: &Gms,
        name: &str,
        from: i64,
        until: i64,
        except: Option<&str>,
    ) -> Result<BTreeMap<i64, i64>, ApiError> {
        let query = CallbackQuery {
            desired_from: Some(from),
            desired_until: Some(until),
            ..CallbackQuery::unfinished(Some(name.to_string()), records::SCAN_ROWS)
        };
        let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
        for row in ctx.records.query(&query).await.map_err(ApiError::from)? {
            if except == Some(row.id.as_str()) {
                continue;
            }
            let desired = records::record_json(&row)
                .get("_desired_time")
                .and_then(Value::as_str)
                .and_then(parse_iso_utc)
                .unwrap_or(row.created_at);
            *taken
                .entry(slot_of(desired, &self.tz, self.bucket_ms()))
                .or_insert(0) += 1;
        }
        Ok(taken)
    }
}

/// Checks a requested desired time (ms since the epoch) against the
/// service's slots: 400 when its slot lies outside `_business_hours` or
/// already holds `_max_request_by_time_bucket` unfinished callbacks (the
/// callback `except`, being rescheduled, does not count). Answers the
/// slot's lock: hold it until the callback is saved, so that concurrent
/// requests for the slot's last place cannot both take it.
pub async fn claim_slot(
    ctx: &Gms,
    service: &Service,
    name: &str,
    desired: i64,
    except: Option<&str>,
) -> Result<tokio::sync::OwnedMutexGuard<()>, ApiError> {
    let plan = SlotPlan::of(service, name)?;
    let bucket_ms = plan.bucket_ms();
    let slot = slot_of(desired, &plan.tz, bucket_ms);
    if !open(&plan.rules, &plan.tz, slot, plan.bucket_min) {
        return Err(bad(format!(
            "The desired time {} is outside the business hours of service {name} \
             (GET …/{name}/availability lists the open slots)",
            iso_utc(desired)
        )));
    }
    let guard = ctx.creating.lock(&format!("slot:{name}:{slot}")).await;
    let taken = plan
        .taken(ctx, name, slot, slot + bucket_ms, except)
        .await?
        .get(&slot)
        .copied()
        .unwrap_or(0);
    if taken >= plan.capacity {
        return Err(bad(format!(
            "The time slot {} of service {name} is full ({} callbacks, \
             _max_request_by_time_bucket); choose another (GET …/{name}/availability)",
            iso_utc(slot),
            plan.capacity
        )));
    }
    Ok(guard)
}

/// Checks the options of a service that its own checks ([`Service::new`])
/// leave to the features that read them: availability, the recovery
/// windows, notifications (at start).
pub fn check_options(service: &Service) -> Result<(), String> {
    if let Some(t) = service
        .options
        .get("_business_hours")
        .map(crate::modules::value_text)
        && !t.trim().is_empty()
    {
        parse_hours(&t).map_err(|e| format!("_business_hours: {e}"))?;
    }
    if let Some(t) = service
        .options
        .get("_business_hours_time_zone")
        .map(crate::modules::value_text)
        && !t.trim().is_empty()
    {
        jiff::tz::TimeZone::get(t.trim()).map_err(|e| format!("_business_hours_time_zone: {e}"))?;
    }
    let bucket = number(service, "_request_time_bucket", 5);
    if !BUCKETS.contains(&bucket) {
        return Err(format!(
            "_request_time_bucket must be one of {BUCKETS:?}, not {bucket}"
        ));
    }
    let text = |name: &str| service.text(name);
    for name in ["_queue_ping_ors_period", "_queue_poll_period_recovery"] {
        if let Some(t) = text(name) {
            let minutes: Vec<Option<i64>> = t.split(',').map(|p| p.trim().parse().ok()).collect();
            let ok = matches!(minutes.as_slice(), [Some(a), Some(b)] if a < b && *b <= 0);
            if !ok {
                return Err(format!(
                    "{name} must be two minute counts, the earlier first, neither after now \
                     (such as -120,-2), not '{t}'"
                ));
            }
        }
    }
    if let Some(t) = text("_max_request_by_time_bucket")
        && !t.parse::<i64>().is_ok_and(|n| n >= 0)
    {
        return Err(format!(
            "_max_request_by_time_bucket must be a whole number, not '{t}'"
        ));
    }
    if let Some(t) = text("_max_notify_delivery_attempts")
        && !t.parse::<u32>().is_ok_and(|n| (1..=10).contains(&n))
    {
        return Err(format!(
            "_max_notify_delivery_attempts must be 1 to 10, not '{t}'"
        ));
    }
    let notifying =
        text("_enable_status_notification").is_some_and(|v| !v.eq_ignore_ascii_case("false"));
    if notifying {
        let target = text("_status_notification_target").unwrap_or_default();
        match text("_status_notification_type").as_deref() {
            None | Some("httpcb") => match reqwest::Url::parse(&target) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => {
                    return Err(format!(
                        "_status_notification_target must be an http(s) URL when httpcb \
                         notifications are on, not '{target}'"
                    ));
                }
            },
            Some("orscb") => {
                if target.trim().is_empty() {
                    return Err(
                        "_status_notification_target must name an ORS session id when orscb \
                         notifications are on"
                            .into(),
                    );
                }
            }
            Some(other) => {
                return Err(format!(
                    "_status_notification_type must be httpcb or orscb, not '{other}'"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_hours_read_days_and_ranges() {
        let rules = parse_hours("mon-fri 09:00-17:00; sat 10:00-14:00").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].days, [true, true, true, true, true, false, false]);
        assert_eq!((rules[0].from, rules[0].until), (540, 1020));
        assert_eq!(
            rules[1].days,
            [false, false, false, false, false, true, false]
        );
        let wrap = parse_hours("fri-mon 00:00-24:00").unwrap();
        assert_eq!(wrap[0].days, [true, false, false, false, true, true, true]);
        assert_eq!(parse_hours("daily 08:00-20:00").unwrap()[0].days, [true; 7]);
        assert!(parse_hours("mon 17:00-09:00").is_err());
        assert!(parse_hours("someday 09:00-10:00").is_err());
        assert!(parse_hours("mon 9-10").is_err());
        let utc = jiff::tz::TimeZone::UTC;
        // 2026-12-01 is a Tuesday.
        let tuesday_nine = parse_iso_utc("2026-12-01T09:00:00Z").unwrap();
        assert!(open(&rules, &utc, tuesday_nine, 5));
        assert!(!open(&rules, &utc, tuesday_nine - 60_000, 5));
        assert!(!open(
            &rules,
            &utc,
            parse_iso_utc("2026-12-01T16:58:00Z").unwrap(),
            5
        ));
        // Slots line up with local midnight: 09:00 in Kolkata is 03:30 UTC.
        let kolkata = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
        let at = parse_iso_utc("2027-01-04T04:10:00Z").unwrap();
        assert_eq!(
            slot_of(at, &kolkata, 3_600_000),
            parse_iso_utc("2027-01-04T03:30:00Z").unwrap()
        );
        let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        // 08:00 UTC is 09:00 in Paris in December.
        assert!(open(
            &rules,
            &paris,
            parse_iso_utc("2026-12-01T08:00:00Z").unwrap(),
            5
        ));
    }
}
