//! Counters and histograms the server exports at `/metrics` in the
//! Prometheus text format. Plain atomics: workers and handlers update them
//! without locks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the macrostep latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
];

/// The server's metrics; see the module docs.
#[derive(Default)]
pub struct Metrics {
    /// Sessions started.
    pub sessions_started: AtomicU64,
    /// Sessions running now.
    pub sessions_running: AtomicU64,
    /// Sessions that reached a final state.
    pub sessions_completed: AtomicU64,
    /// Sessions stopped by `terminate`.
    pub sessions_terminated: AtomicU64,
    /// Sessions stopped because a script failed the worker.
    pub sessions_failed: AtomicU64,
    /// Halted sessions kept for queries.
    pub sessions_retained: AtomicU64,
    /// Of those, the ones kept as plain records (their engine state and
    /// ECMAScript objects dropped once their last write committed).
    pub sessions_retired: AtomicU64,
    /// Running sessions asleep in the store.
    pub sessions_hibernated: AtomicU64,
    /// Times a session was read back from the store into memory.
    pub sessions_woken: AtomicU64,
    /// Of the hibernated sessions, those in the warm tier (their snapshot
    /// text in memory).
    pub sessions_warm: AtomicU64,
    /// Times a session was restored from the warm tier (no store read).
    pub sessions_woken_warm: AtomicU64,
    /// External events processed.
    pub events_processed: AtomicU64,
    /// Document requests answered from the cache without a fetch.
    pub document_cache_hits: AtomicU64,
    /// Documents fetched (cache miss or changed on revalidation).
    pub document_cache_misses: AtomicU64,
    /// Revalidations that found the document unchanged.
    pub document_cache_revalidated: AtomicU64,
    /// `session:fetch` requests made.
    pub fetches: AtomicU64,
    /// HTTP requests answered, by class.
    pub http_requests: [AtomicU64; 5],
    /// HTTP connections open now.
    pub connections_open: AtomicU64,
    /// HTTP connections accepted and served (reserve ones included).
    pub connections_accepted: AtomicU64,
    /// Of those, the ones accepted in reserve mode (`/health` and
    /// operators only).
    pub connections_reserve: AtomicU64,
    /// Connections closed at accept: `max_connections` were open.
    pub connections_shed_full: AtomicU64,
    /// Connections closed at accept: their peer address held
    /// `max_connections_per_ip`.
    pub connections_shed_per_ip: AtomicU64,
    /// Connections closed at accept: the server was in its reserve and
    /// their peer address held its share of it.
    pub connections_shed_reserve_per_ip: AtomicU64,
    /// Requests on reserve connections answered 503 `overloaded`.
    pub requests_shed: AtomicU64,
    /// Connections closed because a request's head did not arrive within
    /// the header timeout (idle keep-alive connections included).
    pub connection_timeouts_header: AtomicU64,
    /// Requests answered 408 because their body did not arrive within the
    /// body timeout.
    pub connection_timeouts_body: AtomicU64,
    /// Connections closed because a response write made no progress
    /// within the write timeout.
    pub connection_timeouts_write: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        add(counter, 1);
    }

    /// Subtracts one from a gauge (never below zero).
    pub fn dec(counter: &AtomicU64) {
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Records one macrostep's duration.
    pub fn observe_macrostep(&self, micros: u64) {
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            if micros <= *bound {
                add(&self.latency_buckets[i], 1);
                break;
            }
        }
        add(&self.latency_count, 1);
        add(&self.latency_sum_us, micros);
    }

    /// Counts an answered HTTP request by its status class.
    pub fn count_response(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        add(&self.http_requests[class], 1);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let _ = writeln!(out, "# HELP ors_sessions Sessions by state.");
        let _ = writeln!(out, "# TYPE ors_sessions gauge");
        let _ = writeln!(
            out,
            "ors_sessions{{state=\"running\"}} {}",
            get(&self.sessions_running)
        );
        let _ = writeln!(
            out,
            "ors_sessions{{state=\"halted\"}} {}",
            get(&self.sessions_retained)
        );
        let _ = writeln!(
            out,
            "ors_sessions{{state=\"hibernated\"}} {}",
            get(&self.sessions_hibernated)
        );
        let _ = writeln!(
            out,
            "# HELP ors_sessions_retired Halted sessions kept for queries as plain records, outside the engine."
        );
        let _ = writeln!(out, "# TYPE ors_sessions_retired gauge");
        let _ = writeln!(out, "ors_sessions_retired {}", get(&self.sessions_retired));
        let _ = writeln!(
            out,
            "# HELP ors_sessions_warm Hibernated sessions whose state is kept in memory as snapshot text (the warm tier)."
        );
        let _ = writeln!(out, "# TYPE ors_sessions_warm gauge");
        let _ = writeln!(out, "ors_sessions_warm {}", get(&self.sessions_warm));
        let _ = writeln!(
            out,
            "# HELP ors_sessions_woken_warm_total Sessions restored from the warm tier, without a store read."
        );
        let _ = writeln!(out, "# TYPE ors_sessions_woken_warm_total counter");
        let _ = writeln!(
            out,
            "ors_sessions_woken_warm_total {}",
            get(&self.sessions_woken_warm)
        );
        let _ = writeln!(
            out,
            "# HELP ors_sessions_woken_total Sessions read back from the store."
        );
        let _ = writeln!(out, "# TYPE ors_sessions_woken_total counter");
        let _ = writeln!(
            out,
            "ors_sessions_woken_total {}",
            get(&self.sessions_woken)
        );
        let _ = writeln!(
            out,
            "# HELP ors_sessions_total Sessions by how they ended (started counts all)."
        );
        let _ = writeln!(out, "# TYPE ors_sessions_total counter");
        for (label, c) in [
            ("started", &self.sessions_started),
            ("completed", &self.sessions_completed),
            ("terminated", &self.sessions_terminated),
            ("failed", &self.sessions_failed),
        ] {
            let _ = writeln!(out, "ors_sessions_total{{outcome=\"{label}\"}} {}", get(c));
        }
        let _ = writeln!(
            out,
            "# HELP ors_events_processed_total External events processed."
        );
        let _ = writeln!(out, "# TYPE ors_events_processed_total counter");
        let _ = writeln!(
            out,
            "ors_events_processed_total {}",
            get(&self.events_processed)
        );
        let _ = writeln!(
            out,
            "# HELP ors_macrostep_seconds Time to process one external event."
        );
        let _ = writeln!(out, "# TYPE ors_macrostep_seconds histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += get(&self.latency_buckets[i]);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "ors_macrostep_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(out, "ors_macrostep_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = get(&self.latency_sum_us) as f64 / 1e6;
        let _ = writeln!(out, "ors_macrostep_seconds_sum {sum}");
        let _ = writeln!(out, "ors_macrostep_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP ors_document_cache_total Document lookups by result."
        );
        let _ = writeln!(out, "# TYPE ors_document_cache_total counter");
        for (label, c) in [
            ("hit", &self.document_cache_hits),
            ("miss", &self.document_cache_misses),
            ("revalidated", &self.document_cache_revalidated),
        ] {
            let _ = writeln!(
                out,
                "ors_document_cache_total{{result=\"{label}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(out, "# HELP ors_fetches_total session:fetch requests made.");
        let _ = writeln!(out, "# TYPE ors_fetches_total counter");
        let _ = writeln!(out, "ors_fetches_total {}", get(&self.fetches));
        let _ = writeln!(
            out,
            "# HELP ors_http_responses_total HTTP responses by status class."
        );
        let _ = writeln!(out, "# TYPE ors_http_responses_total counter");
        for (i, c) in self.http_requests.iter().enumerate() {
            let _ = writeln!(
                out,
                "ors_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                get(c)
            );
        }
        self.render_connections(&mut out);
        out
    }

    /// The connection gauge and counters (see [`super::connections`]).
    fn render_connections(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP ors_connections_open HTTP connections open now."
        );
        let _ = writeln!(out, "# TYPE ors_connections_open gauge");
        let _ = writeln!(out, "ors_connections_open {}", get(&self.connections_open));
        let _ = writeln!(
            out,
            "# HELP ors_connections_total HTTP connections accepted and served, and those of them in reserve mode."
        );
        let _ = writeln!(out, "# TYPE ors_connections_total counter");
        for (label, c) in [
            ("accepted", &self.connections_accepted),
            ("reserve", &self.connections_reserve),
        ] {
            let _ = writeln!(out, "ors_connections_total{{mode=\"{label}\"}} {}", get(c));
        }
        let _ = writeln!(
            out,
            "# HELP ors_connections_shed_total Connections closed at accept, by the limit reached."
        );
        let _ = writeln!(out, "# TYPE ors_connections_shed_total counter");
        for (label, c) in [
            ("max_connections", &self.connections_shed_full),
            ("max_connections_per_ip", &self.connections_shed_per_ip),
            ("reserve_per_ip", &self.connections_shed_reserve_per_ip),
        ] {
            let _ = writeln!(
                out,
                "ors_connections_shed_total{{limit=\"{label}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ors_requests_shed_total Requests answered 503 overloaded on reserve connections."
        );
        let _ = writeln!(out, "# TYPE ors_requests_shed_total counter");
        let _ = writeln!(out, "ors_requests_shed_total {}", get(&self.requests_shed));
        let _ = writeln!(
            out,
            "# HELP ors_connection_timeouts_total Connections timed out, by what was awaited."
        );
        let _ = writeln!(out, "# TYPE ors_connection_timeouts_total counter");
        for (label, c) in [
            ("header", &self.connection_timeouts_header),
            ("body", &self.connection_timeouts_body),
            ("write", &self.connection_timeouts_write),
        ] {
            let _ = writeln!(
                out,
                "ors_connection_timeouts_total{{phase=\"{label}\"}} {}",
                get(c)
            );
        }
    }
}
