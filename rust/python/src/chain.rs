//! `Chain`, `Link` and `verify_chains`.

use hopgate_core::chain::{self, Delegation, Policy, Request};
use hopgate_core::wire::{self, Anchor, CommonFields};
use hopgate_core::Code;
use hopgate_macros::guarded;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::convert::{self, array, int, opt_int, source, text_arg, unix_now, Batch, Source, U64, U8};
use crate::errors::{input, to_py};
use crate::keys::PySigningKey;

/// A delegation chain (SPEC §2), immutable. Build one with `Chain.grant`, extend it
/// with `delegate`, read one with `Chain.from_bytes`.
#[pyclass(name = "Chain", module = "hopgate", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
pub struct PyChain {
    bytes: Vec<u8>,
}

impl PyChain {
    /// The encoding.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn parsed(&self) -> wire::Chain<'_> {
        // Every PyChain was parsed when it was made; bytes never change.
        wire::Chain::parse(&self.bytes).expect("a Chain holds a valid encoding")
    }
}

fn opt_array<const N: usize>(obj: Option<&Bound<'_, PyAny>>, name: &'static str) -> PyResult<Option<[u8; N]>> {
    obj.map(|o| array::<N>(o, &|| name.to_string())).transpose()
}

fn caps(obj: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> =
        obj.extract().map_err(|_| input("caps: expected a list of (resource, ability) string pairs"))?;
    pairs.iter().map(|(r, a)| Ok((convert::text(r, "resource")?, convert::text(a, "ability")?))).collect()
}

