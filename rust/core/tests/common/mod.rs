//! What the integration tests of gates share: keys, a grant, an invocation, a gate.
#![allow(dead_code)] // each test crate uses some of these

use std::collections::HashSet;

use hopgate_core::chain::{self, Request as Ask};
use hopgate_core::gate::{Gate, GateConfig};
use hopgate_core::ledger::Ledger;
use hopgate_core::sig::SigningKey;
use hopgate_core::wire::CommonFields;

pub const NOW: u64 = 1_750_000_000;

pub fn key(i: u8) -> SigningKey {
    SigningKey::from_seed(&[i; 32])
}

/// A grant by key 1 to `holder`, valid until `not_after`, with `budget`.
pub fn grant(holder: &SigningKey, budget: u64, not_after: u64, nonce: u8) -> Vec<u8> {
    let fields = CommonFields {
        holder: *holder.public_key(),
        not_before: NOW - 1_000,
        not_after,
        max_depth: 2,
        budget,
        unit: "usd".into(),
        nonce: [nonce; 16],
        caps: vec![("api/*".into(), "call".into())],
        meta_digest: [0; 32],
    };
    chain::grant(&key(1), &[0; 16], &fields).unwrap()
}

pub fn invoke(
    chain: &[u8],
    holder: &SigningKey,
    resource: &str,
    cost: u64,
    ts: u64,
    nonce: u8,
    payload: &[u8],
) -> Vec<u8> {
    let ask = Ask { ability: "call", resource, cost, timestamp: ts, nonce: Some([nonce; 16]), payload };
    chain::invoke(chain, holder, &ask).unwrap()
}

pub fn gate(ledger: Ledger, skew: u64, window: u64) -> Gate {
    let mut config = GateConfig::new([*key(1).public_key()].into());
    config.skew = skew;
    config.replay_window = window;
    Gate::new(config, HashSet::new(), ledger).unwrap()
}
