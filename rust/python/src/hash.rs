//! Hashing: `blake3_many`, `sha256_many`, `mac_many` (BLAKE3 keyed mode), the
//! one-input `blake3` (optionally on several threads), and `hash_backend`.
//!
//! Inputs go through `convert` (one bytes-like object: `convert::source`; a batch:
//! `convert::variable_in_place`): immutable and read-only memory is borrowed, as
//! everywhere; the one writable buffer of a buffer-plus-offsets batch is read in place too
//! (a copy would cost what the hash does), as `convert::Writable::InPlace` states; the
//! items of a list are copied when writable.
//! The hashing itself, its threading and its lane engine belong to
//! `hopgate_core::hash`.

use std::num::NonZeroUsize;

use hopgate_core::hash;
use hopgate_macros::guarded;
use numpy::{PyArray2, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes};

use crate::convert::{self, Messages};
use crate::errors::input;

/// Below this many bytes the GIL stays held: releasing it costs more than hashing.
const DETACH_BYTES: usize = 16 * 1024;

/// BLAKE3 key length (keyed mode).
const KEY_LEN: usize = 32;

/// Which digest of each message.
#[derive(Clone, Copy)]
enum Digest {
    Blake3,
    Sha256,
    Mac([u8; KEY_LEN]),
}

impl Digest {
    fn run<M: hash::Messages + ?Sized>(self, msgs: &M, out: &mut [[u8; 32]]) {
        match self {
            Digest::Blake3 => hash::blake3_many(msgs, out),
            Digest::Sha256 => hash::sha256_many(msgs, out),
            Digest::Mac(key) => hash::mac_many(&key, msgs, out),
        }
    }
}

/// The digests of the batch in an `(n, 32)` uint8 array: `out` when given (written in
/// place, and returned), else a new one; the GIL released above `DETACH_BYTES`.
///
/// The data is read where it is, writable memory included (`convert::Writable::InPlace`):
/// a buffer plus offsets is hashed with no per-message slice built (`hash::Cut`), and
/// the digests are written straight into the array.
fn many<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
    digest: Digest,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let batch = convert::variable_in_place(data, offsets, "data")?;
    let n = batch.len();
    let array = match out {
        Some(out) => out_array(out, n)?,
        None => PyArray2::<u8>::zeros(py, [n, 32], false),
    };
    {
        // A borrow the numpy borrow flags know of (no other Rust code writes or reads it
        // meanwhile), and no byte of it is a byte of the data: digests are never written
        // over what is being hashed.
        let start = array.data() as usize;
        if batch.overlaps(start..start + n * 32) {
            return Err(input("out: shares memory with the data"));
        }
        let mut rows = array.try_readwrite().map_err(|e| input(format!("out: already in use ({e})")))?;
        let bytes = rows.as_slice_mut().map_err(|e| input(format!("out: {e}")))?;
        let (digests, _) = bytes.as_chunks_mut::<32>();
        let msgs = batch.messages()?;
        let total = match &msgs {
            Messages::Slices(s) => s.iter().map(|m| m.len()).sum::<usize>(),
            Messages::Cut(c) => c.bytes(),
        };
        let work = |digests: &mut [[u8; 32]]| match &msgs {
            Messages::Slices(s) => digest.run(s.as_slice(), digests),
            Messages::Cut(c) => digest.run(c, digests),
        };
        if total >= DETACH_BYTES {
            py.detach(|| work(digests));
        } else {
            work(digests);
        }
    }
    Ok(array)
}

/// `out=`: a writable, C-contiguous `(n, 32)` uint8 numpy array.
fn out_array<'py>(out: &Bound<'py, PyAny>, n: usize) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let array = out.cast::<PyArray2<u8>>().map_err(|_| {
        input(format!("out: expected a numpy uint8 array of shape ({n}, 32), got {}", convert::type_name(out)))
    })?;
    if array.shape() != [n, 32] {
        return Err(input(format!("out: expected shape ({n}, 32), got {:?}", array.shape())));
    }
    if !array.is_c_contiguous() {
        return Err(input("out: must be C-contiguous"));
    }
    let writeable: bool = array.getattr("flags")?.getattr("writeable")?.extract()?;
    if !writeable {
        return Err(input("out: must be writable"));
    }
    Ok(array.clone())
}

