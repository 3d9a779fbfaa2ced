//! BLAKE3 and SHA-256 over many messages (one digest per message), and BLAKE3 of
//! one large input on a chosen number of threads.
//!
//! BLAKE3 over many messages runs on our own lane engine (`hash/lanes.rs`): one message
//! per SIMD lane (16 with AVX-512, 8 with AVX2, 4 with NEON, 2 portable), so a
//! batch of short messages gets the same SIMD width that the `blake3` crate only
//! reaches inside one long input. Rayon splits the lane groups across cores
//! above [`PARALLEL_BYTES`].
//!
//! How a batch is cut into lane jobs:
//! - A message of at most one chunk (1024 bytes) is one job: its blocks, the last
//!   with `CHUNK_END | ROOT`. When block counts differ, jobs are ordered by block
//!   count (a counting sort over the 16 possible counts, so O(n)), so the lanes
//!   of a group finish together; the digests are put back in message order.
//! - A longer message below [`CRATE_BYTES`] becomes one job per chunk (counter =
//!   chunk index), then parent jobs level by level: adjacent chaining values
//!   pair from the left, an odd last one moves up unchanged, the last parent gets
//!   `ROOT`. That is BLAKE3's left-complete tree, and every job of a level, from
//!   every message, shares the lanes.
//! - A message of [`CRATE_BYTES`] or more goes to the `blake3` crate, whose own
//!   SIMD spreads its 16 or more chunks over its lanes: from that size it
//!   measured faster than our chunk jobs (see the constant).
//!
//! SHA-256 uses the `sha2` crate per message (it picks SHA-NI at run time).

mod lanes;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};

use lanes::{
    blocks, Engine, Job, Jobs, Kind, BLOCK_LEN, CHUNK_END, CHUNK_LEN, CHUNK_START, IV, KEYED_HASH, PARENT, ROOT,
};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Below this much work in all, hashing stays on the calling thread. Work is
/// counted in input bytes, each message at least one 64-byte block (an empty
/// message still costs a compression). Measured on 2 cores (AVX-512, 64-byte
/// messages, best of 25): one thread and two break even near 64 KiB (13 µs
/// each); at 128 KiB two threads take 21 µs against 25, at 256 KiB 37 against 51.
pub const PARALLEL_BYTES: usize = 128 * 1024;

/// Messages of this many bytes or more go to the `blake3` crate whole. Measured
/// on one thread, AVX-512: the lane engine runs multi-chunk messages at about
/// 6 GB/s whatever their size (16 to 64 KiB included); the crate, called per
/// message, reaches 4.1 GB/s at 8 KiB, 3.0 at 12 KiB (12 chunks fill none of its
/// SIMD widths) and 7.5 at 16 KiB, 6.7 at 32 and 64 KiB.
pub const CRATE_BYTES: usize = 16 * 1024;

/// `blake3(data, None)` stays on the calling thread below this size. Measured
/// on 2 cores: `update_rayon` ties `update` at 128 KiB (14 µs), loses at 192 KiB
/// (24 against 22: its split is uneven) and wins from 256 KiB (21 against 28).
pub const ONE_INPUT_PARALLEL_BYTES: usize = 256 * 1024;

/// `sha256_many` stays on the calling thread below this many input bytes.
/// SHA-256 costs several times what the lane engine does per byte, so rayon
/// pays sooner: on 2 cores, 64-byte messages, two threads tie one at 16 KiB
/// (19 µs), lose at 8 KiB (11 against 10) and win at 32 KiB (25 against 38).
const SHA256_PARALLEL_BYTES: usize = 16 * 1024;

/// The most threads `blake3(data, Some(n))` builds a pool for.
const MAX_THREADS: usize = 256;

/// Rayon tasks per thread for a batch: enough to even out uneven jobs.
const TASKS_PER_THREAD: usize = 8;

/// The fewest lane groups a rayon task gets, so that a task costs microseconds.
const MIN_GROUPS_PER_TASK: usize = 16;

