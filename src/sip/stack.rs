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
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use tokio_util::sync::CancellationToken;

pub const USER_AGENT: &str = concat!("camgate/", env!("CARGO_PKG_VERSION"));

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
    /// Address (UDP) we advertise in Via and Contact.
    pub advertised: SocketAddr,
    /// Actual bound UDP address (the port may have been 0).
    pub local_udp: SocketAddr,
}

impl SipStack {
    /// Bind UDP and TCP on `listen`, advertising `advertised_ip`.
    pub async fn bind(
        listen: SocketAddr,
        advertised_ip: IpAddr,
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
        let udp =
            UdpConnection::create_connection(listen, external(port), Some(cancel.child_token()))
                .await
                .map_err(bind_err)?;
        transport.add_transport(udp.into());
        let tcp = TcpListenerConnection::new(listen, external(port))
            .await
            .map_err(bind_err)?;
        transport.add_transport(tcp.into());
        let local_udp = listen;

        let option = rsipstack::transaction::endpoint::EndpointOption {
            // Call-IDs name this host, not the library's default domain.
            callid_suffix: Some(advertised_ip.to_string()),
            ..Default::default()
        };
        let endpoint = EndpointBuilder::new()
            .with_option(option)
            .with_cancel_token(cancel)
            .with_transport_layer(transport)
            .with_user_agent(USER_AGENT)
            .build();
        let incoming = endpoint.incoming_transactions().map_err(bind_err)?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        Ok((
            Self {
                endpoint,
                dialogs,
                advertised: SocketAddr::new(advertised_ip, local_udp.port()),
                local_udp,
            },
            incoming,
        ))
    }

    /// Our UDP address as rsipstack wants it for Via/Contact.
    pub fn advertised_sip_addr(&self, transport: rsipstack::sip::Transport) -> SipAddr {
        SipAddr {
            r#type: Some(transport),
            addr: self.advertised.into(),
        }
    }
}
