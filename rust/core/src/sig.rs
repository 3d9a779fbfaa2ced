//! Keys and the one signature rule of SPEC §3, for single and batch verification.
//!
//! Accept iff A and R are canonical encodings of curve points, neither is of small
//! order, S < L, and the cofactored equation `[8][S]B == [8]R + [8][k]A` holds with
//! `k = SHA-512(R || A || M) mod L`.
//!
//! Why batch and single can never disagree (except with probability about 2^-128):
//! every encoding check runs per item before any batching, and both paths test the
//! *cofactored* equation. The batch tests `[8](Σ z_i R_i + Σ z_i k_i A_i - (Σ z_i S_i) B)
//! == 0` for random 128-bit `z_i`. Multiplying by 8 removes every torsion component,
//! so a set of individually valid items always passes, and an invalid item leaves a
//! non-zero prime-order component that survives the random combination except with
//! probability ~2^-128. When a group fails we bisect down to single checks, so the
//! answer names exactly the failing items. (The cofactorless equation does not have
//! this property: torsion in R or A makes batch and single answers differ, which is
//! the failure "Taming the many EdDSAs" catalogues.)

use std::collections::HashMap;
use std::sync::OnceLock;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use rayon::prelude::*;
use sha2::{Digest, Sha512};
use zeroize::Zeroize;

use crate::{Error, Result};

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an Ed25519 secret seed.
pub const SEED_LEN: usize = 32;

/// Below this many signatures a batch runs on the calling thread: rayon's fork/join
/// costs more than it saves (measured with `bench/peers.py`, n = 1 and 64).
pub const PARALLEL_THRESHOLD: usize = 48;
/// Largest group that goes into one multiscalar multiplication. Pippenger's method
/// gets cheaper per point as groups grow, but a group that fails must be checked
/// again in parts, so a batch is cut into groups of at most this many signatures
/// (and at least one group per thread). Measured with `examples/profile_batch.rs`.
const MAX_GROUP: usize = 1024;
/// A failing group is checked again as this many parts.
const SPLIT: usize = 32;
/// Groups this small are checked one signature at a time: a double-scalar
/// multiplication beats a multiscalar one at this size.
const SINGLE_CUTOFF: usize = 4;

/// A message in two parts (a domain prefix and a body), hashed without concatenation
/// so that verifying a chain link allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Message<'a> {
    /// Domain separation prefix (for example `b"hopgate/v1/link\0"`), may be empty.
    pub prefix: &'a [u8],
    /// The rest of the message.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// A message with no prefix.
    pub fn plain(body: &'a [u8]) -> Self {
        Message { prefix: &[], body }
    }
}

/// One signature to check: any lengths are accepted here, and wrong lengths simply
/// fail the rule (they are not encodings of anything).
#[derive(Clone, Copy, Debug)]
pub struct SigItem<'a> {
    /// The signed message.
    pub msg: Message<'a>,
    /// The signature (64 bytes to be valid).
    pub sig: &'a [u8],
    /// The public key (32 bytes to be valid).
    pub pk: &'a [u8],
}

/// An Ed25519 signing key (RFC 8032). Not `Clone`: a secret has one owner; its
/// memory is wiped on drop.
pub struct SigningKey {
    seed: [u8; SEED_LEN],
    scalar: Scalar,
    prefix: [u8; 32],
    public: [u8; PUBLIC_KEY_LEN],
}

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut seed = [0u8; SEED_LEN];
        OsRng.fill_bytes(&mut seed);
        let key = Self::from_seed(&seed);
        seed.zeroize();
        key
    }

    /// The key whose RFC 8032 secret is `seed`.
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> Self {
        let mut h: [u8; 64] = Sha512::digest(seed).into();
        let mut a = [0u8; 32];
        a.copy_from_slice(&h[..32]);
        a[0] &= 248;
        a[31] &= 127;
        a[31] |= 64;
        let public = EdwardsPoint::mul_base_clamped(a).compress().to_bytes();
        let scalar = Scalar::from_bytes_mod_order(a);
        let mut prefix = [0u8; 32];
        prefix.copy_from_slice(&h[32..]);
        a.zeroize();
        h.zeroize();
        SigningKey { seed: *seed, scalar, prefix, public }
    }

    /// The key from a seed given as a slice (an error unless it is 32 bytes).
    pub fn from_seed_slice(seed: &[u8]) -> Result<Self> {
        let seed: &[u8; SEED_LEN] =
            seed.try_into().map_err(|_| Error::input("seed", format!("must be 32 bytes, got {}", seed.len())))?;
        Ok(Self::from_seed(seed))
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// The 32-byte secret seed.
    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// Signs `msg` (RFC 8032 PureEdDSA, deterministic).
    pub fn sign(&self, msg: Message<'_>) -> [u8; SIGNATURE_LEN] {
        let r = hash_to_scalar(Sha512::new().chain_update(self.prefix).chain_update(msg.prefix).chain_update(msg.body));
        let big_r = EdwardsPoint::mul_base(&r).compress().to_bytes();
        let k = challenge(&big_r, &self.public, msg);
        let s = r + k * self.scalar;
        let mut out = [0u8; SIGNATURE_LEN];
        out[..32].copy_from_slice(&big_r);
        out[32..].copy_from_slice(s.as_bytes());
        out
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        self.seed.zeroize();
        self.scalar.zeroize();
        self.prefix.zeroize();
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &Hex(&self.public)).finish_non_exhaustive()
    }
}