/// Many messages, read by index: a slice of slices, or one buffer cut by offsets
/// ([`Cut`]), so that a batch that arrives as one buffer is hashed without a slice per
/// message being built first.
pub trait Messages: Sync {
    /// How many messages.
    fn count(&self) -> usize;
    /// Message `i` (`i < count()`).
    fn message(&self, i: usize) -> &[u8];
}

impl Messages for [&[u8]] {
    #[inline(always)]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn message(&self, i: usize) -> &[u8] {
        self[i]
    }
}

/// As its slice, so that a `&Vec<&[u8]>` is taken where a `&[&[u8]]` is.
impl Messages for Vec<&[u8]> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.as_slice().count()
    }
    #[inline(always)]
    fn message(&self, i: usize) -> &[u8] {
        self.as_slice().message(i)
    }
}

/// One buffer cut by offsets, Arrow's layout: message `i` is `data[offsets[i]..offsets[i + 1]]`
/// (n + 1 offsets for n messages), the offsets read where they are.
#[derive(Clone, Copy, Debug)]
pub struct Cut<'a> {
    data: &'a [u8],
    offsets: &'a [i64],
}

/// Offsets that do not cut their buffer (the first wrong one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    /// No offsets at all (n messages need n + 1).
    #[error("offsets: need at least one entry (n + 1 offsets for n items)")]
    Empty,
    /// The first offset is negative.
    #[error("offsets[0] = {0} is negative")]
    Negative(i64),
    /// `offsets[index]` is below the one before it.
    #[error("offsets[{index}] = {value} is less than offsets[{}] = {previous}", index - 1)]
    Decreasing {
        /// Its place.
        index: usize,
        /// Its value.
        value: i64,
        /// The offset before it.
        previous: i64,
    },
    /// `offsets[index]` is past the end of the buffer.
    #[error("offsets[{index}] = {value} is past the end of the {len}-byte buffer")]
    PastEnd {
        /// Its place.
        index: usize,
        /// Its value.
        value: i64,
        /// The buffer's length.
        len: usize,
    },
}

impl<'a> Cut<'a> {
    /// `data` cut by `offsets`: non-decreasing, non-negative, none past the end.
    pub fn new(data: &'a [u8], offsets: &'a [i64]) -> Result<Self, OffsetError> {
        let &first = offsets.first().ok_or(OffsetError::Empty)?;
        if first < 0 {
            return Err(OffsetError::Negative(first));
        }
        let len = data.len();
        let mut previous = first;
        for (index, &value) in offsets.iter().enumerate().skip(1) {
            if value < previous {
                return Err(OffsetError::Decreasing { index, value, previous });
            }
            if value as u64 > len as u64 {
                return Err(OffsetError::PastEnd { index, value, len });
            }
            previous = value;
        }
        if first as u64 > len as u64 {
            return Err(OffsetError::PastEnd { index: 0, value: first, len });
        }
        Ok(Cut { data, offsets })
    }
}

impl Cut<'_> {
    /// The bytes of all its messages together (they lie end to end in the buffer).
    pub fn bytes(&self) -> usize {
        // Checked by `new`: non-decreasing, at least one offset.
        (self.offsets[self.offsets.len() - 1] - self.offsets[0]) as usize
    }
}

