//! The `MemoryMax=` a unit should set for a `--mem-budget`: the budget plus a fixed margin.
//!
//! Why not the plan's total alone: the cgroup limit counts more than the process's own pages.
//! The kernel charges the service for its page tables, its sockets' buffers and the page cache
//! of the files it reads (the GGUF header and vocabulary as well as the tensors), and `serve`
//! gives each connection a thread whose stack (up to 512 KiB, 64 connections) the plan, which
//! was measured on `lckv run`, does not hold. The plan already fits within the budget
//! (`--parallel auto` fills it), so the budget is the promise; the margin absorbs the rest. Set
//! too tight, the limit would not fail cleanly: the kernel would first evict the mapped weights
//! and the server would thrash reading them back from the SD card.

use crate::memory::plan::human;

/// What the memory plan does not count but the service's cgroup is charged for (see above).
pub const MEMORY_MAX_MARGIN: usize = 64 << 20;

/// The `MemoryMax=` line for `budget` bytes, in whole MiB (systemd's M is 1024²), with the
/// comment that says where it comes from.
pub fn memory_max_lines(budget: usize) -> String {
    let mib = (budget + MEMORY_MAX_MARGIN).div_ceil(1 << 20);
    format!(
        "# the budget ({}) + {} for what the plan does not count: kernel memory charged to the\n\
         # service (page tables, socket buffers), connection threads' stacks, page cache of the file\n\
         MemoryMax={mib}M",
        human(budget),
        human(MEMORY_MAX_MARGIN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_plus_margin_in_mib() {
        let lines = memory_max_lines(1 << 30);
        assert!(lines.ends_with("\nMemoryMax=1088M"), "{lines}");
        assert!(
            lines.starts_with("# the budget (1.00 GiB) + 64.0 MiB"),
            "{lines}"
        );
        // A budget that is not whole MiB rounds up.
        assert!(memory_max_lines((512 << 20) + 1).ends_with("MemoryMax=577M"));
    }
}
