//! `Ledger`, `Budget` and `Reservation`: Python handles with runtime affinity over the
//! core's compile-time affine types.
//!
//! Each handle keeps its core value in a `Mutex<Option<_>>`: a consuming method takes
//! the value out, so any later use finds `None` and raises `AffineError`, even when
//! two threads race to settle the same reservation. The locks are held for
//! microseconds and never while waiting for anything, so the handles are safe to use
//! from threads and from asyncio tasks alike.

use std::sync::{Mutex, MutexGuard, PoisonError};

use hopgate_core::ledger::{self, Ledger};
use hopgate_macros::guarded;
use pyo3::exceptions::{PyResourceWarning, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};

use crate::chain::PyChain;
use crate::convert::array;
use crate::convert::u64_arg;

u64_arg!(max_accounts_arg, "max_accounts");
u64_arg!(max_nonces_arg, "max_nonces");
use crate::errors::{input, settle_to_py, to_py, AffineError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn no_copy(what: &str) -> PyErr {
    PyTypeError::new_err(format!("a {what} stands for money and cannot be copied or pickled"))
}

/// `hopgate._decision.Account(cap, spent, reserved, overrun)`.
pub fn account_tuple<'py>(py: Python<'py>, a: &ledger::Account) -> PyResult<Bound<'py, PyAny>> {
    static ACCOUNT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let cls = ACCOUNT.import(py, "hopgate._decision", "Account")?;
    cls.call1((a.cap, a.spent, a.reserved, a.overrun))
}

/// A budget ledger (SPEC §5). Gates given the same ledger share its accounts and its
/// replay-nonce set.
#[pyclass(name = "Ledger", module = "hopgate", frozen)]
#[derive(Clone)]
pub struct PyLedger {
    pub(crate) ledger: Ledger,
}