impl Messages for Cut<'_> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.offsets.len() - 1
    }
    #[inline(always)]
    fn message(&self, i: usize) -> &[u8] {
        // In range and ordered: `new` checked every offset.
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// `out[i] = BLAKE3(msgs[i])`.
///
/// # Panics
/// If `msgs` and `out` differ in length.
pub fn blake3_many<M: Messages + ?Sized>(msgs: &M, out: &mut [[u8; 32]]) {
    hash_many(engine(), None, msgs, out);
}

/// `out[i] = BLAKE3-keyed(key, msgs[i])` (BLAKE3's keyed mode, a MAC).
///
/// # Panics
/// If `msgs` and `out` differ in length.
pub fn mac_many<M: Messages + ?Sized>(key: &[u8; 32], msgs: &M, out: &mut [[u8; 32]]) {
    hash_many(engine(), Some(key), msgs, out);
}

/// `out[i] = SHA-256(msgs[i])` (SHA extensions used where the CPU has them), on
/// rayon's threads above 16 KiB in all.
///
/// # Panics
/// If `msgs` and `out` differ in length.
pub fn sha256_many<M: Messages + ?Sized>(msgs: &M, out: &mut [[u8; 32]]) {
    let n = msgs.count();
    assert_eq!(n, out.len(), "one output row per message");
    let total = (0..n).fold(0usize, |t, i| t.saturating_add(msgs.message(i).len()));
    let digest = |(i, o): (usize, &mut [u8; 32])| *o = Sha256::digest(msgs.message(i)).into();
    if total >= SHA256_PARALLEL_BYTES && n > 1 {
        out.par_iter_mut().enumerate().with_min_len(64).for_each(digest);
    } else {
        out.iter_mut().enumerate().for_each(digest);
    }
}

/// BLAKE3 of one (large) input. `threads`: `None` lets the size decide (one
/// thread below [`ONE_INPUT_PARALLEL_BYTES`], all of rayon's global pool from
/// there); `Some(n)` uses exactly `n` threads (at most 256), on a pool built the
/// first time `n` is asked for and kept.
pub fn blake3(data: &[u8], threads: Option<NonZeroUsize>) -> [u8; 32] {
    one_input(None, data, threads)
}

/// The lane engine this CPU runs: `"avx512"`, `"avx2"`, `"neon"` or `"portable"`.
///
/// The best the CPU has, detected once; the environment variable
/// `HOPGATE_HASH_BACKEND` (read once, at the first hash) can name a lower one.
/// A name the CPU cannot run, or no name, means the best.
pub fn backend() -> &'static str {
    engine().kind().name()
}

/// Messages the lane engine of [`backend`] hashes side by side.
pub fn lanes() -> usize {
    engine().kind().lanes()
}

/// The lane engines this CPU can run, best first, with their lane counts
/// (`"portable"` always). For tests and profiles.
#[doc(hidden)]
pub fn available_backends() -> Vec<(&'static str, usize)> {
    Kind::ALL.into_iter().filter_map(Engine::new).map(|e| (e.kind().name(), e.kind().lanes())).collect()
}

/// [`blake3_many`] (`key: None`) or [`mac_many`] on the named lane engine rather
/// than [`backend`]'s. For tests and profiles.
///
/// # Panics
/// If the name is unknown or the CPU cannot run that engine, or if `msgs` and
/// `out` differ in length.
#[doc(hidden)]
pub fn blake3_many_with<M: Messages + ?Sized>(backend: &str, key: Option<&[u8; 32]>, msgs: &M, out: &mut [[u8; 32]]) {
    let engine = Kind::parse(backend)
        .and_then(Engine::new)
        .unwrap_or_else(|| panic!("hash backend {backend:?} is unknown or not on this CPU"));
    hash_many(engine, key, msgs, out);
}

/// The engine of this process: chosen once.
fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    *ENGINE.get_or_init(|| {
        let asked = std::env::var("HOPGATE_HASH_BACKEND").ok().and_then(|name| Kind::parse(&name));
        asked.and_then(Engine::new).unwrap_or_else(Engine::best)
    })
}

/// A key as the eight little-endian words that replace the IV.
fn key_words(key: &[u8; 32]) -> [u32; 8] {
    let mut words = [0u32; 8];
    for (w, bytes) in words.iter_mut().zip(key.chunks_exact(4)) {
        *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    words
}

/// Whole messages of at most one chunk, in message order.
struct Whole<'a, M: ?Sized> {
    msgs: &'a M,
    flags: u32,
}

impl<M: Messages + ?Sized> Jobs for Whole<'_, M> {
    #[inline(always)]
    fn job(&self, k: usize) -> Job<'_> {
        root_chunk(self.msgs.message(k), self.flags)
    }
}

