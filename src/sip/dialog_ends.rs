//! Where outgoing INVITE dialogs report their end (RFC 3261 §15.1: a BYE
//! from the other side, or the dialog dying): one channel shared by every
//! call, routed by dialog id to the call that waits for it.
//!
//! rsipstack takes a channel for a dialog's state changes when the INVITE
//! is sent. One channel per call costs tokio's first block of 32 slots
//! (~9.5 KiB) for the whole call: a large share of a stream's memory at
//! thousands of streams (issue 17). Here all calls share one, and each
//! waiting call holds a oneshot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, DialogStateSender, TerminatedReason};
use tokio::sync::oneshot;

/// Ends that came before their call was watched (a device that hangs up
/// at once, or a refused call nobody will watch), kept for this many
/// dialogs.
const EARLY_KEPT: usize = 256;

#[derive(Default)]
struct Table {
    waiting: HashMap<DialogId, oneshot::Sender<String>>,
    early: VecDeque<(DialogId, String)>,
}

/// The shared state channel and the calls waiting on it.
#[derive(Clone)]
pub struct DialogEnds {
    sender: DialogStateSender,
    table: Arc<Mutex<Table>>,
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a call's end reads in logs and stream-stop reasons.
pub fn describe(reason: &TerminatedReason) -> String {
    match reason {
        TerminatedReason::UasBye => "device sent BYE".to_owned(),
        other => format!("dialog terminated: {other:?}"),
    }
}

impl DialogEnds {
    /// Start routing (needs a tokio runtime); the routing task lives as
    /// long as a sender does.
    pub fn spawn() -> Self {
        let (sender, mut states) = tokio::sync::mpsc::unbounded_channel();
        let table: Arc<Mutex<Table>> = Arc::default();
        let routed = table.clone();
        tokio::spawn(async move {
            while let Some(state) = states.recv().await {
                if let DialogState::Terminated(id, reason) = state {
                    Self::ended(&routed, id, describe(&reason));
                }
            }
        });
        Self { sender, table }
    }

    fn ended(table: &Mutex<Table>, id: DialogId, why: String) {
        let mut t = lock(table);
        match t.waiting.remove(&id) {
            // A call that stopped waiting has already ended.
            Some(waiter) => {
                let _ = waiter.send(why);
            }
            None => {
                if t.early.len() == EARLY_KEPT {
                    t.early.pop_front();
                }
                t.early.push_back((id, why));
            }
        }
    }

    /// The sender to give rsipstack with an INVITE.
    pub fn sender(&self) -> DialogStateSender {
        self.sender.clone()
    }

    /// The end of dialog `id`, once it comes (at once if it came already).
    pub fn watch(&self, id: &DialogId) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        let mut t = lock(&self.table);
        match t.early.iter().position(|(e, _)| e == id) {
            Some(i) => {
                let (_, why) = t.early.remove(i).unwrap_or_else(|| unreachable!());
                let _ = tx.send(why);
            }
            None => {
                t.waiting.insert(id.clone(), tx);
            }
        }
        rx
    }

    /// Stop waiting for dialog `id` (the call is gone).
    pub fn unwatch(&self, id: &DialogId) {
        lock(&self.table).waiting.remove(id);
    }

    /// Calls waiting for their end.
    pub fn waiting(&self) -> usize {
        lock(&self.table).waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> DialogId {
        DialogId {
            call_id: format!("call-{n}"),
            local_tag: "a".into(),
            remote_tag: "b".into(),
        }
    }

    #[tokio::test]
    async fn ends_reach_their_own_call_even_when_they_come_first() {
        let ends = DialogEnds::spawn();
        let first = ends.watch(&id(1));
        let second = ends.watch(&id(2));
        let tx = ends.sender();
        tx.send(DialogState::Terminated(id(2), TerminatedReason::UasBye))
            .unwrap();
        // An end before its call watches (a device hanging up at once).
        tx.send(DialogState::Terminated(id(3), TerminatedReason::Timeout))
            .unwrap();
        assert_eq!(second.await.unwrap(), "device sent BYE");
        tokio::task::yield_now().await;
        let third = ends.watch(&id(3));
        assert_eq!(third.await.unwrap(), "dialog terminated: Timeout");
        ends.unwatch(&id(1));
        drop(first);
        assert_eq!(ends.waiting(), 0);
    }
}
