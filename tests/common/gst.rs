//! What GStreamer's command-line tools print, read by the tests that run
//! them.

/// Whether a failed `gst-launch-1.0 … rtspsrc … num-buffers=N` run failed
/// only by rtspsrc's own shutdown race, after the whole stream was played.
///
/// At EOS gst-launch sets the pipeline to NULL: PLAYING→PAUSED queues a
/// PAUSE on rtspsrc's thread and PAUSED→READY at once queues CLOSE, which
/// flushes the connection under the PAUSE being written. The PAUSE never
/// reaches the server (seen with `GST_DEBUG=rtspsrc:6`: "sending cmd
/// CLOSE … connection flush busy PAUSE", then the PAUSE's "Received
/// end-of-file", then TEARDOWN and its 200), but rtspsrc posts it as an
/// ERROR and gst-launch exits 1. True only when EOS came first and every
/// ERROR is that cancelled PAUSE (GStreamer 1.22).
pub fn gst_pause_cancelled_at_shutdown(stdout: &str, stderr: &str) -> bool {
    if !stdout.contains("Got EOS from element \"pipeline0\"") {
        return false;
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let errors: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("ERROR: "))
        .collect();
    let cancelled_send = |i: usize| {
        let where_ = lines.get(i + 2).copied().unwrap_or("");
        let why = lines.get(i + 3).copied().unwrap_or("");
        lines[i].contains("/GstRTSPSrc:")
            && lines[i].ends_with("Could not write to resource.")
            && (where_.contains("gst_rtspsrc_pause ()")
                || where_.contains("gst_rtspsrc_try_send ()"))
            && why == "Could not send message. (Received end-of-file)"
    };
    !errors.is_empty()
        && errors.iter().all(|&i| cancelled_send(i))
        && errors.iter().any(|&i| {
            lines
                .get(i + 2)
                .is_some_and(|l| l.contains("gst_rtspsrc_pause ()"))
        })
}

/// Whether a gst-launch run played to EOS: exit 0, or only the race above.
pub fn gst_played(out: &std::process::Output) -> bool {
    out.status.success()
        || gst_pause_cancelled_at_shutdown(
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        )
}

#[cfg(test)]
mod tests {
    use super::gst_pause_cancelled_at_shutdown;

    const EOS: &str = "Got EOS from element \"pipeline0\".\nExecution ended after 0:00:02.8\n";
    /// gst-launch-1.0 1.22.0's stderr in the race (a run under load).
    const RACE: &str =
        "ERROR: from element /GstPipeline:pipeline0/GstRTSPSrc:src: Could not write to resource.
Additional debug info:
../gst/rtsp/gstrtspsrc.c(6766): gst_rtspsrc_try_send (): /GstPipeline:pipeline0/GstRTSPSrc:src:
Could not send message. (Received end-of-file)
ERROR: from element /GstPipeline:pipeline0/GstRTSPSrc:src: Could not write to resource.
Additional debug info:
../gst/rtsp/gstrtspsrc.c(9240): gst_rtspsrc_pause (): /GstPipeline:pipeline0/GstRTSPSrc:src:
Could not send message. (Received end-of-file)
";

    #[test]
    fn only_the_cancelled_pause_after_eos_is_the_race() {
        assert!(gst_pause_cancelled_at_shutdown(EOS, RACE));
        // Before EOS the same error is a real failure.
        assert!(!gst_pause_cancelled_at_shutdown("Execution ended\n", RACE));
        // A failed TEARDOWN is not the race.
        let teardown = RACE.replace("gst_rtspsrc_pause ()", "gst_rtspsrc_close ()");
        assert!(!gst_pause_cancelled_at_shutdown(EOS, &teardown));
        // Nor is any other error beside it.
        let other = format!(
            "{RACE}ERROR: from element /GstPipeline:pipeline0/GstRTSPSrc:src: Could not read from resource.\nAdditional debug info:\n../gst/rtsp/gstrtspsrc.c(5705): gst_rtspsrc_loop_udp (): x:\nCould not receive message. (System error)\n"
        );
        assert!(!gst_pause_cancelled_at_shutdown(EOS, &other));
        assert!(!gst_pause_cancelled_at_shutdown(EOS, ""));
    }
}
