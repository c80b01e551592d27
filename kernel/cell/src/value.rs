//! How a cell's final value is shown.

use crate::output::print_content;
use std::any::TypeId;
use std::sync::OnceLock;

/// How evcxr shows a cell's final value: evcxr calls `value.evcxr_display()`, and
/// this blanket implementation answers for every `Debug` type (evcxr would
/// otherwise compile each cell twice, once to try `evcxr_display` and once with
/// `Debug`). A polars `DataFrame` (or a reference to one) shows as the same HTML
/// table as `%head`, once `ferrolab_cell_tables` has registered how (this crate
/// holds no polars). `:fmt {:#?}` and `:types` reach it through
/// `FERROLAB_DISPLAY`.
#[doc(hidden)]
pub trait ShowValue {
    /// Prints the value as evcxr's MIME blocks.
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> ShowValue for T {
    fn evcxr_display(&self) {
        if let (Some(frames), Some(kind)) = (FRAMES.get(), __frame_kind::<T>()) {
            // Safety: `T` is the type registered under `kind`, as their ids say.
            if unsafe { (frames.show)((self as *const T).cast::<()>(), kind) } {
                return;
            }
        }
        show_debug(&self, std::any::type_name::<T>());
    }
}

/// The part of [`ShowValue`] that needs no type: compiled once here, not in
/// every cell.
fn show_debug(value: &dyn std::fmt::Debug, type_name: &str) {
    let mode = std::env::var("FERROLAB_DISPLAY").unwrap_or_default();
    let mut text = if mode.contains("pretty") {
        format!("{value:#?}")
    } else {
        format!("{value:?}")
    };
    if mode.contains("types") {
        text = format!(": {type_name} = {text}");
    }
    print_content(&[("text/plain", text)]);
}

/// Shows a value of the `kind`th registered type (`value` points at one);
/// `false` when it could not, and the value is shown with `Debug` instead.
pub type ShowFrame = unsafe fn(value: *const (), kind: usize) -> bool;

struct Frames {
    ids: Vec<TypeId>,
    show: ShowFrame,
}

static FRAMES: OnceLock<Frames> = OnceLock::new();

/// Registers the types shown as tables (a `DataFrame`, `&DataFrame`, …) and how:
/// `ferrolab_cell_tables` calls it in the cells that use it. The first registration
/// stays.
#[doc(hidden)]
pub fn __register_frames(ids: Vec<TypeId>, show: ShowFrame) {
    let _ = FRAMES.set(Frames { ids, show });
}

/// Which registered table type `T` is, if any.
#[doc(hidden)]
pub fn __frame_kind<T: ?Sized>() -> Option<usize> {
    let id = type_id_of::<T>();
    FRAMES.get()?.ids.iter().position(|known| *known == id)
}

/// The `TypeId` of any type, borrowed or not (`TypeId::of` wants `'static`). The
/// lifetime is erased only to compare with `'static` types, which lifetimes cannot
/// tell apart anyway.
fn type_id_of<T: ?Sized>() -> TypeId {
    trait NonStaticAny {
        fn type_id(&self) -> TypeId
        where
            Self: 'static;
    }
    impl<T: ?Sized> NonStaticAny for std::marker::PhantomData<T> {
        fn type_id(&self) -> TypeId
        where
            Self: 'static,
        {
            TypeId::of::<T>()
        }
    }
    let phantom = std::marker::PhantomData::<T>;
    let erased: &dyn NonStaticAny = &phantom;
    // Safety: only the trait object's lifetime bound changes; `type_id` reads no
    // data, so nothing can outlive what it borrows.
    let erased: &(dyn NonStaticAny + 'static) = unsafe { std::mem::transmute(erased) };
    erased.type_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_types_have_their_own_ids() {
        assert_eq!(type_id_of::<i32>(), TypeId::of::<i32>());
        assert_eq!(type_id_of::<&str>(), TypeId::of::<&'static str>());
        assert_ne!(type_id_of::<&i32>(), TypeId::of::<i32>());
        assert_ne!(type_id_of::<String>(), TypeId::of::<&'static String>());
    }
}
