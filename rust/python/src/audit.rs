//! `AuditLog`, `Receipt` and `audit_verify`: the core's audit log (see
//! `hopgate_core::audit`), with the GIL released around file work.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hopgate_core::audit::{self, AuditLog, Fsync, Receipt, Report};
use hopgate_macros::guarded;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt};
use zeroize::Zeroizing;

use crate::convert::{self, array};
use crate::errors::{input, to_py};

/// How the core begins its refusal of a log another writer holds.
const ONE_WRITER: &str = "the log is already open for appending";
/// What a process that meets it should do instead (the reference says the same).
const PER_WORKER: &str =
    "one log has one writer: give each process its own with hopgate.audit_worker_log(directory, key=...)";

/// What an append returns: the record's index, the log's chain value after it,
/// and a tag only the key holder can make. Keep it; show it later.
#[pyclass(name = "Receipt", module = "hopgate", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyReceipt {
    pub receipt: Receipt,
}

#[guarded]
#[pymethods]
impl PyReceipt {
    #[new]
    fn new(index: u64, chain: &Bound<'_, PyAny>, tag: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PyReceipt {
            receipt: Receipt {
                index,
                chain: array::<32>(chain, &|| "chain".into())?,
                tag: array::<32>(tag, &|| "tag".into())?,
            },
        })
    }

    /// The record's index in the log.
    #[getter]
    fn index(&self) -> u64 {
        self.receipt.index
    }

    /// The log's chain value after this record.
    #[getter]
    fn chain<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.receipt.chain)
    }

    /// BLAKE3-keyed(key, "HGR1" | index | chain).
    #[getter]
    fn tag<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.receipt.tag)
    }

    /// True iff the tag was made with `key` (constant-time comparison).
    fn is_authentic(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.receipt.is_authentic(&array::<32>(key, &|| "key".into())?))
    }

    /// The receipt as 72 bytes: index (u64 LE), chain, tag.
    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.receipt.to_bytes())
    }

    /// Parses the 72 bytes of `bytes(receipt)`.
    #[staticmethod]
    fn from_bytes(data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let data = convert::source(data, &|| "receipt".into())?;
        Ok(PyReceipt { receipt: Receipt::from_bytes(data.as_slice()).map_err(to_py)? })
    }

    fn __repr__(&self) -> String {
        let hex: String = self.receipt.chain[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("Receipt(index={}, chain={hex}…)", self.receipt.index)
    }
}

/// Turns the `fsync` argument into a policy: True (after every append), False
/// (never), or a number of seconds (at most that often).
fn fsync_policy(obj: &Bound<'_, PyAny>) -> PyResult<Fsync> {
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(if b.is_true() { Fsync::Always } else { Fsync::Never });
    }
    if obj.is_instance_of::<PyFloat>() || obj.is_instance_of::<PyInt>() {
        let seconds: f64 = obj.extract()?;
        if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e9) {
            return Err(input(format!("fsync: an interval must be a positive number of seconds, got {seconds}")));
        }
        return Ok(Fsync::Every(Duration::from_secs_f64(seconds)));
    }
    Err(PyTypeError::new_err(format!("fsync: expected True, False or seconds, got {}", obj.get_type().name()?)))
}

fn report_object<'py>(py: Python<'py>, report: Report) -> PyResult<Bound<'py, PyAny>> {
    static REPORT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let (record, offset, reason) = match report.problem {
        Some(p) => (p.record, Some(p.offset), Some(p.reason)),
        None => (None, None, None),
    };
    REPORT.import(py, "hopgate._audit", "AuditReport")?.call1((report.records, report.bytes, record, offset, reason))
}

/// Runs `verify` with the GIL released, calling `progress(done, total)` (with the
/// GIL) after every segment; an exception from it, or a pending signal such as
/// Ctrl-C, stops verification and is raised.
fn verify_with_progress<'py>(
    py: Python<'py>,
    progress: Option<&Bound<'py, PyAny>>,
    verify: impl FnOnce(&mut dyn FnMut(u64, u64) -> bool) -> hopgate_core::Result<Report> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let progress = progress.filter(|p| !p.is_none()).map(|p| p.clone().unbind());
    let mut raised: Option<PyErr> = None;
    let report = py.detach(|| {
        let mut step = |done: u64, total: u64| -> bool {
            Python::attach(|py| {
                let outcome = py.check_signals().and_then(|()| match &progress {
                    Some(p) => p.call1(py, (done, total)).map(drop),
                    None => Ok(()),
                });
                outcome.map_err(|e| raised = Some(e)).is_ok()
            })
        };
        verify(&mut step)
    });
    if let Some(e) = raised {
        return Err(e);
    }
    report_object(py, report.map_err(to_py)?)
}

/// An append-only, hash-chained audit log sealed with a 32-byte key; a `Gate`
/// given one appends a record per decision.
#[pyclass(name = "AuditLog", module = "hopgate", frozen)]
pub struct PyAuditLog {
    pub log: Arc<Mutex<AuditLog>>,
    path: PathBuf,
    key: Zeroizing<[u8; 32]>,
}

