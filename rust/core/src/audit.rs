//! The audit log: an append-only file of records, chained by hashes and sealed by
//! a key, into which a gate writes one record per decision.
//!
//! # File format (version 1)
//!
//! ```text
//! header   = "HGA1" | version u8 = 1 | 11 zero bytes | key id (16)          32 bytes
//! frame_i  = body_len u32 LE | body_i | chain_i (32) | tag_i (32)
//! key id   = BLAKE3-keyed(key, "hopgate audit key id v1")[..16]
//! leaf_i   = BLAKE3(body_i)
//! chain_-1 = BLAKE3(header)
//! chain_i  = BLAKE3(chain_{i-1} | leaf_i)
//! tag_i    = BLAKE3-keyed(key, "HGR1" | i as u64 LE | chain_i)          the receipt
//! ```
//!
//! Verification needs no sequential pass: every frame stores its chain value, so
//! frame `i` is checked against the stored `chain_{i-1}` and all leaves, links and
//! tags of a segment are hashed as three parallel batches ([`crate::hash`]). If
//! every link holds, the stored chain is the chain. A change to any byte of frame
//! `i` (length, body, chain or tag) fails a check of frame `i` and no earlier one,
//! so the first failure names the changed record. Without the key nobody can make
//! a tag, so rewriting the log is detected too; cutting whole records off the end
//! is not detectable from the file alone, which is what receipts are for.
//!
//! # Durability
//!
//! Each append is one `write` of whole frames at the end of the file, so a process
//! that dies keeps every record whose append returned. [`Fsync`] decides when the
//! data also reaches the disk (power loss). A crash can leave a torn tail: a last
//! frame cut short, or a run of zero bytes a file system leaves after a power cut.
//! Opening the log detects it, checks the last complete frame, and truncates the
//! tail; anything else that does not verify is refused, never truncated.
//!
//! One writer at a time: [`AuditLog::open`] takes an exclusive lock on the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::hash;
use crate::{Error, Result};

/// First bytes of every audit log.
pub const MAGIC: &[u8; 4] = b"HGA1";
/// The format version written in the header.
pub const VERSION: u8 = 1;
/// Bytes in the header.
pub const HEADER_LEN: usize = 32;
/// Bytes a frame adds around its body: the length, the chain value and the tag.
pub const FRAME_OVERHEAD: usize = 4 + 32 + 32;
/// The largest record body (16 MiB).
pub const MAX_RECORD: usize = 1 << 24;

const KEY_ID_CONTEXT: &[u8] = b"hopgate audit key id v1";
const RECEIPT_DOMAIN: &[u8; 4] = b"HGR1";
const RECEIPT_MESSAGE_LEN: usize = 4 + 8 + 32;
/// One remembered frame offset per this many records (to find record `i` fast).
const SPARSE_EVERY: u64 = 1024;
/// Bytes read and checked at a time by verification and the open-time scan.
const SEGMENT_BYTES: usize = 8 << 20;

/// The 32-byte header of a log sealed with `key`.
pub fn header(key: &[u8; 32]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[16..].copy_from_slice(&blake3::keyed_hash(key, KEY_ID_CONTEXT).as_bytes()[..16]);
    h
}

/// `chain_i = BLAKE3(chain_{i-1} | leaf_i)`.
pub fn link(prev: &[u8; 32], leaf: &[u8; 32]) -> [u8; 32] {
    let mut m = [0u8; 64];
    m[..32].copy_from_slice(prev);
    m[32..].copy_from_slice(leaf);
    *blake3::hash(&m).as_bytes()
}

fn receipt_message(index: u64, chain: &[u8; 32]) -> [u8; RECEIPT_MESSAGE_LEN] {
    let mut m = [0u8; RECEIPT_MESSAGE_LEN];
    m[..4].copy_from_slice(RECEIPT_DOMAIN);
    m[4..12].copy_from_slice(&index.to_le_bytes());
    m[12..].copy_from_slice(chain);
    m
}

/// The tag of record `index` whose chain value is `chain`.
pub fn tag(key: &[u8; 32], index: u64, chain: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(key, &receipt_message(index, chain)).as_bytes()
}