/// Whole messages of at most one chunk, in the order `order` gives.
struct Sorted<'a, M: ?Sized> {
    msgs: &'a M,
    order: &'a [u32],
    flags: u32,
}

impl<M: Messages + ?Sized> Jobs for Sorted<'_, M> {
    #[inline(always)]
    fn job(&self, k: usize) -> Job<'_> {
        root_chunk(self.msgs.message(self.order[k] as usize), self.flags)
    }
}

#[inline(always)]
fn root_chunk(data: &[u8], flags: u32) -> Job<'_> {
    Job { data, counter: 0, flags, first: CHUNK_START, last: CHUNK_END | ROOT }
}

/// The chunks of longer messages: `order[k] = (j, chunk index)` for message
/// `mids[j]`.
struct Chunks<'a, M: ?Sized> {
    msgs: &'a M,
    mids: &'a [u32],
    order: &'a [(u32, u32)],
    flags: u32,
}

impl<M: Messages + ?Sized> Jobs for Chunks<'_, M> {
    #[inline(always)]
    fn job(&self, k: usize) -> Job<'_> {
        let (j, c) = self.order[k];
        let msg = self.msgs.message(self.mids[j as usize] as usize);
        let start = c as usize * CHUNK_LEN;
        let data = &msg[start..msg.len().min(start + CHUNK_LEN)];
        Job { data, counter: c.into(), flags: self.flags, first: CHUNK_START, last: CHUNK_END }
    }
}

/// Parents of one tree level: job `k` compresses the two chaining values at
/// `cvs[at[k].0]` and the next one, as the root if `at[k].1`.
struct Parents<'a> {
    cvs: &'a [[u8; 32]],
    at: &'a [(u32, bool)],
    flags: u32,
}

impl Jobs for Parents<'_> {
    #[inline(always)]
    fn job(&self, k: usize) -> Job<'_> {
        let (i, root) = self.at[k];
        let i = i as usize;
        Job {
            data: self.cvs[i..i + 2].as_flattened(),
            counter: 0,
            flags: self.flags | PARENT,
            first: 0,
            last: if root { ROOT } else { 0 },
        }
    }
}

/// Runs every job into `out`, on rayon's threads if `work` (bytes) is worth it.
fn run<J: Jobs>(engine: Engine, key: &[u32; 8], jobs: &J, out: &mut [[u8; 32]], work: usize) {
    let lanes = engine.kind().lanes();
    if work < PARALLEL_BYTES || out.len() <= lanes {
        engine.hash_range(key, jobs, 0, out);
        return;
    }
    let groups = out.len().div_ceil(lanes);
    let tasks = rayon::current_num_threads() * TASKS_PER_THREAD;
    let per_task = groups.div_ceil(tasks).max(MIN_GROUPS_PER_TASK) * lanes;
    out.par_chunks_mut(per_task).enumerate().for_each(|(t, part)| engine.hash_range(key, jobs, t * per_task, part));
}

/// Work of a message: its bytes, at least one block.
fn work_of(len: usize) -> usize {
    len.max(BLOCK_LEN)
}

/// Scratch indexes messages, chunks and chaining values (at most 16 per message)
/// with `u32`: a larger batch goes in parts of this many messages.
const MAX_PART: usize = 1 << 26;

/// Messages `start..start + count` of a batch, as a batch of their own.
struct Part<'a, M: ?Sized> {
    msgs: &'a M,
    start: usize,
    count: usize,
}

impl<M: Messages + ?Sized> Messages for Part<'_, M> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.count
    }
    #[inline(always)]
    fn message(&self, i: usize) -> &[u8] {
        self.msgs.message(self.start + i)
    }
}

/// [`blake3_many`] and [`mac_many`] on `engine`.
fn hash_many<M: Messages + ?Sized>(engine: Engine, key: Option<&[u8; 32]>, msgs: &M, out: &mut [[u8; 32]]) {
    let n = msgs.count();
    assert_eq!(n, out.len(), "one output row per message");
    if n > MAX_PART {
        for (p, o) in out.chunks_mut(MAX_PART).enumerate() {
            hash_part(engine, key, &Part { msgs, start: p * MAX_PART, count: o.len() }, o);
        }
    } else {
        hash_part(engine, key, msgs, out);
    }
}