/// BLAKE3 of each message; returns an `(n, 32)` uint8 array (`out`, when given).
#[guarded]
#[pyfunction]
#[pyo3(signature = (data, offsets = None, *, out = None))]
pub fn blake3_many<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    many(py, data, offsets, out, Digest::Blake3)
}

/// SHA-256 of each message; returns an `(n, 32)` uint8 array (`out`, when given).
#[guarded]
#[pyfunction]
#[pyo3(signature = (data, offsets = None, *, out = None))]
pub fn sha256_many<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    many(py, data, offsets, out, Digest::Sha256)
}

/// BLAKE3 keyed hash (a MAC) of each message under one 32-byte `key`; returns an
/// `(n, 32)` uint8 array (`out`, when given). `data` and `offsets` are as for
/// `blake3_many`.
#[guarded]
#[pyfunction]
#[pyo3(signature = (key, data, offsets = None, *, out = None))]
pub fn mac_many<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    out: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let key = convert::array::<KEY_LEN>(key, &|| "key".into())?;
    many(py, data, offsets, out, Digest::Mac(key))
}

/// BLAKE3 of one bytes-like input, as 32 bytes. `threads`: `None` lets the core
/// choose by size; an integer `n >= 1` hashes on exactly `n` threads.
#[guarded]
#[pyfunction]
#[pyo3(signature = (data, threads = None))]
pub fn blake3<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    threads: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let threads = threads_arg(threads)?;
    let src = convert::source(data, &|| "data".into())?;
    let bytes = src.as_slice();
    // `bytes` borrows an immutable `bytes`, a read-only numpy view that `src` keeps
    // borrowed until we return, or a copy `src` owns: nothing can write to it while
    // the GIL is released.
    let digest = if bytes.len() >= DETACH_BYTES {
        py.detach(|| hopgate_core::hash::blake3(bytes, threads))
    } else {
        hopgate_core::hash::blake3(bytes, threads)
    };
    Ok(PyBytes::new(py, &digest))
}

/// `threads` of `blake3`: `None`, or an integer (anything with `__index__`, but not
/// `bool`) of at least 1. A wrong type is a `TypeError`; a value out of range an
/// `InputError` (a `ValueError`).
fn threads_arg(threads: Option<&Bound<'_, PyAny>>) -> PyResult<Option<NonZeroUsize>> {
    let Some(t) = threads else { return Ok(None) };
    let type_name = || t.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    if t.is_instance_of::<PyBool>() {
        // `True` is an `int` to Python, but `threads=True` is a mistake, not "1 thread".
        return Err(PyTypeError::new_err("threads: expected None or an integer >= 1, got bool"));
    }
    let below_one =
        || input(format!("threads: must be at least 1, got {}", t.str().map(|s| s.to_string()).unwrap_or_default()));
    let n: i64 = match t.extract() {
        Ok(n) => n,
        // An integer beyond i64 is refused like the others: below 1, or too large.
        Err(e) if e.is_instance_of::<PyOverflowError>(t.py()) => {
            return Err(if t.gt(0)? { input(format!("threads: {} is out of range", t.str()?)) } else { below_one() });
        }
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "threads: expected None or an integer >= 1, got {}",
                type_name()
            )));
        }
    };
    if n < 1 {
        return Err(below_one());
    }
    let n = usize::try_from(n).ok().and_then(NonZeroUsize::new);
    n.map(Some).ok_or_else(|| input("threads: out of range for this platform"))
}

/// The lane engine the core's BLAKE3 runs on this CPU: `"avx512"`, `"avx2"`,
/// `"neon"` or `"portable"`.
#[guarded]
#[pyfunction]
pub fn hash_backend() -> &'static str {
    hopgate_core::hash::backend()
}
