//! The routing half of the JSON-over-HTTP backend protocol (conventions in
//! [`super::protocol`]): [`HttpRouting`], the client the server uses when
//! `routing_url` is set, and [`routing_protocol_router`], which exposes any
//! [`RoutingBackend`] over the protocol (the embedded simulator, for
//! example, so that several servers can share one).
//!
//! # Routes
//!
//! | Request | Body | Success |
//! |---|---|---|
//! | `POST {base}/reserve` | a [`ReserveRequest`] | 200, a [`Reservation`] |
//! | `POST {base}/cancel` | `{"request_id": "..."}` | 200, `{"cancelled": true\|false}` |
//! | `POST {base}/confirm` | `{"reservation_id": "..."}` | 200, `{}` |
//! | `POST {base}/release` | `{"reservation_id": "..."}` | 200, `{}` |
//! | `GET {base}/statistic?target=<urs target>&stat=<name>` | | 200, `{"value": 2.0}` |
//!
//! A `ReserveRequest` is
//! `{"request_id", "interaction_id", "virtual_queue", "media", "target",
//! "priority", "timeout_ms", "reserve_ms"}` (`target` is the `_target`
//! option text, a URS target or a JSON list of steps); a `Reservation` is
//! `{"reservation_id", "agent_id", "agent_name", "place",
//! "target_selected", "virtual_queue", "waited_ms"}`.
//!
//! `reserve` is a long request: the backend answers when it has reserved
//! an agent, or fails with `{"error": "timeout"}` after `timeout_ms`, or
//! `{"error": "cancelled"}` when a `cancel` names the request meanwhile.
//! The client allows `timeout_ms` plus 10 seconds for the answer. A
//! backend should treat a closed connection as a cancel (the server drops
//! a request it no longer needs); the router below does. A reservation not
//! confirmed within `reserve_ms` should be released by the backend.
//! `confirm` of an unknown reservation fails with `{"error": "unknown"}`;
//! `release` of an unknown one succeeds.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use super::BoxFuture;
use super::protocol::{
    CancelBody, CancelledBody, Empty, ProtocolClient, ReservationBody, StatisticBody, encode,
    json_response, query_pairs, query_value, routing_status,
};
use super::routing::{Reservation, ReserveRequest, RoutingBackend, RoutingError};

/// How much longer than the request's own timeout the client waits for a
/// `reserve` answer.
const RESERVE_GRACE: Duration = Duration::from_secs(10);

/// A routing backend reached over HTTP; see the module docs.
pub struct HttpRouting {
    client: ProtocolClient,
}

impl HttpRouting {
    /// A client for the routing service at `base_url`. Its requests run on
    /// a background thread of its own.
    pub fn new(base_url: &str) -> Result<HttpRouting, super::SetupError> {
        Ok(HttpRouting {
            client: ProtocolClient::new(base_url, "ors-routing-http")?,
        })
    }
}

impl RoutingBackend for HttpRouting {
    fn reserve(&self, request: ReserveRequest) -> BoxFuture<'_, Result<Reservation, RoutingError>> {
        Box::pin(async move {
            let timeout = request.timeout().saturating_add(RESERVE_GRACE);
            self.client.post("/reserve", &request, Some(timeout)).await
        })
    }

    fn cancel(&self, request_id: &str) -> BoxFuture<'_, bool> {
        let body = CancelBody {
            request_id: request_id.to_string(),
        };
        Box::pin(async move {
            match self
                .client
                .post::<_, CancelledBody, RoutingError>("/cancel", &body, None)
                .await
            {
                Ok(answer) => answer.cancelled,
                Err(e) => {
                    tracing::warn!(error = %e, "routing backend: cancel failed");
                    false
                }
            }
        })
    }

    fn confirm(&self, reservation_id: &str) -> BoxFuture<'_, Result<(), RoutingError>> {
        let body = ReservationBody {
            reservation_id: reservation_id.to_string(),
        };
        Box::pin(async move {
            self.client
                .post::<_, Empty, RoutingError>("/confirm", &body, None)
                .await
                .map(|_| ())
        })
    }

    fn release(&self, reservation_id: &str) -> BoxFuture<'_, ()> {
        let body = ReservationBody {
            reservation_id: reservation_id.to_string(),
        };
        Box::pin(async move {
            if let Err(e) = self
                .client
                .post::<_, Empty, RoutingError>("/release", &body, None)
                .await
            {
                tracing::warn!(error = %e, "routing backend: release failed");
            }
        })
    }

    fn statistic(&self, target: &str, stat: &str) -> BoxFuture<'_, Result<f64, RoutingError>> {
        let path = format!("/statistic?target={}&stat={}", encode(target), encode(stat));
        Box::pin(async move {
            self.client
                .call::<StatisticBody, RoutingError>(reqwest::Method::GET, &path, None, None)
                .await
                .map(|answer| answer.value)
        })
    }
}

/// The backend a router serves.
type Backend = Arc<dyn RoutingBackend>;

/// Exposes a routing backend over the protocol (routes relative to where
/// the router is mounted; see the module docs).
pub fn routing_protocol_router(backend: Arc<dyn RoutingBackend>) -> Router {
    Router::new()
        .route("/reserve", post(reserve))
        .route("/cancel", post(cancel))
        .route("/confirm", post(confirm))
        .route("/release", post(release))
        .route("/statistic", get(statistic))
        .with_state(backend)
}

