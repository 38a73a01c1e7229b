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
//! hold a lot of free memory and, since the last trim, either the resident
//! size grew (a burst is being allocated) or the free memory grew (a
//! burst's garbage was freed: the SIP layer keeps each answered
//! transaction's last response for 64×T1 = 32 s, so a storm's bulk is
//! freed half a minute after it, when the resident size no longer moves).
//! A thread of its own does it, off the async runtime.

use std::time::Duration;

use tracing::debug;

use crate::metrics;

/// How often the heap is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Free bytes in the arenas below which a trim is not worth its walk.
pub const MIN_FREE: u64 = 16 << 20;
/// Growth of the resident size, or of the free arena bytes, since the
/// last trim that makes another worth it.
pub const MIN_GROWTH: u64 = 8 << 20;

/// When to trim, from two readings: resident bytes and free arena bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimPolicy {
    min_free: u64,
    min_growth: u64,
    /// Resident bytes right after the last trim (0 before the first).
    resident_after_last: u64,
    /// Free arena bytes right after the last trim. A trim leaves them
    /// free in malloc's view (only their pages went back), so this is the
    /// level new garbage is measured from.
    free_after_last: u64,
}

impl TrimPolicy {
    pub fn new(min_free: u64, min_growth: u64) -> Self {
        Self {
            min_free,
            min_growth,
            resident_after_last: 0,
            free_after_last: 0,
        }
    }

    /// Whether to trim now.
    pub fn should_trim(&self, resident: u64, free_in_arenas: u64) -> bool {
        free_in_arenas >= self.min_free
            && (resident >= self.resident_after_last.saturating_add(self.min_growth)
                || free_in_arenas >= self.free_after_last.saturating_add(self.min_growth))
    }

    /// Record the resident size and free arena bytes a trim left.
    pub fn trimmed(&mut self, resident_after: u64, free_after: u64) {
        self.resident_after_last = resident_after;
        self.free_after_last = free_after;
    }

    /// The resident size shrank on its own (streams ended and the top of
    /// an arena went back): measure growth from there.
    pub fn observe(&mut self, resident: u64, free_in_arenas: u64) {
        self.resident_after_last = self.resident_after_last.min(resident);
        // Freed memory reused by new allocations: garbage counts from the
        // new, lower level.
        self.free_after_last = self.free_after_last.min(free_in_arenas);
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

/// Free bytes held by malloc's arenas (not yet given back); also
/// published with the bytes in use, for operators to see fragmentation.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_in_arenas() -> u64 {
    // SAFETY: mallinfo2 only reads malloc's statistics.
    let info = unsafe { libc::mallinfo2() };
    let m = metrics::get();
    m.heap_in_use_bytes
        .set(i64::try_from(info.uordblks).unwrap_or(i64::MAX));
    m.heap_free_bytes
        .set(i64::try_from(info.fordblks).unwrap_or(i64::MAX));
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
                    let free = free_in_arenas();
                    policy.observe(resident, free);
                    if !policy.should_trim(resident, free) {
                        continue;
                    }
                    trim();
                    let after = resident_bytes().unwrap_or(resident);
                    policy.trimmed(after, free_in_arenas());
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
        p.trimmed(170 * MB, 200 * MB);
        // Free chunks stay free in malloc's view after a trim; without
        // new growth no second walk.
        assert!(!p.should_trim(172 * MB, 200 * MB));
        assert!(p.should_trim(180 * MB, 200 * MB));
    }

    #[test]
    fn trims_again_when_a_bursts_garbage_is_freed_later() {
        let mut p = TrimPolicy::new(16 * MB, 8 * MB);
        // During the storm: trimmed while its transactions were still held.
        p.trimmed(130 * MB, 30 * MB);
        p.observe(130 * MB, 30 * MB);
        assert!(!p.should_trim(130 * MB, 34 * MB));
        // Half a minute later they are freed: resident unchanged, free up.
        p.observe(130 * MB, 90 * MB);
        assert!(p.should_trim(130 * MB, 90 * MB));
        p.trimmed(60 * MB, 90 * MB);
        p.observe(60 * MB, 90 * MB);
        assert!(!p.should_trim(60 * MB, 90 * MB), "once per burst");
        // Reused, then freed again: counts from the lowest level seen.
        p.observe(64 * MB, 70 * MB);
        assert!(!p.should_trim(64 * MB, 75 * MB));
        assert!(p.should_trim(64 * MB, 80 * MB));
    }

    #[test]
    fn growth_counts_from_the_lowest_resident_size_seen() {
        let mut p = TrimPolicy::new(16 * MB, 8 * MB);
        p.trimmed(170 * MB, 20 * MB);
        // Streams ended; the process shrank by itself.
        p.observe(120 * MB, 20 * MB);
        assert!(p.should_trim(130 * MB, 20 * MB));
        p.observe(200 * MB, 20 * MB);
        assert!(p.should_trim(130 * MB, 20 * MB), "observe never raises");
    }

    #[test]
    fn reads_this_process_resident_size() {
        let r = resident_bytes().expect("statm readable");
        assert!(r > MB, "{r}");
    }
}
