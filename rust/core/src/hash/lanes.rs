//! The lane engine: BLAKE3's compression function on N lanes at once, one job
//! (a chunk of a message, or a parent node) per lane, each lane with its own
//! counter, block length and flags.
//!
//! The bookkeeping (which block each lane compresses next, its flags, its
//! zero-padded tail, when its result is ready) is written once, generic over the
//! lane count, in [`hash_range`]. It hands each step to a kernel: a compression of
//! one block per lane, and a transposition of the finished chaining values back
//! into one 32-byte row per lane.
//!
//! Kernels:
//! - `x86::avx512` (16 lanes) and `x86::avx2` (8 lanes): `std::arch` intrinsics,
//!   the message words of 16 (8) blocks transposed into word vectors with
//!   unpack/shuffle networks, each rotation one `vprold` (AVX-512) or a byte
//!   shuffle or two shifts and an or (AVX2). Everything there is a safe
//!   `#[target_feature]` function; vectors are loaded and stored through plain
//!   arrays, which LLVM turns into vector loads and stores.
//! - [`portable`] (2 lanes; 4 as `neon` on aarch64): the same rounds on `[u32; N]`
//!   lane arrays in plain Rust, vectorised by LLVM as far as the target allows.
//!   On x86_64 that is not at all: LLVM's cost model keeps 32-bit rotations
//!   scalar under SSE2, and 4 or 8 scalar lanes spill (measured 125 and 190
//!   ns per 64-byte message, against 70 to 77 for 1 or 2 lanes). On aarch64, a
//!   rotation is three NEON instructions against four scalar ones, so LLVM
//!   vectorises 4 lanes (not measured here: no aarch64 machine).
//!
//! The one `unsafe` of the engine is [`Engine::hash_range`] calling the
//! `#[target_feature]` entry points, and an [`Engine`] can only be made for a
//! kernel the running CPU executes.

/// BLAKE3's IV: the first 32 bits of the fractional parts of the square roots of
/// the first 8 primes (the SHA-256 IV).
pub(super) const IV: [u32; 8] =
    [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19];

/// Domain flags of a compression (BLAKE3 spec, table 3).
pub(super) const CHUNK_START: u32 = 1;
pub(super) const CHUNK_END: u32 = 2;
pub(super) const PARENT: u32 = 4;
pub(super) const ROOT: u32 = 8;
pub(super) const KEYED_HASH: u32 = 16;

/// Bytes in a block, and in a chunk (16 blocks).
pub(super) const BLOCK_LEN: usize = 64;
pub(super) const CHUNK_LEN: usize = 1024;

/// Which message word each G input reads in each of the 7 rounds: round 0 reads
/// them in order, and each round applies the spec's permutation to the last.
const SCHEDULE: [[usize; 16]; 7] = {
    const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
    let mut s = [[0usize; 16]; 7];
    let mut i = 0;
    while i < 16 {
        s[0][i] = i;
        i += 1;
    }
    let mut r = 1;
    while r < 7 {
        let mut i = 0;
        while i < 16 {
            s[r][i] = s[r - 1][PERMUTATION[i]];
            i += 1;
        }
        r += 1;
    }
    s
};

/// The quarter-round G on state words `a b c d` of `v` with message words `x y`.
/// A macro rather than a function so that every kernel gets it fully inlined
/// (a `#[target_feature]` function cannot be `#[inline(always)]`); `add`, `xor`
/// and `rot16` .. `rot7` (rotate right) are the kernel's own, found where the
/// macro is used.
macro_rules! g {
    ($v:ident, $a:literal, $b:literal, $c:literal, $d:literal, $x:expr, $y:expr) => {
        $v[$a] = add(add($v[$a], $v[$b]), $x);
        $v[$d] = rot16(xor($v[$d], $v[$a]));
        $v[$c] = add($v[$c], $v[$d]);
        $v[$b] = rot12(xor($v[$b], $v[$c]));
        $v[$a] = add(add($v[$a], $v[$b]), $y);
        $v[$d] = rot8(xor($v[$d], $v[$a]));
        $v[$c] = add($v[$c], $v[$d]);
        $v[$b] = rot7(xor($v[$b], $v[$c]));
    };
}

