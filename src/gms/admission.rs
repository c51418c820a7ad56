//! What a Callback create must pass before its record is stored, with
//! GMS's options and refusals (GMS option reference, *Callback* sections
//! *Queue_Management* and *GMS-callback*; messages as the public
//! functional tests against GMS 8.5 assert them):
//!
//! - phone numbers: `_disallow_impossible_phone_numbers` (a number that
//!   cannot be parsed for `_default_country`),
//!   `_disallow_premium_phone_numbers` (a premium-rate number): 400,
//!   `CallbackExceptionNumber`;
//! - `_max_queued_callbacks_per_service` (and the `[callback]` section's
//!   `max_queued_callbacks_per_service`; 0 refuses every create): the
//!   service's `QUEUED` callbacks;
//! - two rate windows, `_throttle_callbacks_per_service_N` creates per
//!   `_throttle_ttl_N` seconds (N = 1, 2);
//! - `_throttle_request_parameters` / `_limit`: creates carrying the same
//!   value of each listed parameter per calendar day (UTC); with
//!   `_enable_throttle_header_parameters` (default on) a request header of
//!   the parameter's name gives its value first;
//! - `_enable_in_queue_checking`: unfinished callbacks of one customer
//!   number (`true`: 2, `strict`: 1, `false`: `[gms.limits]
//!   max_active_per_number`);
//!
//! each a 503 with `CallbackExceptionServiceUnavailable`; and our own
//! per-device cap (`[gms.limits] max_active_per_device`, 429).
//!
//! The per-service checks leave a [`Reservation`] that counts as one
//! more create until the create's record is durable, so concurrent
//! creates cannot overshoot a limit; far from a limit they take no lock,
//! near one they decide one at a time under the service's admission lock. The per-number checks run under the create's per-number lock.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::StatusCode;
use serde_json::Value;

use super::Gms;
use super::access::KeyedLocks;
use super::callback_api::exceptions;
use super::records::{CallbackQuery, KeyFilter};
use super::service::{CallbackRequest, Service};
use crate::server::error::ApiError;

/// The locks and reservations of the per-service checks.
#[derive(Default)]
pub struct Admission {
    locks: KeyedLocks,
    pending: Mutex<HashMap<String, u64>>,
    /// Told whenever a reservation ends.
    drained: tokio::sync::Notify,
    /// The services' rate windows.
    rates: RateWindows,
}

/// One admitted create not yet durable: counted against its service's
/// limits until dropped (after the record is saved, or the create fails).
pub struct Reservation<'a> {
    admission: &'a Admission,
    service: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut pending = self
            .admission
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = pending.get_mut(&self.service) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.service);
            }
        }
        drop(pending);
        self.admission.drained.notify_waiters();
    }
}

impl Admission {
    fn pending(&self, service: &str) -> u64 {
        self.pending
            .lock()
            .map(|p| p.get(service).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn reserve(&self, service: &str) -> Reservation<'_> {
        *self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(service.to_string())
            .or_insert(0) += 1;
        Reservation {
            admission: self,
            service: service.to_string(),
        }
    }

    /// Forgets the locks nobody holds (bounds memory).
    pub fn forget_idle(&self) {
        self.locks.forget_idle();
    }
}

/// A whole-number option (`None` when unset, empty or `-1`).
fn number(service: &Service, name: &str) -> Option<u64> {
    let n: i64 = service.text(name)?.parse().ok()?;
    u64::try_from(n).ok()
}

/// A boolean option (`true`/`false`, any case; unset: `default`).
fn flag(service: &Service, name: &str, default: bool) -> bool {
    match service.text(name).map(|t| t.to_ascii_lowercase()) {
        Some(t) if t == "true" => true,
        Some(t) if t == "false" => false,
        _ => default,
    }
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "callback_refused", message)
        .with_exception(exceptions::SERVICE_UNAVAILABLE)
}

fn bad_number(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_customer_number", message)
        .with_exception(exceptions::NUMBER)
}

