//! Conversions from Python values to what the core takes: bytes-like objects, batches
//! (a list of bytes-like objects, or one buffer plus Arrow-style offsets), fixed-size
//! byte arrays and key sets, integers in range, the text form and signature rules. Every other module
//! of the bindings uses these; this one uses none of them.
//!
//! Zero-copy rules (also in docs/FORMAT.md §2): memory is borrowed, and read
//! with the GIL released, only when Python cannot change it during the call:
//! `bytes` objects (immutable), `hopgate.Chain` objects (immutable), and numpy arrays
//! or other buffers whose `writeable` flag is off (a read-only view is the caller's
//! promise that nobody writes through another alias meanwhile). Anything writable
//! (`bytearray`, writable numpy arrays, writable memoryviews) is copied under the GIL
//! first: a copy is cheap next to a signature and removes any data race with Python
//! code (a writer in C that releases the GIL can still tear the copy; it is then
//! the digest or verdict of the bytes read, never a read out of bounds). The one
//! exception, [`Writable::InPlace`], is the data buffer of the hashing functions.
//! Offsets are always copied.
//!
//! What is a bytes-like object here is what `hopgate.reference` accepts (one rule,
//! tested by the fuzzers in fuzz/python): a buffer whose items are single bytes
//! (any 1-byte dtype or format: uint8, int8, bool, 'c', ...), C-contiguous, of any
//! shape (read in C order). A strided view is refused rather than silently copied.
//!
//! Generic buffers are reached through `memoryview` and `numpy.frombuffer`, which
//! speak the buffer protocol on every Python version, so the abi3 wheel for Python
//! ≥ 3.9 stays zero-copy even though the limited API only gained it in 3.11.

use numpy::{PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes};

use crate::errors::{input, to_py};

/// Reads the bytes an immutable object holds (see [`Source::Held`]).
pub type HeldBytes<'py> = for<'a> fn(&'a Bound<'py, PyAny>) -> &'a [u8];

/// One bytes-like object, borrowed or copied.
pub enum Source<'py> {
    /// An immutable `bytes`.
    Bytes(Bound<'py, PyBytes>),
    /// An object that holds immutable bytes of its own (a `Chain`), read in place.
    Held(Bound<'py, PyAny>, HeldBytes<'py>),
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
            Source::Held(obj, bytes) => bytes(obj),
            // `Array` is only built from C-contiguous arrays, so `as_slice` succeeds.
            Source::Array(a) => a.as_slice().unwrap_or(&[]),
            Source::Owned(v) => v,
        }
    }
}

/// `module.name`, imported once.
fn cached<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    Ok(cell.get_or_try_init(py, || -> PyResult<_> { Ok(py.import(module)?.getattr(name)?.unbind()) })?.bind(py))
}

/// A generic buffer as a flat uint8 array (borrowing its memory), if it holds
/// C-contiguous single bytes.
fn buffer_array<'py>(obj: &Bound<'py, PyAny>, what: &dyn Fn() -> String) -> PyResult<Bound<'py, PyUntypedArray>> {
    static MEMORYVIEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static FROMBUFFER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = obj.py();
    let view = cached(py, &MEMORYVIEW, "builtins", "memoryview")?
        .call1((obj,))
        .map_err(|_| input(format!("{}: expected a bytes-like object, got {}", what(), type_name(obj))))?;
    let itemsize: usize = view.getattr("itemsize")?.extract()?;
    if itemsize != 1 {
        let format: String = view.getattr("format")?.extract()?;
        return Err(input(format!(
            "{}: expected a buffer of single bytes, got items of {itemsize} bytes (format {format:?})",
            what()
        )));
    }
    if !view.getattr("c_contiguous")?.extract::<bool>()? {
        return Err(not_contiguous(what));
    }
    // A 1-byte, C-contiguous buffer is its bytes in order: `frombuffer` views them.
    let flat = cached(py, &FROMBUFFER, "numpy", "frombuffer")?.call1((view.call_method1("cast", ("B",))?, "uint8"))?;
    Ok(flat.cast_into::<PyUntypedArray>()?)
}

