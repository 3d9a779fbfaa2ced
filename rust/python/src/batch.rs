//! Batch inputs: a list of bytes-like objects, or one buffer plus Arrow-style offsets.
//!
//! Zero-copy rules (also in docs/FORMAT.md, "Buffers"): memory is borrowed, and read
//! with the GIL released, only when Python cannot change it during the call:
//! `bytes` objects (immutable), `hopgate.Chain` objects (immutable), and numpy arrays
//! or other buffers whose `writeable` flag is off (a read-only view is the caller's
//! promise that nobody writes through another alias meanwhile). Anything writable
//! (`bytearray`, writable numpy arrays, writable memoryviews) is copied under the GIL
//! first: a copy is cheap next to a signature and removes any data race.
//!
//! Generic buffers are reached through `numpy.frombuffer`, which speaks the buffer
//! protocol on every Python version, so the abi3 wheel for Python ≥ 3.9 stays
//! zero-copy even though the limited API only gained the buffer protocol in 3.11.

use numpy::{PyArrayMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyTuple};

use crate::chain::PyChain;
use crate::errors::input;

/// One bytes-like object, borrowed or copied.
pub enum Source<'py> {
    /// An immutable `bytes`.
    Bytes(Bound<'py, PyBytes>),
    /// An immutable `Chain`.
    Chain(Bound<'py, PyChain>),
    /// A read-only numpy view.
    Array(PyReadonlyArray1<'py, u8>),
    /// A copy of writable memory.
    Owned(Vec<u8>),
}

impl Source<'_> {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Source::Bytes(b) => b.as_bytes(),
            Source::Chain(c) => c.get().as_slice(),
            // `Array` is only built from C-contiguous arrays, so `as_slice` succeeds.
            Source::Array(a) => a.as_slice().unwrap_or(&[]),
            Source::Owned(v) => v,
        }
    }
}

fn numpy_frombuffer<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    static FROMBUFFER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = obj.py();
    let f = FROMBUFFER.get_or_try_init(py, || -> PyResult<_> {
        Ok(py.import("numpy")?.getattr("frombuffer")?.unbind())
    })?;
    f.bind(py).call1((obj, "uint8"))
}

/// Reads one bytes-like object; `what` names it in errors.
pub fn source<'py>(obj: &Bound<'py, PyAny>, what: &dyn Fn() -> String) -> PyResult<Source<'py>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Source::Bytes(b.clone()));
    }
    if let Ok(c) = obj.cast::<PyChain>() {
        return Ok(Source::Chain(c.clone()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Source::Owned(b.to_vec()));
    }
    let array = if let Ok(a) = obj.cast::<PyUntypedArray>() {
        a.clone()
    } else {
        numpy_frombuffer(obj)
            .map_err(|_| input(format!("{}: expected a bytes-like object, got {}", what(), type_name(obj))))?
            .cast_into::<PyUntypedArray>()
            .map_err(|_| input(format!("{}: not a buffer", what())))?
    };
    let flat = array
        .call_method1("reshape", (-1,))
        .and_then(|a| Ok(a.cast_into::<numpy::PyArray1<u8>>()?))
        .map_err(|_| input(format!("{}: expected uint8 data, got dtype {}", what(), dtype_name(&array))))?;
    let writeable: bool = flat.getattr("flags")?.getattr("writeable")?.extract()?;
    if writeable || !flat.is_contiguous() {
        Ok(Source::Owned(flat.to_vec().map_err(|e| input(format!("{}: {e}", what())))?))
    } else {
        Ok(Source::Array(flat.readonly()))
    }
}

/// The Python type name of `obj`, for error messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

fn dtype_name(array: &Bound<'_, PyUntypedArray>) -> String {
    array.getattr("dtype").and_then(|d| d.str()).map(|s| s.to_string()).unwrap_or_else(|_| "?".into())
}

/// A batch: either one source per item, or one source cut by offsets.
pub struct Batch<'py> {
    sources: Vec<Source<'py>>,
    cuts: Option<Vec<(usize, usize)>>,
}

impl Batch<'_> {
    /// One slice per item.
    pub fn slices(&self) -> Vec<&[u8]> {
        match &self.cuts {
            None => self.sources.iter().map(Source::as_slice).collect(),
            Some(cuts) => {
                let all = self.sources.first().map(Source::as_slice).unwrap_or(&[]);
                cuts.iter().map(|&(a, b)| &all[a..b]).collect()
            }
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.cuts.as_ref().map_or(self.sources.len(), Vec::len)
    }
}

