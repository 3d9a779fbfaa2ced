//! hopgate._native: thin PyO3 bindings over hopgate-core.
//!
//! These modules only convert Python objects to core types and back, release the GIL
//! around core work, and map core errors (errors.rs). Every rule lives in the core.

mod audit;
mod biscuit;
mod chain;
mod convert;
mod errors;
mod gate;
mod hash;
mod hdp;
mod invocation;
mod jose;
mod keys;
mod ledger;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<keys::PySigningKey>()?;
    m.add_class::<chain::PyChain>()?;
    m.add_class::<chain::PyLink>()?;
    m.add_class::<ledger::PyLedger>()?;
    m.add_class::<ledger::PyBudget>()?;
    m.add_class::<ledger::PyReservation>()?;
    m.add_class::<gate::PyGate>()?;
    m.add_class::<audit::PyAuditLog>()?;
    m.add_class::<audit::PyReceipt>()?;
    m.add_function(wrap_pyfunction!(audit::audit_verify, m)?)?;
    m.add_function(wrap_pyfunction!(keys::verify, m)?)?;
    m.add_function(wrap_pyfunction!(keys::verify_batch, m)?)?;
    m.add_function(wrap_pyfunction!(keys::key_cache_info, m)?)?;
    m.add_function(wrap_pyfunction!(keys::key_cache_clear, m)?)?;
    m.add_function(wrap_pyfunction!(keys::key_cache_resize, m)?)?;
    m.add_function(wrap_pyfunction!(chain::verify_chains, m)?)?;
    m.add_function(wrap_pyfunction!(jose::jws_split, m)?)?;
    m.add_function(wrap_pyfunction!(hdp::hdp_verify, m)?)?;
    m.add_function(wrap_pyfunction!(hdp::canonical_json, m)?)?;
    m.add_function(wrap_pyfunction!(biscuit::biscuit_verify, m)?)?;
    m.add_class::<invocation::PyInvocation>()?;
    m.add_function(wrap_pyfunction!(invocation::parse_invocation, m)?)?;
    m.add_function(wrap_pyfunction!(invocation::to_text, m)?)?;
    m.add_function(wrap_pyfunction!(invocation::from_text, m)?)?;
    m.add_function(wrap_pyfunction!(chain::code_names, m)?)?;
    m.add_function(wrap_pyfunction!(hash::blake3_many, m)?)?;
    m.add_function(wrap_pyfunction!(hash::sha256_many, m)?)?;
    m.add_function(wrap_pyfunction!(hash::mac_many, m)?)?;
    m.add_function(wrap_pyfunction!(hash::blake3, m)?)?;
    m.add_function(wrap_pyfunction!(hash::hash_backend, m)?)?;
    #[cfg(feature = "test-hooks")]
    {
        // Private: kept out of `__all__`, so the public surface is the wheels' one.
        m.add_function(wrap_pyfunction!(errors::_inject_panic, m)?)?;
        m.index()?.call_method1("remove", ("_inject_panic",))?;
    }
    m.add("PARALLEL_THRESHOLD", hopgate_core::sig::PARALLEL_THRESHOLD)?;
    m.add("MAX_CHAIN_LEN", hopgate_core::wire::MAX_CHAIN_LEN)?;
    m.add("MAX_LINKS", hopgate_core::wire::MAX_LINKS)?;
    m.add("MAX_CAPS", hopgate_core::wire::MAX_CAPS)?;
    m.add("DEFAULT_MAX_ACCOUNTS", hopgate_core::ledger::DEFAULT_MAX_ACCOUNTS)?;
    m.add("DEFAULT_MAX_NONCES", hopgate_core::ledger::DEFAULT_MAX_NONCES)?;
    m.add("DEFAULT_CACHE_SIZE", hopgate_core::gate::DEFAULT_CACHE_SIZE)?;
    m.add("DEFAULT_KEY_CACHE_CAPACITY", hopgate_core::key_cache::DEFAULT_CAPACITY)?;
    m.add("DEFAULT_MAX_BATCH", hopgate_core::gate::DEFAULT_MAX_BATCH)?;
    Ok(())
}
