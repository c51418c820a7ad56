//! Routes that say what they are. [`Routes`] builds an axum `Router` and,
//! route by route, the entry `/ors/help` lists for it (methods, path, what
//! it does, who may call it). The methods of an entry are the ones its
//! handler is registered for, so the help cannot miss or misstate a route
//! built this way.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use serde::Serialize;

/// One route as `/ors/help` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteDoc {
    /// HTTP methods (`"ANY"`: every method).
    pub methods: Vec<String>,
    /// The path, with `{name}` placeholders.
    pub path: String,
    /// Who may call it: `public`, `operator`, `customer` or `admin`.
    pub access: &'static str,
    /// What it does, and its main parameters.
    pub summary: String,
}

/// A router under construction with the help entries of its routes; all
/// of them share one access level.
pub struct Routes<S = ()> {
    router: Router<S>,
    docs: Vec<RouteDoc>,
    access: &'static str,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet; every route added is listed with `access`.
    pub fn new(access: &'static str) -> Routes<S> {
        Routes {
            router: Router::new(),
            docs: Vec::new(),
            access,
        }
    }

    /// Serves `handler` at `path` for `methods` (empty: any method) and
    /// lists it with `summary`. The same path may be added again with
    /// other methods and another handler.
    ///
    /// # Panics
    /// A method axum cannot route by (only extension methods), or a path
    /// axum refuses: both are programming errors, found at start.
    pub fn route<H, T>(mut self, path: &str, methods: &[Method], handler: H, summary: &str) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let method_router: MethodRouter<S> = if methods.is_empty() {
            axum::routing::any(handler)
        } else {
            methods.iter().fold(MethodRouter::new(), |router, method| {
                let filter = MethodFilter::try_from(method.clone())
                    .unwrap_or_else(|e| panic!("{method} on {path}: {e}"));
                router.on(filter, handler.clone())
            })
        };
        self.router = self.router.route(path, method_router);
        self.docs.push(RouteDoc {
            methods: if methods.is_empty() {
                vec!["ANY".into()]
            } else {
                methods.iter().map(ToString::to_string).collect()
            },
            path: path.to_string(),
            access: self.access,
            summary: summary.to_string(),
        });
        self
    }

    /// The router, with `state` applied, and the help entries.
    pub fn with_state<S2>(self, state: S) -> (Router<S2>, Vec<RouteDoc>) {
        (self.router.with_state(state), self.docs)
    }
}