fn items<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Vec<Source<'py>>> {
    if obj.is_instance_of::<PyBytes>() || obj.cast::<PyUntypedArray>().is_ok() {
        return Err(input(format!(
            "{name}: expected a list of bytes-like objects (one buffer needs `offsets`), got {}",
            type_name(obj)
        )));
    }
    let iter = obj.try_iter().map_err(|_| input(format!("{name}: expected a list, got {}", type_name(obj))))?;
    iter.enumerate().map(|(i, item)| source(&item?, &|| format!("{name}[{i}]"))).collect()
}

/// A batch of variable-length items: a list of bytes-like objects, or one buffer
/// cut by `offsets` (n + 1 non-decreasing integers, Arrow layout).
pub fn variable<'py>(obj: &Bound<'py, PyAny>, offsets: Option<&Bound<'py, PyAny>>, name: &str) -> PyResult<Batch<'py>> {
    let Some(offsets) = offsets else {
        return Ok(Batch { sources: items(obj, name)?, cuts: None });
    };
    let data = source(obj, &|| name.to_string())?;
    let len = data.as_slice().len();
    let offs = offsets_vec(offsets)?;
    let cuts = check_offsets(&offs, len)?;
    Ok(Batch { sources: vec![data], cuts: Some(cuts) })
}

/// A batch of fixed-width items (signatures, keys): a list, or one buffer of
/// `n * width` bytes (e.g. a numpy `(n, width)` uint8 array).
pub fn fixed<'py>(obj: &Bound<'py, PyAny>, width: usize, name: &str) -> PyResult<Batch<'py>> {
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        return Ok(Batch { sources: items(obj, name)?, cuts: None });
    }
    let data = source(obj, &|| name.to_string())?;
    let len = data.as_slice().len();
    if len % width != 0 {
        return Err(input(format!("{name}: a buffer of {len} bytes is not a whole number of {width}-byte items")));
    }
    let cuts = (0..len / width).map(|i| (i * width, (i + 1) * width)).collect();
    Ok(Batch { sources: vec![data], cuts: Some(cuts) })
}

fn offsets_vec(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        if a.ndim() != 1 {
            return Err(input(format!("offsets: expected a 1-D array, got {} dimensions", a.ndim())));
        }
        if let Ok(a) = a.cast::<numpy::PyArray1<i64>>() {
            return a.to_vec().map_err(|e| input(format!("offsets: {e}")));
        }
        if let Ok(a) = a.cast::<numpy::PyArray1<i32>>() {
            return Ok(a.to_vec().map_err(|e| input(format!("offsets: {e}")))?.into_iter().map(i64::from).collect());
        }
        return Err(input(format!("offsets: expected int64 or int32, got dtype {}", dtype_name(a))));
    }
    obj.extract::<Vec<i64>>().map_err(|_| input(format!("offsets: expected a sequence of integers, got {}", type_name(obj))))
}

/// Validates Arrow offsets against a buffer of `len` bytes.
fn check_offsets(offs: &[i64], len: usize) -> PyResult<Vec<(usize, usize)>> {
    let Some(&first) = offs.first() else {
        return Err(input("offsets: need at least one entry (n + 1 offsets for n items)"));
    };
    if first < 0 {
        return Err(input(format!("offsets[0] = {first} is negative")));
    }
    let mut cuts = Vec::with_capacity(offs.len() - 1);
    for (i, w) in offs.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        if b < a {
            return Err(input(format!("offsets[{}] = {b} is less than offsets[{i}] = {a}", i + 1)));
        }
        if b as u64 > len as u64 {
            return Err(input(format!("offsets[{}] = {b} is past the end of the {len}-byte buffer", i + 1)));
        }
        cuts.push((a as usize, b as usize));
    }
    if first as u64 > len as u64 {
        return Err(input(format!("offsets[0] = {first} is past the end of the {len}-byte buffer")));
    }
    Ok(cuts)
}

/// Reads a set of fixed-width byte strings (trusted keys, revocation ids).
pub fn key_set<const N: usize>(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<std::collections::HashSet<[u8; N]>> {
    let mut out = std::collections::HashSet::new();
    let iter = obj.try_iter().map_err(|_| input(format!("{name}: expected an iterable of {N}-byte strings")))?;
    for (i, item) in iter.enumerate() {
        out.insert(array::<N>(&item?, &|| format!("{name}[{i}]"))?);
    }
    Ok(out)
}

/// Reads exactly `N` bytes.
pub fn array<const N: usize>(obj: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<[u8; N]> {
    let src = source(obj, what)?;
    let bytes = src.as_slice();
    bytes.try_into().map_err(|_| input(format!("{}: must be {N} bytes, got {}", what(), bytes.len())))
}
