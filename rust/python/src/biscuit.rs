//! `biscuit_verify`: the signature layer of Biscuit tokens, for `hopgate.biscuit`.

use hopgate_core::biscuit;
use hopgate_macros::guarded;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::convert;

/// A P-256 public key, SEC1-compressed, as biscuit-python's `PublicKey.to_bytes()` gives it.
const P256_KEY_LEN: usize = 33;

/// Every token of `tokens` (a list of bytes-like objects) verified as biscuit-auth 6's
/// `Biscuit.from_bytes(token, root)` verifies its signatures, on all cores with the GIL
/// released. `root_public_key`: 32 bytes, an Ed25519 public key, or 33, a compressed
/// P-256 one (then a token that biscuit does not refuse while decoding it is answered
/// `"unsupported_algorithm"`). For each token: its revocation ids (a list of bytes, the
/// authority block's first), or `(kind, message)` with kind `"format"`, `"signature"` or
/// `"unsupported_algorithm"`.
#[guarded]
#[pyfunction]
#[pyo3(signature = (tokens, root_public_key), text_signature = "(tokens, root_public_key)")]
pub fn biscuit_verify<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    root_public_key: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let root = convert::source(root_public_key, &|| "root_public_key".to_string())?;
    let root: Option<[u8; 32]> = match root.as_slice().len() {
        P256_KEY_LEN => None,
        _ => Some(convert::array(root_public_key, &|| "root_public_key".to_string())?),
    };
    let tokens = convert::variable(tokens, None, "tokens")?;
    let slices = tokens.slices();
    let verdicts = py.detach(|| match &root {
        Some(root) => biscuit::verify_many(&slices, root),
        None => biscuit::verify_many_p256_root(&slices),
    });
    let rows = verdicts.into_iter().map(|v| -> PyResult<Bound<'py, PyAny>> {
        match v {
            Ok(ids) => Ok(PyList::new(py, ids.into_iter().map(|id| PyBytes::new(py, id)))?.into_any()),
            Err(f) => Ok((f.kind.name(), f.message).into_pyobject(py)?.into_any()),
        }
    });
    PyList::new(py, rows.collect::<PyResult<Vec<_>>>()?)
}
