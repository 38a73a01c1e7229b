//! Fault injection for tests: UDP and TCP proxies placed between a
//! simulated device and the gateway, whose impairment can change while
//! they run. UDP datagrams can be dropped, reordered, duplicated, delayed
//! or all swallowed (blackhole); TCP connections can be stalled
//! (blackhole: nothing is read, so the sender's window fills as on a dead
//! link), delayed, or cut at once.
//!
//! The proxies run on their own small tokio runtime, so the synchronous
//! tests that drive processes can use them as plain values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

/// Peers one UDP proxy keeps an upstream socket for; more are ignored.
const MAX_UDP_PEERS: usize = 64;

/// What the proxies do to traffic now. Percentages are 0–100.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Impairment {
    pub drop_pct: f64,
    pub reorder_pct: f64,
    pub duplicate_pct: f64,
    pub delay: Duration,
    /// Nothing passes (UDP: swallowed; TCP: not read).
    pub blackhole: bool,
}

/// Datagrams handled, by fate.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub reordered: AtomicU64,
    pub duplicated: AtomicU64,
}

struct Shared {
    impairment: Mutex<Impairment>,
    counts: Counts,
    /// Bumped by [`Impair::cut`]: every TCP connection open then closes.
    cuts: watch::Sender<u64>,
}

pub struct Impair {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

impl Impair {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("impairment runtime");
        Self {
            runtime,
            shared: Arc::new(Shared {
                impairment: Mutex::new(Impairment::default()),
                counts: Counts::default(),
                cuts: watch::channel(0).0,
            }),
        }
    }

    /// Apply `impairment` from now on.
    pub fn set(&self, impairment: Impairment) {
        *self.shared.impairment.lock().unwrap() = impairment;
    }

    pub fn blackhole(&self, on: bool) {
        self.shared.impairment.lock().unwrap().blackhole = on;
    }

    /// Close every TCP connection open now (new ones are accepted).
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }

    /// Forward datagrams arriving at `listen` to `upstream`, and the
    /// answers back to whoever sent them.
    pub fn udp(&self, listen: SocketAddr, upstream: SocketAddr) {
        let socket = self
            .runtime
            .block_on(UdpSocket::bind(listen))
            .unwrap_or_else(|e| panic!("impair: bind UDP {listen}: {e}"));
        self.runtime
            .spawn(udp_proxy(Arc::new(socket), upstream, self.shared.clone()));
    }

    /// Forward TCP connections made to `listen` to `upstream`.
    pub fn tcp(&self, listen: SocketAddr, upstream: SocketAddr) {
        let listener = self
            .runtime
            .block_on(TcpListener::bind(listen))
            .unwrap_or_else(|e| panic!("impair: bind TCP {listen}: {e}"));
        self.runtime
            .spawn(tcp_proxy(listener, upstream, self.shared.clone()));
    }

    /// UDP and TCP proxies for every port of `ports` from `listen_ip` to
    /// the same port at `upstream_ip` (a gateway's RTP port range).
    pub fn port_range(
        &self,
        listen_ip: [u8; 4],
        upstream_ip: [u8; 4],
        ports: impl IntoIterator<Item = u16>,
    ) {
        for port in ports {
            let listen = SocketAddr::from((listen_ip, port));
            let upstream = SocketAddr::from((upstream_ip, port));
            self.udp(listen, upstream);
            self.tcp(listen, upstream);
        }
    }
}

/// One sender's fate decisions: the datagram held back for reordering.
#[derive(Default)]
struct Flow {
    held: Option<Vec<u8>>,
}

/// Send `data` (and whatever it releases) through `socket` to `dest` as
/// the current impairment says.
async fn impaired_send(
    shared: &Shared,
    flow: &Mutex<Flow>,
    socket: &Arc<UdpSocket>,
    dest: SocketAddr,
    data: Vec<u8>,
) {
    let imp = shared.impairment.lock().unwrap().clone();
    let counts = &shared.counts;
    let roll = |pct: f64| pct > 0.0 && rand::random::<f64>() * 100.0 < pct;
    if imp.blackhole || roll(imp.drop_pct) {
        counts.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut out = Vec::with_capacity(3);
    {
        let mut flow = flow.lock().unwrap();
        if roll(imp.reorder_pct) && flow.held.is_none() {
            // Held back until the next datagram has gone.
            counts.reordered.fetch_add(1, Ordering::Relaxed);
            flow.held = Some(data);
            return;
        }
        if roll(imp.duplicate_pct) {
            counts.duplicated.fetch_add(1, Ordering::Relaxed);
            out.push(data.clone());
        }
        out.push(data);
        if let Some(held) = flow.held.take() {
            out.push(held);
        }
    }
    counts
        .forwarded
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    if imp.delay.is_zero() {
        for d in out {
            let _ = socket.send_to(&d, dest).await;
        }
    } else {
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(imp.delay).await;
            for d in out {
                let _ = socket.send_to(&d, dest).await;
            }
        });
    }
}

async fn udp_proxy(listen: Arc<UdpSocket>, upstream: SocketAddr, shared: Arc<Shared>) {
    // Sender → its own upstream socket, so answers find their way back.
    let mut peers: HashMap<SocketAddr, (Arc<UdpSocket>, Arc<Mutex<Flow>>)> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        if !peers.contains_key(&from) {
            if peers.len() >= MAX_UDP_PEERS {
                continue;
            }
            let any = SocketAddr::new(upstream.ip(), 0);
            let Ok(socket) = UdpSocket::bind(any).await else {
                continue;
            };
            let socket = Arc::new(socket);
            let back_flow = Arc::new(Mutex::new(Flow::default()));
            tokio::spawn(udp_back(
                socket.clone(),
                listen.clone(),
                from,
                shared.clone(),
                back_flow,
            ));
            peers.insert(from, (socket, Arc::new(Mutex::new(Flow::default()))));
        }
        let (socket, flow) = &peers[&from];
        impaired_send(&shared, flow, socket, upstream, buf[..n].to_vec()).await;
    }
}

/// Answers from upstream back to the original sender.
async fn udp_back(
    socket: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    to: SocketAddr,
    shared: Arc<Shared>,
    flow: Arc<Mutex<Flow>>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, _)) = socket.recv_from(&mut buf).await {
        impaired_send(&shared, &flow, &listen, to, buf[..n].to_vec()).await;
    }
}

async fn tcp_proxy(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while let Ok((inbound, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut cuts = shared.cuts.subscribe();
            cuts.mark_unchanged();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::select! {
                _ = pump(ri, wo, &shared) => {}
                _ = pump(ro, wi, &shared) => {}
                _ = cuts.changed() => {}
            }
            // Dropping both halves of both sockets closes the connections.
        });
    }
}

/// Copy one direction, stalling while blackholed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 16_384];
    loop {
        loop {
            let imp = shared.impairment.lock().unwrap().clone();
            if !imp.blackhole {
                if !imp.delay.is_zero() {
                    tokio::time::sleep(imp.delay).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if shared.impairment.lock().unwrap().blackhole {
                    // Went dark while this chunk was in flight: lost with it.
                    continue;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
