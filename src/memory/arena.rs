//! The session arena: one aligned allocation, taken once at session start and carved into the
//! KV cache and every scratch buffer. Regions are laid out first (`ArenaLayout`), so the total is
//! known and checked against the budget before anything is allocated.
//!
//! Two buffers never alias, by construction:
//! - a `Region` is branded with the id of the layout that reserved it, and `Arena::allocate`
//!   consumes that layout, so a layout makes at most one arena and a region fits only the arena
//!   of its own layout (`take` checks the brand);
//! - a `Region` is neither `Clone` nor `Copy` and `take` consumes it, so it becomes at most one
//!   buffer:
//!
//! ```compile_fail
//! use lckv::memory::arena::{Arena, ArenaLayout};
//! let mut layout = ArenaLayout::new();
//! let r = layout.reserve::<f32>(4).unwrap();
//! let arena = Arena::allocate(layout).unwrap();
//! let a = arena.take(r);
//! let b = arena.take(r); // error: `r` was moved into the first buffer
//! ```

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Error, Result};

/// Alignment of the arena and of every region: a cache line, and enough for any SIMD load.
pub const ALIGN: usize = 64;

/// Element types a region may hold: plain data for which every bit pattern (zero included) is
/// a valid value.
pub trait Plain: Copy + Send + Sync + 'static {}
impl Plain for u8 {}
impl Plain for f32 {}
impl Plain for u32 {}

/// Source of layout ids: every `ArenaLayout` gets one no other layout in the process has.
static NEXT_LAYOUT: AtomicU64 = AtomicU64::new(1);

/// A region of the arena, not yet taken: `len` elements of `T` at `offset`, reserved by the
/// layout whose id is `brand`.
#[derive(Debug)]
pub struct Region<T> {
    brand: u64,
    offset: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Region<T> {
    /// Elements in the region.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the region's elements take (without the padding to `ALIGN`).
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// Bytes the region takes in the arena: its elements padded to `ALIGN`, as reserved.
    pub fn arena_bytes(&self) -> usize {
        self.bytes().div_ceil(ALIGN) * ALIGN
    }
}

/// Lays regions out one after another, each aligned to `ALIGN`.
#[derive(Debug)]
pub struct ArenaLayout {
    id: u64,
    size: usize,
}

impl Default for ArenaLayout {
    fn default() -> Self {
        ArenaLayout {
            id: NEXT_LAYOUT.fetch_add(1, Ordering::Relaxed),
            size: 0,
        }
    }
}

impl ArenaLayout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves `len` elements of `T`.
    pub fn reserve<T: Plain>(&mut self, len: usize) -> Result<Region<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(ALIGN - 1))
            .map(|b| b / ALIGN * ALIGN)
            .ok_or_else(|| {
                Error::Budget(format!(
                    "a buffer of {len} elements overflows the address space"
                ))
            })?;
        let offset = self.size;
        self.size = self.size.checked_add(bytes).ok_or_else(|| {
            Error::Budget("the session's buffers overflow the address space".into())
        })?;
        Ok(Region {
            brand: self.id,
            offset,
            len,
            _t: PhantomData,
        })
    }

    /// Total bytes the arena will take.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// The allocation itself. Freed when the last buffer carved from it is dropped.
#[derive(Debug)]
pub struct Arena {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Id of the `ArenaLayout` this arena was allocated from: only its regions may be taken.
    brand: u64,
}

// SAFETY: the arena is a plain byte allocation; access goes through `Buf`s over disjoint regions.
unsafe impl Send for Arena {}
// SAFETY: as above; `&Arena` gives no access to the bytes.
unsafe impl Sync for Arena {}

