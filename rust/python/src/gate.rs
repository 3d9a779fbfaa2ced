//! `Gate`: SPEC §6 in front of every request.

use hopgate_core::gate::{Gate, GateConfig, Request, Requirement};
use hopgate_core::Code;
use hopgate_macros::guarded;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyTupleMethods};

use crate::audit::{PyAuditLog, PyReceipt};
use crate::convert::{self, array, key_set};
use crate::convert::{opt_int, u64_arg, unix_now, U64};

u64_arg!(skew_arg, "skew");
u64_arg!(replay_window_arg, "replay_window");
u64_arg!(cache_size_arg, "cache_size");
u64_arg!(max_batch_arg, "max_batch");
use crate::errors::{input, to_py};
use crate::ledger::{reservation_object, PyLedger, PyReservation};

/// A gate: checks `(chain, invocation)` requests (SPEC §4 steps (a)–(g)), caches
/// verified chains, refuses replays, and reserves each allowed request's cost on
/// every account of its chain.
#[pyclass(name = "Gate", module = "hopgate", frozen)]
pub struct PyGate {
    gate: Gate,
    /// The `AuditLog` object given, handed back by the `audit` getter.
    audit: Option<Py<PyAuditLog>>,
}

/// `hopgate.Code(code)`.
fn code_object(py: Python<'_>, code: Code) -> PyResult<Bound<'_, PyAny>> {
    static CODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CODE.import(py, "hopgate._codes", "Code")?.call1((code as u8,))
}

fn decision<'py>(
    py: Python<'py>,
    code: Code,
    reservation: Option<Py<PyReservation>>,
    receipt: Option<PyReceipt>,
) -> PyResult<Bound<'py, PyAny>> {
    static DECISION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    DECISION.import(py, "hopgate._decision", "Decision")?.call1((code_object(py, code)?, reservation, receipt))
}

/// A requirement as Python gives it: `(ability, resource, price)`, or None.
type OwnedRequirement = Option<(String, String, u64)>;

fn requirement(obj: Option<&Bound<'_, PyAny>>, name: &dyn Fn() -> String) -> PyResult<OwnedRequirement> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(None) };
    let shape = || input(format!("{}: expected (ability, resource, price): two str and an int in {U64}", name()));
    let tuple = obj.cast::<PyTuple>().map_err(|_| shape())?;
    if tuple.len() != 3 {
        return Err(shape());
    }
    let ability: String = tuple.get_item(0)?.extract().map_err(|_| shape())?;
    let resource: String = tuple.get_item(1)?.extract().map_err(|_| shape())?;
    let price: u64 = crate::convert::int(&tuple.get_item(2)?, &format!("{} price", name()), U64)?;
    Ok(Some((ability, resource, price)))
}

fn borrow(r: &OwnedRequirement) -> Option<Requirement<'_>> {
    r.as_ref().map(|(ability, resource, price)| Requirement { ability, resource, price: *price })
}

/// Converts the entry at an index of a per-request list.
type Entry<'a, 'py, T> = &'a dyn Fn(&Bound<'py, PyAny>, usize) -> PyResult<Option<T>>;

/// `n` optional entries from `obj`: None gives `n` Nones; else a list of exactly `n`
/// items, each None or converted by `each`.
fn per_request<'py, T>(
    obj: Option<&Bound<'py, PyAny>>,
    n: usize,
    name: &str,
    each: Entry<'_, 'py, T>,
) -> PyResult<Vec<Option<T>>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok((0..n).map(|_| None).collect()) };
    // A list or tuple only: an unordered collection would pair entries with the wrong requests.
    let items: Vec<Bound<'py, PyAny>> = if let Ok(list) = obj.cast::<pyo3::types::PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        let got = convert::type_name(obj);
        return Err(input(format!("{name}: expected a list or tuple with one entry per request, got {got}")));
    };
    if items.len() != n {
        return Err(input(format!("{name}: {} entries, expected {n} (one per request)", items.len())));
    }
    items.iter().enumerate().map(|(i, item)| if item.is_none() { Ok(None) } else { each(item, i) }).collect()
}

