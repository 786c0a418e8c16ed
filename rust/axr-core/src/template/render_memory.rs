//! The memory one chat-template render may hold.
//!
//! minijinja has no allocation hook: its operators (`~`, `+`) and its built-ins
//! build whole values in one step, so neither the fuel budget nor the output cap
//! sees a template that doubles a string 34 times before writing anything. Guarding
//! each amplifying built-in is not exact either, since the operators cannot be
//! replaced. The allocator is exact: axr-core's global allocator wraps the system
//! allocator and, on a thread inside a [`RenderBudget`], counts the bytes the thread
//! holds beyond what it held when the render began (allocated minus freed, so the
//! figure is what the render adds to the process's memory).
//!
//! An allocator cannot end a render itself (it must not unwind, and a null return
//! aborts the process), so the budget acts in two steps:
//! - Past the budget the render is marked, and it ends with the budget error at the
//!   next point where it comes back to axr's code: each step of a `range` loop, each
//!   filter or method axr installs, each write of output. The error carries the
//!   template's name and the pipeline adds the row's file and line.
//! - Past [`HARD_STOP_FACTOR`] times the budget (a template that keeps growing a value
//!   without coming back to axr's code, such as a recursive macro), the process ends
//!   at once with a message naming the template. This is the last line of defence: it
//!   keeps the machine out of swap and out of the OOM killer's choice.
//!
//! Built-ins that make one huge value in a single step (`indent`, `replace`, `join`,
//! and the `replace`/`join` string methods) first check the size they would make
//! against the room left, so they never reach the second step.
//!
//! Threads outside a render pay one thread-local read per allocation.

#![expect(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; each call is forwarded unchanged"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::marker::PhantomData;

/// How far past its budget a render may grow, without coming back to axr's code,
/// before the process is ended.
pub const HARD_STOP_FACTOR: usize = 4;

/// The system allocator, counting what a render on the current thread holds.
pub struct RenderCountingAllocator;

#[global_allocator]
static ALLOCATOR: RenderCountingAllocator = RenderCountingAllocator;

/// The current thread's render: budget (0 when no render runs), bytes held, whether the
/// budget was passed, and the template's name for the last-resort message. Const
/// initialised and without a destructor, so the allocator may read it at any time.
struct Account {
    limit: Cell<usize>,
    held: Cell<usize>,
    over: Cell<bool>,
    name: Cell<(*const u8, usize)>,
}

thread_local! {
    static ACCOUNT: Account = const {
        Account {
            limit: Cell::new(0),
            held: Cell::new(0),
            over: Cell::new(false),
            name: Cell::new((std::ptr::null(), 0)),
        }
    };
}

fn charge(bytes: usize) {
    ACCOUNT.with(|account| {
        let limit = account.limit.get();
        if limit == 0 {
            return;
        }
        let held = account.held.get().saturating_add(bytes);
        account.held.set(held);
        if held > limit {
            account.over.set(true);
            if held > limit.saturating_mul(HARD_STOP_FACTOR) {
                hard_stop(account, limit);
            }
        }
    });
}

fn refund(bytes: usize) {
    ACCOUNT.with(|account| {
        if account.limit.get() != 0 {
            account.held.set(account.held.get().saturating_sub(bytes));
        }
    });
}

#[cold]
fn hard_stop(account: &Account, limit: usize) -> ! {
    // Stop counting first: the message below allocates.
    account.limit.set(0);
    let (pointer, length) = account.name.get();
    // SAFETY: the name was borrowed by the `RenderBudget` that set `limit`, which is alive
    // (it resets the account before its borrow ends).
    let name = unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(pointer, length)) };
    let _ = writeln!(
        std::io::stderr(),
        "axr: chat template `{name}`: one render grew past {} MiB of memory without coming back to axr's \
         code (its budget is {} MiB per row; a template that builds a huge value?); stopping the process",
        (limit.saturating_mul(HARD_STOP_FACTOR)) >> 20,
        limit >> 20
    );
    std::process::abort()
}

// SAFETY: every call goes to `System` with the caller's layout and pointer unchanged;
// the accounting around it touches only a thread-local without a destructor.
unsafe impl GlobalAlloc for RenderCountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        refund(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            refund(layout.size() - new_size);
        }
        // SAFETY: forwarded as received.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

/// Counts what the current thread allocates while it lives; one per render.
pub struct RenderBudget<'name> {
    _name: PhantomData<&'name str>,
    // The account is the current thread's: the budget must end on it.
    _not_send: PhantomData<*const ()>,
}

impl<'name> RenderBudget<'name> {
    /// Start counting on this thread, with `limit` bytes (at least 1) for the template `name`.
    pub fn start(name: &'name str, limit: usize) -> Self {
        ACCOUNT.with(|account| {
            account.held.set(0);
            account.over.set(false);
            account.name.set((name.as_ptr(), name.len()));
            account.limit.set(limit.max(1));
        });
        Self {
            _name: PhantomData,
            _not_send: PhantomData,
        }
    }

    /// Whether the render has held more than its budget at some point.
    pub fn passed(&self) -> bool {
        passed()
    }
}

impl Drop for RenderBudget<'_> {
    fn drop(&mut self) {
        ACCOUNT.with(|account| {
            account.limit.set(0);
            account.held.set(0);
            account.over.set(false);
            account.name.set((std::ptr::null(), 0));
        });
    }
}

/// Whether the render running on this thread has passed its budget.
pub fn passed() -> bool {
    ACCOUNT.with(|account| account.over.get())
}

/// Bytes the render on this thread may still allocate (`usize::MAX` outside a render).
pub fn room() -> usize {
    ACCOUNT.with(|account| match account.limit.get() {
        0 => usize::MAX,
        limit => limit.saturating_sub(account.held.get()),
    })
}

/// The error that ends a render past its budget; `render` replaces it with the full message.
pub fn check() -> Result<(), minijinja::Error> {
    if passed() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "the render passed its memory budget",
        ));
    }
    Ok(())
}

/// Refuses a value of `bytes` that would not fit in what the render may still allocate.
pub fn reserve(bytes: usize) -> Result<(), minijinja::Error> {
    check()?;
    if bytes > room() {
        ACCOUNT.with(|account| account.over.set(true));
        return check();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_the_thread_holds_during_the_budget_only() {
        let before = vec![0_u8; 1 << 20];
        let budget = RenderBudget::start("t", 4 << 20);
        let small = vec![1_u8; 1 << 20];
        assert!(!budget.passed());
        assert!(room() <= 3 << 20, "{}", room());
        drop(small);
        assert!(room() > 3 << 20, "{}", room());
        let big = vec![2_u8; 5 << 20];
        assert!(budget.passed());
        drop(big);
        // Once passed, the render stays marked: it ends at its next check.
        assert!(budget.passed() && check().is_err());
        drop(budget);
        assert!(!passed() && room() == usize::MAX);
        drop(before);
    }

    #[test]
    fn other_threads_are_not_counted() {
        let budget = RenderBudget::start("t", 1 << 20);
        std::thread::spawn(|| drop(vec![0_u8; 8 << 20])).join().unwrap();
        assert!(!budget.passed());
    }

    #[test]
    fn reserve_refuses_what_would_not_fit() {
        let budget = RenderBudget::start("t", 1 << 20);
        assert!(reserve(1 << 10).is_ok());
        assert!(reserve(2 << 20).is_err());
        assert!(budget.passed());
    }
}
