//! Scheduled callbacks (GMS 8.5 Callback Services API, `_desired_time`;
//! option reference, *Scheduled_Call*): the checks a desired time passes,
//! and the durable scheduler that submits each scheduled callback when it
//! is due.
//!
//! A create whose `_desired_time` less the service's
//! `_request_execution_time_buffer` (seconds) is still ahead is stored as
//! `SCHEDULED` and put on the schedule (table `ors_callback_schedule`, in
//! the same write as its record) with what its session will start with.
//! The scheduler ([`run`]) wakes when the earliest entry is due (or a
//! create or reschedule puts an earlier one on the schedule, or at the
//! latest every [`POLL`]), starts each due callback's session with the id
//! chosen at create (so a submit repeated after a crash finds the session
//! it started), and marks the record `QUEUED`, leaving the schedule in the
//! same write. A service's `_max_queued_callbacks_per_service` holds for
//! callbacks coming due too: while its queue is full, a due one stays
//! `SCHEDULED` and is tried again [`QUEUE_FULL_RETRY_MS`] later. After a
//! restart it finds what came due while the server
//! was down: a callback whose desired time is still inside the far end of
//! `_queue_poll_period_recovery` (minutes, default `-1440,-120`: a day) is
//! submitted late; an older one ends `COMPLETED` with `_callback_reason`
//! `SUBMIT_FAILED`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::Gms;
use super::callback_api::exceptions;
use super::records::{self, Scheduled, iso_utc, parse_iso_utc};
use super::service::Service;
use crate::server::error::ApiError;

/// The longest the scheduler sleeps between looks at the schedule.
pub const POLL: Duration = Duration::from_secs(60);

/// How far in the past a desired time may be and still be taken (as
/// "now"): clocks of devices differ.
pub const PAST_TOLERANCE_MS: i64 = 60_000;

/// How long a due callback whose service's queue is full waits before
/// it is tried again, in ms.
pub const QUEUE_FULL_RETRY_MS: i64 = 30_000;

/// Due callbacks submitted per look (the scheduler looks again at once
/// while there are more).
const BATCH: usize = 100;

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_desired_time", message)
        .with_exception(exceptions::CALLBACK)
}

/// A whole-number option of the service, or `default`.
fn seconds(service: &Service, name: &str, default: i64) -> i64 {
    service
        .options
        .get(name)
        .map(crate::modules::value_text)
        .and_then(|t| t.trim().parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .unwrap_or(default)
}

/// `_reject_future_desired_time` (`1<unit>`: `y`, `M`, `w`, `d`, `h`,
/// `m`; a count before the unit) in ms; `None` when it is not one.
pub fn future_limit_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let count: i64 = text[..text.len() - unit.len_utf8()].trim().parse().ok()?;
    let unit_ms: i64 = match unit {
        'y' => 365 * 86_400_000,
        'M' => 30 * 86_400_000,
        'w' => 7 * 86_400_000,
        'd' => 86_400_000,
        'h' => 3_600_000,
        'm' => 60_000,
        _ => return None,
    };
    (count > 0).then(|| count.saturating_mul(unit_ms))
}

/// A requested desired time (`_desired_time`, `_new_desired_time`: ISO
/// 8601 with a zone) as ms since the Unix epoch, checked: 400 when it is
/// not a time, is more than [`PAST_TOLERANCE_MS`] in the past, or is
/// further ahead than the service's `_reject_future_desired_time`.
pub fn desired_time(service: &Service, name: &str, text: &str, now: i64) -> Result<i64, ApiError> {
    let at = parse_iso_utc(text).ok_or_else(|| {
        bad(format!(
            "{name} '{text}' is not a time: give ISO 8601 UTC such as 2026-12-01T15:30:00.000Z"
        ))
    })?;
    if at < now - PAST_TOLERANCE_MS {
        return Err(bad(format!(
            "{name} {} is in the past (it is {} now)",
            iso_utc(at),
            iso_utc(now)
        )));
    }
    let limit = service
        .options
        .get("_reject_future_desired_time")
        .map(crate::modules::value_text)
        .and_then(|t| future_limit_ms(&t));
    if let Some(limit) = limit
        && at > now.saturating_add(limit)
    {
        return Err(bad(format!(
            "{name} {} is further ahead than this service takes \
             (_reject_future_desired_time)",
            iso_utc(at)
        )));
    }
    Ok(at.max(now))
}

