//! Hashing: `blake3_many`, `sha256_many`, `mac_many` (BLAKE3 keyed mode), the
//! one-input `blake3` (optionally on several threads), and `hash_backend`.
//!
//! Inputs go through `batch` (one bytes-like object: `convert::source`; a batch:
//! `convert::variable`), so hashing borrows and copies exactly what every other
//! binding does: immutable and read-only memory is borrowed and may be read with
//! the GIL released; writable memory was copied under the GIL before we get here.
//! The hashing itself, its threading and its lane engine belong to
//! `hopgate_core::hash`.

use std::num::NonZeroUsize;

use hopgate_macros::guarded;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes};

use crate::convert;
use crate::errors::input;

/// Below this many bytes the GIL stays held: releasing it costs more than hashing.
const DETACH_BYTES: usize = 16 * 1024;

/// BLAKE3 key length (keyed mode).
const KEY_LEN: usize = 32;

/// Runs `f` over the batch, GIL released above `DETACH_BYTES`, and returns the
/// digests as an `(n, 32)` array.
///
/// The slices handed to `f` borrow either `bytes` objects, read-only numpy views
/// (kept borrowed by `batch` for the whole call), or copies `batch` owns, so no
/// Python code can change them while `f` runs without the GIL.
fn many<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    f: impl Fn(&[&[u8]], &mut [[u8; 32]]) + Sync,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let batch = convert::variable(data, offsets, "data")?;
    let slices = batch.slices();
    let mut out = vec![[0u8; 32]; slices.len()];
    let total: usize = slices.iter().map(|s| s.len()).sum();
    if total >= DETACH_BYTES {
        py.detach(|| f(&slices, &mut out));
    } else {
        f(&slices, &mut out);
    }
    let n = out.len();
    // `into_flattened` reuses the allocation: no second copy of the n * 32 digests.
    PyArray1::from_vec(py, out.into_flattened()).reshape([n, 32])
}

/// BLAKE3 of each message; returns an `(n, 32)` uint8 array.
#[guarded]
#[pyfunction]
#[pyo3(signature = (data, offsets = None))]
pub fn blake3_many<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    many(py, data, offsets, hopgate_core::hash::blake3_many)
}

/// SHA-256 of each message; returns an `(n, 32)` uint8 array.
#[guarded]
#[pyfunction]
#[pyo3(signature = (data, offsets = None))]
pub fn sha256_many<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    many(py, data, offsets, hopgate_core::hash::sha256_many)
}

/// BLAKE3 keyed hash (a MAC) of each message under one 32-byte `key`; returns an
/// `(n, 32)` uint8 array. `data` and `offsets` are as for `blake3_many`.
#[guarded]
#[pyfunction]
#[pyo3(signature = (key, data, offsets = None))]
pub fn mac_many<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let key = convert::array::<KEY_LEN>(key, &|| "key".into())?;
    many(py, data, offsets, |msgs, out| hopgate_core::hash::mac_many(&key, msgs, out))
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
