//! Keys and the signature rules of SPEC §3, for single and batch verification.
//!
//! hopgate's own rule, [`Rule::Strict`] (SPEC §3.1), is the one every chain and
//! invocation is judged by: accept iff A and R are canonical encodings of curve points,
//! neither is of small order, S < L, and the cofactored equation
//! `[8][S]B == [8]R + [8][k]A` holds with `k = SHA-512(R || A || M) mod L`.
//!
//! [`Rule::Libsodium`] and [`Rule::Openssl`] (SPEC §3.4) answer as libsodium's and
//! OpenSSL's verifiers do, for code that replaces one of them and must accept and
//! refuse exactly what it did. Both check the cofactorless equation by re-encoding
//! `[S]B - [k]A` and comparing bytes with R; they differ in which encodings of A and R
//! they refuse first. Neither is batchable (torsion makes a cofactorless batch answer
//! differ from the single one), so they run item by item.
//!
//! Why batch and single can never disagree under the strict rule (except with
//! probability about 2^-128): every encoding check runs per item before any batching,
//! and both paths test the *cofactored* equation. The batch tests
//! `[8](Σ z_i R_i + Σ z_i k_i A_i - (Σ z_i S_i) B) == 0` for random 128-bit `z_i`.
//! Multiplying by 8 removes every torsion component, so a set of individually valid
//! items always passes, and an invalid item leaves a non-zero prime-order component
//! that survives the random combination except with probability ~2^-128. When a group
//! fails we bisect down to single checks, so the answer names exactly the failing
//! items. (The cofactorless equation does not have this property: torsion in R or A
//! makes batch and single answers differ, which is the failure "Taming the many
//! EdDSAs" catalogues.)

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

use crate::{key_cache, Error, Result};

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

/// Which signature rule judges a signature (SPEC §3).
///
/// Only [`Rule::Strict`] is hopgate's contract: chains, invocations and gates always use
/// it. The other two accept and refuse exactly what a widely used library does, so that
/// code which verified with that library can switch without a signature changing side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Rule {
    /// SPEC §3.1: A and R canonical and not of small order, S < L, the cofactored
    /// equation. The only batchable rule.
    #[default]
    Strict,
    /// What libsodium's `crypto_sign_ed25519_verify_detached` accepts (PyNaCl).
    Libsodium,
    /// What OpenSSL's `ossl_ed25519_verify` accepts (pyca/cryptography).
    Openssl,
}

impl Rule {
    /// Every rule, the default first.
    pub const ALL: [Rule; 3] = [Rule::Strict, Rule::Libsodium, Rule::Openssl];

    /// The rule's name, as the Python API spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Rule::Strict => "strict",
            Rule::Libsodium => "libsodium",
            Rule::Openssl => "openssl",
        }
    }

    /// The rule called `name`; any other name is an input error that lists the three.
    pub fn from_name(name: &str) -> Result<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name).ok_or_else(|| Rule::unknown(&format!("{name:?}")))
    }

    /// The input error for a rule argument that is `what` (a quoted name, or a
    /// description of a value that is not a name at all); it lists the three names.
    pub fn unknown(what: &str) -> Error {
        Error::input("rule", format!("expected \"strict\", \"libsodium\" or \"openssl\", got {what}"))
    }
}

impl std::str::FromStr for Rule {
    type Err = Error;