fn not_contiguous(what: &dyn Fn() -> String) -> PyErr {
    input(format!(
        "{}: the buffer is not C-contiguous (a strided view); pass numpy.ascontiguousarray(...) or bytes",
        what()
    ))
}

/// True iff `obj` exposes the buffer protocol (a single buffer, not a list of items).
fn is_buffer(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    static MEMORYVIEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() || obj.cast::<PyUntypedArray>().is_ok() {
        return Ok(true);
    }
    Ok(cached(obj.py(), &MEMORYVIEW, "builtins", "memoryview")?.call1((obj,)).is_ok())
}

/// How memory that Python can change during a call is read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Writable {
    /// Copied under the GIL first (every input whose bytes decide something).
    Copy,
    /// Read where it is (the hashing functions' data: a copy would cost as much as the
    /// hash). A writer that changes it during the call changes the digests of the
    /// messages it touches, to those of some mix of old and new bytes; lengths and
    /// offsets are fixed before the GIL is released (a `bytearray` cannot be resized
    /// while it is exported), so nothing is read out of bounds.
    InPlace,
}

/// Reads one bytes-like object; `what` names it in errors. (A `Chain` is not
/// bytes-like: pass `bytes(chain)`; only chain arguments take one, `chain_source`.)
pub fn source<'py>(obj: &Bound<'py, PyAny>, what: &dyn Fn() -> String) -> PyResult<Source<'py>> {
    source_with(obj, what, Writable::Copy)
}

/// [`source`], writable memory read as `writable` says.
pub fn source_with<'py>(
    obj: &Bound<'py, PyAny>,
    what: &dyn Fn() -> String,
    writable: Writable,
) -> PyResult<Source<'py>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Source::Bytes(b.clone()));
    }
    if writable == Writable::Copy {
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(Source::Owned(b.to_vec()));
        }
    }
    let array = match obj.cast::<PyUntypedArray>() {
        Ok(a) => {
            if a.dtype().itemsize() != 1 {
                return Err(input(format!(
                    "{}: expected a buffer of single bytes, got dtype {}",
                    what(),
                    dtype_name(a)
                )));
            }
            if !a.is_c_contiguous() {
                return Err(not_contiguous(what));
            }
            a.clone()
        }
        Err(_) => buffer_array(obj, what)?,
    };
    // Any 1-byte dtype (int8, bool, 'S1', ...) is bytes: view it as uint8, flat.
    let flat = array
        .call_method1("view", ("uint8",))
        .and_then(|a| a.call_method1("reshape", (-1,)))
        .and_then(|a| Ok(a.cast_into::<numpy::PyArray1<u8>>()?))
        .map_err(|_| input(format!("{}: cannot read dtype {} as bytes", what(), dtype_name(&array))))?;
    let writeable: bool = flat.getattr("flags")?.getattr("writeable")?.extract()?;
    if writeable && writable == Writable::Copy {
        Ok(Source::Owned(flat.to_vec().map_err(|e| input(format!("{}: {e}", what())))?))
    } else {
        // rust-numpy's borrow flags keep Rust code from writing to it meanwhile (an `out=`
        // array that is this one is refused); Python writers are what `Writable` says.
        Ok(Source::Array(flat.try_readonly().map_err(|e| input(format!("{}: {e}", what())))?))
    }
}

/// The Python type name of `obj`, for error messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

fn dtype_name(array: &Bound<'_, PyUntypedArray>) -> String {
    array.getattr("dtype").and_then(|d| d.str()).map(|s| s.to_string()).unwrap_or_else(|_| "?".into())
}

/// A batch: one source per item, one source cut by offsets, or one source of
/// fixed-width items.
pub struct Batch<'py> {
    sources: Vec<Source<'py>>,
    layout: Layout,
}

enum Layout {
    Items,
    /// Offsets checked by `hash::Cut::new` when the batch was made.
    Offsets(Offsets),
    Fixed(usize),
}