/// The phone-number checks: 400 for a number the service's options
/// disallow, or when they are on and `_default_country` is not a country.
pub fn check_phone_number(service: &Service, number: &str) -> Result<(), ApiError> {
    let premium = flag(service, "_disallow_premium_phone_numbers", true);
    let impossible = flag(service, "_disallow_impossible_phone_numbers", true);
    if !premium && !impossible {
        return Ok(());
    }
    let option = if premium {
        "_disallow_premium_phone_numbers"
    } else {
        "_disallow_impossible_phone_numbers"
    };
    let country = service
        .text("_default_country")
        .and_then(|c| {
            c.to_ascii_uppercase()
                .parse::<phonenumber::country::Id>()
                .ok()
        })
        .ok_or_else(|| {
            bad_number(format!(
                "Service option {} / _default_country is not configured. But option {option} \
                 is set: phone numbers cannot be checked without a country.",
                service.name
            ))
        })?;
    let characters_ok = number
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    let parsed = characters_ok
        .then(|| phonenumber::parse(Some(country), number).ok())
        .flatten();
    match parsed {
        None if impossible => Err(bad_number(format!(
            "Customer Number [{number}] is disallowed, because it is invalid. \
             Check option _disallow_impossible_phone_numbers"
        ))),
        Some(p)
            if premium
                && p.number_type(&phonenumber::metadata::DATABASE)
                    == phonenumber::Type::PremiumRate =>
        {
            Err(bad_number(format!(
                "Customer Number [{number}] is disallowed, because it's a premium number. \
                 Check option _disallow_premium_phone_numbers"
            )))
        }
        _ => Ok(()),
    }
}

/// How long a create refused only because of creates still being saved
/// waits for them before it is refused for good.
const PENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The per-service checks (queued limit, rate windows); on success the
/// create holds a [`Reservation`] until its record is saved. `queues`:
/// whether the callback will be `QUEUED` at once (a scheduled one does
/// not count against the queued limit).
///
/// A reserved create whose record is already durable is briefly counted
/// twice (in the store and as pending); a create refused while others
/// are pending therefore waits for them (at most [`PENDING_WAIT`]) and
/// checks again, so a refusal counts each create once.
pub async fn admit<'a>(
    ctx: &'a Gms,
    service: &Service,
    now: i64,
    queues: bool,
) -> Result<Reservation<'a>, ApiError> {
    admit_with(ctx, service, now, queues, true).await
}

/// The queued limit alone, for a scheduled callback about to be
/// submitted (its create already passed the rate windows).
pub async fn admit_to_queue<'a>(
    ctx: &'a Gms,
    service: &Service,
    now: i64,
) -> Result<Reservation<'a>, ApiError> {
    admit_with(ctx, service, now, true, false).await
}

async fn admit_with<'a>(
    ctx: &'a Gms,
    service: &Service,
    now: i64,
    queues: bool,
    rated: bool,
) -> Result<Reservation<'a>, ApiError> {
    let name = &service.name;
    let windows: Vec<(u64, u64)> = [1, 2]
        .iter()
        .filter(|_| rated)
        .filter_map(|n| {
            let limit = number(service, &format!("_throttle_callbacks_per_service_{n}"))?;
            let ttl = number(service, &format!("_throttle_ttl_{n}"))?.max(1);
            Some((limit, ttl))
        })
        .collect();
    let section_max = ctx
        .settings
        .callback
        .options
        .get("max_queued_callbacks_per_service")
        .map(crate::modules::value_text)
        .and_then(|t| t.trim().parse::<i64>().ok())
        .and_then(|n| u64::try_from(n).ok());
    let max_queued = [
        number(service, "_max_queued_callbacks_per_service"),
        section_max,
    ]
    .into_iter()
    .flatten()
    .min()
    .filter(|_| queues);
    let reservation = match max_queued {
        Some(max) => admit_queued(ctx, name, max).await?,
        None => ctx.admission.reserve(name),
    };
    if !windows.is_empty() {
        ctx.admission.rates.admit(ctx, name, now, &windows).await?;
    }
    Ok(reservation)
}

/// The queued limit: a place among `max` for one more `QUEUED` callback.
///
/// The common case takes no lock: reserve first, then read the store.
/// Every create admitted so counted all that had reserved before its
/// read (in the store once durable, as pending before), so the last to
/// reserve of any admitted set counted the whole set: no overshoot. Near
/// the limit, where counting one create twice could refuse it wrongly,
/// creates decide one at a time under the service's admission lock (the
/// same reserve-then-read order), waiting for pending ones to settle (at
/// most [`PENDING_WAIT`]) before refusing.
async fn admit_queued<'a>(ctx: &'a Gms, name: &str, max: u64) -> Result<Reservation<'a>, ApiError> {
    let full = || unavailable(format!("Limit of queued callbacks for {name} is reached."));
    // Reserve, then read the store: a create whose reservation ends
    // between the reads has its record durable by then, so it is counted
    // (perhaps twice, never missed). The place, or how many others are
    // pending.
    let try_place = || async {
        let reservation = ctx.admission.reserve(name);
        let others = ctx.admission.pending(name).saturating_sub(1);
        let queued = ctx
            .records
            .queued_count(name)
            .await
            .map_err(ApiError::from)?;
        Ok::<_, ApiError>(if queued + others < max {
            Ok(reservation)
        } else {
            Err(others)
        })
    };
    if let Ok(reservation) = try_place().await? {
        return Ok(reservation);
    }
    let deadline = tokio::time::Instant::now() + PENDING_WAIT;
    loop {
        let drained = ctx.admission.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        let one_at_a_time = ctx.admission.locks.lock(name).await;
        let others = match try_place().await? {
            Ok(reservation) => return Ok(reservation),
            Err(others) => others,
        };
        drop(one_at_a_time);
        if others == 0
            || tokio::time::timeout_at(deadline, drained.as_mut())
                .await
                .is_err()
        {
            return Err(full());
        }
    }
}

