//! keygate: an API gateway that enforces API keys.
//!
//! The request path, in order: `server` accepts, `path` normalizes the path and `route`
//! matches it, `auth` turns the credential into a `Principal` through the `cache` over a
//! `store`, `proxy` rewrites headers and forwards; `error` is the one place where a
//! refusal becomes a status and a JSON body. `service` holds the key lifecycle rules the CLI
//! (and the admin API) share.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod key;
pub mod limiter;
pub mod limits;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod route;
pub mod server;
pub mod service;
pub mod store;

/// mimalloc for every allocation of the process (the gateway, and the benches and tests that
/// link this library, so that what is measured is what ships). A proxied request allocates
/// and frees about a dozen times (read buffers, header values, timers): glibc's malloc and
/// free were about 3,100 of its ~43,000 instructions, mimalloc's (v2) about 1,300
/// (benches/RESULTS.md, fourth pass).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One item per SIGHUP (never, where there are no such signals).
pub fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        // Several SIGHUPs while one reload is pending make one reload.
                        let _ = tx.try_send(());
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reload disabled"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}
