//! The SIP stack: `rsipstack` endpoint with UDP and TCP listeners on one
//! address (RFC 3261 §18), its transaction layer (timers, retransmission,
//! TCP framing) and dialog layer (INVITE/ACK/BYE).
//!
//! rsipstack is not sans-IO, so this module is the one place that knows it;
//! GB28181 logic above works on parsed requests and plain values.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::transaction::{Endpoint, TransactionReceiver};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use tokio_util::sync::CancellationToken;

use super::tcp_gate::{self, TcpGate};
use super::udp_screen::ScreenedUdpSocket;
use crate::config::LimitsConfig;
use crate::conn_limit::ConnLimiter;
use crate::log_limit::LogGate;

pub const USER_AGENT: &str = concat!("camgate/", env!("CARGO_PKG_VERSION"));

/// SO_RCVBUF asked for the SIP UDP socket.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SipStackError {
    #[error("cannot listen for SIP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: rsipstack::Error,
    },
}

/// A running SIP endpoint. `serve()` must be polled for anything to move.
pub struct SipStack {
    pub endpoint: Endpoint,
    pub dialogs: Arc<DialogLayer>,
    /// Where outgoing calls learn that they ended.
    pub dialog_ends: super::dialog_ends::DialogEnds,
    /// Address (UDP) we advertise in Via and Contact.
    pub advertised: SocketAddr,
    /// Actual bound UDP address (the port may have been 0).
    pub local_udp: SocketAddr,
}

impl SipStack {
    /// Bind UDP and TCP on `listen`, advertising `advertised_ip`, with the
    /// default per-source limits.
    pub async fn bind(
        listen: SocketAddr,
        advertised_ip: IpAddr,
        cancel: CancellationToken,
    ) -> Result<(Self, TransactionReceiver), SipStackError> {
        Self::bind_limited(listen, advertised_ip, &LimitsConfig::default(), cancel).await
    }

    /// Bind UDP and TCP on `listen`, advertising `advertised_ip`. Inbound
    /// datagrams and the first message of each TCP connection are screened
    /// ([`super::screen`]) and TCP connections limited per source
    /// (`limits`) before rsipstack sees them.
    pub async fn bind_limited(
        listen: SocketAddr,
        advertised_ip: IpAddr,
        limits: &LimitsConfig,
        cancel: CancellationToken,
    ) -> Result<(Self, TransactionReceiver), SipStackError> {
        let transport = TransportLayer::new(cancel.child_token());
        let bind_err = |source| SipStackError::Bind {
            addr: listen,
            source,
        };
        let external = |port: u16| Some(SocketAddr::new(advertised_ip, port));
        // Port 0 (tests) means "any free port"; UDP and TCP must share it,
        // and Via/Contact must name it, so settle the number first.
        let port = match listen.port() {
            0 => std::net::UdpSocket::bind(listen)
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
                .map_err(|e| bind_err(rsipstack::Error::EndpointError(e.to_string())))?,
            p => p,
        };
        let listen = SocketAddr::new(listen.ip(), port);
        let io_err = |e: std::io::Error| bind_err(rsipstack::Error::IoError(e));
        let udp_socket = std::net::UdpSocket::bind(listen).map_err(io_err)?;
        udp_socket.set_nonblocking(true).map_err(io_err)?;
        // Room for a burst (a site's cameras re-registering after a power
        // cut, or a flood being screened) beyond the small default; the
        // kernel caps it at net.core.rmem_max.
        let _ = socket2::SockRef::from(&udp_socket).set_recv_buffer_size(UDP_RECEIVE_BUFFER);
        let udp_socket = tokio::net::UdpSocket::from_std(udp_socket).map_err(io_err)?;
        // One limiter of warnings for both transports: a source flooding
        // either gets one line a minute.
        let log_gate = Arc::new(LogGate::default());
        let udp = UdpConnection::from_socket(
            Arc::new(ScreenedUdpSocket::new(udp_socket, log_gate.clone())),
            external(port),
            Some(cancel.child_token()),
        )
        .await
        .map_err(bind_err)?;
        transport.add_transport(udp.into());
        let tcp_listener = bind_tcp(listen).map_err(io_err)?;
        let local_udp = listen;

        let option = rsipstack::transaction::endpoint::EndpointOption {
            // Call-IDs name this host, not the library's default domain.
            callid_suffix: Some(advertised_ip.to_string()),
            ..Default::default()
        };
        let endpoint_cancel = cancel.child_token();
        let endpoint = EndpointBuilder::new()
            .with_option(option)
            .with_cancel_token(cancel)
            .with_transport_layer(transport)
            .with_user_agent(USER_AGENT)
            .build();
        let incoming = endpoint.incoming_transactions().map_err(bind_err)?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let gate = TcpGate {
            limiter: ConnLimiter::new("sip", limits.max_connections_per_ip),
            request_timeout: limits.request_timeout,
            gate: log_gate,
            local: SipAddr {
                r#type: Some(rsipstack::sip::Transport::Tcp),
                addr: SocketAddr::new(advertised_ip, port).into(),
            },
        };
        tokio::spawn(super::stack_warnings::relay(gate.gate.clone()));
        tokio::spawn(tcp_gate::serve(
            tcp_listener,
            gate,
            endpoint.inner.clone(),
            endpoint_cancel,
        ));
        Ok((
            Self {
                endpoint,
                dialogs,
                dialog_ends: super::dialog_ends::DialogEnds::spawn(),
                advertised: SocketAddr::new(advertised_ip, local_udp.port()),
                local_udp,
            },
            incoming,
        ))
    }

    /// SIP dialogs held now (for the leak gauge `camgate_sip_dialogs`).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// Our UDP address as rsipstack wants it for Via/Contact.
    pub fn advertised_sip_addr(&self, transport: rsipstack::sip::Transport) -> SipAddr {
        SipAddr {
            r#type: Some(transport),
            addr: self.advertised.into(),
        }
    }
}

/// The SIP TCP listening socket, with SO_REUSEADDR as the stack would set
/// it (a restarted gateway rebinds at once despite TIME_WAIT peers).
fn bind_tcp(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let domain = if listen.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}
