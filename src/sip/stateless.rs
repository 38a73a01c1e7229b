//! Stateless answers (RFC 3261 §8.2.7) to requests whose repetition is
//! harmless: REGISTER challenges and refusals (§8.2.7 names challenges as
//! the typical stateless answer), keepalive MESSAGEs and DeviceInfo
//! answers; the 200 to an accepted REGISTER, whose retransmission
//! [`crate::gb28181::accepted_registers`] recognises (its nonce was
//! single-use, so evaluating it afresh would answer 401); and the 200 to
//! MESSAGEs and NOTIFYs that must be acted on once (catalog pages,
//! alarms), whose retransmissions [`super::answered_requests`] recognises.
//!
//! rsipstack answers through a server transaction that, once answered,
//! keeps the parsed response for 64×T1 = 32 s to absorb retransmissions
//! (§17.2.2). A registration storm of 10,000 devices leaves tens of
//! thousands of those alive at once, most of the storm's heap, and the
//! devices' long-lived records allocated between them pin that heap's
//! pages after they go (issue 17). A stateless UAS keeps nothing: a
//! retransmitted request is simply answered again, "just as if it were
//! replying to the first instance" (§8.2.7), which for these requests has
//! the same effect. The To tag is derived from the request, so a
//! retransmission's answer carries the same tag, as §8.2.7 requires.

use std::hash::{Hash, Hasher};

use rsipstack::sip::{Header, HeadersExt as _, StatusCode, StatusCodeKind};
use rsipstack::transaction::transaction::Transaction;

/// Answer `tx` with `status` and `headers`, keeping no transaction state:
/// the transaction ends unanswered in rsipstack's view when it is dropped.
pub async fn reply_stateless(
    tx: &mut Transaction,
    status: StatusCode,
    headers: Vec<Header>,
) -> rsipstack::Result<()> {
    if status.kind() != StatusCodeKind::Provisional {
        let to = tx.original.to_header()?;
        if to.tag()?.is_none() {
            let tag = stateless_tag(tx);
            tx.original
                .headers
                .unique_push(to.clone().with_tag(tag.into()).into());
        }
    }
    let mut response = tx.endpoint_inner.make_response(&tx.original, status, None);
    response.headers.extend(headers);
    let connection = tx.connection.as_ref().ok_or_else(|| {
        rsipstack::Error::TransactionError("no connection found".into(), tx.key.clone())
    })?;
    connection
        .send(response.into(), tx.destination.as_ref())
        .await
}

/// A To tag that is the same for every copy of one request: a hash of
/// what identifies it (Call-ID, From tag, CSeq, top Via branch).
fn stateless_tag(tx: &Transaction) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    tx.key.to_string().hash(&mut hasher);
    for header in tx.original.headers.iter() {
        if let Header::CallId(_) | Header::From(_) | Header::CSeq(_) = header {
            header.to_string().hash(&mut hasher);
        }
    }
    format!("{:016x}", hasher.finish())
}
