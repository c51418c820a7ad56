//! Who may use the contact-centre routes, and what they may reach.
//!
//! - **Customer credentials** (GMS *Enabling Basic Authentication*):
//!   server-level `[gms] username`/`password` for every service, a
//!   service's own `username`/`password` options winning for it, and a
//!   `[gms] bearer_token` devices may present instead. With none
//!   configured the routes are open, as in GMS. An operator credential
//!   (see [`crate::server::auth`]) is accepted everywhere.
//! - **Ownership**: a callback, its chat and its pushes belong to the
//!   device that created it, known by its `gms_user` header. Another
//!   device gets the same 404 as for an id that does not exist. Only an
//!   operator lists or reads across devices.
//! - **Rates**: creates and chat sends per client address (the peer's IP),
//!   with `governor`'s keyed limiters; over the rate, 429 with
//!   `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;

use super::Gms;
use super::callback_api::gms_user;
use super::service::Service;
use super::settings::CustomerLimits;
use crate::server::auth::{Credentials, Presented, challenge};
use crate::server::error::ApiError;

/// The options of a service that are its own Basic credentials (never
/// copied into session data).
pub const AUTH_OPTIONS: &[&str] = &["username", "password"];

/// Who is calling a customer route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// An operator: may read and act across devices.
    pub operator: bool,
    /// The device's `gms_user` header, if it sent one.
    pub gms_user: Option<String>,
}

impl Caller {
    /// Whether this caller may reach what the device `owner` created
    /// (`""`: a device that sent no `gms_user`; then knowing the
    /// unguessable id is what it takes).
    pub fn owns(&self, owner: &str) -> bool {
        self.operator || owner.is_empty() || self.gms_user.as_deref() == Some(owner)
    }
}

fn text_option(service: &Service, name: &str) -> Option<String> {
    match service.options.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl Gms {
    /// The Basic credentials a service's devices must present: the
    /// service's own when it has a `password` option, else the
    /// server-level ones; `None` when Basic authentication is off for it.
    fn basic_for(&self, service: Option<&Service>) -> Option<Credentials> {
        let gms = &self.settings.gms;
        if let Some(s) = service
            && let Some(password) = text_option(s, "password")
        {
            return Some(Credentials {
                bearer_token: None,
                username: text_option(s, "username").or_else(|| gms.username.clone()),
                password: Some(password),
            });
        }
        gms.password
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| Credentials {
                bearer_token: None,
                username: gms.username.clone(),
                password: Some(p.to_string()),
            })
    }

    /// Checks a customer route's credentials for `service` (`None`: a
    /// route not tied to one service, such as CometD, where the
    /// server-level credentials apply): the caller, or 401 with a Basic
    /// challenge.
    pub fn customer(
        &self,
        headers: &HeaderMap,
        service: Option<&Service>,
    ) -> Result<Caller, ApiError> {
        let gms_user = gms_user(headers);
        if self.config.security.is_operator(headers) {
            return Ok(Caller {
                operator: true,
                gms_user,
            });
        }
        let basic = self.basic_for(service);
        let bearer = Credentials {
            bearer_token: self.settings.gms.bearer_token.clone(),
            ..Credentials::default()
        };
        if basic.is_none() && !bearer.is_set() {
            return Ok(Caller {
                operator: false,
                gms_user,
            });
        }
        let presented = Presented::from_headers(headers);
        let ok = bearer.accepts(&presented) || basic.is_some_and(|b| b.accepts(&presented));
        if ok {
            Ok(Caller {
                operator: false,
                gms_user,
            })
        } else {
            Err(challenge(
                &self.settings.gms.realm,
                "this service needs credentials (HTTP Basic or 'Authorization: Bearer <token>')",
            ))
        }
    }
}

/// The peer address of a request (set by the server's accept loop), if
/// known.
/// An IPv6 peer counts as its /64 (one subscriber's prefix), so that a
/// client cannot mint new limiter keys from its own address range.
pub fn client_ip(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| match c.0.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(v6) & !((1u128 << 64) - 1),
                )),
            },
            v4 => v4,
        })
}

/// Per-client rate limits of the customer routes.
pub struct Rates {
    creates: DefaultKeyedRateLimiter<IpAddr>,
    sends: DefaultKeyedRateLimiter<IpAddr>,
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rated {
    /// Callback creates.
    Create,
    /// Chat creates, messages and typing notices.
    ChatSend,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(burst)
}

impl Rates {
    /// Limiters for these limits.
    pub fn new(limits: &CustomerLimits) -> Rates {
        Rates {
            creates: RateLimiter::keyed(quota(limits.creates_per_minute, limits.burst)),
            sends: RateLimiter::keyed(quota(limits.chat_sends_per_minute, limits.burst)),
        }
    }

    /// Counts one `what` for `client`; 429 with `Retry-After` when it is
    /// over the rate. Requests with no known peer address (in-process
    /// calls) are not counted.
    pub fn check(&self, what: Rated, client: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = client else {
            return Ok(());
        };
        let limiter = match what {
            Rated::Create => &self.creates,
            Rated::ChatSend => &self.sends,
        };
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::too_many(
                "rate_limited",
                match what {
                    Rated::Create => "too many callback requests from this client; retry later",
                    Rated::ChatSend => "too many chat messages from this client; retry later",
                },
                secs,
            )
        })
    }

    /// Forgets clients whose limits have recovered (bounds memory).
    pub fn forget_idle(&self) {
        self.creates.retain_recent();
        self.sends.retain_recent();
        self.creates.shrink_to_fit();
        self.sends.shrink_to_fit();
    }
}

/// Locks by key (a customer number, a device), so that checking a quota
/// and recording what it counts happen as one step for each key while
/// requests for other keys go on.
#[derive(Default)]
pub struct KeyedLocks {
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`; it is held until the guard drops.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Forgets the locks nobody holds or waits for (bounds memory).
    pub fn forget_idle(&self) {
        if let Ok(mut locks) = self.locks.lock() {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
    }
}

/// The door of routes not tied to one service (CometD): server-level
/// customer credentials, or 401.
pub async fn any_customer(State(gms): State<Arc<Gms>>, request: Request, next: Next) -> Response {
    match gms.customer(request.headers(), None) {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// The door of admin routes (the simulator's `/sim/`): an admin or
/// operator credential, or 401.
pub async fn admin_only(State(gms): State<Arc<Gms>>, request: Request, next: Next) -> Response {
    if gms.config.security.is_admin(request.headers()) {
        return next.run(request).await;
    }
    challenge(
        "ors admin",
        "this is an administration API: an admin or operator credential is required",
    )
    .into_response()
}

/// The 404 a caller gets for a callback that is not theirs, the same as
/// for one that does not exist.
pub fn not_yours(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "callback_not_found",
        format!("no callback '{id}'"),
    )
}
