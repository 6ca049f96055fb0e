//! The stages of a request, one file each, in the order `Gateway::handle_inner` runs them
//! (SPEC §2): route, authenticate, authorize, limit, rewrite, forward. Each returns a
//! `Result` whose error `handle` (the one rescue point) turns into the answer.

mod authenticate;
mod authorize;
pub mod forward;
pub mod limit;
mod rewrite;
mod route;

pub use authenticate::credential;
pub use authorize::authorize;
pub use rewrite::rewrite;
pub use route::route;
