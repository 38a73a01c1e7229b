//! CPU time of transcoder threads and decoder processes, read from Linux
//! procfs (`proc(5)`: fields 14 and 15 of `stat`, utime and stime, in
//! clock ticks). Reading a file needs no `unsafe` and no clock crate;
//! elsewhere than Linux the readings are absent and the metric stays 0.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux ABI camgate targets.
const TICKS_PER_SECOND: f64 = 100.0;
/// How often a meter reads procfs while work goes on.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// utime + stime of a `stat` line, in seconds.
pub fn parse_stat(line: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself; the fields after the last ')' are fixed.
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // rest starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

fn read(path: &str) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| parse_stat(&s))
}

/// Whose CPU time a meter reads.
#[derive(Debug, Clone, Copy)]
pub enum CpuSource {
    /// The thread calling [`CpuMeter::sample`].
    CurrentThread,
    /// A child process.
    Process(u32),
}

impl CpuSource {
    fn read(self) -> Option<f64> {
        match self {
            CpuSource::CurrentThread => read("/proc/thread-self/stat"),
            CpuSource::Process(pid) => read(&format!("/proc/{pid}/stat")),
        }
    }
}

/// Adds the CPU time a thread or process uses to a counter, in steps.
pub struct CpuMeter {
    source: CpuSource,
    counter: Counter<f64, std::sync::atomic::AtomicU64>,
    last: f64,
    next_sample: Instant,
}

impl CpuMeter {
    pub fn new(source: CpuSource, counter: Counter<f64, std::sync::atomic::AtomicU64>) -> Self {
        Self {
            last: source.read().unwrap_or(0.0),
            source,
            counter,
            next_sample: Instant::now() + SAMPLE_EVERY,
        }
    }

    /// Read now and add what was used since the last reading.
    pub fn sample(&mut self) {
        if let Some(now) = self.source.read()
            && now > self.last
        {
            self.counter.inc_by(now - self.last);
            self.last = now;
        }
        self.next_sample = Instant::now() + SAMPLE_EVERY;
    }

    /// [`sample`](Self::sample) at most once a second.
    pub fn sample_if_due(&mut self) {
        if Instant::now() >= self.next_sample {
            self.sample();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_hostile_command_name() {
        let line =
            "4242 (ff mpeg) x)) S 1 4242 4242 0 -1 4194560 1085 0 0 0 250 75 0 0 20 0 1 0 3 0 0";
        assert_eq!(parse_stat(line), Some(3.25));
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parens at all"), None);
    }

    #[test]
    fn own_thread_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(CpuSource::CurrentThread.read().is_some());
            let me = CpuSource::Process(std::process::id()).read();
            assert!(me.is_some_and(|s| s >= 0.0));
        }
    }
}