#[guarded]
#[pymethods]
impl PyChain {
    /// Link 0: `issuer_sk` grants `holder_pk` the capabilities `caps` (a list of
    /// `(resource, ability)`) with a budget, a validity window and a delegation depth.
    #[staticmethod]
    #[pyo3(signature = (issuer_sk, holder_pk, caps, budget, unit, not_before, not_after, max_depth,
                        session_id = None, nonce = None, meta_digest = None))]
    #[allow(clippy::too_many_arguments)]
    fn grant(
        issuer_sk: &Bound<'_, PySigningKey>,
        holder_pk: &Bound<'_, PyAny>,
        caps: &Bound<'_, PyAny>,
        budget: &Bound<'_, PyAny>,
        unit: &Bound<'_, PyAny>,
        not_before: &Bound<'_, PyAny>,
        not_after: &Bound<'_, PyAny>,
        max_depth: &Bound<'_, PyAny>,
        session_id: Option<&Bound<'_, PyAny>>,
        nonce: Option<&Bound<'_, PyAny>>,
        meta_digest: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let fields = CommonFields {
            holder: array::<32>(holder_pk, &|| "holder_pk".into())?,
            not_before: int(not_before, "not_before", U64)?,
            not_after: int(not_after, "not_after", U64)?,
            max_depth: int(max_depth, "max_depth", U8)?,
            budget: int(budget, "budget", U64)?,
            unit: convert::text(unit, "unit")?,
            nonce: opt_array::<16>(nonce, "nonce")?.unwrap_or_else(chain::random_nonce),
            caps: self::caps(caps)?,
            meta_digest: opt_array::<32>(meta_digest, "meta_digest")?.unwrap_or([0; 32]),
        };
        let session_id = opt_array::<16>(session_id, "session_id")?.unwrap_or([0; 16]);
        let bytes = chain::grant(&issuer_sk.get().key, &session_id, &fields).map_err(to_py)?;
        Ok(PyChain { bytes })
    }

    /// A new chain with one more link: the current holder (`holder_sk`) delegates to
    /// `next_pk`. Arguments left as None inherit the parent's values (`max_depth`:
    /// the parent's minus one). Raises `DelegationError` for anything that widens.
    #[pyo3(signature = (holder_sk, next_pk, caps = None, budget = None, unit = None, not_before = None,
                        not_after = None, max_depth = None, nonce = None, meta_digest = None))]
    #[allow(clippy::too_many_arguments)]
    fn delegate(
        &self,
        holder_sk: &Bound<'_, PySigningKey>,
        next_pk: &Bound<'_, PyAny>,
        caps: Option<&Bound<'_, PyAny>>,
        budget: Option<&Bound<'_, PyAny>>,
        unit: Option<&Bound<'_, PyAny>>,
        not_before: Option<&Bound<'_, PyAny>>,
        not_after: Option<&Bound<'_, PyAny>>,
        max_depth: Option<&Bound<'_, PyAny>>,
        nonce: Option<&Bound<'_, PyAny>>,
        meta_digest: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let next = array::<32>(next_pk, &|| "next_pk".into())?;
        let d = Delegation {
            caps: caps.map(self::caps).transpose()?,
            budget: opt_int(budget, "budget", U64)?,
            unit: unit.map(|u| convert::text(u, "unit")).transpose()?,
            not_before: opt_int(not_before, "not_before", U64)?,
            not_after: opt_int(not_after, "not_after", U64)?,
            max_depth: opt_int(max_depth, "max_depth", U8)?,
            nonce: opt_array::<16>(nonce, "nonce")?,
            meta_digest: opt_array::<32>(meta_digest, "meta_digest")?,
        };
        let bytes = chain::delegate(&self.bytes, &holder_sk.get().key, &next, d).map_err(to_py)?;
        Ok(PyChain { bytes })
    }

    /// An invocation (SPEC §2) of this chain by its final holder: bytes to send with
    /// the request. `timestamp` defaults to now, `nonce` to 16 random bytes.
    #[pyo3(signature = (holder_sk, ability, resource, cost, nonce = None, timestamp = None, payload = None))]
    #[allow(clippy::too_many_arguments)]
    fn invoke<'py>(
        &self,
        py: Python<'py>,
        holder_sk: &Bound<'_, PySigningKey>,
        ability: &Bound<'_, PyAny>,
        resource: &Bound<'_, PyAny>,
        cost: &Bound<'_, PyAny>,
        nonce: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
        payload: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let payload = payload.map(|p| source(p, &|| "payload".into())).transpose()?;
        let (ability, resource) = (convert::text(ability, "ability")?, convert::text(resource, "resource")?);
        let req = Request {
            ability: &ability,
            resource: &resource,
            cost: int(cost, "cost", U64)?,
            timestamp: opt_int(timestamp, "timestamp", U64)?.unwrap_or_else(unix_now),
            nonce: opt_array::<16>(nonce, "nonce")?,
            payload: payload.as_ref().map_or(&[][..], |p| p.as_slice()),
        };
        let bytes = chain::invoke(&self.bytes, &holder_sk.get().key, &req).map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Parses a chain (raises `MalformedError` naming the field and offset).
    #[staticmethod]
    fn from_bytes(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let data = source(data, &|| "data".into())?;
        wire::Chain::parse(data.as_slice()).map_err(to_py)?;
        Ok(PyChain { bytes: data.as_slice().to_vec() })
    }

    /// Parses the text form (base64url without padding, as in the `Hopgate-Chain`
    /// header); padding, foreign characters and non-zero leftover bits are refused.
    #[staticmethod]
    fn from_text(text: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bytes = wire::from_text(&text_arg(text)?).map_err(to_py)?;
        wire::Chain::parse(&bytes).map_err(to_py)?;
        Ok(PyChain { bytes })
    }

    /// The text form: base64url without padding.
    fn to_text(&self) -> String {
        wire::to_text(&self.bytes)
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.bytes)
    }

    fn __len__(&self) -> usize {
        self.parsed().links.len()
    }

    fn __repr__(&self) -> String {
        let c = self.parsed();
        let hex = |b: &[u8]| b.iter().take(4).map(|x| format!("{x:02x}")).collect::<String>();
        format!(
            "Chain(links={}, issuer={}…, holder={}…, budget={} {})",
            c.links.len(),
            hex(c.first().issuer().map_or(&[][..], |k| &k[..])),
            hex(c.last().holder),
            c.last().budget,
            c.last().unit
        )
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        Ok((slf.get_type().getattr("from_bytes")?, (PyBytes::new(py, &slf.get().bytes),)))
    }

    /// The links, link 0 first.
    #[getter]
    fn links(&self) -> Vec<PyLink> {
        self.parsed().links.iter().map(PyLink::from).collect()
    }

    /// Link 0's issuer key.
    #[getter]
    fn issuer<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.parsed().first().issuer().map_or(&[][..], |k| &k[..]))
    }

    /// The final holder's key: who may invoke or delegate further.
    #[getter]
    fn holder<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.parsed().last().holder)
    }

    /// Link 0's session id.
    #[getter]
    fn session_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let c = self.parsed();
        let sid = match c.first().anchor {
            Anchor::Grant { session_id, .. } => &session_id[..],
            Anchor::Delegation { .. } => &[][..],
        };
        PyBytes::new(py, sid)
    }

    /// The last link's signature (an invocation's `tail_sig`).
    #[getter]
    fn tail_signature<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.parsed().last().sig)
    }

    /// BLAKE3 of the encoding: the chain's identity in caches.
    #[getter]
    fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, blake3::hash(&self.bytes).as_bytes())
    }

    /// Revocation id of each link (BLAKE3 of its signature), link 0 first.
    #[getter]
    fn revocation_ids<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.parsed().links.iter().map(|l| PyBytes::new(py, &l.revocation_id())).collect()
    }
}