/// [`hash_many`] of at most `MAX_PART` messages.
fn hash_part<M: Messages + ?Sized>(engine: Engine, key: Option<&[u8; 32]>, msgs: &M, out: &mut [[u8; 32]]) {
    let n = msgs.count();
    let (words, flags) = match key {
        Some(key) => (key_words(key), KEYED_HASH),
        None => (IV, 0),
    };
    // The common batch first: all messages of one chunk and the same block count
    // need no ordering and no scratch.
    let first_blocks = if n > 0 { blocks(msgs.message(0).len()) } else { 0 };
    let mut uniform = true;
    let mut work = 0usize;
    for i in 0..n {
        let len = msgs.message(i).len();
        uniform &= len <= CHUNK_LEN && blocks(len) == first_blocks;
        work = work.saturating_add(work_of(len));
    }
    if uniform {
        run(engine, &words, &Whole { msgs, flags }, out, work);
        return;
    }

    // Sort by block count: single-chunk messages, then the chunks of longer ones.
    let mut small_at = [0usize; 17];
    let mut chunk_at = [0usize; 17];
    let (mut small_work, mut mid_work) = (0usize, 0usize);
    let mut mids: Vec<u32> = Vec::new();
    let mut bigs: Vec<u32> = Vec::new();
    for i in 0..n {
        let len = msgs.message(i).len();
        if len <= CHUNK_LEN {
            small_at[blocks(len)] += 1;
            small_work = small_work.saturating_add(work_of(len));
        } else if len < CRATE_BYTES {
            let full = (len - 1) / CHUNK_LEN;
            chunk_at[16] += full;
            chunk_at[blocks(len - full * CHUNK_LEN)] += 1;
            mid_work = mid_work.saturating_add(len);
            mids.push(i as u32);
        } else {
            bigs.push(i as u32);
        }
    }
    let smalls = exclusive_prefix(&mut small_at);
    let chunks = exclusive_prefix(&mut chunk_at);

    if smalls > 0 {
        let mut order = vec![0u32; smalls];
        for i in 0..n {
            let len = msgs.message(i).len();
            if len <= CHUNK_LEN {
                let slot = &mut small_at[blocks(len)];
                order[*slot] = i as u32;
                *slot += 1;
            }
        }
        let mut digests = vec![[0u8; 32]; smalls];
        run(engine, &words, &Sorted { msgs, order: &order, flags }, &mut digests, small_work);
        for (&i, d) in order.iter().zip(&digests) {
            out[i as usize] = *d;
        }
    }

    if !mids.is_empty() {
        hash_trees(engine, &words, flags, msgs, &mids, chunks, &mut chunk_at, mid_work, out);
    }

    if !bigs.is_empty() {
        let hash = |&i: &u32| one_input(key, msgs.message(i as usize), None);
        let big_work = bigs.iter().fold(0usize, |w, &i| w.saturating_add(msgs.message(i as usize).len()));
        let digests: Vec<[u8; 32]> = if big_work >= PARALLEL_BYTES && bigs.len() > 1 {
            bigs.par_iter().map(hash).collect()
        } else {
            bigs.iter().map(hash).collect()
        };
        for (&i, d) in bigs.iter().zip(&digests) {
            out[i as usize] = *d;
        }
    }
}

/// Turns bucket counts into bucket starts; returns the total.
fn exclusive_prefix(counts: &mut [usize; 17]) -> usize {
    let mut total = 0;
    for c in counts.iter_mut() {
        let n = *c;
        *c = total;
        total += n;
    }
    total
}

