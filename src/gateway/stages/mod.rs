//! The stages of a request, one file each, in the order `Gateway::handle_inner` runs them
//! (SPEC §2): route, authenticate, authorize, limit, rewrite, forward. Each returns a
//! `Result` whose error `handle` (the one rescue point) turns into the answer. A request
//! routed to a verify route (SPEC §8) goes to `verify` instead of rewrite and forward: it
//! runs the first four for the request it names and answers the verdict.

mod authenticate;
mod authorize;
pub mod forward;
pub mod limit;
mod rewrite;
mod route;
mod verify;

pub use authenticate::credential;
pub use authorize::authorize;
pub use rewrite::rewrite;
pub use route::route;
pub use verify::verify;