/// Offsets, copied once as int64 and checked (`hash::Cut::new`) when the batch is made.
/// Never read in place: a read-only view can still change through a writable alias, and
/// offsets that changed after they were checked could cut out of bounds.
struct Offsets(Vec<i64>);

impl Offsets {
    fn as_slice(&self) -> &[i64] {
        &self.0
    }
}

/// A batch's messages as the hashing functions read them.
pub enum Messages<'a> {
    /// A list's items.
    Slices(Vec<&'a [u8]>),
    /// One buffer cut by offsets, read in place.
    Cut(hopgate_core::hash::Cut<'a>),
}

impl Batch<'_> {
    /// One slice per item.
    pub fn slices(&self) -> Vec<&[u8]> {
        let all = || self.sources.first().map(Source::as_slice).unwrap_or(&[]);
        match &self.layout {
            Layout::Items => self.sources.iter().map(Source::as_slice).collect(),
            // Checked when the batch was made: every cut lies in the buffer.
            Layout::Offsets(offs) => offs.as_slice().windows(2).map(|w| &all()[w[0] as usize..w[1] as usize]).collect(),
            Layout::Fixed(width) => all().chunks_exact(*width).collect(),
        }
    }

    /// The messages, without a slice per item when the batch is one buffer.
    pub fn messages(&self) -> PyResult<Messages<'_>> {
        match &self.layout {
            Layout::Offsets(offs) => {
                let all = self.sources.first().map(Source::as_slice).unwrap_or(&[]);
                // The copied offsets were checked against this buffer, whose length is fixed
                // (bytes, an exported buffer): this check cannot fail, and costs a pass.
                let cut = hopgate_core::hash::Cut::new(all, offs.as_slice()).map_err(|e| input(e.to_string()))?;
                Ok(Messages::Cut(cut))
            }
            _ => Ok(Messages::Slices(self.slices())),
        }
    }

    /// Whether any item's bytes lie in `range` (addresses): `out=` must not be read as data.
    pub fn overlaps(&self, range: std::ops::Range<usize>) -> bool {
        self.sources.iter().map(Source::as_slice).any(|s| {
            let start = s.as_ptr() as usize;
            !s.is_empty() && start < range.end && range.start < start + s.len()
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        match &self.layout {
            Layout::Items => self.sources.len(),
            Layout::Offsets(offs) => offs.as_slice().len() - 1,
            Layout::Fixed(width) => self.sources.first().map_or(0, |s| s.as_slice().len() / width),
        }
    }
}

/// How one item of a list is read: [`source`], or `chain::chain_source` for chains.
pub type Read = for<'py> fn(&Bound<'py, PyAny>, &dyn Fn() -> String) -> PyResult<Source<'py>>;

/// [`Read`] as a closure (for a reader that captures how writable memory is read).
type ReadItem<'r, 'py> = &'r dyn Fn(&Bound<'py, PyAny>, &dyn Fn() -> String) -> PyResult<Source<'py>>;

fn items<'py>(obj: &Bound<'py, PyAny>, name: &str, read: ReadItem<'_, 'py>) -> PyResult<Vec<Source<'py>>> {
    if is_buffer(obj)? {
        return Err(input(format!(
            "{name}: expected a list of bytes-like objects (one buffer needs `offsets`), got {}",
            type_name(obj)
        )));
    }
    if obj.is_instance_of::<pyo3::types::PyString>() {
        return Err(input(format!("{name}: expected a list of bytes-like objects, got str")));
    }
    let iter = obj.try_iter().map_err(|_| input(format!("{name}: expected a list, got {}", type_name(obj))))?;
    iter.enumerate().map(|(i, item)| read(&item?, &|| format!("{name}[{i}]"))).collect()
}