/// Multi-chunk messages `mids` (each more than one chunk): every chunk as a lane
/// job (ordered by block count through `chunk_at`, bucket starts), then parents
/// level by level, the roots written to `out`.
#[allow(clippy::too_many_arguments)]
fn hash_trees<M: Messages + ?Sized>(
    engine: Engine,
    words: &[u32; 8],
    flags: u32,
    msgs: &M,
    mids: &[u32],
    chunks: usize,
    chunk_at: &mut [usize; 17],
    work: usize,
    out: &mut [[u8; 32]],
) {
    // Each message's chaining values sit together in `cvs`, from `base[j]`.
    let mut base = Vec::with_capacity(mids.len());
    let mut count = Vec::with_capacity(mids.len());
    let mut order = vec![(0u32, 0u32); chunks];
    let mut at = 0usize;
    for (j, &i) in mids.iter().enumerate() {
        let len = msgs.message(i as usize).len();
        let n = len.div_ceil(CHUNK_LEN);
        base.push(at);
        count.push(n);
        at += n;
        for c in 0..n {
            let slot = &mut chunk_at[blocks(len.min((c + 1) * CHUNK_LEN) - c * CHUNK_LEN)];
            order[*slot] = (j as u32, c as u32);
            *slot += 1;
        }
    }
    let mut digests = vec![[0u8; 32]; chunks];
    run(engine, words, &Chunks { msgs, mids, order: &order, flags }, &mut digests, work);
    let mut cvs = vec![[0u8; 32]; chunks];
    for (&(j, c), d) in order.iter().zip(&digests) {
        cvs[base[j as usize] + c as usize] = *d;
    }

    let mut at: Vec<(u32, bool)> = Vec::new();
    let mut next: Vec<[u8; 32]> = Vec::with_capacity(chunks / 2 + mids.len());
    loop {
        at.clear();
        for (&b, &n) in base.iter().zip(&count) {
            if n > 1 {
                at.extend((0..n / 2).map(|p| ((b + 2 * p) as u32, n == 2)));
            }
        }
        if at.is_empty() {
            break;
        }
        let mut parents = vec![[0u8; 32]; at.len()];
        run(engine, words, &Parents { cvs: &cvs, at: &at, flags }, &mut parents, at.len() * BLOCK_LEN);
        next.clear();
        let mut done = parents.iter();
        for j in 0..mids.len() {
            let n = count[j];
            if n < 2 {
                continue;
            }
            if n == 2 {
                out[mids[j] as usize] = *done.next().expect("one parent per pair");
                count[j] = 1;
                continue;
            }
            let b = next.len();
            next.extend(done.by_ref().take(n / 2));
            if n % 2 == 1 {
                next.push(cvs[base[j] + n - 1]);
            }
            base[j] = b;
            count[j] = n.div_ceil(2);
        }
        std::mem::swap(&mut cvs, &mut next);
    }
}

/// BLAKE3 (keyed if `key`) of one input through the `blake3` crate: `threads` as
/// in [`blake3()`].
fn one_input(key: Option<&[u8; 32]>, data: &[u8], threads: Option<NonZeroUsize>) -> [u8; 32] {
    let mut hasher = match key {
        Some(key) => blake3::Hasher::new_keyed(key),
        None => blake3::Hasher::new(),
    };
    match threads.map(NonZeroUsize::get) {
        None if data.len() < ONE_INPUT_PARALLEL_BYTES => {
            hasher.update(data);
        }
        None => {
            hasher.update_rayon(data);
        }
        Some(1) => {
            hasher.update(data);
        }
        Some(n) => match pool(n) {
            Some(pool) => pool.install(|| {
                hasher.update_rayon(data);
            }),
            None => {
                hasher.update(data);
            }
        },
    }
    *hasher.finalize().as_bytes()
}

/// The rayon pool of `n` threads (capped at `MAX_THREADS`), built once per `n`.
/// `None` if the threads cannot be started; the caller then hashes on its own
/// thread (same digest, fewer threads).
fn pool(n: usize) -> Option<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let n = n.min(MAX_THREADS);
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = pools.get(&n) {
        return Some(Arc::clone(pool));
    }
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(n).build().ok()?);
    pools.insert(n, Arc::clone(&pool));
    Some(pool)
}
