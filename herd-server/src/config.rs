//! The herd's configuration (the `herd-config` crate, shared with the `herd` client).

pub use herd_config::*;