/// The rate windows of each service, in memory: the times of its recent
/// creates (the newest, as many as its largest limit), read from the store
/// the first time a service is checked (so a restart keeps them), then
/// kept as creates are admitted.
#[derive(Default)]
pub struct RateWindows {
    by_service: tokio::sync::Mutex<HashMap<String, std::collections::VecDeque<i64>>>,
}

impl RateWindows {
    /// Admits one create at `now` against `windows` ((limit, seconds)),
    /// counting it in them; a 503 naming the full window otherwise.
    async fn admit(
        &self,
        ctx: &Gms,
        name: &str,
        now: i64,
        windows: &[(u64, u64)],
    ) -> Result<(), ApiError> {
        let longest_ms = windows
            .iter()
            .map(|(_, ttl)| (*ttl as i64).saturating_mul(1000))
            .max()
            .unwrap_or(0);
        let most = windows.iter().map(|(limit, _)| *limit).max().unwrap_or(0);
        let keep = usize::try_from(most).unwrap_or(usize::MAX).max(1);
        let mut all = self.by_service.lock().await;
        if !all.contains_key(name) {
            let seen = ctx
                .records
                .created_since(name, now.saturating_sub(longest_ms), keep)
                .await
                .map_err(ApiError::from)?;
            all.insert(name.to_string(), seen.into());
        }
        let times = all.entry(name.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| *t < now.saturating_sub(longest_ms))
        {
            times.pop_front();
        }
        for (limit, ttl) in windows {
            let from = now.saturating_sub((*ttl as i64).saturating_mul(1000));
            let inside = times.len() - times.partition_point(|t| *t < from);
            if inside as u64 >= *limit {
                return Err(unavailable(format!(
                    "Limit of queued callbacks for {name} is reached for interval {ttl}s."
                )));
            }
        }
        times.push_back(now);
        while times.len() > keep {
            times.pop_front();
        }
        Ok(())
    }
}

/// The per-customer checks: in-queue checking and the daily
/// same-parameter throttle for the number, the device cap. Run under the
/// create's per-number (and per-device) lock.
pub async fn check_customer(
    ctx: &Gms,
    service: &Service,
    request: &CallbackRequest,
    headers: &axum::http::HeaderMap,
    number: &str,
    gms_user: Option<&str>,
    now: i64,
) -> Result<(), ApiError> {
    let limits = &ctx.settings.gms.limits;
    let checking = service
        .text("_enable_in_queue_checking")
        .map(|t| t.to_ascii_lowercase());
    let (per_number, rule) = match checking.as_deref() {
        Some("false") => (
            limits.max_active_per_number,
            "[gms.limits] max_active_per_number",
        ),
        Some("strict") => (1, "option _enable_in_queue_checking"),
        _ => (2, "option _enable_in_queue_checking"),
    };
    let mut by_number =
        CallbackQuery::unfinished(Some(service.name.clone()), per_number.saturating_add(1));
    by_number.filters.push(KeyFilter {
        key: "_customer_number".into(),
        value: number.to_string(),
        negated: false,
    });
    let active = ctx
        .records
        .query(&by_number)
        .await
        .map_err(ApiError::from)?
        .len();
    if active >= per_number {
        return Err(unavailable(format!(
            "Callback for _customer_number={number} rejected: {active} callback(s) for this \
             number are already in the queue of {} ({rule}).",
            service.name
        )));
    }
    if let Some(limit) = number_limit(service) {
        let day_start = now - now.rem_euclid(86_400_000);
        for (key, value) in throttle_values(service, request, headers, number) {
            // The number has a column; other parameters' values are kept
            // in the record's `_throttle` object.
            let matched = if key == "_customer_number" {
                key.clone()
            } else {
                format!("{THROTTLE_KEY}.{key}")
            };
            let query = CallbackQuery {
                service: Some(service.name.clone()),
                created_from: Some(day_start),
                filters: vec![KeyFilter {
                    key: matched,
                    value: value.clone(),
                    negated: false,
                }],
                limit: usize::try_from(limit)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
                ..CallbackQuery::default()
            };
            let today = ctx
                .records
                .query(&query)
                .await
                .map_err(ApiError::from)?
                .len() as u64;
            if today >= limit {
                return Err(unavailable(format!(
                    "Callback for {key}={value} rejected because previous callbacks for this \
                     parameter were requested for more than {limit} times today."
                )));
            }
        }
    }
    if let Some(user) = gms_user {
        let mut by_device =
            CallbackQuery::unfinished(None, limits.max_active_per_device.saturating_add(1));
        by_device.gms_user = Some(user.to_string());
        let active = ctx
            .records
            .query(&by_device)
            .await
            .map_err(ApiError::from)?
            .len();
        if active >= limits.max_active_per_device {
            return Err(ApiError::too_many(
                "too_many_callbacks",
                format!("this device already has {active} callbacks in progress"),
                60,
            ));
        }
    }
    Ok(())
}

