//! `jws_split`: compact JWS tokens split and base64url-decoded for `hopgate.jwt`.

use hopgate_core::jose;
use hopgate_macros::guarded;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::convert;

/// Every token of `tokens` (a list of bytes-like objects) split as PyJWT splits a compact
/// JWS and its three segments base64url-decoded as PyJWT decodes them, on all cores with
/// the GIL released. For each token: `None` when it has fewer than two dots, else
/// `(signing_input_len, header, payload, payload_segment_empty, signature)` where a segment
/// that is not base64url as PyJWT accepts it is `None`.
#[guarded]
#[pyfunction]
#[pyo3(signature = (tokens), text_signature = "(tokens)")]
pub fn jws_split<'py>(py: Python<'py>, tokens: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let tokens = convert::variable(tokens, None, "tokens")?;
    let slices = tokens.slices();
    let split = py.detach(|| jose::split_many(&slices));
    let bytes = |b: Option<Vec<u8>>| b.map(|b| PyBytes::new(py, &b));
    let rows = split.into_iter().map(|c| -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(c) = c else { return Ok(None) };
        let row = (c.signing_input_len, bytes(c.header), bytes(c.payload), c.payload_segment_empty, bytes(c.signature));
        Ok(Some(row.into_pyobject(py)?))
    });
    PyList::new(py, rows.collect::<PyResult<Vec<_>>>()?)
}
