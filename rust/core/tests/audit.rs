//! The audit log: round trips, receipts, every single-byte change found at the
//! right record, torn tails repaired on open and damage refused.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use hopgate_core::audit::{self, AuditLog, Fsync, Receipt, FRAME_OVERHEAD, HEADER_LEN};
use hopgate_core::Error;

const KEY: [u8; 32] = [7; 32];

/// A directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hopgate-audit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("audit.log")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn bodies(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| (0..(i * 37) % 150).map(|j| (i * 31 + j) as u8).collect()).collect()
}

fn write_log(path: &std::path::Path, n: usize) -> Vec<Receipt> {
    let mut log = AuditLog::open(path, &KEY, Fsync::Never).unwrap();
    let bodies = bodies(n);
    let mut receipts = Vec::new();
    for chunk in bodies.chunks(5) {
        let refs: Vec<&[u8]> = chunk.iter().map(|b| &b[..]).collect();
        receipts.extend(log.append_many(&refs).unwrap());
    }
    receipts
}

fn verify(path: &std::path::Path) -> audit::Report {
    audit::verify_file(path, &KEY, &mut |_, _| true).unwrap()
}

/// Frame start offsets of a log written by `write_log`.
fn frame_offsets(n: usize) -> Vec<u64> {
    let mut at = HEADER_LEN as u64;
    bodies(n)
        .iter()
        .map(|b| {
            let here = at;
            at += (b.len() + FRAME_OVERHEAD) as u64;
            here
        })
        .collect()
}

#[test]
fn round_trip_receipts_and_reopen() {
    let dir = Scratch::new();
    let path = dir.file();
    let receipts = write_log(&path, 23);
    let mut log = AuditLog::open(&path, &KEY, Fsync::Always).unwrap();
    assert_eq!(log.len(), 23);
    assert_eq!(log.recovered(), 0);
    assert_eq!(log.head(), receipts[22].chain);
    assert_eq!(log.read(0, 100).unwrap(), bodies(23));
    assert_eq!(log.read(20, 2).unwrap(), bodies(23)[20..22].to_vec());
    for r in &receipts {
        assert!(r.is_authentic(&KEY));
        assert!(log.verify_receipt(r).unwrap());
        assert_eq!(Receipt::from_bytes(&r.to_bytes()).unwrap(), *r);
    }
    // Appending after a reopen continues the chain.
    let more = log.append(b"after reopen").unwrap();
    assert_eq!(more.index, 23);
    assert_eq!(more.chain, audit::link(&receipts[22].chain, blake3::hash(b"after reopen").as_bytes()));
    drop(log);
    let report = verify(&path);
    assert_eq!(report.problem, None);
    assert_eq!(report.records, 24);
    assert_eq!(report.bytes, fs::metadata(&path).unwrap().len());
}

#[test]
fn forged_receipts_fail() {
    let dir = Scratch::new();
    let path = dir.file();
    let receipts = write_log(&path, 4);
    let mut log = AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
    let good = receipts[2];
    let mut wrong_index = good;
    wrong_index.index = 1;
    let mut wrong_chain = good;
    wrong_chain.chain[0] ^= 1;
    let mut wrong_tag = good;
    wrong_tag.tag[31] ^= 0x80;
    let beyond = Receipt { index: 9, ..good };
    for forged in [wrong_index, wrong_chain, wrong_tag, beyond] {
        assert!(!log.verify_receipt(&forged).unwrap(), "{forged:?}");
    }
    // A receipt sealed with another key, for the right chain value, fails too.
    let other = Receipt { tag: audit::tag(&[8; 32], good.index, &good.chain), ..good };
    assert!(!other.is_authentic(&KEY));
    assert!(!log.verify_receipt(&other).unwrap());
    assert!(matches!(Receipt::from_bytes(&[0; 71]), Err(Error::Input { .. })));
}

#[test]
fn every_single_byte_change_is_found_at_its_record() {
    let dir = Scratch::new();
    let path = dir.file();
    let n = 12;
    write_log(&path, n);
    let clean = fs::read(&path).unwrap();
    let offsets = frame_offsets(n);
    let record_of = |pos: u64| offsets.iter().rposition(|&o| o <= pos).map(|i| i as u64);
    let copy = dir.0.join("changed.log");
    for pos in 0..clean.len() {
        for delta in [0x01u8, 0xff] {
            let mut bytes = clean.clone();
            bytes[pos] ^= delta;
            fs::write(&copy, &bytes).unwrap();
            let report = verify(&copy);
            let problem = report.problem.unwrap_or_else(|| panic!("change at {pos} not found"));
            if pos < HEADER_LEN {
                assert_eq!(problem.record, None, "header byte {pos}");
            } else {
                assert_eq!(problem.record, record_of(pos as u64), "byte {pos}: {}", problem.reason);
                assert_eq!(report.records, problem.record.unwrap());
            }
        }
    }
}

