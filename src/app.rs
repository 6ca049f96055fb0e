//! One App: what `keygate serve` runs, built from a `Config` in one place for the binary,
//! the demo, the test harness and the benches, so none of them wires the pieces its own
//! way. Building opens the store and makes the gateway and the admin API; starting takes
//! the change-feed position, starts the follower and the `last_used_at` flusher, and binds
//! both listeners; a running App reloads (routes, upstreams, roles, tokens) and shuts down
//! (drain, then the last uses written).

use crate::admin::Admin;
use crate::config::Config;
use crate::gateway::{Gateway, ReloadError};
use crate::metrics::Metrics;
use crate::server::{Running, ServeError};
use crate::store::{KeyStore, StoreError};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Everything `serve` runs, built and not yet listening.
pub struct App {
    config: Config,
    pub store: Arc<dyn KeyStore>,
    pub metrics: Arc<Metrics>,
    pub gateway: Arc<Gateway>,
    pub admin: Arc<Admin>,
}

impl App {
    /// Opens the configured store and builds the gateway and the admin API on it.
    pub async fn build(config: Config) -> Result<App, AppError> {
        let store = crate::store::open(&config.store).await?;
        Ok(Self::with_store(config, store))
    }

    /// As `build`, on a store already open (several Apps on one store, a bench).
    pub fn with_store(config: Config, store: Arc<dyn KeyStore>) -> App {
        let metrics = Arc::new(Metrics::new());
        let gateway = Arc::new(Gateway::new(&config, store.clone(), metrics.clone()));
        let admin = Arc::new(Admin::new(
            &config,
            store.clone(),
            metrics.clone(),
            Some(gateway.cache().clone()),
        ));
        App {
            config,
            store,
            metrics,
            gateway,
            admin,
        }
    }

    /// The config it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the background tasks, then binds the admin API and the proxy. The feed
    /// position is taken before anything is served, so no change is missed.
    pub async fn start(self) -> Result<RunningApp, AppError> {
        self.gateway.start_background(&self.config).await;
        let admin = crate::admin::start(&self.config, self.admin.clone()).await?;
        let tls = self
            .config
            .tls
            .as_ref()
            .map(crate::server::tls_acceptor)
            .transpose()?;
        let gateway = self.gateway.clone();
        // The handler's future is the service's future, with no async block around it: it
        // is moved several times per request, and each wrapper would add its size again.
        let handler = move |req, peer| gateway.clone().handle(req, peer);
        let proxy =
            crate::server::serve(self.config.listen, tls, &self.config.server, handler).await?;
        Ok(RunningApp {
            app: self,
            proxy,
            admin,
        })
    }
}

/// A started App: both listeners bound.
pub struct RunningApp {
    app: App,
    proxy: Running,
    admin: Running,
}

impl RunningApp {
    /// Where the proxy listens (the bound port when the config said `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// The config in force (the last one a reload took).
    pub fn config(&self) -> &Config {
        &self.app.config
    }

    /// Takes `new`'s routes, upstreams, roles and admin tokens without dropping a
    /// connection. A file that changes what needs a restart is refused whole, and the
    /// running config stays.
    pub fn reload(&mut self, new: Config) -> Result<(), ReloadError> {
        self.app.gateway.reload(&self.app.config, &new)?;
        self.app.admin.reload(&new);
        self.app.config = new;
        Ok(())
    }

    /// Reloads from the file at `path`; a bad file is refused and the running config stays.
    pub fn reload_from(&mut self, path: &Path) -> Result<(), ReloadError> {
        let new = Config::load(path).map_err(ReloadError::from)?;
        self.reload(new)
    }

    /// Stops both listeners, lets in-flight requests finish for up to `server.drain_timeout`,
    /// then writes the last uses so a restart loses none.
    pub async fn shutdown(self) {
        let drain = self.app.config.server.drain_timeout;
        self.shutdown_draining(drain).await;
    }

    /// `shutdown` with another drain bound (tests stop within seconds whatever the config).
    pub async fn shutdown_draining(self, drain: std::time::Duration) {
        tokio::join!(self.proxy.shutdown(drain), self.admin.shutdown(drain));
        self.app.gateway.cache().flush_once().await;
        // Spent quota reported, and what is leased and unspent given back to the fleet.
        self.app.gateway.limiter().flush(true).await;
    }

    /// Serves until SIGTERM or Ctrl-C, reloading from `path` on SIGHUP, then shuts down.
    pub async fn run_until_signalled(mut self, path: &Path) {
        let shutdown = crate::shutdown_signal();
        tokio::pin!(shutdown);
        let mut reloads = crate::reload_signal();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = reloads.recv() => match self.reload_from(path) {
                    Ok(()) => {
                        let c = self.config();
                        tracing::info!(routes = c.routes.len(), upstreams = c.upstreams.len(), "config reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "reload refused; keeping the running config"),
                },
            }
        }
        tracing::info!(drain = ?self.config().server.drain_timeout, "shutting down; draining in-flight requests");
        self.shutdown().await;
    }
}