/// When a callback desired at `desired` is submitted: its desired time
/// less the service's `_request_execution_time_buffer`.
pub fn due_time(service: &Service, desired: i64) -> i64 {
    desired.saturating_sub(seconds(service, "_request_execution_time_buffer", 120) * 1000)
}

/// What a scheduled callback's session starts with, as stored on the
/// schedule.
pub fn start_spec(src: &str, params: &Map<String, Value>) -> String {
    json!({ "src": src, "params": params }).to_string()
}

/// The far end of a service's `_queue_poll_period_recovery` (minutes
/// relative to now, e.g. `-1440,-120`) in ms before now.
fn recovery_ms(service: Option<&Service>) -> i64 {
    let minutes = service
        .and_then(|s| s.options.get("_queue_poll_period_recovery"))
        .map(crate::modules::value_text)
        .and_then(|t| {
            t.split(',')
                .filter_map(|p| p.trim().parse::<i64>().ok())
                .min()
        })
        .unwrap_or(-1440);
    minutes.saturating_abs().saturating_mul(60_000)
}

/// Runs the schedule for as long as the server runs.
pub async fn run(gms: Arc<Gms>) {
    loop {
        let now = gms.settings.clock.now_ms();
        let woken = gms.schedule_changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let due = match gms.records.due(now, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "the callback schedule could not be read");
                Vec::new()
            }
        };
        let full = due.len() >= BATCH;
        for scheduled in due {
            submit(&gms, scheduled, now).await;
        }
        if full {
            continue;
        }
        let wait = match gms.records.next_due().await {
            Ok(Some(at)) => {
                Duration::from_millis((at - now).clamp(0, POLL.as_millis() as i64) as u64)
            }
            _ => POLL,
        };
        tokio::select! {
            _ = gms.settings.clock.sleep_until(now.saturating_add(wait.as_millis() as i64)) => {}
            _ = woken => {}
        }
    }
}

/// Ends a callback that could not be submitted (again): `COMPLETED`,
/// `_callback_reason` `SUBMIT_FAILED`, `why` in `_failure_reason`.
pub(super) async fn submit_failed(gms: &Gms, row: &records::CallbackRow, why: String) {
    tracing::warn!(callback = %row.id, reason = %why, "a callback could not be submitted");
    let mut extra = Map::new();
    extra.insert("_failure_reason".into(), Value::from(why));
    if let Err(e) = gms
        .records
        .update(
            &row.id,
            records::COMPLETED,
            Some(records::SUBMIT_FAILED),
            extra,
        )
        .await
    {
        tracing::error!(callback = %row.id, error = %e, "a callback could not be marked SUBMIT_FAILED");
    }
}

