//! The operator's HTTP server, inside the farsight binary: health and readiness probes,
//! Prometheus metrics, and a JSON API over the gallery (list, enroll photos, rename, delete),
//! recognition of an uploaded photo, the stored and live events, the visitors, and a web page
//! over all of it (README "HTTP API").
//!
//! It runs beside the pipeline (`farsight run`) or alone (`farsight serve`) on a small tokio
//! runtime of its own ([`Server`]), so it never takes the pipeline's threads; the pipeline shows it
//! readiness and counters through [`LiveState`](crate::stats::LiveState) and new events through
//! the [`Hub`], neither of which ever blocks the publisher.
//!
//! Files: `config` the `[http]` section, `server` the runtime, router and request guard (token,
//! shutdown, limits), `api` the gallery and identify routes, `events` the events routes and the
//! recognition of an uploaded photo, the stored and live events, the visitors, and a web page
//! over all of it (README "HTTP API").

mod api;
mod config;
mod crops;
mod error;
mod events;
mod metrics;
mod page;
mod server;
mod visitors;

pub use config::{HttpConfig, DEFAULT_BIND, MIN_TOKEN_CHARS};
pub use error::{ApiError, HttpError};
pub use events::{Hub, MAX_PAGE};
pub use server::{Server, ServerContext};
