//! Callbacks whose session died (GMS option reference, *Callback*:
//! `_queue_ping_ors_period`, `_max_ors_submit_attempts`; the `[callback]`
//! section's `queue-polling-rate`): every `queue-polling-rate` seconds
//! (default 60) the server looks at the `QUEUED` callbacks and asks
//! whether each one's session still runs. One whose session ended (an
//! operator terminated it, its document failed) is submitted again — a
//! new session, started as the first one was (`ors_callback_start`) — as
//! long as its desired time is within the far end of the service's
//! `_queue_ping_ors_period` (minutes, default `-120,-2`: two hours) and it
//! has been submitted fewer than `_max_ors_submit_attempts` times (default
//! 3); otherwise it ends `COMPLETED` with `_callback_reason`
//! `SUBMIT_FAILED` (and `_failure_reason`). A callback changed more
//! recently than the near end of the period (two minutes) is left alone:
//! its session may still be starting. The record counts its submits in
//! `_submit_attempts`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Gms;
use super::records::{self, CallbackQuery, CallbackRow, parse_iso_utc};
use super::service::Service;

/// Submits per callback when the service does not say.
pub const DEFAULT_SUBMIT_ATTEMPTS: u64 = 3;

/// Looks at the queued callbacks every `queue-polling-rate` seconds for
/// as long as the server runs.
pub async fn run(gms: Arc<Gms>) {
    let every = Duration::from_secs(gms.settings.callback.queue_polling_rate.max(1));
    loop {
        gms.settings.clock.sleep(every).await;
        ping(&gms, gms.settings.clock.now_ms()).await;
    }
}

/// One look at the queued callbacks (the newest [`records::SCAN_ROWS`]).
pub async fn ping(gms: &Gms, now: i64) {
    let queued = CallbackQuery {
        states: vec![records::QUEUED.to_string()],
        limit: records::SCAN_ROWS,
        ..CallbackQuery::default()
    };
    match gms.records.query(&queued).await {
        Ok(rows) => {
            for row in rows {
                check(gms, row, now).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "queued callbacks could not be read"),
    }
}

/// `_queue_ping_ors_period` as (far, near) ms before now.
fn ping_window(service: Option<&Service>) -> (i64, i64) {
    let minutes: Vec<i64> = service
        .and_then(|s| s.options.get("_queue_ping_ors_period"))
        .map(crate::modules::value_text)
        .map(|t| {
            t.split(',')
                .filter_map(|p| p.trim().parse::<i64>().ok())
                .collect()
        })
        .unwrap_or_default();
    let (far, near) = match minutes.as_slice() {
        [a, b] => ((*a).min(*b), (*a).max(*b)),
        _ => (-120, -2),
    };
    (
        far.saturating_abs().saturating_mul(60_000),
        near.min(0).saturating_abs().saturating_mul(60_000),
    )
}

async fn check(gms: &Gms, row: CallbackRow, now: i64) {
    let service = gms.services.get(&row.service);
    let (far, near) = ping_window(service);
    if now - row.updated_at < near {
        return;
    }
    let alive = gms
        .sessions
        .query(&row.session_id)
        .await
        .is_ok_and(|view| view.status == "running");
    if alive {
        return;
    }
    let record = records::record_json(&row);
    let desired = record
        .get("_desired_time")
        .and_then(Value::as_str)
        .and_then(parse_iso_utc)
        .unwrap_or(row.created_at);
    let attempts = record
        .get("_submit_attempts")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let most = service
        .and_then(|s| s.options.get("_max_ors_submit_attempts"))
        .map(crate::modules::value_text)
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_SUBMIT_ATTEMPTS);
    let row = &row;
    let fail = |why: String| super::scheduler::submit_failed(gms, row, why);
    if now - desired > far {
        return fail(format!(
            "its session {} ended and its desired time {} is older than _queue_ping_ors_period",
            row.session_id,
            records::iso_utc(desired)
        ))
        .await;
    }
    if attempts + 1 >= most.max(1) {
        return fail(format!(
            "its session {} ended; it had been submitted {} time(s) \
             (_max_ors_submit_attempts {most})",
            row.session_id,
            attempts + 1
        ))
        .await;
    }
    let start = match gms.records.start_of(&row.id).await {
        Ok(Some(start)) => start,
        _ => return fail("how its session starts was not recorded".into()).await,
    };
    let spec: Value = serde_json::from_str(&start).unwrap_or(Value::Null);
    let (Some(src), Some(Value::Object(params))) = (spec["src"].as_str(), spec.get("params"))
    else {
        return fail("how its session starts is unreadable".into()).await;
    };
    let session = gms.sessions.new_session_id();
    if let Err(e) = gms
        .sessions
        .start_with_id(session.clone(), src, params.clone(), None)
        .await
    {
        return fail(format!("a new session could not start: {}", e.message)).await;
    }
    let old = row.session_id.clone();
    let marked = gms
        .records
        .modify(&row.id, |row, record| {
            if row.state != records::QUEUED || row.session_id != old {
                return None;
            }
            row.session_id = session.clone();
            record.insert("_ors_session_id".into(), Value::from(session.clone()));
            record.insert("_submit_attempts".into(), Value::from(attempts + 1));
            Some(records::ScheduleChange::Keep)
        })
        .await;
    match marked {
        Ok(Some((_, true))) => {
            tracing::info!(callback = %row.id, session = %session, "a queued callback was submitted again");
        }
        // Changed meanwhile (cancelled, taken by its chat): the new
        // session is not wanted.
        _ => {
            let _ = gms.sessions.send(
                &session,
                crate::server::worker::Command::Terminate {
                    id: session.clone(),
                    reply: None,
                },
            );
        }
    }
}
