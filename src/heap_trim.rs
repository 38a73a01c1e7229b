//! Giving freed heap back to the kernel after a burst.
//!
//! glibc's malloc returns memory to the kernel only from the top of each
//! arena. A registration storm (10,000 devices: each a REGISTER
//! transaction, a 401, a second REGISTER, DeviceInfo and Catalog queries
//! with their channels and tasks) peaks at several times the heap the idle
//! devices then need, and the long-lived records allocated during the
//! burst sit between the freed ones, so the peak stays resident: measured
//! (issue 17) 288 MB of arenas holding 81 MB in use after 10,000 devices
//! registered. `malloc_trim(0)` releases the free pages inside the arenas
//! too (`MADV_DONTNEED`), which took that process from 297 to 171 MB.
//!
//! A trim walks every free chunk under the arena locks, so it is not done
//! on a timer regardless: [`TrimPolicy`] asks for one only when the arenas
//! hold a lot of free memory and the resident size has grown since the
//! last trim, i.e. after a burst, not while a steady load keeps memory in
//! use. A thread of its own does it, off the async runtime.

use std::time::Duration;

use tracing::debug;

use crate::metrics;

/// How often the heap is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Free bytes in the arenas below which a trim is not worth its walk.
pub const MIN_FREE: u64 = 16 << 20;
/// Growth of the resident size since the last trim that makes another
/// worth it.
pub const MIN_GROWTH: u64 = 8 << 20;

/// When to trim, from two readings: resident bytes and free arena bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimPolicy {
    min_free: u64,
    min_growth: u64,
    /// Resident bytes right after the last trim (0 before the first).
    resident_after_last: u64,
}

impl TrimPolicy {
    pub fn new(min_free: u64, min_growth: u64) -> Self {
        Self {
            min_free,
            min_growth,
            resident_after_last: 0,
        }
    }

    /// Whether to trim now.
    pub fn should_trim(&self, resident: u64, free_in_arenas: u64) -> bool {
        free_in_arenas >= self.min_free
            && resident >= self.resident_after_last.saturating_add(self.min_growth)
    }

    /// Record the resident size a trim left.
    pub fn trimmed(&mut self, resident_after: u64) {
        self.resident_after_last = resident_after;
    }

    /// The resident size shrank on its own (streams ended and the top of
    /// an arena went back): measure growth from there.
    pub fn observe(&mut self, resident: u64) {
        self.resident_after_last = self.resident_after_last.min(resident);
    }
}

/// Resident bytes of this process (`/proc/self/statm`, second field).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Free bytes held by malloc's arenas (not yet given back).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_in_arenas() -> u64 {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.fordblks as u64
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim is thread-safe; it takes each arena's lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Start the trimming thread (glibc only; elsewhere the allocator is left
/// alone). It lives as long as the process.
pub fn spawn() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(|| {
                let mut policy = TrimPolicy::new(MIN_FREE, MIN_GROWTH);
                loop {
                    std::thread::sleep(CHECK_INTERVAL);
                    let Some(resident) = resident_bytes() else {
                        return;
                    };
                    policy.observe(resident);
                    if !policy.should_trim(resident, free_in_arenas()) {
                        continue;
                    }
                    trim();
                    let after = resident_bytes().unwrap_or(resident);
                    policy.trimmed(after);
                    let released = resident.saturating_sub(after);
                    let m = metrics::get();
                    m.heap_trims.inc();
                    m.heap_released_bytes.inc_by(released);
                    debug!(
                        resident_mb = resident >> 20,
                        released_mb = released >> 20,
                        "heap trimmed"
                    );
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("heap trimming thread not started: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn trims_after_a_burst_and_not_again_until_the_heap_grows() {
        let mut p = TrimPolicy::new(16 * MB, 8 * MB);
        // Little free memory: nothing to gain.
        assert!(!p.should_trim(100 * MB, 4 * MB));
        // After a burst: much free, resident grown.
        assert!(p.should_trim(300 * MB, 200 * MB));
        p.trimmed(170 * MB);
        // Free chunks stay free in malloc's view after a trim; without
        // new growth no second walk.
        assert!(!p.should_trim(172 * MB, 200 * MB));
        assert!(p.should_trim(180 * MB, 200 * MB));
    }

    #[test]
    fn growth_counts_from_the_lowest_resident_size_seen() {
        let mut p = TrimPolicy::new(16 * MB, 8 * MB);
        p.trimmed(170 * MB);
        // Streams ended; the process shrank by itself.
        p.observe(120 * MB);
        assert!(p.should_trim(130 * MB, 20 * MB));
        p.observe(200 * MB);
        assert!(p.should_trim(130 * MB, 20 * MB), "observe never raises");
    }

    #[test]
    fn reads_this_process_resident_size() {
        let r = resident_bytes().expect("statm readable");
        assert!(r > MB, "{r}");
    }
}
