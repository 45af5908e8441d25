//! outpost: a caching edge for live and on-demand video.
//!
//! The request path, in the order a request meets it: [`app`] starts the
//! listeners, [`server`] accepts (with [`limits`]), [`http1`] reads a plain
//! HTTP/1.1 request (hyper reads the others), [`proxy::answer`] routes
//! ([`route`]), looks up the [`cache`], joins or starts a [`fill`]
//! ([`coalesce`]; every fetch is started in `proxy::fills` and run by
//! [`fetch`] through [`upstream`]), and answers ([`respond`]); [`body`]
//! writes the access log line when the answer ends. Every module uses only
//! modules below it (`tests/layers.rs` lists the layers).

pub mod access_log;
pub mod admin;
pub mod app;
pub mod audience;
pub mod body;
pub mod budget;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod cmsd;
pub mod coalesce;
pub mod config;
pub mod cors;
pub mod cpu;
pub mod demo;
pub mod digest;
pub mod edge;
pub mod ejection;
pub mod error;
pub mod fetch;
pub mod fill;
pub mod fleet;
pub mod forward;
pub mod fuzzing;
pub mod headers;
pub mod history;
pub mod http1;
pub mod inline_first;
pub mod limits;
#[cfg(target_os = "linux")]
pub mod mapped;
pub mod media;
pub mod metrics;
pub mod outcome;
pub mod plain;
pub mod prefetch;
pub mod proxy;
pub mod reload;
pub mod rendezvous;
pub mod request_id;
pub mod respond;
pub mod restarts;
pub mod route;
#[cfg(target_os = "linux")]
pub mod sendfile;
pub mod server;
pub mod shared_head;
pub mod signing;
pub mod slicing;
pub mod streams;
pub mod tls_writes;
pub mod upcoming;
pub mod upstream;

pub use app::RunningEdge;
pub use config::Config;
pub use edge::Edge;