/// Round `r`: G on the columns, then on the diagonals, reading the message words
/// `m` in round `r`'s order (constant indices once expanded).
macro_rules! round {
    ($v:ident, $m:ident, $r:literal) => {
        g!($v, 0, 4, 8, 12, $m[SCHEDULE[$r][0]], $m[SCHEDULE[$r][1]]);
        g!($v, 1, 5, 9, 13, $m[SCHEDULE[$r][2]], $m[SCHEDULE[$r][3]]);
        g!($v, 2, 6, 10, 14, $m[SCHEDULE[$r][4]], $m[SCHEDULE[$r][5]]);
        g!($v, 3, 7, 11, 15, $m[SCHEDULE[$r][6]], $m[SCHEDULE[$r][7]]);
        g!($v, 0, 5, 10, 15, $m[SCHEDULE[$r][8]], $m[SCHEDULE[$r][9]]);
        g!($v, 1, 6, 11, 12, $m[SCHEDULE[$r][10]], $m[SCHEDULE[$r][11]]);
        g!($v, 2, 7, 8, 13, $m[SCHEDULE[$r][12]], $m[SCHEDULE[$r][13]]);
        g!($v, 3, 4, 9, 14, $m[SCHEDULE[$r][14]], $m[SCHEDULE[$r][15]]);
    };
}

/// The 7 rounds of a compression on state `v` with message words `m`.
macro_rules! rounds {
    ($v:ident, $m:ident) => {
        round!($v, $m, 0);
        round!($v, $m, 1);
        round!($v, $m, 2);
        round!($v, $m, 3);
        round!($v, $m, 4);
        round!($v, $m, 5);
        round!($v, $m, 6);
    };
}

#[cfg(target_arch = "x86_64")]
mod x86;

/// All-zero block that idle lanes compress (their results are never read).
static ZERO_BLOCK: [u8; BLOCK_LEN] = [0; BLOCK_LEN];

/// One lane's work: a run of blocks compressed into one chaining value.
#[derive(Clone, Copy)]
pub(super) struct Job<'a> {
    /// The bytes: up to one chunk (1024 bytes), or the 64 bytes of two child
    /// chaining values for a parent. Empty only for the empty message (one
    /// block of length 0).
    pub data: &'a [u8],
    /// The chunk counter (0 for parents).
    pub counter: u64,
    /// Flags set on every block (`KEYED_HASH`, `PARENT`).
    pub flags: u32,
    /// Flags added on the first block (`CHUNK_START` for chunks).
    pub first: u32,
    /// Flags added on the last block (`CHUNK_END` for chunks, `ROOT` at the root).
    pub last: u32,
}

/// Blocks in a chunk of `len` bytes: `max(1, ceil(len / 64))`.
#[inline(always)]
pub(super) fn blocks(len: usize) -> usize {
    len.div_ceil(BLOCK_LEN).max(1)
}

/// A list of jobs, indexed without being stored (a batch of whole messages needs no
/// job table at all).
pub(super) trait Jobs: Sync {
    /// Job `k` (`k` below the length of the output the engine is given).
    fn job(&self, k: usize) -> Job<'_>;
}

/// A lane engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Plain Rust on 2 lanes: whatever the target's baseline makes of it.
    Portable,
    /// AVX2, 8 lanes.
    Avx2,
    /// AVX-512F, 16 lanes.
    Avx512,
    /// NEON (aarch64 baseline), 4 lanes.
    Neon,
}

impl Kind {
    /// Every kind, best first.
    pub const ALL: [Kind; 4] = [Kind::Avx512, Kind::Avx2, Kind::Neon, Kind::Portable];

