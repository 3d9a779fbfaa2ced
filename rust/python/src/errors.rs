//! The one mapping from core errors to Python exceptions.
//!
//! The exception classes live in `hopgate/errors.py` (pure Python) so that the
//! native module and `hopgate.reference` raise the very same classes.

use hopgate_core::{Code, Error};
use pyo3::PyErr;

pyo3::import_exception!(hopgate.errors, MalformedError);
pyo3::import_exception!(hopgate.errors, DelegationError);
pyo3::import_exception!(hopgate.errors, InputError);
pyo3::import_exception!(hopgate.errors, AffineError);
pyo3::import_exception!(hopgate.errors, OverrunError);
pyo3::import_exception!(hopgate.errors, BudgetExhaustedError);
pyo3::import_exception!(hopgate.errors, AuditError);

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
    }
}

/// An [`InputError`] with `message`.
pub fn input(message: impl Into<String>) -> PyErr {
    InputError::new_err(message.into())
}
