//! hopgate-core: every rule of hopgate, in pure Rust with no Python in it.
//!
//! - [`sig`]: keys and the Ed25519 signature rules (SPEC §3): hopgate's strict rule, single
//!   and batched, and the drop-in rules of libsodium and OpenSSL.
//! - [`biscuit`]: the signature layer of Biscuit tokens, as biscuit-auth 6 checks it, in
//!   batches.
//! - [`wire`]: the byte format of chains and invocations (SPEC §2), total parsing.
//! - [`chain`]: building chains that attenuate, and verifying many chains at once (SPEC §1, §4).
//! - [`hash`]: BLAKE3 and SHA-256 over many messages.
//! - [`ledger`] and [`store`]: budgets and replay nonces, in memory or in a durable store.
//! - [`audit`]: the append-only, hash-chained, keyed audit log the gate writes.
//! - [`Code`] and [`Error`]: decisions and the one error type.
//!
//! The Python bindings (`rust/python`) only convert types, release the GIL and map errors.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod biscuit;
pub mod chain;
mod error;
pub mod fault;
pub mod gate;
pub mod hash;
pub mod hdp;
pub mod jcs;
pub mod jose;
pub mod key_cache;
pub mod ledger;
pub mod sig;
pub mod store;
pub mod wire;

pub use error::{Code, Error, Result};
