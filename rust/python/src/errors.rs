//! The one mapping from core errors to Python exceptions.
//!
//! The exception classes live in `hopgate/errors.py` (pure Python) so that the
//! native module and `hopgate.reference` raise the very same classes.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hopgate_core::{Code, Error};
use pyo3::{PyErr, PyResult};

pyo3::import_exception!(hopgate.errors, MalformedError);
pyo3::import_exception!(hopgate.errors, DelegationError);
pyo3::import_exception!(hopgate.errors, InputError);
pyo3::import_exception!(hopgate.errors, AffineError);
pyo3::import_exception!(hopgate.errors, OverrunError);
pyo3::import_exception!(hopgate.errors, BudgetExhaustedError);
pyo3::import_exception!(hopgate.errors, AuditError);
pyo3::import_exception!(hopgate.errors, InternalError);
pyo3::import_exception!(hopgate.errors, StoreError);
pyo3::import_exception!(hopgate.errors, LeaseExpiredError);

/// Converts a core error to its Python exception.
pub fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Malformed { field, offset, .. } => MalformedError::new_err((message, field, offset)),
        Error::Refused { code: Code::BudgetExhausted, .. } => BudgetExhaustedError::new_err(message),
        Error::Refused { code, .. } => DelegationError::new_err((message, code as u8)),
        Error::Input { .. } => InputError::new_err(message),
        Error::Io { errno: Some(errno), .. } => pyo3::exceptions::PyOSError::new_err((errno, message)),
        Error::Io { errno: None, .. } => pyo3::exceptions::PyOSError::new_err(message),
        Error::Audit { record, offset, .. } => AuditError::new_err((message, record, offset)),
        Error::Store { .. } => StoreError::new_err(message),
    }
}

/// Converts a settlement's error to its Python exception.
pub fn settle_to_py(e: hopgate_core::ledger::SettleError) -> PyErr {
    use hopgate_core::ledger::SettleError;
    match e {
        SettleError::Overrun(o) => OverrunError::new_err((o.to_string(), o.reserved, o.actual)),
        SettleError::Audit(e) | SettleError::Store(e) => to_py(e),
        e @ SettleError::LeaseExpired(_) => LeaseExpiredError::new_err(e.to_string()),
    }
}

/// An [`InputError`] with `message`.
pub fn input(message: impl Into<String>) -> PyErr {
    InputError::new_err(message.into())
}

/// Runs a binding's body; a panic in it (on this thread, in a `py.detach` closure,
/// or re-raised by rayon from a worker) becomes `hopgate.InternalError` instead of
/// PyO3's `PanicException`, which is a `BaseException` that services do not catch.
/// `#[guarded]` (rust/macros) wraps every `#[pymethods]` and `#[pyfunction]` body in it.
///
/// Unwind safety: the core's shared state sits behind mutexes that every user takes
/// with `PoisonError::into_inner`, and each critical section either completes its
/// update or has not started it when it can panic (ledger.rs says why), so what a
/// caught panic leaves behind is consistent; a gate releases the reservations of a
/// batch that unwinds (gate.rs, `Unsettled`).
pub fn guard<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(InternalError::new_err(format!("internal error in hopgate (a bug; please report it): {what}")))
    })
}

/// Arms a fault-injection site of the core (`None` disarms): the next pass through
/// it panics once. Only in builds with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
#[hopgate_macros::guarded]
#[pyo3::pyfunction]
#[pyo3(signature = (site))]
pub fn _inject_panic(site: Option<&str>) {
    hopgate_core::fault::arm(site);
}