struct Hex<'a>(&'a [u8]);
impl std::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn hash_to_scalar(h: Sha512) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// `k = SHA-512(R || A || M) mod L`.
fn challenge(r: &[u8; 32], a: &[u8; 32], msg: Message<'_>) -> Scalar {
    hash_to_scalar(Sha512::new().chain_update(r).chain_update(a).chain_update(msg.prefix).chain_update(msg.body))
}

/// `p = 2^255 - 19`, little-endian.
const P_BYTES: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// True iff `b` is the canonical encoding of a field element y < p with the sign bit
/// not set on a point whose x is zero. The only such points are y = 1 and y = p - 1,
/// both of small order, but the encoding rule is stated on its own so that the
/// reasons for rejection stay separate.
fn is_canonical(b: &[u8; 32]) -> bool {
    let mut y = *b;
    y[31] &= 0x7f;
    // y < p, compared from the most significant byte down.
    let below_p = y.iter().rev().zip(P_BYTES.iter().rev()).find(|(a, p)| a != p).is_some_and(|(a, p)| a < p);
    if !below_p {
        return false;
    }
    let sign = b[31] & 0x80 != 0;
    let mut p_minus_1 = P_BYTES;
    p_minus_1[0] -= 1;
    let mut one = [0u8; 32];
    one[0] = 1;
    !(sign && (y == one || y == p_minus_1))
}

/// The canonical encodings of the eight points of small order (the 8-torsion).
///
/// A canonical encoding decodes to a small-order point iff it is one of these,
/// because canonical encodings are unique: comparing 32 bytes replaces three point
/// doublings per point, about 1 µs per signature.
fn small_order_encodings() -> &'static [[u8; 32]; 8] {
    static ENCODINGS: OnceLock<[[u8; 32]; 8]> = OnceLock::new();
    ENCODINGS.get_or_init(|| EIGHT_TORSION.map(|p| p.compress().to_bytes()))
}

/// Decodes a point under the rule: canonical, on the curve, not of small order.
fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !is_canonical(bytes) || small_order_encodings().contains(bytes) {
        return None;
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    debug_assert!(!point.is_small_order());
    Some(point)
}

/// One signature with every per-item check done: what enters the equation.
#[derive(Clone, Copy)]
struct Prepared {
    r: EdwardsPoint,
    a: EdwardsPoint,
    s: Scalar,
    k: Scalar,
    /// Identifies the public key, so that terms of one key are merged.
    key: u32,
    /// Position of the item in the caller's batch.
    index: u32,
}

fn split_sig(sig: &[u8]) -> Option<(&[u8; 32], Scalar)> {
    let sig: &[u8; SIGNATURE_LEN] = sig.try_into().ok()?;
    let (r, s) = sig.split_at(32);
    let r: &[u8; 32] = r.try_into().ok()?;
    let s: [u8; 32] = s.try_into().ok()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))?;
    Some((r, s))
}

/// The per-item part of the rule: S < L, R canonical and not of small order, and
/// `k`. The key `a` has already been decoded under the same rule.
fn prepare(item: &SigItem<'_>, a_bytes: &[u8; 32], a: EdwardsPoint, key: u32, index: u32) -> Option<Prepared> {
    crate::fault::inject("verify");
    let (r_bytes, s) = split_sig(item.sig)?;
    let r = decode_point(r_bytes)?;
    Some(Prepared { r, a, s, k: challenge(r_bytes, a_bytes, item.msg), key, index })
}

/// `[8]([S]B - [k]A - R) == 0`.
fn holds_single(p: &Prepared) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &-p.a, &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// Verifies one signature under the rule of SPEC §3.
pub fn verify(msg: Message<'_>, sig: &[u8], pk: &[u8]) -> bool {
    let Ok(a_bytes) = <&[u8; 32]>::try_from(pk) else { return false };
    let Some(a) = decode_point(a_bytes) else { return false };
    prepare(&SigItem { msg, sig, pk }, a_bytes, a, 0, 0).is_some_and(|p| holds_single(&p))
}

