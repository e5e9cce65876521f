//! Guides: what the API promises and how to run it, one short page each.
//!
//! - [`delivery`]: what `Ok` from a call or a send means, which errors mean the request
//!   ran, did not, or may have; redelivery across crashes; order.
//! - [`footprint`]: the memory, file descriptors and threads of a server, a client, a
//!   Reader and a Writer.
//! - [`permissions`]: owner-only objects, and services shared between users.
//! - [`containers`]: what containers must share, sizing `/dev/shm`, PID namespaces.
//! - [`cleanup`]: what a crash leaves behind, and how it goes away.
//! - [`platforms`]: what Linux, macOS and Windows use, and how each is tested.
//!
//! The design behind them (state machines, crash order, trust model) is in
//! `docs/ARCHITECTURE.md` in the repository.

#[doc = include_str!("delivery.md")]
pub mod delivery {}

#[doc = include_str!("footprint.md")]
pub mod footprint {}

#[doc = include_str!("permissions.md")]
pub mod permissions {}

#[doc = include_str!("containers.md")]
pub mod containers {}

#[doc = include_str!("cleanup.md")]
pub mod cleanup {}

#[doc = include_str!("platforms.md")]
pub mod platforms {}
