//! `hdp_verify`: HDP records converted to the core's JSON values and every signature of
//! a batch of them checked at once, for `hopgate.hdp`; `canonical_json`, RFC 8785.

use hopgate_core::hdp;
use hopgate_core::jcs::{self, Json};
use hopgate_macros::guarded;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::convert;
use crate::errors::to_py;

/// Nesting deeper than this is refused (Python's own recursion limit refuses it first in
/// `hopgate.hdp`; the limit keeps the conversion's stack bounded whatever the caller).
const MAX_DEPTH: usize = 1000;

/// A Python value as a JSON value: `None`, `bool`, `int` (exactly a double), finite
/// `float`, `str`, `list` or `tuple`, and `dict` with `str` keys, as RFC 8785 serialisers
/// for Python read them.
fn to_json(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Json> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!("JSON nested deeper than {MAX_DEPTH} levels")));
    }
    if obj.is_none() {
        Ok(Json::Null)
    } else if let Ok(b) = obj.cast::<PyBool>() {
        Ok(Json::Bool(b.is_true()))
    } else if obj.is_instance_of::<PyInt>() {
        let inexact = || PyValueError::new_err("an integer is not exactly an IEEE 754 double");
        let x: f64 = obj.extract().map_err(|_| inexact())?;
        // The double must be the integer itself, not a rounding of it.
        if !x.is_finite() || !obj.eq(PyFloat::new(obj.py(), x).call_method0("__int__")?)? {
            return Err(inexact());
        }
        Ok(Json::Number(x))
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        if !x.is_finite() {
            return Err(PyValueError::new_err("a number is not finite"));
        }
        Ok(Json::Number(x))
    } else if let Ok(s) = obj.cast::<PyString>() {
        Ok(Json::String(s.to_cow()?.into_owned()))
    } else if let Ok(list) = obj.cast::<PyList>() {
        list.iter().map(|item| to_json(&item, depth + 1)).collect::<PyResult<_>>().map(Json::Array)
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        tuple.iter().map(|item| to_json(&item, depth + 1)).collect::<PyResult<_>>().map(Json::Array)
    } else if let Ok(dict) = obj.cast::<PyDict>() {
        let mut members = Vec::with_capacity(dict.len());
        for (key, value) in dict.iter() {
            let Ok(key) = key.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "a JSON object key is {}, not str",
                    convert::type_name(&key)
                )));
            };
            members.push((key.to_cow()?.into_owned(), to_json(&value, depth + 1)?));
        }
        Ok(Json::Object(members))
    } else {
        Err(PyTypeError::new_err(format!("{} is not a JSON value", convert::type_name(obj))))
    }
}

/// `value` (None, bool, int, float, str, list, tuple, dict with str keys) as RFC 8785
/// canonical JSON, UTF-8. `ValueError` for an integer that is not exactly a double, a NaN
/// or an infinity, a string that is not Unicode text (a lone surrogate), or nesting deeper
/// than 1,000; `TypeError` for any other type.
#[guarded]
#[pyfunction]
#[pyo3(signature = (value), text_signature = "(value)")]
pub fn canonical_json<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let value = to_json(value, 0)?;
    let text = jcs::canonical(&value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &text))
}

/// For each record of `records` (HDP records as dicts, already validated), the verdict on
/// each of its signatures (the root's, then each hop's) against the Ed25519 key
/// `public_key` (32 bytes) under the rule of the HDP SDKs' library (`rule="openssl"`): the
/// records converted with the GIL held, then every signature checked in one batch with it
/// released.
#[guarded]
#[pyfunction]
#[pyo3(signature = (records, public_key), text_signature = "(records, public_key)")]
pub fn hdp_verify<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    public_key: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let key: [u8; 32] = convert::array(public_key, &|| "public_key".to_string())?;
    let records = records
        .try_iter()?
        .enumerate()
        .map(|(i, record)| to_json(&record?, 0).map_err(|e| prefixed(py, i, e)))
        .collect::<PyResult<Vec<Json>>>()?;
    let verdicts = py.detach(|| hdp::verify_records(&records, &key));
    let rows = verdicts.into_iter().enumerate().map(|(i, v)| v.map_err(|e| prefixed(py, i, to_py(e))));
    PyList::new(py, rows.collect::<PyResult<Vec<Vec<bool>>>>()?)
}

/// `error` with the index of the record it concerns in front of its message.
fn prefixed(py: Python<'_>, index: usize, error: PyErr) -> PyErr {
    let message = format!("records[{index}]: {}", error.value(py));
    if error.is_instance_of::<PyTypeError>(py) {
        PyTypeError::new_err(message)
    } else {
        PyValueError::new_err(message)
    }
}