/// A batch of variable-length items: a list of bytes-like objects, or one buffer
/// cut by `offsets` (n + 1 non-decreasing integers, Arrow layout).
pub fn variable<'py>(obj: &Bound<'py, PyAny>, offsets: Option<&Bound<'py, PyAny>>, name: &str) -> PyResult<Batch<'py>> {
    variable_with(obj, offsets, name, source)
}

/// [`variable`] for the hashing functions: one writable buffer cut by offsets is read
/// in place ([`Writable::InPlace`]). The items of a list are read as [`source`] reads
/// them: each is a Python object anyway, and a small copy costs less than a view.
pub fn variable_in_place<'py>(
    obj: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    name: &str,
) -> PyResult<Batch<'py>> {
    batch(obj, offsets, name, &|o, what| source(o, what), Writable::InPlace)
}

/// [`variable`] with list items read by `read`.
pub fn variable_with<'py>(
    obj: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    name: &str,
    read: Read,
) -> PyResult<Batch<'py>> {
    batch(obj, offsets, name, &|o, what| read(o, what), Writable::Copy)
}

fn batch<'py>(
    obj: &Bound<'py, PyAny>,
    offsets: Option<&Bound<'py, PyAny>>,
    name: &str,
    read: ReadItem<'_, 'py>,
    writable: Writable,
) -> PyResult<Batch<'py>> {
    let Some(offsets) = offsets else {
        return Ok(Batch { sources: items(obj, name, read)?, layout: Layout::Items });
    };
    let data = source_with(obj, &|| name.to_string(), writable)?;
    let offs = read_offsets(offsets)?;
    hopgate_core::hash::Cut::new(data.as_slice(), offs.as_slice()).map_err(|e| input(e.to_string()))?;
    Ok(Batch { sources: vec![data], layout: Layout::Offsets(offs) })
}

/// A batch of fixed-width items (signatures, keys): a list, or one buffer of
/// `n * width` bytes (e.g. a numpy `(n, width)` uint8 array).
pub fn fixed<'py>(obj: &Bound<'py, PyAny>, width: usize, name: &str) -> PyResult<Batch<'py>> {
    if !is_buffer(obj)? {
        return Ok(Batch { sources: items(obj, name, &|o, what| source(o, what))?, layout: Layout::Items });
    }
    let data = source(obj, &|| name.to_string())?;
    let len = data.as_slice().len();
    if len % width != 0 {
        return Err(input(format!("{name}: a buffer of {len} bytes is not a whole number of {width}-byte items")));
    }
    Ok(Batch { sources: vec![data], layout: Layout::Fixed(width) })
}

/// Offsets copied as `i64`: a 1-D array of any integer dtype, or anything `numpy.asarray`
/// makes one of (a list of ints). Strided arrays are fine. A `uint64` offset beyond
/// `i64::MAX` is kept as `i64::MAX`: past any buffer's end.
fn read_offsets(obj: &Bound<'_, PyAny>) -> PyResult<Offsets> {
    static ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let array = match obj.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => cached(obj.py(), &ASARRAY, "numpy", "asarray")?
            .call1((obj,))
            .ok()
            .and_then(|a| a.cast_into::<PyUntypedArray>().ok())
            .ok_or_else(|| input(format!("offsets: expected an array of integers, got {}", type_name(obj))))?,
    };
    if array.ndim() != 1 {
        return Err(input(format!("offsets: must be 1-D, got {} dimensions", array.ndim())));
    }
    if array.len() == 0 {
        // Checked before the dtype: `numpy.asarray([])` is float64.
        return Err(input("offsets: need at least one entry (n + 1 offsets for n items)"));
    }
    let kind = array.dtype().kind();
    if kind != b'i' && kind != b'u' {
        return Err(input(format!("offsets: must be integers, got dtype {}", dtype_name(&array))));
    }
    let read = |e: numpy::BorrowError| input(format!("offsets: {e}"));
    if let Ok(a) = array.cast::<numpy::PyArray1<i64>>() {
        return Ok(Offsets(a.try_readonly().map_err(read)?.as_array().to_vec()));
    }
    if let Ok(a) = array.cast::<numpy::PyArray1<u64>>() {
        let values = a.try_readonly().map_err(read)?;
        return Ok(Offsets(values.as_array().iter().map(|&v| i64::try_from(v).unwrap_or(i64::MAX)).collect()));
    }
    // Every other integer dtype fits in int64 exactly.
    let wide = array.call_method1("astype", ("int64",))?.cast_into::<numpy::PyArray1<i64>>()?;
    let wide = wide.try_readonly().map_err(read)?;
    Ok(Offsets(wide.as_array().to_vec()))
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

