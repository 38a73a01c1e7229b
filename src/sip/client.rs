//! Requests we originate outside a dialog (MESSAGE queries, RFC 3428),
//! sent straight to the address a device registered from.

use std::net::SocketAddr;
use std::time::Duration;

use rsipstack::sip::{Header, Method, StatusCode, Transport};
use rsipstack::transaction::Transaction;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::{make_call_id, make_tag};
use rsipstack::transport::SipAddr;

use super::stack::SipStack;

/// A request to a device, in plain values.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: Method,
    /// e.g. `sip:34020000001320000001@3402000000`
    pub request_uri: String,
    /// Our From: `sip:{server_id}@{realm}`
    pub from_uri: String,
    /// Their To: usually the same as the request URI.
    pub to_uri: String,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    pub dest: SocketAddr,
    pub transport: Transport,
    /// Further headers by name, e.g. `Event: presence` for SUBSCRIBE.
    pub extra_headers: Vec<(&'static str, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad request parts: {0}")]
    Build(String),
    #[error("transport: {0}")]
    Send(String),
    #[error("no final response within {0:?}")]
    Timeout(Duration),
    #[error("transaction ended without a final response")]
    NoResponse,
}

/// Send `out` and wait for its final response's status code.
pub async fn send(
    stack: &SipStack,
    out: Outgoing,
    timeout: Duration,
) -> Result<StatusCode, ClientError> {
    let build = |e: rsipstack::sip::Error| ClientError::Build(e.to_string());
    let uri = rsipstack::sip::Uri::try_from(out.request_uri.as_str()).map_err(build)?;
    let from = rsipstack::sip::typed::From::parse(&format!("<{}>", out.from_uri))
        .map_err(build)?
        .with_tag(make_tag());
    let to = rsipstack::sip::typed::To::parse(&format!("<{}>", out.to_uri)).map_err(build)?;
    let inner = &stack.endpoint.inner;
    let via = inner
        .get_via(Some(stack.advertised_sip_addr(out.transport)), None)
        .map_err(|e| ClientError::Build(e.to_string()))?;
    let mut req = inner.make_request(
        out.method,
        uri,
        via,
        from,
        to,
        1,
        Some(make_call_id(
            Some(&stack.advertised.ip().to_string()),
            Default::default(),
        )),
    );
    if let Some(ct) = out.content_type {
        req.headers.push(Header::ContentType(ct.to_owned().into()));
    }
    for (name, value) in out.extra_headers {
        req.headers.push(Header::Other(name.to_owned(), value));
    }
    req.body = out.body;
    let key = TransactionKey::from_request(&req, TransactionRole::Client)
        .map_err(|e| ClientError::Build(e.to_string()))?;
    let mut tx = Transaction::new_client(key, req, inner.clone(), None);
    tx.destination = Some(SipAddr {
        r#type: Some(out.transport),
        addr: out.dest.into(),
    });
    tx.send()
        .await
        .map_err(|e| ClientError::Send(e.to_string()))?;
    let wait_final = async {
        while let Some(msg) = tx.receive().await {
            if let rsipstack::sip::SipMessage::Response(resp) = msg
                && resp.status_code.kind() != rsipstack::sip::StatusCodeKind::Provisional
            {
                return Ok(resp.status_code);
            }
        }
        Err(ClientError::NoResponse)
    };
    tokio::time::timeout(timeout, wait_final)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}