#[guarded]
#[pymethods]
impl PyGate {
    #[new]
    #[pyo3(signature = (trusted, skew = 30, replay_window = 300, session = None, revoked = None, ledger = None,
                        audit = None, cache_size = 100_000, max_batch = 65_536))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        trusted: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = skew_arg)] skew: u64,
        #[pyo3(from_py_with = replay_window_arg)] replay_window: u64,
        session: Option<&Bound<'_, PyAny>>,
        revoked: Option<&Bound<'_, PyAny>>,
        ledger: Option<&Bound<'_, PyLedger>>,
        audit: Option<&Bound<'_, PyAny>>,
        #[pyo3(from_py_with = cache_size_arg)] cache_size: u64,
        #[pyo3(from_py_with = max_batch_arg)] max_batch: u64,
    ) -> PyResult<Self> {
        let audit: Option<Bound<'_, PyAuditLog>> = audit
            .filter(|a| !a.is_none())
            .map(|a| {
                a.cast::<PyAuditLog>().cloned().map_err(|_| {
                    input(format!("audit: expected a hopgate.AuditLog (the native one), got {}", convert::type_name(a)))
                })
            })
            .transpose()?;
        let count = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let config = GateConfig {
            trusted: key_set::<32>(trusted, "trusted")?,
            skew,
            replay_window,
            session: session.map(|s| array::<16>(s, &|| "session".into())).transpose()?,
            cache_size: count(cache_size),
            max_batch: count(max_batch),
        };
        let revoked = revoked.map(|r| key_set::<32>(r, "revoked")).transpose()?.unwrap_or_default();
        let ledger = ledger.map_or_else(Default::default, |l| l.get().ledger.clone());
        let gate = Gate::new(config, revoked, ledger).map_err(to_py)?;
        let gate = match &audit {
            Some(log) => gate.with_audit(log.get().log.clone()),
            None => gate,
        };
        Ok(PyGate { gate, audit: audit.map(Bound::unbind) })
    }

    /// Revokes a link, by revocation id, for every later request.
    fn revoke(&self, revocation_id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.gate.revoke(array::<32>(revocation_id, &|| "revocation_id".into())?);
        Ok(())
    }

    /// The audit log this gate appends to, or None.
    #[getter]
    fn audit(&self, py: Python<'_>) -> Option<Py<PyAuditLog>> {
        self.audit.as_ref().map(|a| a.clone_ref(py))
    }

    /// The ledger this gate reserves on.
    #[getter]
    fn ledger(&self) -> PyLedger {
        PyLedger { ledger: self.gate.ledger().clone() }
    }

    /// The most verified chains the cache holds.
    #[getter]
    fn cache_size(&self) -> usize {
        self.gate.config().cache_size
    }

    /// The most requests one `check_batch` call takes.
    #[getter]
    fn max_batch(&self) -> usize {
        self.gate.config().max_batch
    }

    /// How many verified chains the cache holds.
    #[getter]
    fn cached(&self) -> usize {
        self.gate.cached()
    }

    /// Decides one request; returns a `Decision` (code, reason, reservation).
    /// `payload`: the request body, bound to the invocation's `payload_digest`
    /// (else `BAD_SIGNATURE`); `require`: `(ability, resource, price)` the server
    /// requires (else `SCOPE_DENIED` or `COST_BELOW_PRICE`).
    #[pyo3(signature = (chain, invocation, now = None, *, payload = None, require = None))]
    fn check<'py>(
        &self,
        py: Python<'py>,
        chain: &Bound<'py, PyAny>,
        invocation: &Bound<'py, PyAny>,
        now: Option<&Bound<'py, PyAny>>,
        payload: Option<&Bound<'py, PyAny>>,
        require: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = crate::chain::chain_source(chain, &|| "chain".into())?;
        let i = convert::source(invocation, &|| "invocation".into())?;
        let body = payload.filter(|p| !p.is_none()).map(|p| convert::source(p, &|| "payload".into())).transpose()?;
        let require = requirement(require, &|| "require".into())?;
        let now = opt_int(now, "now", U64)?.unwrap_or_else(unix_now);
        let request = Request {
            chain: c.as_slice(),
            invocation: i.as_slice(),
            payload: body.as_ref().map(|b| b.as_slice()),
            require: borrow(&require),
        };
        let mut out = py.detach(|| self.gate.check_requests(&[request], now)).map_err(to_py)?;
        let outcome = out.pop().ok_or_else(|| input("no outcome"))?;
        let receipt = outcome.receipt.map(|receipt| PyReceipt { receipt });
        decision(py, outcome.code, reservation_object(py, outcome.reservation)?, receipt)
    }

    /// What `check` would decide before the budget step (`Code.OK` when it is all
    /// that is left), with no payload bound and the replay check read only: it
    /// consumes no nonce, reserves nothing and writes no audit record. A server calls
    /// it to authenticate a request, and refuse a replayed one, before reading its body.
    #[pyo3(signature = (chain, invocation, now = None, *, require = None))]
    fn precheck<'py>(
        &self,
        py: Python<'py>,
        chain: &Bound<'py, PyAny>,
        invocation: &Bound<'py, PyAny>,
        now: Option<&Bound<'py, PyAny>>,
        require: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = crate::chain::chain_source(chain, &|| "chain".into())?;
        let i = convert::source(invocation, &|| "invocation".into())?;
        let require = requirement(require, &|| "require".into())?;
        let now = opt_int(now, "now", U64)?.unwrap_or_else(unix_now);
        let request =
            Request { chain: c.as_slice(), invocation: i.as_slice(), payload: None, require: borrow(&require) };
        let code = py.detach(|| self.gate.precheck(&request, now)).map_err(to_py)?;
        code_object(py, code)
    }

    /// Decides many requests in input order (a later request sees the nonces and
    /// reservations of earlier ones), with every uncached signature of the batch in
    /// one batched verification; returns `(codes, reservations)`: a numpy uint8
    /// array and a list holding a `Reservation` for each allowed request, else None.
    /// `payloads` and `requires`: None, or one entry per request (None, or what
    /// `check` takes as `payload` and `require`). With `receipts=True`, returns
    /// `(codes, reservations, receipts)`, a `Receipt` per request when the gate has
    /// an audit log (else None).
    #[pyo3(signature = (chains, invocations, now = None, *, payloads = None, requires = None, receipts = false))]
    #[allow(clippy::too_many_arguments)]
    fn check_batch<'py>(
        &self,
        py: Python<'py>,
        chains: &Bound<'py, PyAny>,
        invocations: &Bound<'py, PyAny>,
        now: Option<&Bound<'py, PyAny>>,
        payloads: Option<&Bound<'py, PyAny>>,
        requires: Option<&Bound<'py, PyAny>>,
        receipts: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let chains = crate::chain::chains(chains, None, "chains")?;
        let invocations = convert::variable(invocations, None, "invocations")?;
        if chains.len() != invocations.len() {
            return Err(input(format!(
                "chains and invocations must have the same length (got {} and {})",
                chains.len(),
                invocations.len()
            )));
        }
        let n = chains.len();
        let bodies =
            per_request(payloads, n, "payloads", &|p, i| convert::source(p, &|| format!("payloads[{i}]")).map(Some))?;
        let needs = per_request(requires, n, "requires", &|r, i| requirement(Some(r), &|| format!("requires[{i}]")))?;
        let requests: Vec<Request<'_>> = chains
            .slices()
            .into_iter()
            .zip(invocations.slices())
            .zip(bodies.iter().zip(&needs))
            .map(|((chain, invocation), (body, need))| Request {
                chain,
                invocation,
                payload: body.as_ref().map(|b| b.as_slice()),
                require: borrow(need),
            })
            .collect();
        let now = opt_int(now, "now", U64)?.unwrap_or_else(unix_now);
        let outcomes = py.detach(|| self.gate.check_requests(&requests, now)).map_err(to_py)?;
        let codes: Vec<u8> = outcomes.iter().map(|o| o.code as u8).collect();
        let receipt_list: Vec<Option<PyReceipt>> =
            outcomes.iter().map(|o| o.receipt.map(|receipt| PyReceipt { receipt })).collect();
        let reservations =
            outcomes.into_iter().map(|o| reservation_object(py, o.reservation)).collect::<PyResult<Vec<_>>>()?;
        let codes = PyArray1::from_vec(py, codes);
        if receipts {
            (codes, reservations, receipt_list).into_pyobject(py)
        } else {
            (codes, reservations).into_pyobject(py)
        }
    }
}