#[guarded]
#[pymethods]
impl PyLedger {
    /// An empty ledger holding at most `max_accounts` accounts and remembering at
    /// most `max_nonces` replay nonces, of which one root (the first link of a
    /// chain) may hold at most `max_accounts_per_root` accounts (default: a tenth of
    /// `max_accounts`, but room for a 16-link chain) and `max_nonces_per_root` nonces (default:
    /// `max_nonces`). Every limit is at least 1 (SPEC §6.9).
    #[new]
    // Literals, so that the text signature (and stubtest) shows them; a test checks
    // they equal the core's DEFAULT_MAX_ACCOUNTS and DEFAULT_MAX_NONCES.
    #[pyo3(signature = (*, max_accounts = 1_000_000, max_nonces = 1_000_000, max_accounts_per_root = None,
                        max_nonces_per_root = None))]
    fn new(
        #[pyo3(from_py_with = max_accounts_arg)] max_accounts: u64,
        #[pyo3(from_py_with = max_nonces_arg)] max_nonces: u64,
        max_accounts_per_root: Option<&Bound<'_, PyAny>>,
        max_nonces_per_root: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let count = |n: u64, name: &str| -> PyResult<usize> {
            if n == 0 {
                return Err(input(format!("{name}: must be at least 1, got 0")));
            }
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        };
        let optional = |obj: Option<&Bound<'_, PyAny>>, name: &str| -> PyResult<Option<usize>> {
            crate::convert::opt_int::<u64>(obj.filter(|o| !o.is_none()), name, crate::convert::U64)?
                .map(|n| count(n, name))
                .transpose()
        };
        let mut limits = ledger::Limits::new(count(max_accounts, "max_accounts")?, count(max_nonces, "max_nonces")?);
        if let Some(n) = optional(max_accounts_per_root, "max_accounts_per_root")? {
            limits.max_accounts_per_root = n;
        }
        if let Some(n) = optional(max_nonces_per_root, "max_nonces_per_root")? {
            limits.max_nonces_per_root = n;
        }
        Ok(PyLedger { ledger: Ledger::with_limits(limits).map_err(to_py)? })
    }

    /// A ledger kept in the durable store `url` names (SPEC §5.8), shared by every
    /// process that opens it: `sqlite:///abs/path.db` (or `sqlite:relative/path.db`),
    /// `redis://host:port/db`, or `redis+cluster://host:port`. A reservation left
    /// unsettled by a process that dies is forfeited after `lease` seconds; the store
    /// must answer within `timeout` seconds, or the call raises `StoreError` (a gate
    /// then allows nothing).
    #[staticmethod]
    #[pyo3(signature = (url, *, lease = 30.0, timeout = 2.0))]
    fn open(py: Python<'_>, url: &str, lease: f64, timeout: f64) -> PyResult<Self> {
        let seconds = |v: f64, name: &str| -> PyResult<std::time::Duration> {
            if !(v.is_finite() && v > 0.0 && v <= 1e9) {
                return Err(input(format!("{name}: expected a positive number of seconds (at most 1e9), got {v}")));
            }
            Ok(std::time::Duration::from_secs_f64(v))
        };
        let (lease, timeout) = (seconds(lease, "lease")?, seconds(timeout, "timeout")?);
        let ledger = py.detach(|| Ledger::open(url, lease, timeout)).map_err(to_py)?;
        Ok(PyLedger { ledger })
    }

    /// Where the state is kept: "memory", "sqlite", "redis" or "redis-cluster".
    #[getter]
    fn store(&self) -> &'static str {
        self.ledger.kind().name()
    }

    /// A durable reservation's lease in seconds (None for a memory ledger).
    #[getter]
    fn lease(&self) -> Option<f64> {
        self.ledger.lease().map(|d| d.as_secs_f64())
    }

    /// Lets go of the store's connections and files; later use raises `StoreError`.
    /// A memory ledger is unchanged.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.ledger.close());
    }

    /// The most accounts this ledger holds at once (None for a durable store,
    /// which forgets by age only).
    #[getter]
    fn max_accounts(&self) -> Option<usize> {
        self.ledger.limits().map(|l| l.max_accounts)
    }

    /// The most replay nonces this ledger remembers at once.
    #[getter]
    fn max_nonces(&self) -> Option<usize> {
        self.ledger.limits().map(|l| l.max_nonces)
    }

    /// The most accounts one root holds at once.
    #[getter]
    fn max_accounts_per_root(&self) -> Option<usize> {
        self.ledger.limits().map(|l| l.max_accounts_per_root)
    }

    /// The most replay nonces one root holds at once.
    #[getter]
    fn max_nonces_per_root(&self) -> Option<usize> {
        self.ledger.limits().map(|l| l.max_nonces_per_root)
    }

    /// How long a nonce is remembered after its timestamp: the longest
    /// `replay_window` of any gate built on this ledger (0 before any).
    #[getter]
    fn replay_window(&self) -> u64 {
        self.ledger.replay_window()
    }

    /// How many replay nonces are remembered at `now` (default: the clock).
    #[pyo3(signature = (now = None))]
    fn nonces(&self, py: Python<'_>, now: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let now = crate::convert::opt_int(now, "now", crate::convert::U64)?;
        let now = now.unwrap_or_else(crate::convert::unix_now);
        py.detach(|| self.ledger.nonces_len(now)).map_err(to_py)
    }

    /// A budget on `path`: a `Chain` (one account per link: its revocation id, capped
    /// by its budget), or a list of `(account_id, cap)` pairs, root first.
    fn budget(&self, path: &Bound<'_, PyAny>) -> PyResult<PyBudget> {
        let path = if let Ok(chain) = path.cast::<PyChain>() {
            let chain = chain.get();
            ledger::chain_path(&chain.parsed())
        } else {
            let pairs = path.try_iter().map_err(|_| input("path: expected a Chain or a list of (account_id, cap)"))?;
            let mut out = Vec::new();
            for (i, pair) in pairs.enumerate() {
                let pair = pair?;
                let (id, cap): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                    pair.extract().map_err(|_| input(format!("path[{i}]: expected (account_id, cap)")))?;
                let cap: u64 = cap.extract().map_err(|_| input(format!("path[{i}]: cap must be in 0..=2**64-1")))?;
                out.push((array::<32>(&id, &|| format!("path[{i}] account_id"))?, cap));
            }
            out
        };
        let budget = self.ledger.budget(path).map_err(to_py)?;
        Ok(PyBudget { inner: Mutex::new(Some(budget)) })
    }

    /// One account's state, or None if it was never used. `root`, the first account
    /// of its path, narrows the search; a Redis ledger needs it.
    #[pyo3(signature = (account_id, *, root = None))]
    fn account<'py>(
        &self,
        py: Python<'py>,
        account_id: &Bound<'py, PyAny>,
        root: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let id = array::<32>(account_id, &|| "account_id".into())?;
        let root = root.filter(|r| !r.is_none()).map(|r| array::<32>(r, &|| "root".into())).transpose()?;
        let account = py.detach(|| self.ledger.account(root.as_ref(), &id)).map_err(to_py)?;
        account.map(|a| account_tuple(py, &a)).transpose()
    }

    /// A snapshot of every account: `{account_id: Account}`.
    fn accounts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (id, a) in py.detach(|| self.ledger.accounts()).map_err(to_py)? {
            out.set_item(PyBytes::new(py, &id), account_tuple(py, &a)?)?;
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        match self.ledger.limits() {
            Some(_) => format!("Ledger(accounts={})", self.ledger.accounts().map_or(0, |a| a.len())),
            None => format!("Ledger(store={:?})", self.ledger.kind().name()),
        }
    }
}