    /// The name `backend()` reports and `HOPGATE_HASH_BACKEND` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Portable => "portable",
            Kind::Avx2 => "avx2",
            Kind::Avx512 => "avx512",
            Kind::Neon => "neon",
        }
    }

    /// The kind named `name` (ASCII case and surrounding spaces ignored), if any.
    pub fn parse(name: &str) -> Option<Kind> {
        let name = name.trim();
        Kind::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// Lanes: jobs compressed side by side.
    pub fn lanes(self) -> usize {
        match self {
            Kind::Portable => PORTABLE_LANES,
            Kind::Avx2 => 8,
            Kind::Avx512 => 16,
            Kind::Neon => 4,
        }
    }

    /// Whether the running CPU executes this kind's code.
    fn on_this_cpu(self) -> bool {
        match self {
            Kind::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// Lanes of the portable engine: two, so that its lane groups still have lanes
/// that finish early (see the module docs for why not more).
const PORTABLE_LANES: usize = 2;

/// A lane engine the running CPU has. The field is private to this module and
/// [`Engine::new`] is the only constructor, so holding an `Engine` of kind
/// `Avx2` or `Avx512` proves that the CPU was checked for that feature: the
/// argument [`Engine::hash_range`]'s `unsafe` rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Engine {
    kind: Kind,
}

impl Engine {
    /// The engine for `kind`, or `None` if this CPU lacks it.
    pub fn new(kind: Kind) -> Option<Engine> {
        kind.on_this_cpu().then_some(Engine { kind })
    }

    /// The widest engine this CPU has.
    pub fn best() -> Engine {
        Kind::ALL.into_iter().find_map(Engine::new).unwrap_or(Engine { kind: Kind::Portable })
    }

    /// Which engine this is.
    pub fn kind(self) -> Kind {
        self.kind
    }

    /// Runs jobs `start..start + out.len()` of `jobs`, lane group by lane group,
    /// writing job `start + i`'s chaining value (or root hash) to `out[i]`.
    /// `key` is the IV (or, keyed, the key words) every job starts from.
    #[allow(unsafe_code)]
    pub fn hash_range<J: Jobs + ?Sized>(self, key: &[u32; 8], jobs: &J, start: usize, out: &mut [[u8; 32]]) {
        crate::fault::inject("hash");
        match self.kind {
            // SAFETY: `range_avx512` is a safe function compiled with AVX-512F
            // enabled; calling it is sound exactly when the CPU executes AVX-512F
            // (otherwise: an illegal instruction, or worse, undefined behaviour).
            // An `Engine` of kind `Avx512` exists only if `Engine::new` saw
            // `is_x86_feature_detected!("avx512f")` return true at run time: the
            // field is private to this module and `new` is the only constructor
            // (`best` goes through `new`). A CPU does not lose a feature while a
            // process runs. Nothing else is assumed: the callee takes only
            // references and checks every index it uses.
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => unsafe { x86::range_avx512(key, jobs, start, out) },
            // SAFETY: as for `Avx512`, with AVX2: an `Engine` of kind `Avx2`
            // exists only after `is_x86_feature_detected!("avx2")` returned true.
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => unsafe { x86::range_avx2(key, jobs, start, out) },
            // NEON is part of the aarch64 baseline: the generic code compiles to
            // it with no target feature and no `unsafe`.
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => portable::range::<4, J>(key, jobs, start, out),
            _ => portable::range::<PORTABLE_LANES, J>(key, jobs, start, out),
        }
    }
}

/// Per-lane inputs of one compression besides the chaining value and the block:
/// `[counter_lo, counter_hi, block_len, flags]`, state words 12 to 15.
type Params<const N: usize> = [[u32; N]; 4];

/// A kernel: what a lane width does with vector instructions (see [`hash_range`]).
struct Kernel<C, R, P> {
    /// `compress(cv, blocks, params)` compresses `blocks[l]` into lane `l` of `cv`
    /// (word-major: `cv[w][l]`).
    compress: C,
    /// `rows(cv)`: each lane's chaining value as 32 little-endian bytes.
    rows: R,
    /// `prefetch(bytes)`: asks for the cache line holding `bytes[0]` (a hint only).
    prefetch: P,
}

impl<C, R, P> Kernel<C, R, P> {
    /// A kernel on `N` lanes (the bounds give closures their signatures).
    #[inline(always)]
    fn new<const N: usize>(compress: C, rows: R, prefetch: P) -> Self
    where
        C: Fn(&mut [[u32; N]; 8], &[&[u8; BLOCK_LEN]; N], &Params<N>),
        R: Fn(&[[u32; N]; 8]) -> [[u8; 32]; N],
        P: Fn(&[u8]),
    {
        Kernel { compress, rows, prefetch }
    }
}

/// Blocks ahead of the one compressed that each lane asks the cache for. A lane
/// group reads 16 streams at once, a stride apart, which the hardware prefetcher
/// does not follow across pages; two blocks ahead cover the memory latency.
const PREFETCH_BLOCKS: usize = 2;

/// Lane groups of `N` consecutive jobs, one group after the other.
#[inline(always)]
fn hash_range<const N: usize, J, C, R, P>(
    key: &[u32; 8],
    jobs: &J,
    start: usize,
    out: &mut [[u8; 32]],
    kernel: Kernel<C, R, P>,
) where
    J: Jobs + ?Sized,
    C: Fn(&mut [[u32; N]; 8], &[&[u8; BLOCK_LEN]; N], &Params<N>),
    R: Fn(&[[u32; N]; 8]) -> [[u8; 32]; N],
    P: Fn(&[u8]),
{
    let total = out.len();
    // Short last blocks, zero-padded; a lane's row is cleared before it is used.
    let mut tails = [[0u8; BLOCK_LEN]; N];
    for (g, group) in out.chunks_mut(N).enumerate() {
        let first = start + g * N;
        // The next group's first blocks and its short last blocks (copied when
        // the group starts), while this group computes.
        for k in (g + 1) * N..total.min((g + 2) * N) {
            let data = jobs.job(start + k).data;
            for b in 0..PREFETCH_BLOCKS {
                if let Some(line) = line_at(data, b) {
                    (kernel.prefetch)(line);
                }
            }
            if let Some(tail) = line_at(data, data.len() / BLOCK_LEN) {
                (kernel.prefetch)(tail);
                (kernel.prefetch)(&tail[tail.len() - 1..]);
            }
        }
        hash_group::<N, J, C, R, P>(key, jobs, first, group, &kernel, &mut tails);
    }
}

/// The bytes of `data` from block `b` on, if there are any.
#[inline(always)]
fn line_at(data: &[u8], b: usize) -> Option<&[u8]> {
    data.get(b * BLOCK_LEN..).filter(|rest| !rest.is_empty())
}

/// Jobs `first..first + out.len()` (at most `N`) side by side. A lane whose job
/// has fewer blocks than the longest idles on a zero block once it is done; its
/// result was taken after its own last block. Callers order jobs by block count,
/// so idle lanes are rare.
///
/// Per-lane values that change from block to block (length, flags) are computed
/// for all `N` lanes in plain loops, which LLVM vectorises: writing them lane by
/// lane and reading them back as one vector would stall on store forwarding.
#[inline(always)]
fn hash_group<const N: usize, J, C, R, P>(
    key: &[u32; 8],
    jobs: &J,
    first: usize,
    out: &mut [[u8; 32]],
    kernel: &Kernel<C, R, P>,
    tails: &mut [[u8; BLOCK_LEN]; N],
) where
    J: Jobs + ?Sized,
    C: Fn(&mut [[u32; N]; 8], &[&[u8; BLOCK_LEN]; N], &Params<N>),
    R: Fn(&[[u32; N]; 8]) -> [[u8; 32]; N],
    P: Fn(&[u8]),
{
    let live = out.len();
    debug_assert!(live <= N);
    let mut data: [&[u8]; N] = [&[]; N];
    // Blocks of lane `l` read in place (whole ones); the index of its last block,
    // and that block's length (if short, its zero-padded copy is `tails[l]`).
    let mut whole = [0usize; N];
    let mut last = [0u32; N];
    let mut last_len = [0u32; N];
    let mut flags = [0u32; N];
    let mut first_flags = [0u32; N];
    let mut last_flags = [0u32; N];
    let mut params: Params<N> = [[0; N]; 4];
    let mut steps = 0;
    for l in 0..live {
        let job = jobs.job(first + l);
        let len = job.data.len();
        let n = blocks(len);
        steps = steps.max(n);
        data[l] = job.data;
        whole[l] = len / BLOCK_LEN;
        last[l] = (n - 1) as u32;
        last_len[l] = (len - (n - 1) * BLOCK_LEN) as u32;
        if whole[l] < n {
            tails[l] = [0; BLOCK_LEN];
            let tail = &job.data[whole[l] * BLOCK_LEN..];
            tails[l][..tail.len()].copy_from_slice(tail);
        }
        params[0][l] = job.counter as u32;
        params[1][l] = (job.counter >> 32) as u32;
        flags[l] = job.flags;
        first_flags[l] = job.first;
        last_flags[l] = job.last;
    }
    let mut cv = [[0u32; N]; 8];
    for (w, row) in cv.iter_mut().enumerate() {
        *row = [key[w]; N];
    }
    for b in 0..steps {
        let step = b as u32;
        let mut blocks: [&[u8; BLOCK_LEN]; N] = [&ZERO_BLOCK; N];
        for l in 0..live {
            if let Some(ahead) = line_at(data[l], b + PREFETCH_BLOCKS) {
                (kernel.prefetch)(ahead);
            }
            if b < whole[l] {
                blocks[l] = data[l][b * BLOCK_LEN..].first_chunk().expect("whole blocks are in the data");
            } else if step == last[l] {
                blocks[l] = &tails[l];
            }
        }
        for l in 0..N {
            let (now, done) = (step == last[l], step > last[l]);
            params[2][l] = if now {
                last_len[l]
            } else if done {
                0
            } else {
                BLOCK_LEN as u32
            };
            params[3][l] = flags[l] | if step == 0 { first_flags[l] } else { 0 } | if now { last_flags[l] } else { 0 };
        }
        (kernel.compress)(&mut cv, &blocks, &params);
        if last[..live].contains(&step) {
            let digests = (kernel.rows)(&cv);
            for l in 0..live {
                if step == last[l] {
                    out[l] = digests[l];
                }
            }
        }
    }
}

/// The plain-Rust kernel, generic over the lane count: each state word a
/// `[u32; N]`, each operation a loop over the lanes, which LLVM vectorises where
/// the target makes that pay (NEON) and leaves as interleaved scalar code where
/// it does not (SSE2).
mod portable {
    use super::{Jobs, Kernel, Params, BLOCK_LEN, IV, SCHEDULE};

    /// [`hash_range`](super::hash_range) on this kernel, `N` lanes. Plain Rust
    /// has no prefetch hint.
    #[inline(always)]
    pub(super) fn range<const N: usize, J: Jobs + ?Sized>(
        key: &[u32; 8],
        jobs: &J,
        start: usize,
        out: &mut [[u8; 32]],
    ) {
        let kernel = Kernel::new::<N>(compress::<N>, rows::<N>, |_| {});
        super::hash_range::<N, J, _, _, _>(key, jobs, start, out, kernel);
    }

    #[inline(always)]
    fn add<const N: usize>(a: [u32; N], b: [u32; N]) -> [u32; N] {
        let mut r = a;
        for l in 0..N {
            r[l] = a[l].wrapping_add(b[l]);
        }
        r
    }

    #[inline(always)]
    fn xor<const N: usize>(a: [u32; N], b: [u32; N]) -> [u32; N] {
        let mut r = a;
        for l in 0..N {
            r[l] = a[l] ^ b[l];
        }
        r
    }

    #[inline(always)]
    fn rot<const N: usize>(a: [u32; N], n: u32) -> [u32; N] {
        let mut r = a;
        for x in &mut r {
            *x = x.rotate_right(n);
        }
        r
    }

    #[inline(always)]
    fn rot16<const N: usize>(a: [u32; N]) -> [u32; N] {
        rot(a, 16)
    }

    #[inline(always)]
    fn rot12<const N: usize>(a: [u32; N]) -> [u32; N] {
        rot(a, 12)
    }

    #[inline(always)]
    fn rot8<const N: usize>(a: [u32; N]) -> [u32; N] {
        rot(a, 8)
    }

    #[inline(always)]
    fn rot7<const N: usize>(a: [u32; N]) -> [u32; N] {
        rot(a, 7)
    }

    /// One compression per lane (see `hash_range`).
    #[inline(always)]
    pub(super) fn compress<const N: usize>(cv: &mut [[u32; N]; 8], blocks: &[&[u8; BLOCK_LEN]; N], params: &Params<N>) {
        let mut m = [[0u32; N]; 16];
        for (w, word) in m.iter_mut().enumerate() {
            for (l, x) in word.iter_mut().enumerate() {
                let b = &blocks[l][4 * w..4 * w + 4];
                *x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        let mut v = [[0u32; N]; 16];
        v[..8].copy_from_slice(cv);
        for w in 0..4 {
            v[8 + w] = [IV[w]; N];
        }
        v[12..].copy_from_slice(params);
        rounds!(v, m);
        for w in 0..8 {
            cv[w] = xor(v[w], v[w + 8]);
        }
    }

    /// Each lane's chaining value as 32 little-endian bytes.
    #[inline(always)]
    pub(super) fn rows<const N: usize>(cv: &[[u32; N]; 8]) -> [[u8; 32]; N] {
        let mut out = [[0u8; 32]; N];
        for (l, row) in out.iter_mut().enumerate() {
            for w in 0..8 {
                row[4 * w..4 * w + 4].copy_from_slice(&cv[w][l].to_le_bytes());
            }
        }
        out
    }
}
