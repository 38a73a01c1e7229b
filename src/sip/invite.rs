//! Outgoing INVITE dialogs (RFC 3261 §13–15): send the offer, take the
//! answer, ACK, and later BYE. Used for GB28181 live/playback sessions,
//! where the platform is the UAC and the camera answers with media.

use std::net::SocketAddr;
use std::time::Duration;

use rsipstack::dialog::DialogId;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCodeKind, Transport};
use rsipstack::transport::SipAddr;

use super::dialog_ends::DialogEnds;
use super::stack::SipStack;

#[derive(Debug, Clone)]
pub struct InviteRequest {
    /// `sip:{channel}@{device host:port}`
    pub request_uri: String,
    pub from_uri: String,
    pub contact_uri: String,
    /// GB28181 `Subject: {channel}:{ssrc},{server_id}:0`.
    pub subject: String,
    pub sdp: String,
    pub dest: SocketAddr,
    pub transport: Transport,
}

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("bad request parts: {0}")]
    Build(String),
    #[error("device answered {code} {reason}")]
    Rejected { code: u16, reason: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// An established call. Drop without `bye()` leaves the dialog to the
/// device's own timeout; the stream supervisor always calls `bye()`.
pub struct Call {
    dialog: InviteDialog,
    stack_dialogs: std::sync::Arc<rsipstack::dialog::dialog_layer::DialogLayer>,
    pub answer_sdp: String,
    /// The end, from the stack's shared [`DialogEnds`]; `None` once seen.
    end: Option<tokio::sync::oneshot::Receiver<String>>,
    ends: DialogEnds,
}

impl Drop for Call {
    fn drop(&mut self) {
        self.ends.unwatch(&self.dialog.id());
    }
}

impl Call {
    pub fn id(&self) -> DialogId {
        self.dialog.id()
    }

    /// Resolves when the device ends the call (its BYE) or the dialog dies.
    pub async fn ended(&mut self) -> String {
        let Some(end) = self.end.as_mut() else {
            return "dialog closed".to_owned();
        };
        let why = end.await.unwrap_or_else(|_| "dialog closed".to_owned());
        self.end = None;
        why
    }

    /// Forget the dialog without a word to the device: it no longer has it
    /// (it restarted), so a BYE would only earn a 481.
    pub fn forget(self) {
        self.stack_dialogs.remove_dialog(&self.dialog.id());
    }

    /// Send BYE and forget the dialog.
    pub async fn bye(self) -> Result<(), InviteError> {
        let result = self
            .dialog
            .bye()
            .await
            .map_err(|e| InviteError::Failed(e.to_string()));
        self.stack_dialogs.remove_dialog(&self.dialog.id());
        result
    }
}

/// Send an INVITE and wait up to `timeout` for a final answer.
pub async fn invite(
    stack: &SipStack,
    req: InviteRequest,
    timeout: Duration,
) -> Result<Call, InviteError> {
    let build = |e: rsipstack::sip::Error| InviteError::Build(e.to_string());
    let callee = rsipstack::sip::Uri::try_from(req.request_uri.as_str()).map_err(build)?;
    let caller = rsipstack::sip::Uri::try_from(req.from_uri.as_str()).map_err(build)?;
    let contact = rsipstack::sip::Uri::try_from(req.contact_uri.as_str()).map_err(build)?;
    let option = InviteOption {
        caller,
        callee,
        contact,
        destination: Some(SipAddr {
            r#type: Some(req.transport),
            addr: req.dest.into(),
        }),
        content_type: Some("application/sdp".into()),
        offer: Some(req.sdp.into_bytes()),
        headers: Some(vec![Header::Subject(req.subject.into())]),
        ..Default::default()
    };
    let state_tx = stack.dialog_ends.sender();
    let outcome = tokio::time::timeout(timeout, stack.dialogs.do_invite(option, state_tx)).await;
    let (dialog, response) = match outcome {
        Err(_) => return Err(InviteError::Timeout(timeout)),
        Ok(Err(e)) => return Err(InviteError::Failed(e.to_string())),
        Ok(Ok(r)) => r,
    };
    let response = response.ok_or_else(|| InviteError::Failed("no final response".into()))?;
    if response.status_code.kind() != StatusCodeKind::Successful {
        stack.dialogs.remove_dialog(&dialog.id());
        return Err(InviteError::Rejected {
            code: response.status_code.code(),
            reason: response
                .reason_phrase()
                .map(str::to_owned)
                .unwrap_or_else(|| response.status_code.to_string()),
        });
    }
    let end = stack.dialog_ends.watch(&dialog.id());
    Ok(Call {
        dialog,
        stack_dialogs: stack.dialogs.clone(),
        answer_sdp: String::from_utf8_lossy(response.body()).into_owned(),
        end: Some(end),
        ends: stack.dialog_ends.clone(),
    })
}

/// Sends in-dialog requests on an established call while the [`Call`]
/// itself is owned by the media session (GB28181 playback control).
#[derive(Clone)]
pub struct CallControl {
    dialog: InviteDialog,
}

impl Call {
    pub fn control(&self) -> CallControl {
        CallControl {
            dialog: self.dialog.clone(),
        }
    }
}

impl CallControl {
    /// Send INFO with `body` and return the final status code.
    pub async fn info(&self, content_type: &str, body: Vec<u8>) -> Result<u16, InviteError> {
        let headers = vec![Header::ContentType(content_type.to_owned().into())];
        match self.dialog.info(Some(headers), Some(body)).await {
            Ok(Some(resp)) => Ok(resp.status_code.code()),
            Ok(None) => Err(InviteError::Failed("dialog not confirmed".into())),
            Err(e) => Err(InviteError::Failed(e.to_string())),
        }
    }
}