/// The failure response of an error.
fn failure(error: &RoutingError) -> Response {
    json_response(routing_status(error), error)
}

/// Decodes a request body, or the `invalid` failure.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RoutingError> {
    serde_json::from_slice(body)
        .map_err(|e| RoutingError::Invalid(format!("bad request body: {e}")))
}

async fn reserve(State(backend): State<Backend>, body: Bytes) -> Response {
    let request: ReserveRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return failure(&e),
    };
    match backend.reserve(request).await {
        Ok(reservation) => json_response(200, &reservation),
        Err(e) => failure(&e),
    }
}

async fn cancel(State(backend): State<Backend>, body: Bytes) -> Response {
    match decode::<CancelBody>(&body) {
        Ok(b) => json_response(
            200,
            &CancelledBody {
                cancelled: backend.cancel(&b.request_id).await,
            },
        ),
        Err(e) => failure(&e),
    }
}

async fn confirm(State(backend): State<Backend>, body: Bytes) -> Response {
    match decode::<ReservationBody>(&body) {
        Ok(b) => match backend.confirm(&b.reservation_id).await {
            Ok(()) => json_response(200, &Empty {}),
            Err(e) => failure(&e),
        },
        Err(e) => failure(&e),
    }
}

async fn release(State(backend): State<Backend>, body: Bytes) -> Response {
    match decode::<ReservationBody>(&body) {
        Ok(b) => {
            backend.release(&b.reservation_id).await;
            json_response(200, &Empty {})
        }
        Err(e) => failure(&e),
    }
}

async fn statistic(State(backend): State<Backend>, RawQuery(query): RawQuery) -> Response {
    let pairs = query_pairs(query.as_deref());
    let (Some(target), Some(stat)) = (query_value(&pairs, "target"), query_value(&pairs, "stat"))
    else {
        return failure(&RoutingError::Invalid(
            "the 'target' and 'stat' query parameters are required".to_string(),
        ));
    };
    match backend.statistic(target, stat).await {
        Ok(value) => json_response(200, &StatisticBody { value }),
        Err(e) => failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::protocol::serve_for_test;
    use crate::backends::routing_sim::RoutingSim;
    use crate::backends::settings::{AgentSettings, SimulatorSettings};

    async fn setup() -> (Arc<RoutingSim>, HttpRouting, String) {
        let sim = Arc::new(
            RoutingSim::new(&SimulatorSettings {
                agents: vec![AgentSettings {
                    ready: false,
                    ..AgentSettings::new("a1", "Ann", &["G"])
                }],
                ..SimulatorSettings::default()
            })
            .unwrap(),
        );
        let base = serve_for_test(routing_protocol_router(sim.clone())).await;
        let client = HttpRouting::new(&format!("{base}/")).unwrap();
        (sim, client, base)
    }

    fn request(id: &str, target: &str, timeout_ms: u64) -> ReserveRequest {
        ReserveRequest {
            request_id: id.to_string(),
            interaction_id: "ixn".to_string(),
            virtual_queue: "VQ".to_string(),
            media: "chat".to_string(),
            target: target.to_string(),
            priority: 0,
            timeout_ms,
            reserve_ms: 0,
        }
    }

    async fn until(what: impl Fn() -> bool) {
        for _ in 0..2000 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn every_call_goes_through_the_protocol() {
        let (sim, client, _) = setup().await;
        assert_eq!(
            client.reserve(request("r1", "G@SS.GA", 50)).await,
            Err(RoutingError::Timeout)
        );
        assert_eq!(
            client.statistic("G@SS.GA", "RStatAgentsTotal").await,
            Ok(1.0)
        );
        sim.set_ready("a1", true).unwrap();
        let r = client.reserve(request("r2", "G@SS.GA", 50)).await.unwrap();
        assert_eq!((r.agent_id.as_str(), r.agent_name.as_str()), ("a1", "Ann"));
        client.confirm(&r.reservation_id).await.unwrap();
        assert_eq!(
            client.confirm("res-x").await,
            Err(RoutingError::Unknown("res-x".into()))
        );
        assert_eq!(sim.reservations(), 1);
        client.release(&r.reservation_id).await;
        assert_eq!(sim.reservations(), 0);
        assert!(matches!(
            client.reserve(request("r3", "G", 50)).await,
            Err(RoutingError::Invalid(m)) if m.contains("_target")
        ));
        assert!(matches!(
            client.statistic("G@SS.GA", "Nonsense").await,
            Err(RoutingError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn cancel_and_dropped_requests_reach_the_backend() {
        let (sim, client, base) = setup().await;
        let client = Arc::new(client);
        let waiting = {
            let client = client.clone();
            tokio::spawn(async move { client.reserve(request("r1", "G@SS.GA", 5000)).await })
        };
        until(|| sim.waiting() == 1).await;
        assert!(client.cancel("r1").await);
        assert_eq!(waiting.await.unwrap(), Err(RoutingError::Cancelled));
        assert!(!client.cancel("r1").await);
        // Giving up on a reserve closes the connection, which ends the wait.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            client.reserve(request("r2", "G@SS.GA", 5000)),
        )
        .await;
        assert!(gave_up.is_err());
        until(|| sim.waiting() == 0).await;
        // Bad bodies are `invalid` failures with status 400.
        let response = crate::io::http::http_client(Duration::from_secs(5))
            .post(format!("{base}/reserve"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let e: RoutingError = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(matches!(e, RoutingError::Invalid(m) if m.contains("bad request body")));
    }
}