/// An integer argument `name` as a `T`, else `InputError` saying the range.
pub fn int<T: for<'a, 'py> FromPyObject<'a, 'py>>(obj: &Bound<'_, PyAny>, name: &str, range: &str) -> PyResult<T> {
    obj.extract::<T>().map_err(|_| input(format!("{name}: expected an integer in {range}")))
}

/// [`int`] of an optional argument.
pub fn opt_int<T: for<'a, 'py> FromPyObject<'a, 'py>>(
    obj: Option<&Bound<'_, PyAny>>,
    name: &str,
    range: &str,
) -> PyResult<Option<T>> {
    obj.map(|o| int::<T>(o, name, range)).transpose()
}

/// The range of a u64, as errors say it.
pub const U64: &str = "0..=2**64-1";
/// The range of a u8.
pub const U8: &str = "0..=255";

/// Defines `fn $name(&Bound<PyAny>) -> PyResult<u64>` for `#[pyo3(from_py_with = ..)]`:
/// an integer argument `$arg` in 0..=2**64-1, else `InputError` naming it (as the
/// reference's `check_uint` does; PyO3's own u64 conversion would raise OverflowError).
macro_rules! u64_arg {
    ($name:ident, $arg:literal) => {
        pub(crate) fn $name(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
            crate::convert::int(obj, $arg, crate::convert::U64)
        }
    };
}
pub(crate) use u64_arg;

/// A `str` argument `name` as UTF-8, else `InputError` (a lone surrogate cannot be
/// encoded; PyO3's own conversion would raise `UnicodeEncodeError`).
pub fn text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    match obj.cast::<pyo3::types::PyString>() {
        Ok(s) => s.extract::<String>().map_err(|_| input(format!("{name}: not encodable as UTF-8"))),
        Err(_) => Err(input(format!("{name}: expected str, got {}", type_name(obj)))),
    }
}

/// A `rule=` argument: a `str` naming one of the core's signature rules
/// (`hopgate_core::sig::Rule`). Anything else is an `InputError` that lists the three,
/// raised as it is (PyO3 rewraps only a `TypeError` from an argument's extraction).
pub struct RuleArg(pub hopgate_core::sig::Rule);

impl FromPyObject<'_, '_> for RuleArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> PyResult<Self> {
        use hopgate_core::sig::Rule;
        let name = match obj.cast::<pyo3::types::PyString>() {
            Ok(s) => s.to_string_lossy().into_owned(),
            Err(_) => return Err(to_py(Rule::unknown(&format!("an object of type {}", type_name(&obj))))),
        };
        Rule::from_name(&name).map(RuleArg).map_err(to_py)
    }
}

/// The current unix time in seconds (0 before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The text form as a `str`, or ASCII bytes (what an HTTP header gives), as the
/// reference takes it. A lone surrogate becomes U+FFFD, which the decoder refuses
/// as not base64url (`MalformedError`), like any other foreign character.
pub fn text_arg(text: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = text.cast::<pyo3::types::PyString>() {
        return Ok(s.to_string_lossy().into_owned());
    }
    if let Ok(src) = source(text, &|| "text".into()) {
        return String::from_utf8(src.as_slice().to_vec()).ok().filter(|s| s.is_ascii()).ok_or_else(|| {
            to_py(hopgate_core::Error::Malformed { field: "text", offset: 0, reason: "not ASCII base64url" })
        });
    }
    Err(input(format!("text: expected str, got {}", type_name(text))))
}
