//! `blake3_many` and `sha256_many`.

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use crate::batch;

/// Below this many bytes the GIL stays held: releasing it costs more than hashing.
const DETACH_BYTES: usize = 16 * 1024;

fn many<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    f: fn(&[&[u8]], &mut [[u8; 32]]),
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let batch = batch::variable(data, offsets, "data")?;
    let slices = batch.slices();
    let mut out = vec![[0u8; 32]; slices.len()];
    let total: usize = slices.iter().map(|s| s.len()).sum();
    if total >= DETACH_BYTES {
        py.detach(|| f(&slices, &mut out));
    } else {
        f(&slices, &mut out);
    }
    let n = out.len();
    PyArray1::from_vec(py, out.concat()).reshape([n, 32])
}

/// BLAKE3 of each message; returns an `(n, 32)` uint8 array.
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
#[pyfunction]
#[pyo3(signature = (data, offsets = None))]
pub fn sha256_many<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    many(py, data, offsets, hopgate_core::hash::sha256_many)
}