/// The record key holding the values a create was throttled by (its
/// `_throttle_request_parameters` other than `_customer_number`).
pub const THROTTLE_KEY: &str = "_throttle";

/// The values of a create's `_throttle_request_parameters`: a request
/// header of the parameter's name first (with
/// `_enable_throttle_header_parameters`, default on), else the request's
/// option or user data; `_customer_number` as `number` (the form records
/// are matched by). Parameters the create does not carry are left out.
pub fn throttle_values(
    service: &Service,
    request: &CallbackRequest,
    headers: &axum::http::HeaderMap,
    number: &str,
) -> Vec<(String, String)> {
    let from_headers = flag(service, "_enable_throttle_header_parameters", true);
    super::settings::key_list(
        &service
            .text("_throttle_request_parameters")
            .unwrap_or_default(),
    )
    .into_iter()
    .filter_map(|key| {
        if key == "_customer_number" {
            return Some((key, number.to_string()));
        }
        let header = from_headers
            .then(|| headers.get(key.as_str()))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let value = header.or_else(|| {
            match request
                .options
                .get(&key)
                .or_else(|| request.user_data.get(&key))
            {
                None | Some(Value::Null) => None,
                Some(v) => Some(crate::modules::value_text(v)),
            }
        })?;
        Some((key, value))
    })
    .collect()
}

/// `_throttle_request_parameters_limit` (unset, empty or `-1`: no daily
/// throttle).
fn number_limit(service: &Service) -> Option<u64> {
    number(service, "_throttle_request_parameters_limit")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(pairs: &[(&str, &str)]) -> Service {
        let mut options = super::super::service::demo_service_options();
        for (k, v) in pairs {
            options.insert(k.to_string(), Value::from(*v));
        }
        Service::configured("svc", &options, &serde_json::Map::new()).expect("a service")
    }

    #[test]
    fn numbers_are_checked_as_the_options_say() {
        let us = service(&[]);
        let refused = |s: &Service, n: &str| check_phone_number(s, n).is_err();
        assert!(refused(&us, "+1 900 555 1234"), "premium");
        assert!(refused(&us, "111"), "too short");
        assert!(refused(&us, "650 238 8511; drop"), "odd characters");
        assert!(!refused(&us, "(650) 238-8511"));
        assert!(!refused(&us, "+49 30 1234567"), "a foreign number in E.164");
        let de = service(&[("_default_country", "de")]);
        assert!(!refused(&de, "030 1234567"));
        assert!(refused(&de, "0900 5123456"), "German premium");
        let off = service(&[
            ("_disallow_premium_phone_numbers", "false"),
            ("_disallow_impossible_phone_numbers", "FALSE"),
        ]);
        assert!(!refused(&off, "+1 900 555 1234"));
        assert!(!refused(&off, "111"));
        let premium_only = service(&[("_disallow_impossible_phone_numbers", "false")]);
        assert!(!refused(&premium_only, "111"));
        assert!(refused(&premium_only, "+1 900 555 1234"));
        let nowhere = service(&[("_default_country", "")]);
        let e = check_phone_number(&nowhere, "6502388511").unwrap_err();
        assert!(e.message.contains("_default_country"), "{}", e.message);
        assert_eq!(e.exception, Some(exceptions::NUMBER));
    }
}
