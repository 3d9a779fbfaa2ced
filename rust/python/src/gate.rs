//! `Gate`: SPEC §6 in front of every request.

use hopgate_core::gate::{Gate, GateConfig};
use hopgate_macros::guarded;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

use crate::audit::{PyAuditLog, PyReceipt};
use crate::batch::{self, array, key_set};
use crate::chain::{opt_int, u64_arg, unix_now, U64};

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
}

fn decision<'py>(
    py: Python<'py>,
    code: u8,
    reservation: Option<Py<PyReservation>>,
    receipt: Option<PyReceipt>,
) -> PyResult<Bound<'py, PyAny>> {
    static DECISION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static CODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let code = CODE.import(py, "hopgate._codes", "Code")?.call1((code,))?;
    DECISION.import(py, "hopgate._decision", "Decision")?.call1((code, reservation, receipt))
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
        let audit = match audit.filter(|a| !a.is_none()) {
            None => None,
            Some(a) => Some(
                a.cast::<PyAuditLog>()
                    .map_err(|_| {
                        input(format!(
                            "audit: expected a hopgate.AuditLog (the native one), got {}",
                            batch::type_name(a)
                        ))
                    })?
                    .get()
                    .log
                    .clone(),
            ),
        };
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
        Ok(PyGate { gate: match audit {
            Some(log) => gate.with_audit(log),
            None => gate,
        } })
    }

    /// Revokes a link, by revocation id, for every later request.
    fn revoke(&self, revocation_id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.gate.revoke(array::<32>(revocation_id, &|| "revocation_id".into())?);
        Ok(())
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
    #[pyo3(signature = (chain, invocation, now = None))]
    fn check<'py>(
        &self,
        py: Python<'py>,
        chain: &Bound<'py, PyAny>,
        invocation: &Bound<'py, PyAny>,
        now: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = batch::chain_source(chain, &|| "chain".into())?;
        let i = batch::source(invocation, &|| "invocation".into())?;
        let (c, i) = (c.as_slice(), i.as_slice());
        let now = opt_int(now, "now", U64)?.unwrap_or_else(unix_now);
        let mut out = py.detach(|| self.gate.check_batch(&[(c, i)], now)).map_err(to_py)?;
        let outcome = out.pop().ok_or_else(|| input("no outcome"))?;
        let receipt = outcome.receipt.map(|receipt| PyReceipt { receipt });
        decision(py, outcome.code as u8, reservation_object(py, outcome.reservation)?, receipt)
    }

    /// Decides many requests in order, with every uncached signature of the batch in
    /// one batched verification; returns `(codes, reservations)`: a numpy uint8
    /// array and a list holding a `Reservation` for each allowed request, else None.
    /// With `receipts=True`, returns `(codes, reservations, receipts)`, a `Receipt`
    /// per request when the gate has an audit log (else None).
    #[pyo3(signature = (chains, invocations, now = None, *, receipts = false))]
    fn check_batch<'py>(
        &self,
        py: Python<'py>,
        chains: &Bound<'py, PyAny>,
        invocations: &Bound<'py, PyAny>,
        now: Option<&Bound<'py, PyAny>>,
        receipts: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let chains = batch::chains(chains, None, "chains")?;
        let invocations = batch::variable(invocations, None, "invocations")?;
        if chains.len() != invocations.len() {
            return Err(input(format!(
                "chains and invocations must have the same length (got {} and {})",
                chains.len(),
                invocations.len()
            )));
        }
        let requests: Vec<(&[u8], &[u8])> = chains.slices().into_iter().zip(invocations.slices()).collect();
        let now = opt_int(now, "now", U64)?.unwrap_or_else(unix_now);
        let outcomes = py.detach(|| self.gate.check_batch(&requests, now)).map_err(to_py)?;
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