impl PyAuditLog {
    fn lock(&self) -> MutexGuard<'_, AuditLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn receipts(py: Python<'_>, rs: Vec<Receipt>) -> PyResult<Vec<Py<PyReceipt>>> {
    rs.into_iter().map(|receipt| Py::new(py, PyReceipt { receipt })).collect()
}

#[guarded]
#[pymethods]
impl PyAuditLog {
    #[new]
    #[pyo3(signature = (path, *, key, fsync = None))]
    fn new(py: Python<'_>, path: PathBuf, key: &Bound<'_, PyAny>, fsync: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let key = Zeroizing::new(array::<32>(key, &|| "key".into())?);
        let policy = fsync.filter(|f| !f.is_none()).map(fsync_policy).transpose()?.unwrap_or(Fsync::Always);
        let log = py.detach(|| AuditLog::open(&path, &key, policy)).map_err(|e| match e {
            // Several workers of one server each open the log: name the way out.
            hopgate_core::Error::Io { context, errno: None, reason } if reason.starts_with(ONE_WRITER) => {
                pyo3::exceptions::PyOSError::new_err(format!("{context}: {reason}; {PER_WORKER}"))
            }
            e => to_py(e),
        })?;
        Ok(PyAuditLog { log: Arc::new(Mutex::new(log)), path, key })
    }

    /// Appends one record (bytes-like); returns its `Receipt`.
    fn append(&self, py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<PyReceipt> {
        let record = convert::source(record, &|| "record".into())?;
        let body = record.as_slice();
        let receipt = py.detach(|| self.lock().append(body)).map_err(to_py)?;
        Ok(PyReceipt { receipt })
    }

    /// Appends many records in one write (a list of bytes-like, or one buffer plus
    /// offsets); returns their receipts in order.
    #[pyo3(signature = (records, offsets = None))]
    fn append_many(
        &self,
        py: Python<'_>,
        records: &Bound<'_, PyAny>,
        offsets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Py<PyReceipt>>> {
        let batch = convert::variable(records, offsets, "records")?;
        let slices = batch.slices();
        let rs = py.detach(|| self.lock().append_many(&slices)).map_err(to_py)?;
        receipts(py, rs)
    }

    /// The bodies of records `start` up to (not including) `stop`.
    #[pyo3(signature = (start = 0, stop = None))]
    fn read<'py>(&self, py: Python<'py>, start: u64, stop: Option<u64>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let bodies = py
            .detach(|| {
                let mut log = self.lock();
                let stop = stop.unwrap_or(log.len());
                log.read(start, stop.saturating_sub(start))
            })
            .map_err(to_py)?;
        Ok(bodies.iter().map(|b| PyBytes::new(py, b)).collect())
    }

    /// Checks every record (the GIL released); `progress(done_bytes, total_bytes)`
    /// is called along the way. Returns an `AuditReport`.
    #[pyo3(signature = (progress = None))]
    fn verify<'py>(&self, py: Python<'py>, progress: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        let end = self.lock().end();
        verify_with_progress(py, progress, |step| audit::verify_file_upto(&self.path, &self.key, Some(end), step))
    }

    /// True iff `receipt` was made with this log's key and the log still holds its
    /// chain value at its index.
    fn verify_receipt(&self, py: Python<'_>, receipt: &Bound<'_, PyReceipt>) -> PyResult<bool> {
        let r = receipt.get().receipt;
        py.detach(|| self.lock().verify_receipt(&r)).map_err(to_py)
    }

    /// Forces appended records to the disk now.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.lock().sync()).map_err(to_py)
    }

    /// Syncs and lets go of the file; later appends raise. Closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.lock().close()).map_err(to_py)
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// True while records have been written since the last sync (with
    /// `fsync=True`, only a gate's refusals).
    #[getter]
    fn unsynced(&self) -> bool {
        self.lock().unsynced()
    }

    /// The log's file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The last chain value (BLAKE3 of the header for an empty log).
    #[getter]
    fn head<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.lock().head())
    }

    /// Bytes of torn tail cut off when the log was opened (0 if none).
    #[getter]
    fn recovered(&self) -> u64 {
        self.lock().recovered()
    }

    fn __len__(&self) -> usize {
        usize::try_from(self.lock().len()).unwrap_or(usize::MAX)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let log = self.lock();
        format!("AuditLog({:?}, records={}, closed={})", self.path.display().to_string(), log.len(), log.is_closed())
    }
}

/// Verifies the log at `path` with `key`, without opening it for appending;
/// returns an `AuditReport`.
#[guarded]
#[pyfunction]
#[pyo3(signature = (path, *, key, progress = None))]
pub fn audit_verify<'py>(
    py: Python<'py>,
    path: PathBuf,
    key: &Bound<'py, PyAny>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let key = Zeroizing::new(array::<32>(key, &|| "key".into())?);
    verify_with_progress(py, progress, |step| audit::verify_file(&path, &key, step))
}