/// Verifies many signatures; `out[i]` is exactly `verify(items[i])`.
///
/// Repeated public keys are decoded once and their terms merged in the
/// multiscalar multiplication. From [`PARALLEL_THRESHOLD`] items on, the work runs on
/// rayon's pool. Allocation is per batch and per group, never per signature.
pub fn verify_batch(items: &[SigItem<'_>]) -> Vec<bool> {
    let parallel = items.len() >= PARALLEL_THRESHOLD;

    // Deduplicate public keys: issuers and agents repeat across chains.
    let mut key_ids: HashMap<&[u8; 32], u32> = HashMap::new();
    let mut keys: Vec<&[u8; 32]> = Vec::new();
    let item_keys: Vec<Option<(&[u8; 32], u32)>> = items
        .iter()
        .map(|it| {
            let pk: &[u8; 32] = it.pk.try_into().ok()?;
            let id = *key_ids.entry(pk).or_insert_with(|| {
                keys.push(pk);
                (keys.len() - 1) as u32
            });
            Some((pk, id))
        })
        .collect();
    drop(key_ids);
    let decoded: Vec<Option<EdwardsPoint>> = if parallel {
        keys.par_iter().map(|k| decode_point(k)).collect()
    } else {
        keys.iter().map(|k| decode_point(k)).collect()
    };

    // An item's position, the item, and its key's bytes and distinct-key id.
    type Indexed<'i, 'k> = (usize, (&'i SigItem<'i>, &'k Option<(&'k [u8; 32], u32)>));
    let prep = |(index, (item, key)): Indexed<'_, '_>| {
        let (a_bytes, id) = (*key)?;
        prepare(item, a_bytes, decoded[id as usize]?, id, index as u32)
    };
    // Items that pass every per-item check; only these enter the equation.
    let candidates: Vec<Prepared> = if parallel {
        items.par_iter().zip(item_keys.par_iter()).enumerate().filter_map(prep).collect()
    } else {
        items.iter().zip(item_keys.iter()).enumerate().filter_map(prep).collect()
    };

    let mut ok = vec![false; candidates.len()];
    if candidates.is_empty() {
        // Every item failed a per-item check (nothing to group: `groups` would be 0).
    } else if parallel {
        let threads = rayon::current_num_threads().max(1);
        let groups = candidates.len().div_ceil(MAX_GROUP).next_multiple_of(threads);
        let size = candidates.len().div_ceil(groups).max(1);
        candidates.par_chunks(size).zip(ok.par_chunks_mut(size)).for_each(|(group, ok)| {
            find_valid(group, ok, &mut ChaCha20Rng::from_entropy());
        });
    } else {
        let mut rng = ChaCha20Rng::from_entropy();
        for (group, ok) in candidates.chunks(MAX_GROUP).zip(ok.chunks_mut(MAX_GROUP)) {
            find_valid(group, ok, &mut rng);
        }
    }
    let mut out = vec![false; items.len()];
    for (p, &v) in candidates.iter().zip(&ok) {
        out[p.index as usize] = v;
    }
    out
}

/// Sets `ok[j]` iff `group[j]` holds: one equation for the whole group; when it
/// fails, the same in [`SPLIT`] parts, down to single checks. A 32-way split
/// instead of bisection keeps the cost of a few bad signatures in a large batch near
/// one extra pass over their groups rather than a pass per halving.
fn find_valid(group: &[Prepared], ok: &mut [bool], rng: &mut ChaCha20Rng) {
    if group.len() <= SINGLE_CUTOFF {
        for (o, p) in ok.iter_mut().zip(group) {
            *o = holds_single(p);
        }
    } else if group_holds(group, rng) {
        ok.fill(true);
    } else {
        let part = group.len().div_ceil(SPLIT);
        for (g, o) in group.chunks(part).zip(ok.chunks_mut(part)) {
            find_valid(g, o, rng);
        }
    }
}

/// `[8](Σ z_i R_i + Σ_A (Σ_{i: A_i = A} z_i k_i) A - (Σ z_i S_i) B) == 0` with fresh
/// random 128-bit `z_i`.
fn group_holds(group: &[Prepared], rng: &mut ChaCha20Rng) -> bool {
    let mut scalars = Vec::with_capacity(2 * group.len());
    let mut points = Vec::with_capacity(2 * group.len());
    let mut key_terms: Vec<(u32, Scalar, &EdwardsPoint)> = Vec::with_capacity(group.len());
    let mut b_coeff = Scalar::ZERO;
    for p in group {
        let mut z = [0u8; 32];
        rng.fill_bytes(&mut z[..16]);
        let z = Scalar::from_bytes_mod_order(z);
        b_coeff -= z * p.s;
        scalars.push(z);
        points.push(p.r);
        key_terms.push((p.key, z * p.k, &p.a));
    }
    key_terms.sort_unstable_by_key(|t| t.0);
    for run in key_terms.chunk_by(|x, y| x.0 == y.0) {
        scalars.push(run.iter().map(|t| t.1).sum());
        points.push(*run[0].2);
    }
    let sum = EdwardsPoint::vartime_multiscalar_mul(scalars, points) + EdwardsPoint::mul_base(&b_coeff);
    sum.mul_by_cofactor().is_identity()
}
