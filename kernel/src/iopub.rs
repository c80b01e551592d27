//! Publishing on iopub: the handle every part of the kernel uses, and the
//! [`Output`] implementation that turns magic and cell outputs into messages.

use ferrolab_magics::{MimeBundle, Output, Stream};
use jupyter_protocol::{
    ClearOutput, DisplayData, JupyterMessage, JupyterMessageContent, Media, Status, Stdio,
    StreamContent, Transient, UpdateDisplayData,
};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A cheap, cloneable sender to the task that owns the iopub socket.
#[derive(Clone)]
pub struct Iopub {
    tx: mpsc::UnboundedSender<JupyterMessage>,
}

impl Iopub {
    pub fn new() -> (Iopub, mpsc::UnboundedReceiver<JupyterMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Iopub { tx }, rx)
    }

    /// Publishes `content` as a child of `parent`.
    pub fn publish(&self, content: impl Into<JupyterMessageContent>, parent: &JupyterMessage) {
        let mut message = JupyterMessage::new(content.into(), Some(parent));
        // On a PUB socket the identity frames are the topic; the client's routing
        // identity must not leak there.
        message.zmq_identities = vec![message.header.msg_type.clone().into_bytes().into()];
        message.header.username = "ferrolab".into();
        if self.tx.send(message).is_err() {
            log::debug!("iopub task is gone; dropping a message");
        }
    }

    pub fn status(&self, busy: bool, parent: &JupyterMessage) {
        let status = if busy { Status::busy() } else { Status::idle() };
        self.publish(status, parent);
    }
}

/// Converts a bundle's data map into the protocol's `Media`.
pub fn media(data: &Map<String, Value>) -> Media {
    serde_json::from_value(Value::Object(data.clone())).unwrap_or_default()
}

/// Where the outputs of one request go.
#[derive(Clone)]
pub struct KernelOutput {
    pub iopub: Iopub,
    pub parent: JupyterMessage,
    /// `silent` execute requests publish nothing on iopub but their status.
    pub silent: bool,
    /// Help pages, returned in the execute_reply's payload.
    pub pages: Arc<Mutex<Vec<MimeBundle>>>,
}

impl Output for KernelOutput {
    fn stream(&mut self, stream: Stream, text: &str) {
        if self.silent || text.is_empty() {
            return;
        }
        let name = match stream {
            Stream::Stdout => Stdio::Stdout,
            Stream::Stderr => Stdio::Stderr,
        };
        self.iopub.publish(
            StreamContent {
                name,
                text: text.to_string(),
            },
            &self.parent,
        );
    }

    fn display(&mut self, bundle: MimeBundle, display_id: Option<&str>) {
        if self.silent {
            return;
        }
        self.iopub.publish(
            DisplayData {
                data: media(&bundle.data),
                metadata: bundle.metadata,
                transient: display_id.map(|id| Transient {
                    display_id: Some(id.to_string()),
                }),
            },
            &self.parent,
        );
    }

    fn update_display(&mut self, bundle: MimeBundle, display_id: &str) {
        if self.silent {
            return;
        }
        let mut update = UpdateDisplayData::new(media(&bundle.data), display_id);
        update.metadata = bundle.metadata;
        self.iopub.publish(update, &self.parent);
    }

    fn clear(&mut self, wait: bool) {
        if self.silent {
            return;
        }
        self.iopub.publish(ClearOutput { wait }, &self.parent);
    }

    fn page(&mut self, bundle: MimeBundle) {
        ferrolab_magics::lock(&self.pages).push(bundle);
    }
}