/// Bytes in a gate's record ([`gate_record`]).
pub const GATE_RECORD_LEN: usize = 2 + 8 + 32 + 32;
/// First byte of a gate's record (the record kind and its version).
pub const GATE_RECORD_KIND: u8 = 0x47; // 'G'

/// The record a gate appends for one decision:
/// `'G' | code u8 | now u64 LE | BLAKE3(chain bytes) | BLAKE3(invocation bytes)`.
pub fn gate_record(
    now: u64,
    code: crate::Code,
    chain_digest: &[u8; 32],
    invocation_digest: &[u8; 32],
) -> [u8; GATE_RECORD_LEN] {
    let mut r = [0u8; GATE_RECORD_LEN];
    r[0] = GATE_RECORD_KIND;
    r[1] = code as u8;
    r[2..10].copy_from_slice(&now.to_le_bytes());
    r[10..42].copy_from_slice(chain_digest);
    r[42..].copy_from_slice(invocation_digest);
    r
}

/// First byte of a settlement record ([`settle_record`]).
pub const SETTLE_RECORD_KIND: u8 = 0x53; // 'S'
/// Bytes of a settlement record before its account ids.
pub const SETTLE_RECORD_FIXED: usize = 2 + 8 + 8 + 32 + 1;

/// How a reservation was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Settlement {
    /// `commit(actual)`: `actual` was spent.
    Commit = 1,
    /// `release()`: nothing was spent.
    Release = 2,
    /// Dropped unsettled: the whole amount counts as spent.
    Forfeit = 3,
}

/// The record a gate's reservation appends when it is settled:
/// `'S' | kind u8 | reserved u64 LE | charged u64 LE | BLAKE3(invocation bytes)
/// | n u8 | account id (32) * n` (the chain's accounts, root first). An overrun is
/// `charged - reserved` when positive. With the gate's records, the log holds
/// every amount spent on every account.
pub fn settle_record(
    kind: Settlement,
    reserved: u64,
    charged: u64,
    invocation_digest: &[u8; 32],
    accounts: &[[u8; 32]],
) -> Vec<u8> {
    let mut r = Vec::with_capacity(SETTLE_RECORD_FIXED + 32 * accounts.len());
    r.push(SETTLE_RECORD_KIND);
    r.push(kind as u8);
    r.extend_from_slice(&reserved.to_le_bytes());
    r.extend_from_slice(&charged.to_le_bytes());
    r.extend_from_slice(invocation_digest);
    // A path is a chain's links: at most 16 (SPEC §2), so n fits a byte.
    r.push(u8::try_from(accounts.len()).unwrap_or(u8::MAX));
    for id in accounts.iter().take(usize::from(u8::MAX)) {
        r.extend_from_slice(id);
    }
    r
}

/// What an append hands back: the record's position, its chain value and its tag.
/// Whoever holds the key can check it later ([`Receipt::is_authentic`]) and find
/// the same chain value in the log ([`AuditLog::verify_receipt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The record's index in the log (0 for the first).
    pub index: u64,
    /// `chain_index` of the log.
    pub chain: [u8; 32],
    /// `BLAKE3-keyed(key, "HGR1" | index | chain)`.
    pub tag: [u8; 32],
}

impl Receipt {
    /// Bytes in [`Receipt::to_bytes`]: index u64 LE, chain, tag.
    pub const LEN: usize = 72;

    /// The receipt as 72 bytes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(&self.index.to_le_bytes());
        b[8..40].copy_from_slice(&self.chain);
        b[40..].copy_from_slice(&self.tag);
        b
    }

    /// Parses [`Receipt::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != Self::LEN {
            return Err(Error::input("receipt", format!("must be {} bytes, got {}", Self::LEN, b.len())));
        }
        let mut r =
            Receipt { index: u64::from_le_bytes(b[..8].try_into().unwrap_or_default()), chain: [0; 32], tag: [0; 32] };
        r.chain.copy_from_slice(&b[8..40]);
        r.tag.copy_from_slice(&b[40..]);
        Ok(r)
    }

    /// True iff the tag was made with `key` for this index and chain value
    /// (compared in constant time).
    pub fn is_authentic(&self, key: &[u8; 32]) -> bool {
        blake3::keyed_hash(key, &receipt_message(self.index, &self.chain)) == blake3::Hash::from(self.tag)
    }
}

