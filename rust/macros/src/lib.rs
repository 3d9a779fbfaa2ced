//! `#[guarded]`: no panic of hopgate crosses into Python as a `PanicException`.
//!
//! PyO3 turns a Rust panic that reaches the FFI boundary into
//! `pyo3_runtime.PanicException`, a `BaseException` that `except Exception` does not
//! catch, so to a Python service it looks like a crash. Put `#[guarded]` above a
//! `#[pymethods]` block or a `#[pyfunction]` and every function body in it runs
//! under `crate::errors::guard`, which catches the panic (from the calling thread,
//! from a `py.detach` closure, or re-raised by rayon from a worker) and raises
//! `hopgate.InternalError` instead.
//!
//! A body returning `PyResult<T>` is wrapped as it is; any other return type `T`
//! becomes `PyResult<T>` (PyO3 accepts both). One attribute per block keeps the
//! guard impossible to forget when a method is added.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, Block, Item, ReturnType, Signature, Type};

/// Wraps every function body of the item (an `impl` block or a function) in
/// `crate::errors::guard`.
#[proc_macro_attribute]
pub fn guarded(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(proc_macro2::Span::call_site(), "#[guarded] takes no arguments")
            .to_compile_error()
            .into();
    }
    let mut item = parse_macro_input!(item as Item);
    match &mut item {
        Item::Impl(block) => {
            for member in &mut block.items {
                if let syn::ImplItem::Fn(f) = member {
                    wrap(&mut f.sig, &mut f.block);
                }
            }
        }
        Item::Fn(f) => wrap(&mut f.sig, &mut f.block),
        other => {
            return syn::Error::new_spanned(other, "#[guarded] goes on an impl block or a function")
                .to_compile_error()
                .into();
        }
    }
    quote!(#item).into()
}

/// True when `ty` is spelled `PyResult<...>`.
fn is_py_result(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "PyResult"))
}

fn wrap(sig: &mut Signature, block: &mut Block) {
    let body = &*block;
    let (output, wrapped) = match &sig.output {
        ReturnType::Type(_, ty) if is_py_result(ty) => {
            (quote!(-> #ty), quote!({ crate::errors::guard(|| -> #ty #body) }))
        }
        ReturnType::Type(_, ty) => (
            quote!(-> ::pyo3::PyResult<#ty>),
            quote!({ crate::errors::guard(|| -> ::pyo3::PyResult<#ty> { ::std::result::Result::Ok((|| -> #ty #body)()) }) }),
        ),
        ReturnType::Default => (
            quote!(-> ::pyo3::PyResult<()>),
            quote!({ crate::errors::guard(|| -> ::pyo3::PyResult<()> { ::std::result::Result::Ok((|| #body)()) }) }),
        ),
    };
    sig.output = syn::parse2(output).expect("a return type");
    *block = syn::parse2(wrapped).expect("a block");
}
