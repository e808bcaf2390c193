//! Visitors: strangers with a stable identity. Every `unknown` track's fused embedding is
//! clustered online ([`cluster`]) into visitors kept in the gallery database ([`store`]): a new
//! unknown that matches a visitor at or above the calibrated threshold joins it, else it founds a
//! new one. Events of unknowns then carry the visitor's id, its visit count and its cameras;
//! events of an ignored visitor are suppressed (and counted). Naming a visitor enrolls its kept
//! embeddings as templates of an identity; merging, ignoring and forgetting are the operator's
//! other verbs (the HTTP API). Retention by age and count runs at start and hourly.
//!
//! Files: `config` the `[visitors]` section, `cluster` the pure clustering, `store` the SQLite
//! tables and every operation on them, `tracker` the pipeline's side (one call per unknown
//! event), `scores` and `eval` the LFW measurement (`farsight eval-visitors`).

pub mod cluster;
mod config;
pub mod eval;
pub mod scores;
pub mod store;
mod tracker;

pub use cluster::{Cluster, Kept, Linkage, KEEP};
pub use config::{VisitorsConfig, DEFAULT_SMALL_FACE_THRESHOLD, DEFAULT_THRESHOLD};
pub use store::{VisitorError, VisitorId};
pub use tracker::{Verdict, VisitorBook, RETENTION_EVERY};