    fn from_str(name: &str) -> Result<Rule> {
        Rule::from_name(name)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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

/// The y of a point encoding: the 32 bytes with bit 255 (the sign of x) cleared.
fn y_bits(b: &[u8; 32]) -> [u8; 32] {
    let mut y = *b;
    y[31] &= 0x7f;
    y
}

/// `y < p` for a little-endian 255-bit `y`, compared from the most significant byte down.
fn below_p(y: &[u8; 32]) -> bool {
    y.iter().rev().zip(P_BYTES.iter().rev()).find(|(a, p)| a != p).is_some_and(|(a, p)| a < p)
}

/// True iff `b` is the canonical encoding of a field element y < p with the sign bit
/// not set on a point whose x is zero. The only such points are y = 1 and y = p - 1,
/// both of small order, but the encoding rule is stated on its own so that the
/// reasons for rejection stay separate.
fn is_canonical(b: &[u8; 32]) -> bool {
    let y = y_bits(b);
    if !below_p(&y) {
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
    decode_with(bytes, |b| CompressedEdwardsY(*b).decompress())
}

/// [`decode_point`] for a public key, decompressed through the process's cache of keys
/// (`key_cache`): keys repeat from call to call, a signature's R never does.
fn decode_key(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    decode_with(bytes, key_cache::decompress)
}

fn decode_with(bytes: &[u8; 32], decompress: impl FnOnce(&[u8; 32]) -> Option<EdwardsPoint>) -> Option<EdwardsPoint> {
    if !is_canonical(bytes) || small_order_encodings().contains(bytes) {
        return None;
    }
    let point = decompress(bytes)?;
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

/// Verifies one signature under the strict rule of SPEC §3.1.
pub fn verify(msg: Message<'_>, sig: &[u8], pk: &[u8]) -> bool {
    let Ok(a_bytes) = <&[u8; 32]>::try_from(pk) else { return false };
    let Some(a) = decode_key(a_bytes) else { return false };
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
        keys.par_iter().map(|k| decode_key(k)).collect()
    } else {
        keys.iter().map(|k| decode_key(k)).collect()
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

/// Verifies one signature under `rule`; [`Rule::Strict`] is [`verify`].
pub fn verify_with(rule: Rule, msg: Message<'_>, sig: &[u8], pk: &[u8]) -> bool {
    match rule {
        Rule::Strict => verify(msg, sig, pk),
        Rule::Libsodium => verify_libsodium(msg, sig, pk),
        Rule::Openssl => verify_openssl(msg, sig, pk),
    }
}

/// Below this many signatures the item-by-item rules run on the calling thread. Each
/// item costs a whole double-scalar multiplication and an inversion (about 35 µs);
/// handing a call to rayon's pool costs about 10 µs in all (measured with
/// `examples/profile_batch.rs`, its last lines, where no second core was free). With
/// c free cores a batch of n saves about n × 35 × (1 − 1/c) µs, so the pool wins from
/// two or three items on; eight leaves a margin for a busy pool.
pub const ITEMWISE_PARALLEL_THRESHOLD: usize = 8;

/// Verifies many signatures under `rule`; `out[i]` is exactly
/// `verify_with(rule, items[i])`.
///
/// [`Rule::Strict`] is [`verify_batch`] (one multiscalar multiplication per group). The
/// drop-in rules test the cofactorless equation, which no batch equation can reproduce
/// item for item (torsion in A or R makes the combined answer differ from the single
/// one), so they run item by item, on rayon's pool from
/// [`ITEMWISE_PARALLEL_THRESHOLD`] items on.
pub fn verify_batch_with(items: &[SigItem<'_>], rule: Rule) -> Vec<bool> {
    match rule {
        Rule::Strict => verify_batch(items),
        Rule::Libsodium => itemwise(items, verify_libsodium),
        Rule::Openssl => itemwise(items, verify_openssl),
    }
}

/// `check` of every item, on rayon's pool from [`ITEMWISE_PARALLEL_THRESHOLD`] items on.
fn itemwise(items: &[SigItem<'_>], check: fn(Message<'_>, &[u8], &[u8]) -> bool) -> Vec<bool> {
    if items.len() >= ITEMWISE_PARALLEL_THRESHOLD {
        items.par_iter().map(|it| check(it.msg, it.sig, it.pk)).collect()
    } else {
        items.iter().map(|it| check(it.msg, it.sig, it.pk)).collect()
    }
}

// The drop-in rules (SPEC §3.4). Both libraries derive from the ref10 code of
// SUPERCOP and share its equation: decode A, compute `[S]B - [k]A`, encode it
// canonically and compare the 32 bytes with R. They differ only in what they refuse
// before that. dalek's arithmetic computes the same points as theirs; where its
// decoding could differ from the C, the comment at the check says why it does not.

/// libsodium's list of small-order encodings, compared with bit 255 ignored: the y
/// of each of the eight points of small order (five values: 1, p − 1, 0 and the two of
/// order 8) and the two non-canonical aliases of small-order y below 2^255 (p for 0,
/// p + 1 for 1). Comparing y alone also catches x = 0 written with the sign bit set.
fn libsodium_small_order_ys() -> &'static [[u8; 32]] {
    static YS: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    YS.get_or_init(|| {
        let mut ys: Vec<[u8; 32]> = Vec::with_capacity(7);
        let p_plus_1 = {
            let mut b = P_BYTES;
            b[0] += 1; // 0xed + 1: no carry
            b
        };
        let torsion = EIGHT_TORSION.iter().map(|t| y_bits(&t.compress().to_bytes()));
        for y in torsion.chain([P_BYTES, p_plus_1]) {
            if !ys.contains(&y) {
                ys.push(y);
            }
        }
        ys
    })
}

/// Whether libsodium's `ge25519_has_small_order` refuses the encoding `b`.
fn on_libsodium_small_order_list(b: &[u8; 32]) -> bool {
    libsodium_small_order_ys().contains(&y_bits(b))
}

/// The cofactorless check both libraries end with: with
/// `k = SHA-512(R_bytes || A_bytes || M) mod L`, the canonical encoding of
/// `[S]B - [k]A` equals the 32 bytes of R. Being a byte comparison with a canonical
/// encoding, it refuses every non-canonical R (y ≥ p, or x = 0 with the sign bit set)
/// without decoding R at all. `k` multiplies A's torsion component as the integer
/// `k mod L`, exactly as the C's double-scalar multiplication does.
fn cofactorless_holds(r_bytes: &[u8; 32], a_bytes: &[u8; 32], a: &EdwardsPoint, s: &Scalar, msg: Message<'_>) -> bool {
    let k = challenge(r_bytes, a_bytes, msg);
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, s).compress().as_bytes() == r_bytes
}

/// What libsodium's `crypto_sign_ed25519_verify_detached` accepts (its default build,
/// without `ED25519_COMPAT`, as PyNaCl ships it).
fn verify_libsodium(msg: Message<'_>, sig: &[u8], pk: &[u8]) -> bool {
    crate::fault::inject("verify");
    let Ok(a_bytes) = <&[u8; 32]>::try_from(pk) else { return false };
    // S < L (`sc25519_is_canonical`): refuses the malleable S + L.
    let Some((r_bytes, s)) = split_sig(sig) else { return false };
    // R not on the small-order list: a small-order R lets one signature verify for
    // several messages. Only the list is consulted; R is not decoded, so a
    // non-canonical R that is not on it goes on to the equation, where the byte
    // comparison refuses it.
    if on_libsodium_small_order_list(r_bytes) {
        return false;
    }
    // A canonical (`ge25519_is_canonical`: y < p, the sign bit ignored) and not on the
    // small-order list (a small-order key makes forgeries trivial). The only canonical
    // y with x = 0 are 1 and p − 1, both on the list, so the sign bit of x = 0 never
    // reaches decoding.
    if !below_p(&y_bits(a_bytes)) || on_libsodium_small_order_list(a_bytes) {
        return false;
    }
    // A decodes (`ge25519_frombytes_negate_vartime`): x^2 = (y^2 − 1)/(d y^2 + 1) has a
    // root. For y < p dalek's decompression takes the same root and sign; libsodium
    // returns −A where we negate in the equation.
    let Some(a) = key_cache::decompress(a_bytes) else { return false };
    cofactorless_holds(r_bytes, a_bytes, &a, &s, msg)
}

/// What OpenSSL's `ossl_ed25519_verify` accepts (crypto/ec/curve25519.c, as
/// pyca/cryptography ships it), for PureEdDSA (no context, no prehash).
fn verify_openssl(msg: Message<'_>, sig: &[u8], pk: &[u8]) -> bool {
    crate::fault::inject("verify");
    let Ok(a_bytes) = <&[u8; 32]>::try_from(pk) else { return false };
    // S < L, the only check OpenSSL makes on the signature's bytes before the equation
    // (it compares S with L byte by byte from the top). R is never decoded or checked:
    // a small-order or non-canonical R is judged by the final byte comparison alone.
    let Some((r_bytes, s)) = split_sig(sig) else { return false };
    // A decodes as `ge_frombytes_vartime` decodes it, and nothing more: no canonical
    // check and no small-order check, so an A of small order, or written with y ≥ p,
    // or with x = 0 and the sign bit set, is accepted as the point it decodes to, and
    // the hash takes A's bytes as given. dalek's decompression agrees on each point
    // where a stricter decoder would not: `FieldElement::from_bytes` drops bit 255 and
    // does not reduce, so y ≥ p stands for y − p as in the C's `fe_frombytes`; and the
    // sign is applied by negating x, which leaves x = 0 as it is, as the C's `fe_neg`
    // does.
    let Some(a) = key_cache::decompress(a_bytes) else { return false };
    cofactorless_holds(r_bytes, a_bytes, &a, &s, msg)
}

// The rule of ed25519-dalek 2's `VerifyingKey::verify_strict`, which biscuit-auth 6
// uses for every Ed25519 signature of a token (see `crate::biscuit`). It is not one of
// the three `Rule`s: no hopgate API lets a caller pick it by name; the Biscuit verifier
// is its only user.

/// What ed25519-dalek 2's `VerifyingKey::from_bytes(pk)` followed by
/// `verify_strict(msg, sig)` accepts (without its `legacy_compatibility` feature).
///
/// In order: S < L (`check_scalar`); R decompresses and is not of small order; A
/// decompresses (`from_bytes`) and is not of small order; then the cofactorless
/// equation, as the canonical encoding of `[S]B - [k]A` compared byte for byte with R,
/// `k` hashing R and A as given. Unlike libsodium, a non-canonical A (y ≥ p) that
/// decodes to a point of large order is accepted: dalek decodes it as y − p and hashes
/// the bytes as given. Cofactorless, hence checked item by item (see
/// [`verify_batch_dalek_strict`]).
pub fn verify_dalek_strict(msg: Message<'_>, sig: &[u8], pk: &[u8]) -> bool {
    crate::fault::inject("verify");
    let Ok(a_bytes) = <&[u8; 32]>::try_from(pk) else { return false };
    let Some((r_bytes, s)) = split_sig(sig) else { return false };
    // dalek decompresses R and refuses it when it is of small order. Only a canonical
    // R can pass the final byte comparison (the encoding it is compared with is
    // canonical), so refusing the eight canonical small-order encodings here, without
    // decompressing R, refuses exactly the R that dalek's check would stop and the
    // equation would not.
    if small_order_encodings().contains(r_bytes) {
        return false;
    }
    let Some(a) = key_cache::decompress(a_bytes) else { return false };
    // Checked on the point, not the bytes: a non-canonical A decodes here as in dalek.
    if a.is_small_order() {
        return false;
    }
    cofactorless_holds(r_bytes, a_bytes, &a, &s, msg)
}

/// [`verify_dalek_strict`] of every item; `out[i]` is exactly its answer for
/// `items[i]`. The equation is cofactorless, which no batch equation reproduces item
/// for item, so each item is checked alone, on rayon's pool from
/// [`ITEMWISE_PARALLEL_THRESHOLD`] items on.
pub fn verify_batch_dalek_strict(items: &[SigItem<'_>]) -> Vec<bool> {
    itemwise(items, verify_dalek_strict)
}