/// Submits one due callback: starts its session (unless a submit before a
/// crash already did) and marks it `QUEUED`; one missed by more than the
/// recovery window, or whose session cannot start, ends `SUBMIT_FAILED`.
async fn submit(gms: &Gms, scheduled: Scheduled, now: i64) {
    let row = &scheduled.row;
    let service = gms.services.get(&row.service);
    let desired = records::record_json(row)
        .get("_desired_time")
        .and_then(Value::as_str)
        .and_then(parse_iso_utc)
        .unwrap_or(scheduled.due_at);
    let failed = |why: String| submit_failed(gms, row, why);
    if now - desired > recovery_ms(service) {
        return failed(format!(
            "its desired time {} passed while the server was down, beyond \
             _queue_poll_period_recovery",
            iso_utc(desired)
        ))
        .await;
    }
    let mut spec: Value = serde_json::from_str(&scheduled.start).unwrap_or(Value::Null);
    let paused = gms.paused.is_paused(gms, &row.service).await;
    if paused && let Some(Value::Object(data)) = spec.pointer_mut("/params/_data") {
        data.insert("_paused".into(), Value::Bool(true));
    }
    let (Some(src), Some(Value::Object(params))) = (spec["src"].as_str(), spec.get("params"))
    else {
        return failed("its start parameters are unreadable".into()).await;
    };
    let to = if paused {
        records::PAUSED
    } else {
        records::QUEUED
    };
    // The service's queued limit holds for callbacks coming due too: a
    // full queue keeps this one scheduled a while longer.
    // (A paused service's callbacks do not queue: they start PAUSED.)
    let _reservation = match service {
        Some(_) if paused => None,
        Some(service) => match super::admission::admit_to_queue(gms, service, now).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::info!(callback = %row.id, reason = %e.message,
                    "a due callback waits: its service's queue is full");
                if let Err(e) = gms
                    .records
                    .postpone(&row.id, now + QUEUE_FULL_RETRY_MS, &scheduled.start)
                    .await
                {
                    tracing::error!(callback = %row.id, error = %e, "a due callback could not be postponed");
                }
                return;
            }
        },
        None => None,
    };
    let session_id = row.session_id.clone();
    if gms.sessions.query(&session_id).await.is_err()
        && let Err(e) = gms
            .sessions
            .start_with_id(session_id.clone(), src, params.clone(), None)
            .await
    {
        return failed(format!("its session could not start: {}", e.message)).await;
    }
    let marked = gms
        .records
        .modify(&row.id, |row, record| {
            if row.state != records::SCHEDULED {
                return None;
            }
            row.state = to.into();
            record.insert("_callback_state".into(), Value::from(to));
            record.insert("_ors_session_id".into(), Value::from(session_id.clone()));
            Some(records::ScheduleChange::Remove)
        })
        .await;
    match marked {
        Ok(Some((_, true))) => {}
        // Cancelled (or moved on) meanwhile: the session is not wanted.
        Ok(_) => {
            let _ = gms.sessions.send(
                &session_id,
                crate::server::worker::Command::Terminate {
                    id: session_id.clone(),
                    reply: None,
                },
            );
            let _ = gms.records.unschedule(&row.id).await;
        }
        Err(e) => {
            tracing::error!(callback = %row.id, error = %e, "a submitted callback could not be marked QUEUED")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn future_limits_read_gms_units() {
        assert_eq!(future_limit_ms("1M"), Some(30 * 86_400_000));
        assert_eq!(future_limit_ms("2w"), Some(14 * 86_400_000));
        assert_eq!(future_limit_ms("90m"), Some(90 * 60_000));
        assert_eq!(future_limit_ms("1y"), Some(365 * 86_400_000));
        assert_eq!(future_limit_ms("0d"), None);
        assert_eq!(future_limit_ms("month"), None);
        assert_eq!(future_limit_ms(""), None);
    }

    #[test]
    fn desired_times_are_checked() {
        let service = Service::configured(
            "svc",
            &super::super::service::demo_service_options(),
            &Map::new(),
        )
        .unwrap();
        let now = parse_iso_utc("2026-12-01T10:00:00Z").unwrap();
        let at = |t: &str| desired_time(&service, "_desired_time", t, now);
        assert_eq!(at("2026-12-01T12:00:00.000Z").unwrap(), now + 7_200_000);
        // A little late is taken as now.
        assert_eq!(at("2026-12-01T09:59:30Z").unwrap(), now);
        assert!(at("2026-12-01T09:58:00Z").is_err(), "in the past");
        assert!(at("2027-02-01T10:00:00Z").is_err(), "beyond a month");
        assert!(at("tomorrow").is_err());
        assert_eq!(due_time(&service, now), now - 120_000);
    }
}