/// One link of a chain, as read from its bytes (read-only).
#[pyclass(name = "Link", module = "hopgate", frozen, get_all)]
pub struct PyLink {
    /// 0 for the grant (link 0), 1 for delegations.
    kind: u8,
    /// Link 0's issuer key, None for delegations.
    issuer: Option<Py<PyBytes>>,
    /// Link 0's session id, None for delegations.
    session_id: Option<Py<PyBytes>>,
    /// Signature of the previous link, None for link 0.
    prev_sig: Option<Py<PyBytes>>,
    /// Who holds the authority after this link.
    holder: Py<PyBytes>,
    not_before: u64,
    not_after: u64,
    max_depth: u8,
    budget: u64,
    unit: String,
    nonce: Py<PyBytes>,
    /// `(resource, ability)` pairs.
    caps: Py<PyTuple>,
    meta_digest: Py<PyBytes>,
    /// The signed body (without the domain prefix).
    body: Py<PyBytes>,
    signature: Py<PyBytes>,
    /// BLAKE3 of the signature.
    revocation_id: Py<PyBytes>,
}

impl From<&wire::Link<'_>> for PyLink {
    fn from(l: &wire::Link<'_>) -> Self {
        Python::attach(|py| {
            let b = |x: &[u8]| PyBytes::new(py, x).unbind();
            let (issuer, session_id, prev_sig) = match l.anchor {
                Anchor::Grant { issuer, session_id } => (Some(b(issuer)), Some(b(session_id)), None),
                Anchor::Delegation { prev_sig } => (None, None, Some(b(prev_sig))),
            };
            let caps: Vec<(String, String)> = l.caps().map(|c| (c.resource.into(), c.ability.into())).collect();
            PyLink {
                kind: if issuer.is_some() { wire::KIND_GRANT } else { wire::KIND_DELEGATION },
                issuer,
                session_id,
                prev_sig,
                holder: b(l.holder),
                not_before: l.not_before,
                not_after: l.not_after,
                max_depth: l.max_depth,
                budget: l.budget,
                unit: l.unit.to_owned(),
                nonce: b(l.nonce),
                caps: PyTuple::new(py, caps).expect("a tuple of str pairs").unbind(),
                meta_digest: b(l.meta_digest),
                body: b(l.body),
                signature: b(l.sig),
                revocation_id: b(&l.revocation_id()),
            }
        })
    }
}

#[guarded]
#[pymethods]
impl PyLink {
    fn __repr__(&self) -> String {
        format!("Link(kind={}, budget={} {}, max_depth={})", self.kind, self.budget, self.unit, self.max_depth)
    }
}

/// Reads a chain: a `Chain` object (its bytes read in place), or a bytes-like object;
/// `what` names it in errors.
pub fn chain_source<'py>(obj: &Bound<'py, PyAny>, what: &dyn Fn() -> String) -> PyResult<Source<'py>> {
    fn held<'a>(obj: &'a Bound<'_, PyAny>) -> &'a [u8] {
        // Only built below, for an object that is a `Chain`.
        obj.cast::<PyChain>().map_or(&[][..], |c| c.get().as_slice())
    }
    match obj.cast::<PyChain>() {
        Ok(_) => Ok(Source::Held(obj.clone(), held)),
        Err(_) => convert::source(obj, what),
    }
}

/// [`convert::variable`] for chains: list items may also be `Chain` objects.
pub fn chains<'py>(obj: &Bound<'py, PyAny>, offsets: Option<&Bound<'py, PyAny>>, name: &str) -> PyResult<Batch<'py>> {
    convert::variable_with(obj, offsets, name, chain_source)
}

/// Verifies many chains (SPEC §4 steps (a)–(e)); one `Code` per chain as a numpy
/// uint8 array. All signatures of all chains are checked in one batch, GIL released.
#[guarded]
#[pyfunction]
#[pyo3(signature = (chains, trusted, now = None, session = None, revoked = None, *, offsets = None))]
pub fn verify_chains<'py>(
    py: Python<'py>,
    chains: &Bound<'py, PyAny>,
    trusted: &Bound<'py, PyAny>,
    now: Option<&Bound<'py, PyAny>>,
    session: Option<&Bound<'py, PyAny>>,
    revoked: Option<&Bound<'py, PyAny>>,
    offsets: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let batch = self::chains(chains, offsets, "chains")?;
    let trusted = convert::key_set::<32>(trusted, "trusted")?;
    let revoked = revoked.map(|r| convert::key_set::<32>(r, "revoked")).transpose()?.unwrap_or_default();
    let session = opt_array::<16>(session, "session")?;
    let now = opt_int(now, "now", U64)?.unwrap_or_else(unix_now);
    let slices = batch.slices();
    let codes = py.detach(|| {
        let policy = Policy { trusted: &trusted, now, session: session.as_ref(), revoked: &revoked };
        chain::verify_chains(&slices, &policy)
    });
    Ok(PyArray1::from_vec(py, codes.into_iter().map(|c| c as u8).collect()))
}

/// `(value, name)` of every decision code, for checking `hopgate.Code` against the core.
#[guarded]
#[pyfunction]
pub fn code_names() -> Vec<(u8, &'static str)> {
    Code::ALL.iter().map(|c| (*c as u8, c.name())).collect()
}