/// When appended records are forced to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// After every append call (a batch is one call): an acknowledged record
    /// survives a power cut.
    Always,
    /// At most once per interval, at the first append after it has passed, and on
    /// [`AuditLog::sync`] and drop. A power cut loses at most the last interval.
    Every(Duration),
    /// Never explicitly: the operating system writes back when it likes. A killed
    /// process loses nothing; a power cut may lose recent records.
    Never,
}

/// Where verification found the first problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The first bad record, or `None` for the header.
    pub record: Option<u64>,
    /// Byte offset of that record's frame (0 for the header).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// The result of verifying a whole log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Records that verified, before the problem if there is one.
    pub records: u64,
    /// Bytes that verified (header included).
    pub bytes: u64,
    /// The first problem, or `None` when the whole file verified.
    pub problem: Option<Problem>,
}

fn io_error(context: &str, path: &Path, e: io::Error) -> Error {
    Error::Io { context: format!("{context} {}", path.display()), errno: e.raw_os_error(), reason: e.to_string() }
}

fn corrupt(record: Option<u64>, offset: u64, reason: impl Into<String>) -> Error {
    Error::Audit { record, offset, reason: reason.into() }
}

/// One complete frame inside a [`Segments`] buffer.
struct Frame {
    offset: u64,
    body: std::ops::Range<usize>,
    chain: [u8; 32],
    tag: [u8; 32],
}

/// How a scan of frames ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// More frames follow.
    More,
    /// The file ends exactly after the last frame.
    Clean,
    /// Bytes that are not a complete frame start at this offset.
    Torn(u64),
    /// The frame at this offset claims a body longer than [`MAX_RECORD`].
    TooLong(u64),
}

/// Reads a log's frames a segment at a time, in one buffer that grows only for a
/// frame larger than a segment.
struct Segments<'f> {
    file: &'f mut File,
    buf: Vec<u8>,
    /// Valid bytes in `buf`.
    filled: usize,
    /// Bytes of `buf` parsed by the previous call (dropped by the next one).
    consumed: usize,
    /// File offset of `buf[0]`.
    base: u64,
    /// File length when the scan started; nothing past it is read.
    len: u64,
    /// A frame starting at or past this offset ends the scan as torn (zero tail).
    stop_at: u64,
}

impl<'f> Segments<'f> {
    fn new(file: &'f mut File, start: u64, len: u64, stop_at: u64) -> io::Result<Self> {
        file.seek(SeekFrom::Start(start))?;
        Ok(Segments { file, buf: Vec::new(), filled: 0, consumed: 0, base: start, len, stop_at })
    }

    /// The frame bytes of `frame`'s body.
    fn body(&self, frame: &Frame) -> &[u8] {
        &self.buf[frame.body.clone()]
    }