/// The right to reserve on a path of accounts. `delegate` consumes it and returns a
/// fresh parent handle beside the child; the old handle then raises `AffineError`.
#[pyclass(name = "Budget", module = "hopgate", frozen)]
pub struct PyBudget {
    inner: Mutex<Option<ledger::Budget>>,
}

fn gone(what: &str) -> PyErr {
    AffineError::new_err(format!("this {what} was already consumed"))
}

impl PyBudget {
    fn with<T>(&self, f: impl FnOnce(&ledger::Budget) -> PyResult<T>) -> PyResult<T> {
        let guard = lock(&self.inner);
        f(guard.as_ref().ok_or_else(|| gone("Budget (it delegated; use the handle delegate returned)"))?)
    }

    /// The ledger and path, copied out so that a store call runs without the GIL and
    /// without this handle's lock: a thread waiting on one while holding the other
    /// would deadlock with the one returning.
    fn detached<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Ledger, &[(ledger::AccountId, u64)]) -> hopgate_core::Result<T> + Send,
    ) -> PyResult<T> {
        let (ledger, path) = self.with(|b| Ok((b.ledger().clone(), b.path().to_vec())))?;
        py.detach(|| f(&ledger, &path)).map_err(to_py)
    }
}

#[guarded]
#[pymethods]
impl PyBudget {
    /// Reserves `amount` on every account of the path, atomically. Raises
    /// `BudgetExhaustedError` (changing nothing) unless every account has room.
    fn reserve(&self, py: Python<'_>, amount: &Bound<'_, PyAny>) -> PyResult<Py<PyReservation>> {
        let amount: u64 = amount.extract().map_err(|_| input("amount: expected an integer in 0..=2**64-1"))?;
        let r = self.detached(py, |ledger, path| ledger.reserve(path, amount))?;
        Py::new(py, PyReservation::new(r))
    }

    /// What could be reserved now: the least room on the path.
    fn remaining(&self, py: Python<'_>) -> PyResult<u64> {
        self.detached(py, |ledger, path| ledger.remaining(path))
    }

    /// `(account_id, cap)` per account, root first.
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Vec<(Bound<'py, PyBytes>, u64)>> {
        self.with(|b| Ok(b.path().iter().map(|(id, cap)| (PyBytes::new(py, id), *cap)).collect()))
    }

