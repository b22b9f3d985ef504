//! The process's allocator: the system's, plus (once training turns it on) a small cache of
//! freed blocks too large for glibc's heap.
//!
//! candle allocates a fresh buffer for every tensor. glibc maps any block above 32 MiB (its
//! largest mmap threshold) anew and unmaps it on free, so a GPT-2 step's logits and their
//! gradient (tens to hundreds of MB, every step) are page-faulted in and zeroed by the kernel each
//! time: about 5% of a 2-thread step in `perf` (`clear_page_erms`, `exc_page_fault` and the page
//! table locks). Training asks for the same few sizes step after step, so keeping a few such
//! blocks and handing them back for an allocation of the same layout removes that. The cache is
//! off until [`cache_large_blocks`] (growth streams multi-GB checkpoints and must not hold freed
//! memory), bounded in entries and bytes, and allocation-free itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks below this size are left to glibc (which keeps them in its heap after `mallopt`).
const MIN_BLOCK: usize = 32 << 20;
/// Most blocks kept at once.
const SLOTS: usize = 8;
/// Most bytes kept at once.
const MAX_BYTES: usize = 2 << 30;

/// The system allocator with an optional cache of large freed blocks.
pub struct Allocator;

static ON: AtomicBool = AtomicBool::new(false);
/// Kept blocks: (size, align, address); size 0 marks a free slot.
static KEPT: Mutex<[(usize, usize, usize); SLOTS]> = Mutex::new([(0, 0, 0); SLOTS]);

/// Keeps freed blocks of at least 32 MiB for reuse by allocations of the same layout.
pub fn cache_large_blocks() {
    ON.store(true, Ordering::Relaxed);
}

fn take(layout: Layout) -> Option<*mut u8> {
    let mut kept = KEPT.lock().ok()?;
    let slot = kept
        .iter_mut()
        .find(|(s, a, _)| *s == layout.size() && *a == layout.align())?;
    let ptr = slot.2 as *mut u8;
    *slot = (0, 0, 0);
    Some(ptr)
}

fn keep(ptr: *mut u8, layout: Layout) -> bool {
    let Ok(mut kept) = KEPT.lock() else {
        return false;
    };
    let held: usize = kept.iter().map(|(s, _, _)| s).sum();
    if held + layout.size() > MAX_BYTES {
        return false;
    }
    match kept.iter_mut().find(|(s, _, _)| *s == 0) {
        Some(slot) => {
            *slot = (layout.size(), layout.align(), ptr as usize);
            true
        }
        None => false,
    }
}

fn cached(layout: Layout) -> bool {
    layout.size() >= MIN_BLOCK && ON.load(Ordering::Relaxed)
}

// SAFETY: every block handed out comes from `System` with the same layout it is asked for
// (kept blocks are matched on size and alignment exactly), and a kept block is owned by the cache
// alone until handed out again.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if cached(layout)
            && let Some(p) = take(layout)
        {
            return p;
        }
        // SAFETY: as the caller's contract for `alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if cached(layout)
            && let Some(p) = take(layout)
        {
            // SAFETY: `p` is a live block of `layout.size()` bytes owned by the caller now.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: as the caller's contract for `alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if cached(layout) && keep(ptr, layout) {
            return;
        }
        // SAFETY: `ptr` came from `System` with `layout` (directly or through the cache).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Every block is a `System` block of the layout it was asked with, so glibc's own
        // realloc (mremap for large blocks) applies.
        // SAFETY: as the caller's contract for `realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_large_block_is_handed_back_zeroed_for_the_same_layout() {
        cache_large_blocks();
        let layout = Layout::from_size_align(MIN_BLOCK + 4096, 64).unwrap();
        // SAFETY: plain allocation and release of blocks of `layout`.
        unsafe {
            let a = Allocator.alloc(layout);
            assert!(!a.is_null());
            std::ptr::write_bytes(a, 7, layout.size());
            Allocator.dealloc(a, layout);
            let b = Allocator.alloc_zeroed(layout);
            assert_eq!(a, b, "the kept block was not reused");
            let s = std::slice::from_raw_parts(b, layout.size());
            assert!(s.iter().all(|&v| v == 0), "a reused block was not zeroed");
            // Another size is not served from the cache.
            let other = Layout::from_size_align(MIN_BLOCK + 8192, 64).unwrap();
            let c = Allocator.alloc(other);
            assert_ne!(c, b);
            Allocator.dealloc(c, other);
            Allocator.dealloc(b, layout);
        }
    }
}