#[test]
fn torn_tails_are_truncated_on_open_and_nothing_before_is_lost() {
    let dir = Scratch::new();
    let path = dir.file();
    let n = 6;
    write_log(&path, n);
    let clean = fs::read(&path).unwrap();
    let last = *frame_offsets(n).last().unwrap() as usize;
    // Cut anywhere inside the last frame.
    for cut in last..clean.len() {
        fs::write(&path, &clean[..cut]).unwrap();
        let torn = verify(&path);
        if cut > last {
            assert_eq!(torn.problem.as_ref().unwrap().record, Some(n as u64 - 1));
        }
        let log = AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
        assert_eq!(log.len(), n as u64 - 1, "cut at {cut}");
        assert_eq!(log.recovered(), (cut - last) as u64);
        drop(log);
        assert_eq!(fs::read(&path).unwrap(), clean[..last]);
        assert_eq!(verify(&path).problem, None);
    }
    // Zeros after the end (a power cut that grew the file), and a last frame whose
    // end was never written (zero-filled).
    let mut zero_tail = clean.clone();
    zero_tail.extend_from_slice(&[0; 300]);
    fs::write(&path, &zero_tail).unwrap();
    let log = AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
    assert_eq!((log.len(), log.recovered()), (n as u64, 300));
    drop(log);
    let mut zero_filled = clean.clone();
    for b in &mut zero_filled[last + 9..] {
        *b = 0;
    }
    fs::write(&path, &zero_filled).unwrap();
    let log = AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
    assert_eq!(log.len(), n as u64 - 1);
    drop(log);
    assert_eq!(fs::read(&path).unwrap(), clean[..last]);
    // A header cut short by a crash at creation is rewritten.
    fs::write(&path, &audit::header(&KEY)[..10]).unwrap();
    let log = AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
    assert_eq!(log.len(), 0);
    drop(log);
    assert_eq!(fs::read(&path).unwrap(), audit::header(&KEY));
}

#[test]
fn damage_that_is_not_a_torn_tail_is_refused_and_left_alone() {
    let dir = Scratch::new();
    let path = dir.file();
    let n = 6;
    write_log(&path, n);
    let clean = fs::read(&path).unwrap();
    let last = *frame_offsets(n).last().unwrap();
    let mut changed = clean.clone();
    changed[last as usize + 5] ^= 0x10;
    fs::write(&path, &changed).unwrap();
    match AuditLog::open(&path, &KEY, Fsync::Never) {
        Err(Error::Audit { record, offset, .. }) => {
            assert_eq!((record, offset), (Some(n as u64 - 1), last))
        }
        other => panic!("expected an audit error, got {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), changed, "a refused log is not modified");
    // A length beyond the limit.
    let mut long = clean.clone();
    long[last as usize..last as usize + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&path, &long).unwrap();
    assert!(matches!(AuditLog::open(&path, &KEY, Fsync::Never), Err(Error::Audit { record: Some(5), .. })));
    // Another key.
    fs::write(&path, &clean).unwrap();
    assert!(matches!(AuditLog::open(&path, &[9; 32], Fsync::Never), Err(Error::Audit { record: None, .. })));
    let report = audit::verify_file(&path, &[9; 32], &mut |_, _| true).unwrap();
    assert_eq!(report.problem.unwrap().record, None);
    // Not a log at all.
    fs::write(&path, b"hello, this is not an audit log at all").unwrap();
    assert!(matches!(AuditLog::open(&path, &KEY, Fsync::Never), Err(Error::Audit { record: None, .. })));
}

#[test]
fn one_writer_at_a_time() {
    let dir = Scratch::new();
    let path = dir.file();
    let first = AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
    assert!(matches!(AuditLog::open(&path, &KEY, Fsync::Never), Err(Error::Io { .. })));
    drop(first);
    AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
}

#[test]
fn many_records_large_records_and_progress() {
    let dir = Scratch::new();
    let path = dir.file();
    let mut log = AuditLog::open(&path, &KEY, Fsync::Every(std::time::Duration::from_secs(3600))).unwrap();
    let small: Vec<Vec<u8>> = (0..5000u32).map(|i| i.to_le_bytes().repeat(1 + i as usize % 20)).collect();
    let refs: Vec<&[u8]> = small.iter().map(|b| &b[..]).collect();
    let receipts = log.append_many(&refs).unwrap();
    // Larger than one verification segment (8 MiB).
    let big = vec![0xabu8; 9 << 20];
    let big_receipt = log.append(&big).unwrap();
    log.append(b"tail").unwrap();
    log.sync().unwrap();
    assert!(log.verify_receipt(&receipts[4097]).unwrap());
    assert!(log.verify_receipt(&big_receipt).unwrap());
    assert_eq!(log.read(3071, 3).unwrap(), small[3071..3074].to_vec());
    assert_eq!(log.read(5000, 1).unwrap(), vec![big.clone()]);
    let mut calls = 0;
    let report = log
        .verify(&mut |done, total| {
            calls += 1;
            assert!(done <= total);
            true
        })
        .unwrap();
    assert_eq!((report.records, report.problem), (5002, None));
    assert!(calls >= 2);
    assert!(log.append(&vec![0u8; audit::MAX_RECORD + 1]).is_err());
    assert_eq!(log.len(), 5002);
    drop(log);
    // Reopen finds the end after the big record.
    let log = AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
    assert_eq!(log.len(), 5002);
    // A progress callback that says stop stops.
    assert!(audit::verify_file(&path, &KEY, &mut |_, _| false).is_err());
    drop(log);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[1, 2, 3]).unwrap();
    drop(f);
    let log = AuditLog::open(&path, &KEY, Fsync::Never).unwrap();
    assert_eq!((log.len(), log.recovered()), (5002, 3));
}