    /// Parses the next segment's complete frames into `frames` (cleared first).
    fn next(&mut self, frames: &mut Vec<Frame>) -> io::Result<End> {
        frames.clear();
        // Drop what the previous call parsed; keep its unparsed rest at the front.
        self.buf.copy_within(self.consumed..self.filled, 0);
        self.filled -= self.consumed;
        self.base += self.consumed as u64;
        self.consumed = 0;
        let want = SEGMENT_BYTES.max(self.buf.len());
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let unread = self.len - (self.base + self.filled as u64);
        let room = (self.buf.len() - self.filled).min(usize::try_from(unread).unwrap_or(usize::MAX));
        let mut got = 0;
        while got < room {
            match self.file.read(&mut self.buf[self.filled + got..self.filled + room]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.filled += got;
        if got < room {
            // The file shrank under us: what is there is the end.
            self.len = self.base + self.filled as u64;
        }
        let at_end = self.base + self.filled as u64 >= self.len;
        let mut pos = 0usize;
        let end = loop {
            let offset = self.base + pos as u64;
            let rest = self.filled - pos;
            if rest == 0 && at_end {
                break End::Clean;
            }
            if offset >= self.stop_at {
                break End::Torn(offset);
            }
            if rest < 4 {
                break if at_end { End::Torn(offset) } else { End::More };
            }
            let body_len = u32::from_le_bytes(self.buf[pos..pos + 4].try_into().unwrap_or_default()) as usize;
            if body_len > MAX_RECORD {
                break End::TooLong(offset);
            }
            let size = 4 + body_len + 64;
            if rest < size {
                if at_end {
                    break End::Torn(offset);
                }
                if size > self.buf.len() {
                    self.buf.resize(size, 0);
                }
                break End::More;
            }
            let body = pos + 4..pos + 4 + body_len;
            let mut chain = [0u8; 32];
            let mut tag = [0u8; 32];
            chain.copy_from_slice(&self.buf[body.end..body.end + 32]);
            tag.copy_from_slice(&self.buf[body.end + 32..body.end + 64]);
            frames.push(Frame { offset, body, chain, tag });
            pos += size;
        };
        self.consumed = pos;
        Ok(end)
    }
}

/// Checks a run of frames that starts at record `first`, whose predecessor's chain
/// value is `prev`: leaves, links and tags are three parallel batches. Returns the
/// position in `frames` of the first bad frame and why; moves `prev` to the last
/// frame's chain value.
fn check_frames(
    key: &[u8; 32],
    seg: &Segments<'_>,
    frames: &[Frame],
    first: u64,
    prev: &mut [u8; 32],
) -> Option<(usize, &'static str)> {
    let n = frames.len();
    if n == 0 {
        return None;
    }
    let bodies: Vec<&[u8]> = frames.iter().map(|f| seg.body(f)).collect();
    let mut leaves = vec![[0u8; 32]; n];
    hash::blake3_many(&bodies, &mut leaves);
    let links: Vec<[u8; 64]> = (0..n)
        .map(|i| {
            let mut m = [0u8; 64];
            m[..32].copy_from_slice(if i == 0 { prev } else { &frames[i - 1].chain });
            m[32..].copy_from_slice(&leaves[i]);
            m
        })
        .collect();
    let link_refs: Vec<&[u8]> = links.iter().map(|m| &m[..]).collect();
    let mut linked = vec![[0u8; 32]; n];
    hash::blake3_many(&link_refs, &mut linked);
    let messages: Vec<[u8; RECEIPT_MESSAGE_LEN]> =
        frames.iter().enumerate().map(|(i, f)| receipt_message(first + i as u64, &f.chain)).collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(|m| &m[..]).collect();
    let mut tags = vec![[0u8; 32]; n];
    hash::mac_many(key, &message_refs, &mut tags);
    *prev = frames[n - 1].chain;
    (0..n).find_map(|i| {
        if linked[i] != frames[i].chain {
            Some((i, "the record does not match its chain value"))
        } else if tags[i] != frames[i].tag {
            Some((i, "the tag does not match (another key, or a changed record)"))
        } else {
            None
        }
    })
}

/// Checks a header read from a file against `key`.
fn check_header(found: &[u8], key: &[u8; 32]) -> std::result::Result<(), &'static str> {
    let want = header(key);
    if found.len() < HEADER_LEN {
        return Err("the file is shorter than an audit log header");
    }
    if found[..4] != want[..4] {
        return Err("not a hopgate audit log (bad magic)");
    }
    if found[4] != VERSION {
        return Err("unknown audit log version");
    }
    if found[5..16] != want[5..16] {
        return Err("reserved header bytes are not zero");
    }
    if found[16..HEADER_LEN] != want[16..] {
        return Err("the log was sealed with another key (key id differs)");
    }
    Ok(())
}

/// Offset just past the last non-zero byte of the file (`HEADER_LEN` at least).
fn zero_tail_start(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > HEADER_LEN as u64 {
        let start = end.saturating_sub(buf.len() as u64).max(HEADER_LEN as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(HEADER_LEN as u64)
}

/// Verifies the log at `path` with `key`, reading it a segment at a time; the
/// file is only read, never locked or changed. `progress(bytes_done, bytes_total)`
/// is called after every segment; returning `false` stops with an error.
pub fn verify_file(path: &Path, key: &[u8; 32], progress: &mut dyn FnMut(u64, u64) -> bool) -> Result<Report> {
    verify_file_upto(path, key, None, progress)
}

/// [`verify_file`] over the first `upto` bytes of the file (all of it for `None`):
/// a writer's records up to a known end, while it goes on appending.
pub fn verify_file_upto(
    path: &Path,
    key: &[u8; 32],
    upto: Option<u64>,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Report> {
    let mut file = File::open(path).map_err(|e| io_error("cannot open", path, e))?;
    let len = file.metadata().map_err(|e| io_error("cannot stat", path, e))?.len();
    let len = upto.map_or(len, |u| u.min(len));
    let mut head = [0u8; HEADER_LEN];
    let got = read_up_to(&mut file, &mut head).map_err(|e| io_error("cannot read", path, e))?;
    let header_problem = |reason: &str| Report {
        records: 0,
        bytes: 0,
        problem: Some(Problem { record: None, offset: 0, reason: reason.to_string() }),
    };
    if let Err(reason) = check_header(&head[..got], key) {
        return Ok(header_problem(reason));
    }
    let mut prev = *blake3::hash(&head).as_bytes();
    let mut seg =
        Segments::new(&mut file, HEADER_LEN as u64, len, u64::MAX).map_err(|e| io_error("cannot read", path, e))?;
    let mut frames = Vec::new();
    let mut records = 0u64;
    loop {
        let end = seg.next(&mut frames).map_err(|e| io_error("cannot read", path, e))?;
        if let Some((i, reason)) = check_frames(key, &seg, &frames, records, &mut prev) {
            let offset = frames[i].offset;
            return Ok(Report {
                records: records + i as u64,
                bytes: offset,
                problem: Some(Problem { record: Some(records + i as u64), offset, reason: reason.to_string() }),
            });
        }
        records += frames.len() as u64;
        let done = seg.base + seg.consumed as u64;
        if !progress(done, len) {
            return Err(Error::input("progress", "verification stopped by the progress callback"));
        }
        let (offset, reason) = match end {
            End::More => continue,
            End::Clean => return Ok(Report { records, bytes: done, problem: None }),
            End::Torn(offset) => {
                (offset, "the last record is incomplete (a torn tail; opening the log truncates it)".to_string())
            }
            End::TooLong(offset) => (offset, format!("the record length exceeds the limit of {MAX_RECORD} bytes")),
        };
        return Ok(Report { records, bytes: offset, problem: Some(Problem { record: Some(records), offset, reason }) });
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A frame copied out of a segment buffer (the open-time scan keeps the last two).
struct OwnedFrame {
    index: u64,
    offset: u64,
    body: Vec<u8>,
    chain: [u8; 32],
    tag: [u8; 32],
}

impl OwnedFrame {
    fn end(&self) -> u64 {
        self.offset + (4 + self.body.len() + 64) as u64
    }

    /// True iff this frame links to `prev` and carries the right tag.
    fn holds(&self, key: &[u8; 32], prev: &[u8; 32]) -> bool {
        link(prev, blake3::hash(&self.body).as_bytes()) == self.chain && tag(key, self.index, &self.chain) == self.tag
    }
}

/// An append-only audit log open for appending (see the module docs).
pub struct AuditLog {
    path: PathBuf,
    file: File,
    key: Zeroizing<[u8; 32]>,
    fsync: Fsync,
    /// Records in the log.
    records: u64,
    /// Byte offset of the end of the last frame.
    end: u64,
    /// The last chain value (`chain_-1` for an empty log).
    head: [u8; 32],
    /// Offsets of records 0, SPARSE_EVERY, 2 * SPARSE_EVERY, ...
    sparse: Vec<u64>,
    /// Bytes of torn tail truncated when the log was opened.
    recovered: u64,
    last_sync: Instant,
    unsynced: bool,
    closed: bool,
}

impl AuditLog {
    /// Opens the log at `path` for appending, creating it if it does not exist.
    ///
    /// Takes an exclusive lock on the file (a second writer gets an error), checks
    /// the header against `key`, finds the last record and checks it. A torn tail
    /// (see the module docs) is truncated and its size kept in
    /// [`AuditLog::recovered`]; any other damage is an [`Error::Audit`] and the
    /// file is left as it is.
    pub fn open(path: &Path, key: &[u8; 32], fsync: Fsync) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_error("cannot open", path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Io {
                    context: format!("cannot lock {}", path.display()),
                    errno: None,
                    reason: "the log is already open for appending (by this or another process)".into(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("cannot lock", path, e)),
        }
        let len = file.metadata().map_err(|e| io_error("cannot stat", path, e))?.len();
        let want = header(key);
        let mut log = AuditLog {
            path: path.to_path_buf(),
            file,
            key: Zeroizing::new(*key),
            fsync,
            records: 0,
            end: HEADER_LEN as u64,
            head: *blake3::hash(&want).as_bytes(),
            sparse: Vec::new(),
            recovered: 0,
            last_sync: Instant::now(),
            unsynced: false,
            closed: false,
        };
        let mut found = [0u8; HEADER_LEN];
        log.file.seek(SeekFrom::Start(0)).map_err(|e| log.io("cannot read", e))?;
        let got = read_up_to(&mut log.file, &mut found).map_err(|e| log.io("cannot read", e))?;
        if len < HEADER_LEN as u64 {
            // New, or created by a writer that died before its header was whole.
            if found[..got] != want[..got] {
                return Err(corrupt(None, 0, "not a hopgate audit log (a short file that is not a header)"));
            }
            log.write_at(0, &want)?;
            log.file.set_len(HEADER_LEN as u64).map_err(|e| log.io("cannot truncate", e))?;
            log.sync_all_and_dir()?;
            return Ok(log);
        }
        check_header(&found, key).map_err(|reason| corrupt(None, 0, reason))?;
        log.scan(len)?;
        Ok(log)
    }

    /// Finds the last record and checks it; truncates a torn tail.
    fn scan(&mut self, len: u64) -> Result<()> {
        let zero_from = zero_tail_start(&mut self.file, len).map_err(|e| self.io("cannot read", e))?;
        let key = *self.key;
        let mut before = self.head; // chain value before ring[0]
        let mut ring: Vec<OwnedFrame> = Vec::with_capacity(3);
        let mut sparse = Vec::new();
        let mut records = 0u64;
        let mut frames = Vec::new();
        let mut seg = Segments::new(&mut self.file, HEADER_LEN as u64, len, zero_from)
            .map_err(|e| io_error("cannot read", &self.path, e))?;
        let end = loop {
            let end = seg.next(&mut frames).map_err(|e| io_error("cannot read", &self.path, e))?;
            for (i, f) in frames.iter().enumerate() {
                let index = records + i as u64;
                if index.is_multiple_of(SPARSE_EVERY) {
                    sparse.push(f.offset);
                }
            }
            let n = frames.len();
            for (i, f) in frames.iter().enumerate().skip(n.saturating_sub(2)) {
                let owned = OwnedFrame {
                    index: records + i as u64,
                    offset: f.offset,
                    body: seg.body(f).to_vec(),
                    chain: f.chain,
                    tag: f.tag,
                };
                ring.push(owned);
            }
            // Keep two frames, and the chain value of the frame before them.
            while ring.len() > 2 {
                before = ring.remove(0).chain;
            }
            if n >= 3 {
                before = frames[n - 3].chain;
            }
            records += n as u64;
            if end != End::More {
                break end;
            }
        };
        if let End::TooLong(offset) = end {
            return Err(corrupt(
                Some(records),
                offset,
                format!("the record length exceeds the limit of {MAX_RECORD} bytes; run `hopgate audit verify`"),
            ));
        }
        // What stays: the records, the end of the kept frames, the last chain value.
        // The last frame must hold; if it does not but ends inside the zero tail,
        // it is torn and goes, provided the frame before it holds.
        let (keep, keep_end, head) = match ring.as_slice() {
            [] => (0, HEADER_LEN as u64, self.head),
            [only] if only.holds(&key, &before) => (records, only.end(), only.chain),
            [only] if zero_from < only.end() => (records - 1, only.offset, self.head),
            [.., prev, last] if last.holds(&key, &prev.chain) => (records, last.end(), last.chain),
            [.., prev, last] if zero_from < last.end() && prev.holds(&key, &before) => {
                (records - 1, last.offset, prev.chain)
            }
            [.., last] => return Err(self.damaged(last)),
        };
        self.records = keep;
        self.head = head;
        sparse.truncate(keep.div_ceil(SPARSE_EVERY) as usize);
        self.sparse = sparse;
        self.end = keep_end;
        if keep_end < len {
            self.file.set_len(keep_end).map_err(|e| self.io("cannot truncate", e))?;
            self.recovered = len - keep_end;
            if self.fsync != Fsync::Never {
                self.file.sync_all().map_err(|e| self.io("cannot sync", e))?;
            }
        }
        Ok(())
    }

    fn damaged(&self, frame: &OwnedFrame) -> Error {
        corrupt(
            Some(frame.index),
            frame.offset,
            "the last record does not verify and is not a torn tail; run `hopgate audit verify`",
        )
    }

    fn io(&self, context: &str, e: io::Error) -> Error {
        io_error(context, &self.path, e)
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| self.io("cannot seek", e))?;
        self.file.write_all(bytes).map_err(|e| self.io("cannot write", e))
    }

    /// Syncs the file and, on Unix, its directory (a new file's name must reach
    /// the disk too).
    fn sync_all_and_dir(&mut self) -> Result<()> {
        if self.fsync == Fsync::Never {
            return Ok(());
        }
        self.file.sync_all().map_err(|e| self.io("cannot sync", e))?;
        #[cfg(unix)]
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("cannot sync directory", dir, e))?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Appends one record; see [`AuditLog::append_many`].
    pub fn append(&mut self, body: &[u8]) -> Result<Receipt> {
        Ok(self.append_many(&[body])?[0])
    }

    /// Appends records in one write and returns their receipts. Leaves and tags
    /// are hashed as batches; only the chain is sequential. If the write fails,
    /// the file is cut back to where it was and nothing is appended.
    pub fn append_many(&mut self, bodies: &[&[u8]]) -> Result<Vec<Receipt>> {
        self.append_many_with(bodies, true)
    }

    /// [`AuditLog::append_many`], where `urgent == false` skips the sync that
    /// [`Fsync::Always`] would force: the records stay unsynced until the next urgent
    /// append, [`AuditLog::sync`] or close syncs them (an fsync covers every earlier
    /// write). For records nobody is owed, such as a gate's refusals (anyone can cause
    /// one without a key): a crash of the process loses none of them, a power cut may.
    pub fn append_many_with(&mut self, bodies: &[&[u8]], urgent: bool) -> Result<Vec<Receipt>> {
        self.check_open()?;
        if let Some(i) = bodies.iter().position(|b| b.len() > MAX_RECORD) {
            return Err(Error::input("record", format!("record {i} is longer than {MAX_RECORD} bytes")));
        }
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let mut leaves = vec![[0u8; 32]; bodies.len()];
        hash::blake3_many(bodies, &mut leaves);
        let mut chains = Vec::with_capacity(bodies.len());
        let mut head = self.head;
        for leaf in &leaves {
            head = link(&head, leaf);
            chains.push(head);
        }
        let messages: Vec<[u8; RECEIPT_MESSAGE_LEN]> =
            chains.iter().enumerate().map(|(i, c)| receipt_message(self.records + i as u64, c)).collect();
        let message_refs: Vec<&[u8]> = messages.iter().map(|m| &m[..]).collect();
        let mut tags = vec![[0u8; 32]; bodies.len()];
        hash::mac_many(&self.key, &message_refs, &mut tags);

        let size: usize = bodies.iter().map(|b| b.len() + FRAME_OVERHEAD).sum();
        let mut out = Vec::with_capacity(size);
        let mut offsets = Vec::with_capacity(bodies.len());
        for ((body, chain), tag) in bodies.iter().zip(&chains).zip(&tags) {
            offsets.push(self.end + out.len() as u64);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(chain);
            out.extend_from_slice(tag);
        }
        if let Err(e) = self.write_at(self.end, &out) {
            // Best effort: leave no partial frame behind for the next open to find.
            let _ = self.file.set_len(self.end);
            return Err(e);
        }
        self.unsynced = true;
        let sync = match self.fsync {
            Fsync::Always => urgent,
            Fsync::Every(interval) => self.last_sync.elapsed() >= interval,
            Fsync::Never => false,
        };
        if sync {
            self.sync()?;
        }
        let receipts = (0..bodies.len())
            .map(|i| Receipt { index: self.records + i as u64, chain: chains[i], tag: tags[i] })
            .collect();
        for (i, offset) in offsets.into_iter().enumerate() {
            if (self.records + i as u64).is_multiple_of(SPARSE_EVERY) {
                self.sparse.push(offset);
            }
        }
        self.records += bodies.len() as u64;
        self.end += out.len() as u64;
        self.head = head;
        Ok(receipts)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::input("audit log", format!("{} is closed", self.path.display())));
        }
        Ok(())
    }

    /// Syncs what is unsynced (unless the policy is [`Fsync::Never`]) and lets go of
    /// the file's lock; later appends are errors. Closing twice is harmless.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        if self.fsync != Fsync::Never {
            self.sync()?;
        }
        self.closed = true;
        self.file.unlock().map_err(|e| self.io("cannot unlock", e))
    }

    /// True while records have been written since the last sync (under
    /// [`Fsync::Always`], only records appended as not urgent).
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// True once [`AuditLog::close`] has run.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Forces appended records to the disk now.
    pub fn sync(&mut self) -> Result<()> {
        self.check_open()?;
        if self.unsynced {
            self.file.sync_data().map_err(|e| self.io("cannot sync", e))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Records in the log.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// True iff the log has no records.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The last chain value (`BLAKE3(header)` for an empty log).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Bytes of torn tail truncated when the log was opened (0 if none).
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fsync policy.
    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Reads the bodies of records `start..start + count` (clamped to the log).
    pub fn read(&mut self, start: u64, count: u64) -> Result<Vec<Vec<u8>>> {
        self.check_open()?;
        let stop = start.saturating_add(count).min(self.records);
        let mut out = Vec::new();
        if start >= stop {
            return Ok(out);
        }
        self.walk(start, stop, |_, body, _, _| out.push(body.to_vec()))?;
        Ok(out)
    }

    /// Calls `visit(index, body, chain, tag)` for records `start..stop`, seeking
    /// to the nearest remembered offset first.
    fn walk(&mut self, start: u64, stop: u64, mut visit: impl FnMut(u64, &[u8], &[u8; 32], &[u8; 32])) -> Result<()> {
        let first = start / SPARSE_EVERY * SPARSE_EVERY;
        let from = *self
            .sparse
            .get((start / SPARSE_EVERY) as usize)
            .ok_or_else(|| corrupt(Some(start), 0, "no such record"))?;
        let end = self.end;
        let path = self.path.clone();
        let mut seg =
            Segments::new(&mut self.file, from, end, u64::MAX).map_err(|e| io_error("cannot read", &path, e))?;
        let mut frames = Vec::new();
        let mut index = first;
        while index < stop {
            let ended = seg.next(&mut frames).map_err(|e| io_error("cannot read", &path, e))?;
            for f in &frames {
                if index >= start && index < stop {
                    visit(index, seg.body(f), &f.chain, &f.tag);
                }
                index += 1;
            }
            if ended != End::More {
                break;
            }
        }
        if index < stop {
            return Err(corrupt(Some(index), 0, "the log changed under the writer"));
        }
        Ok(())
    }

    /// True iff `receipt` was made with this log's key and the log still holds
    /// the receipt's chain value at the receipt's index.
    pub fn verify_receipt(&mut self, receipt: &Receipt) -> Result<bool> {
        self.check_open()?;
        if !receipt.is_authentic(&self.key) || receipt.index >= self.records {
            return Ok(false);
        }
        let mut stored = [0u8; 32];
        self.walk(receipt.index, receipt.index + 1, |_, _, chain, _| stored = *chain)?;
        Ok(stored == receipt.chain)
    }

    /// Verifies the whole log (see [`verify_file`]).
    pub fn verify(&mut self, progress: &mut dyn FnMut(u64, u64) -> bool) -> Result<Report> {
        verify_file_upto(&self.path, &self.key, Some(self.end), progress)
    }

    /// Byte offset of the end of the last record: what [`verify_file_upto`] should
    /// check while this writer goes on appending.
    pub fn end(&self) -> u64 {
        self.end
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if self.unsynced && !self.closed && self.fsync != Fsync::Never {
            let _ = self.file.sync_data();
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("records", &self.records)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}
