//! `Invocation`, `parse_invocation`, and the text form (`to_text`, `from_text`):
//! the core's parser and codec, so that the CLI and the ASGI gate need no copy.

use hopgate_core::wire::{self, Invocation};
use hopgate_macros::guarded;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{source, text_arg};
use crate::errors::to_py;

/// A parsed invocation (SPEC §2): one request bound to a chain's tail.
#[pyclass(name = "Invocation", module = "hopgate", frozen)]
pub struct PyInvocation {
    body: Vec<u8>,
    tail_sig: [u8; 64],
    ability: String,
    resource: String,
    cost: u64,
    timestamp: u64,
    nonce: [u8; 16],
    payload_digest: [u8; 32],
    signature: [u8; 64],
}

#[guarded]
#[pymethods]
impl PyInvocation {
    /// The last signature of the chain it is bound to.
    #[getter]
    fn tail_sig<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.tail_sig)
    }

    /// What is being done.
    #[getter]
    fn ability(&self) -> &str {
        &self.ability
    }

    /// What it is done to.
    #[getter]
    fn resource(&self) -> &str {
        &self.resource
    }

    /// What it costs, in the chain's unit.
    #[getter]
    fn cost(&self) -> u64 {
        self.cost
    }

    /// When it was made (unix seconds).
    #[getter]
    fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The single-use request id.
    #[getter]
    fn nonce<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.nonce)
    }

    /// BLAKE3 of the request payload.
    #[getter]
    fn payload_digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.payload_digest)
    }

    /// The signed body.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    /// The final holder's signature.
    #[getter]
    fn signature<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.signature)
    }

    fn __repr__(&self) -> String {
        format!("Invocation(ability={:?}, resource={:?}, cost={})", self.ability, self.resource, self.cost)
    }
}

/// Parses invocation bytes (SPEC §2), or raises `MalformedError`.
#[guarded]
#[pyfunction]
pub fn parse_invocation(data: &Bound<'_, PyAny>) -> PyResult<PyInvocation> {
    let data = source(data, &|| "invocation".into())?;
    let inv = Invocation::parse(data.as_slice()).map_err(to_py)?;
    Ok(PyInvocation {
        body: inv.body.to_vec(),
        tail_sig: *inv.tail_sig,
        ability: inv.ability.to_owned(),
        resource: inv.resource.to_owned(),
        cost: inv.cost,
        timestamp: inv.timestamp,
        nonce: *inv.nonce,
        payload_digest: *inv.payload_digest,
        signature: *inv.sig,
    })
}

/// The text form of SPEC §2 (HTTP headers): base64url without padding.
#[guarded]
#[pyfunction]
pub fn to_text(data: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(wire::to_text(source(data, &|| "data".into())?.as_slice()))
}

/// Decodes the text form strictly (no padding, only the alphabet, no non-zero
/// leftover bits), or raises `MalformedError`.
#[guarded]
#[pyfunction]
pub fn from_text<'py>(py: Python<'py>, text: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &wire::from_text(&text_arg(text)?).map_err(to_py)?))
}
