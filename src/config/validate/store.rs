//! `store`: the embedded store or Redis (one URL or a cluster).

use super::Errors;
use crate::config::raw::*;
use crate::config::StoreConfig;
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn store(raw: RawStore, e: &mut Errors) -> StoreConfig {
    let poll_interval = e.bounded(
        "store.poll_interval",
        raw.poll_interval.as_deref(),
        DEFAULT_CHANGE_POLL,
        Duration::from_secs(60),
    );
    match raw.kind.as_deref().unwrap_or("embedded") {
        "embedded" => {
            if raw.url.is_some() || raw.cluster.is_some() {
                e.push("store.url", "only for `kind: redis`");
            }
            StoreConfig::Embedded {
                path: PathBuf::from(raw.path.as_deref().unwrap_or(DEFAULT_STORE_PATH)),
                poll_interval,
            }
        }
        "redis" => {
            let (urls, cluster) = match (raw.url, raw.cluster) {
                (Some(u), None) => (vec![u], false),
                (None, Some(c)) if !c.is_empty() => (c, true),
                _ => {
                    e.push(
                        "store",
                        "`kind: redis` needs exactly one of `url` or a non-empty `cluster`",
                    );
                    (Vec::new(), false)
                }
            };
            for u in &urls {
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    e.push(
                        "store.url",
                        format!("`{u}` must start with redis:// or rediss://"),
                    );
                }
            }
            StoreConfig::Redis { urls, cluster }
        }
        other => {
            e.push(
                "store.kind",
                format!("`{other}` is not `embedded` or `redis`"),
            );
            StoreConfig::Embedded {
                path: PathBuf::new(),
                poll_interval,
            }
        }
    }
}
