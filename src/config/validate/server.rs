//! The proxy listener and how it serves: `listen`, `tls`, `server` and `log`.

use super::Errors;
use crate::config::raw::*;
use crate::config::{LogConfig, LogFormat, ServerConfig, TlsConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn listen(raw: Option<&str>, e: &mut Errors) -> SocketAddr {
    e.addr("listen", raw, DEFAULT_LISTEN)
}

pub(super) fn tls(raw: Option<RawTls>) -> Option<TlsConfig> {
    raw.map(|t| TlsConfig {
        cert: PathBuf::from(t.cert),
        key: PathBuf::from(t.key),
    })
}

pub(super) fn server(raw: RawServer, e: &mut Errors) -> ServerConfig {
    let server = ServerConfig {
        workers: raw.workers,
        header_read_timeout: e.bounded(
            "server.header_read_timeout",
            raw.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
            Duration::from_secs(3600),
        ),
        max_header_bytes: raw.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        drain_timeout: e.duration(
            "server.drain_timeout",
            raw.drain_timeout.as_deref(),
            DEFAULT_DRAIN_TIMEOUT,
        ),
    };
    if server.workers == Some(0) {
        e.push("server.workers", "must be at least 1");
    }
    if server.max_header_bytes < 8192 {
        e.push("server.max_header_bytes", "must be at least 8192");
    }
    server
}

pub(super) fn log(raw: RawLog, e: &mut Errors) -> LogConfig {
    LogConfig {
        format: match raw.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                e.push("log.format", format!("`{other}` is not `text` or `json`"));
                LogFormat::Text
            }
        },
        level: raw.level.unwrap_or_else(|| "info".into()),
    }
}