    /// A child account with `cap` (at most this budget's own cap) under `account_id`
    /// (random when None). Consumes this handle; returns `(parent, child)`.
    #[pyo3(signature = (cap, account_id = None))]
    fn delegate(
        &self,
        cap: &Bound<'_, PyAny>,
        account_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(PyBudget, PyBudget)> {
        let cap: u64 = cap.extract().map_err(|_| input("cap: expected an integer in 0..=2**64-1"))?;
        let id = match account_id {
            Some(id) => array::<32>(id, &|| "account_id".into())?,
            None => {
                let mut id = [0u8; 32];
                id[..16].copy_from_slice(&hopgate_core::chain::random_nonce());
                id[16..].copy_from_slice(&hopgate_core::chain::random_nonce());
                id
            }
        };
        // The GIL stays held: the handle's lock is held throughout (a refusal puts the
        // budget back), and releasing the GIL under it could deadlock (see `detached`).
        let mut guard = lock(&self.inner);
        let budget = guard.take().ok_or_else(|| gone("Budget (it delegated; use the handle delegate returned)"))?;
        match budget.delegate(id, cap) {
            Ok((parent, child)) => {
                Ok((PyBudget { inner: Mutex::new(Some(parent)) }, PyBudget { inner: Mutex::new(Some(child)) }))
            }
            Err((budget, e)) => {
                *guard = Some(budget);
                Err(to_py(e))
            }
        }
    }

    fn __copy__(&self) -> PyResult<()> {
        Err(no_copy("Budget"))
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(no_copy("Budget"))
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(no_copy("Budget"))
    }

    fn __repr__(&self) -> String {
        match lock(&self.inner).as_ref() {
            Some(b) => match b.remaining() {
                Ok(left) => format!("Budget(links={}, remaining={left})", b.path().len()),
                Err(_) => format!("Budget(links={})", b.path().len()),
            },
            None => "Budget(consumed)".into(),
        }
    }
}

/// An amount held on every account of a path: `commit(actual)` or `release()` it,
/// exactly once. Left unsettled (garbage-collected, or at the end of its `with`
/// block) it is forfeited: the amount counts as spent.
#[pyclass(name = "Reservation", module = "hopgate", frozen)]
pub struct PyReservation {
    inner: Mutex<Option<ledger::Reservation>>,
    amount: u64,
}

impl PyReservation {
    pub(crate) fn new(r: ledger::Reservation) -> Self {
        let amount = r.amount();
        PyReservation { inner: Mutex::new(Some(r)), amount }
    }

    fn take(&self) -> PyResult<ledger::Reservation> {
        lock(&self.inner).take().ok_or_else(|| gone("Reservation (committed, released or forfeited)"))
    }
}

#[guarded]
#[pymethods]
impl PyReservation {
    /// The amount held.
    #[getter]
    fn amount(&self) -> u64 {
        self.amount
    }

    /// True once committed, released or forfeited.
    #[getter]
    fn settled(&self) -> bool {
        lock(&self.inner).is_none()
    }

    /// Spends `actual` (default: the amount held) and releases the rest. Spending
    /// more than was held charges it all, records an overrun, then raises
    /// `OverrunError`.
    #[pyo3(signature = (actual = None))]
    fn commit(&self, py: Python<'_>, actual: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let actual: Option<u64> =
            actual.map(|a| a.extract()).transpose().map_err(|_| input("actual: expected an integer in 0..=2**64-1"))?;
        let r = self.take()?;
        let actual = actual.unwrap_or(self.amount);
        // A settlement record may be synced to the disk: other threads run meanwhile.
        py.detach(|| r.commit(actual)).map_err(settle_to_py)
    }

    /// Releases the whole amount: the statement that nothing was spent.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let r = self.take()?;
        py.detach(|| r.release()).map_err(settle_to_py)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving the block unsettled forfeits the amount (counted as spent).
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> bool {
        let r = lock(&self.inner).take();
        py.detach(|| drop(r));
        false
    }

    fn __copy__(&self) -> PyResult<()> {
        Err(no_copy("Reservation"))
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(no_copy("Reservation"))
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(no_copy("Reservation"))
    }

    fn __repr__(&self) -> String {
        format!(
            "Reservation(amount={}, settled={})",
            self.amount,
            if lock(&self.inner).is_none() { "True" } else { "False" }
        )
    }
}

impl Drop for PyReservation {
    fn drop(&mut self) {
        let unsettled = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(r) = unsettled {
            // The core forfeits on drop; Python is told, as for an unclosed file.
            drop(r);
            Python::attach(|py| {
                // This may run while an exception is being raised (a temporary
                // reservation freed as a call fails): set it aside, or warning would
                // replace it with a SystemError.
                let pending = PyErr::take(py);
                let category = py.get_type::<PyResourceWarning>();
                let msg = c"a Reservation was collected without commit() or release(); its amount was forfeited (counted as spent)";
                if let Err(e) = PyErr::warn(py, &category, msg, 1) {
                    e.write_unraisable(py, None);
                }
                if let Some(e) = pending {
                    e.restore(py);
                }
            });
        }
    }
}

/// The Python handle of an outcome's reservation, if it has one.
pub fn reservation_object(py: Python<'_>, r: Option<ledger::Reservation>) -> PyResult<Option<Py<PyReservation>>> {
    r.map(|r| Py::new(py, PyReservation::new(r))).transpose()
}
