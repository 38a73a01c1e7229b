//! Time to first frame for a second RTSP viewer of a running stream, with
//! the hub's GOP cache and without it ("cold": the viewer waits for the
//! next keyframe). Measured over loopback from TCP connect, through
//! DESCRIBE/SETUP/PLAY, to the last packet of the first complete video
//! frame, with a raw RTSP client.
//!
//! Target (issue 5): < 50 ms with the GOP cache. The source runs at
//! 25 fps with a keyframe every 2 s, so without the cache a viewer waits
//! 1 s on average.

#[path = "support/rtsp_rig.rs"]
mod rig;

use std::time::{Duration, Instant};

use camgate::rtsp::RtspServerConfig;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("rtsp_first_frame");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    for gop_cache in [true, false] {
        let server = rt.block_on(async {
            let server = rig::start(
                rig::Synthetic {
                    fps: 25,
                    gop: 50,
                    frame_bytes: 8 * 1024,
                },
                gop_cache,
                RtspServerConfig::default(),
            )
            .await;
            // The first viewer starts the stream and keeps it running.
            let mut first = rig::Client::play(server.addr).await;
            first.first_frame().await;
            tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while tokio::io::AsyncReadExt::read(&mut first.stream, &mut sink)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
            });
            server
        });
        let name = if gop_cache {
            "second_viewer_gop_cache"
        } else {
            "second_viewer_cold"
        };
        let addr = server.addr;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let mut c = rig::Client::play(addr).await;
                        c.first_frame().await;
                        total += t.elapsed();
                    }
                    total
                })
            })
        });
        drop(server);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