impl Arena {
    /// Allocates `layout.size()` zeroed bytes, or fails with a budget error (never aborts). The
    /// layout is consumed: no second arena can be made from it, so its regions fit one arena.
    pub fn allocate(layout: ArenaLayout) -> Result<Arc<Arena>> {
        let size = layout.size().max(ALIGN);
        let l = Layout::from_size_align(size, ALIGN)
            .map_err(|_| Error::Budget(format!("cannot lay out an arena of {size} bytes")))?;
        // SAFETY: `l` has a non-zero size.
        let raw = unsafe { alloc_zeroed(l) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            Error::Budget(format!(
                "the system refused the session's {} MiB arena; lower the context (-c) or the batch size (-b)",
                size >> 20
            ))
        })?;
        // Touch every page now, so the whole budget is resident from the start: a board that
        // cannot give it fails here, not mid-conversation, and RSS matches the memory plan.
        // SAFETY: `ptr` points to `size` writable bytes just allocated.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, size) };
        Ok(Arc::new(Arena {
            ptr,
            layout: l,
            brand: layout.id,
        }))
    }

    pub fn size(&self) -> usize {
        self.layout.size()
    }

    /// Takes a region as a buffer. The region is consumed, so each byte belongs to at most one
    /// buffer.
    ///
    /// # Panics
    /// When the region was reserved by another layout than this arena's (a caller bug that
    /// would otherwise alias two buffers).
    pub fn take<T: Plain>(self: &Arc<Self>, region: Region<T>) -> Buf<T> {
        assert_eq!(
            region.brand, self.brand,
            "a region reserved by another layout was taken from this arena"
        );
        let bytes = region.bytes();
        // The layout placed the region inside its size; a layout's regions fit its arena.
        debug_assert!(region.offset + bytes <= self.layout.size());
        // SAFETY: the region comes from this arena's own layout (brand checked above), which
        // placed it inside `size` bytes at a multiple of ALIGN (enough for T's alignment).
        let ptr = unsafe { self.ptr.as_ptr().add(region.offset) } as *mut T;
        Buf {
            _arena: Arc::clone(self),
            ptr,
            len: region.len,
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `allocate` with this very layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A buffer carved from the arena; it keeps the arena alive.
pub struct Buf<T: Plain> {
    _arena: Arc<Arena>,
    ptr: *mut T,
    len: usize,
}

// SAFETY: a Buf is the only handle to its region, like a Box<[T]>.
unsafe impl<T: Plain> Send for Buf<T> {}
// SAFETY: shared access only yields &[T].
unsafe impl<T: Plain> Sync for Buf<T> {}

impl<T: Plain> Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: ptr/len describe this buffer's region, zero-initialised at allocation and
        // valid for any bit pattern; no other Buf covers it.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Plain> DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Plain + std::fmt::Debug> std::fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buf[{}]", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_aligned_disjoint_and_zeroed() {
        let mut l = ArenaLayout::new();
        let a = l.reserve::<f32>(3).unwrap();
        let b = l.reserve::<u8>(100).unwrap();
        let c = l.reserve::<f32>(17).unwrap();
        assert_eq!(l.size(), 64 + 128 + 128);
        let arena = Arena::allocate(l).unwrap();
        let mut a = arena.take(a);
        let mut b = arena.take(b);
        let c = arena.take(c);
        assert!(a.iter().chain(c.iter()).all(|&x| x == 0.0));
        a.fill(1.0);
        b.fill(7);
        assert!(c.iter().all(|&x| x == 0.0));
        assert_eq!(a.as_ptr() as usize % ALIGN, 0);
        assert_eq!(c.as_ptr() as usize % ALIGN, 0);
        drop(arena);
        // Buffers keep the allocation alive.
        assert_eq!(b[99], 7);
    }

    /// Two layouts put their first regions at the same offset: taking one layout's region from
    /// the other's arena would alias that arena's own buffer. The brand refuses it.
    #[test]
    #[should_panic(expected = "reserved by another layout")]
    fn a_region_of_another_layout_is_refused() {
        let mut mine = ArenaLayout::new();
        let own = mine.reserve::<f32>(16).unwrap();
        let mut other = ArenaLayout::new();
        let foreign = other.reserve::<f32>(16).unwrap();
        let arena = Arena::allocate(mine).unwrap();
        let _own = arena.take(own);
        let _alias = arena.take(foreign);
    }

    #[test]
    fn absurd_sizes_are_errors() {
        let mut l = ArenaLayout::new();
        assert!(l.reserve::<f32>(usize::MAX / 2).is_err());
    }
}
