//! `SigningKey`, `verify` and `verify_batch`.

use hopgate_core::key_cache;
use hopgate_core::sig::{self, Message, Rule, SigItem, SigningKey};
use hopgate_macros::guarded;
use numpy::PyArray1;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::convert::{self, source, RuleArg};
use crate::errors::{input, to_py};

/// An Ed25519 signing key (RFC 8032). It cannot be copied or pickled; its secret is
/// wiped from memory when the object is collected.
#[pyclass(name = "SigningKey", module = "hopgate", frozen)]
pub struct PySigningKey {
    pub(crate) key: SigningKey,
}

#[guarded]
#[pymethods]
impl PySigningKey {
    /// A new key from the operating system's random number generator.
    #[staticmethod]
    fn generate() -> Self {
        PySigningKey { key: SigningKey::generate() }
    }

    /// The key whose 32-byte RFC 8032 secret seed is `seed`.
    #[staticmethod]
    fn from_seed(seed: &Bound<'_, PyAny>) -> PyResult<Self> {
        let seed = source(seed, &|| "seed".into())?;
        Ok(PySigningKey { key: SigningKey::from_seed_slice(seed.as_slice()).map_err(to_py)? })
    }

    /// The 32-byte public key.
    #[getter]
    fn public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.key.public_key())
    }

    /// The 32-byte secret seed (handle with care).
    fn seed<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.key.seed())
    }

    /// Signs `msg` (any bytes-like object); returns the 64-byte signature.
    fn sign<'py>(&self, py: Python<'py>, msg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let msg = source(msg, &|| "msg".into())?;
        Ok(PyBytes::new(py, &self.key.sign(Message::plain(msg.as_slice()))))
    }

    fn __repr__(&self) -> String {
        let pk: String = self.key.public_key().iter().map(|b| format!("{b:02x}")).collect();
        format!("SigningKey(public_key={pk})")
    }

    fn __copy__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err("a SigningKey cannot be copied"))
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyTypeError::new_err("a SigningKey cannot be copied"))
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err("a SigningKey cannot be pickled; store seed() in a secret store instead"))
    }
}

/// True iff `sig` is a valid signature of `msg` by `pk` under `rule` (SPEC §3):
/// `"strict"` (hopgate's rule, the default), `"libsodium"` (what PyNaCl accepts) or
/// `"openssl"` (what pyca/cryptography accepts). Wrong lengths are simply invalid
/// (False), never an exception; an unknown rule is an `InputError`.
#[guarded]
#[pyfunction]
#[pyo3(signature = (msg, sig, pk, *, rule = RuleArg(Rule::Strict)), text_signature = "(msg, sig, pk, *, rule='strict')")]
pub fn verify(
    py: Python<'_>,
    msg: &Bound<'_, PyAny>,
    sig: &Bound<'_, PyAny>,
    pk: &Bound<'_, PyAny>,
    rule: RuleArg,
) -> PyResult<bool> {
    let RuleArg(rule) = rule;
    let (msg, sig, pk) = (source(msg, &|| "msg".into())?, source(sig, &|| "sig".into())?, source(pk, &|| "pk".into())?);
    let (msg, sig, pk) = (msg.as_slice(), sig.as_slice(), pk.as_slice());
    Ok(py.detach(|| sig::verify_with(rule, Message::plain(msg), sig, pk)))
}

/// `verify` over many items at once, under one `rule`; returns a numpy bool array.
/// Under `"strict"` items are checked in one batched multiscalar multiplication; the
/// other rules check item by item. Either way on all cores, GIL released.
#[guarded]
#[pyfunction]
#[pyo3(
    signature = (msgs, sigs, pks, *, offsets = None, rule = RuleArg(Rule::Strict)),
    text_signature = "(msgs, sigs, pks, *, offsets=None, rule='strict')"
)]
pub fn verify_batch<'py>(
    py: Python<'py>,
    msgs: &Bound<'py, PyAny>,
    sigs: &Bound<'py, PyAny>,
    pks: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    rule: RuleArg,
) -> PyResult<Bound<'py, PyArray1<bool>>> {
    let RuleArg(rule) = rule;
    let msgs = convert::variable(msgs, offsets, "msgs")?;
    let sigs = convert::fixed(sigs, sig::SIGNATURE_LEN, "sigs")?;
    let pks = convert::fixed(pks, sig::PUBLIC_KEY_LEN, "pks")?;
    if msgs.len() != sigs.len() || msgs.len() != pks.len() {
        return Err(input(format!(
            "msgs, sigs and pks must have the same length (got {}, {}, {})",
            msgs.len(),
            sigs.len(),
            pks.len()
        )));
    }
    let (m, s, k) = (msgs.slices(), sigs.slices(), pks.slices());
    let out = py.detach(|| {
        let items: Vec<SigItem<'_>> =
            m.iter().zip(&s).zip(&k).map(|((m, s), k)| SigItem { msg: Message::plain(m), sig: s, pk: k }).collect();
        sig::verify_batch_with(&items, rule)
    });
    Ok(PyArray1::from_vec(py, out))
}

/// The process's cache of decoded public keys (every verification decodes its keys
/// through it): a `KeyCacheInfo(hits, misses, entries, capacity)`.
#[guarded]
#[pyfunction]
pub fn key_cache_info(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static INFO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let i = key_cache::info();
    INFO.import(py, "hopgate._key_cache", "KeyCacheInfo")?.call1((i.hits, i.misses, i.entries, i.capacity))
}

/// Empties the cache of decoded public keys and zeroes its counters.
#[guarded]
#[pyfunction]
pub fn key_cache_clear() {
    key_cache::clear()
}

/// Sets how many decoded public keys the cache holds at most (0 turns it off) and
/// empties it. The default is `DEFAULT_KEY_CACHE_CAPACITY`.
#[guarded]
#[pyfunction]
#[pyo3(signature = (capacity), text_signature = "(capacity)")]
pub fn key_cache_resize(capacity: &Bound<'_, PyAny>) -> PyResult<()> {
    key_cache::resize(convert::int(capacity, "capacity", "0 <= capacity < 2**64")?);
    Ok(())
}
