//! The process's allocator: the system's, keeping the memory budget of chat-template
//! renders ([`gatt::template::memory`]).

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, counting each allocation against the render under way on its
/// thread, if any; past the budget the process ends with exit status 2 and a message
/// naming the template (rather than an abort once memory runs out).
pub struct Guarded;

fn check(bytes: usize) {
    if let Some(origin) = gatt::template::memory::charge(bytes) {
        use std::io::Write;
        let message = gatt::template::memory::exceeded_message(&origin);
        let _ = std::io::stderr().write_all(message.as_bytes());
        gatt::dataset::remove_live_temporaries();
        std::process::exit(2);
    }
}

// SAFETY: every call is passed to `System` unchanged; `check` only reads and writes
// thread-locals (and, once, prints and exits), never touching the memory handed out.
unsafe impl GlobalAlloc for Guarded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller's contract for `alloc`, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}
