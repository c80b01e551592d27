//! `input_request` on the stdin channel, for code that reads input.

use crate::evaluator::Interrupt;
use crate::prelude;
use crate::wire::{self, Incoming};
use jupyter_protocol::{InputRequest, JupyterMessage, JupyterMessageContent};
use jupyter_zmq_client::KernelStdinConnection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use zeromq::SocketRecv;

struct Ask {
    parent: JupyterMessage,
    prompt: String,
    password: bool,
    answer: std::sync::mpsc::Sender<String>,
    interrupt: Arc<Interrupt>,
}

/// The executor's handle for asking the client for input.
#[derive(Clone)]
pub struct StdinClient {
    tx: mpsc::UnboundedSender<Ask>,
}

impl StdinClient {
    /// A reader bound to one execute request: `(prompt, password) -> answer`.
    pub fn reader(
        &self,
        parent: JupyterMessage,
        allow_stdin: bool,
        interrupt: Arc<Interrupt>,
    ) -> impl Fn(&str, bool) -> String {
        let tx = self.tx.clone();
        move |prompt: &str, password: bool| {
            if !allow_stdin {
                return prelude::NO_STDIN.to_string();
            }
            let (answer, answered) = std::sync::mpsc::channel();
            let ask = Ask {
                parent: parent.clone(),
                prompt: prompt.to_string(),
                password,
                answer,
                interrupt: interrupt.clone(),
            };
            if tx.send(ask).is_err() {
                return String::new();
            }
            answered.recv().unwrap_or_default()
        }
    }
}

/// Starts the task that owns the stdin socket.
pub fn spawn(mut connection: KernelStdinConnection) -> StdinClient {
    let (tx, mut rx) = mpsc::unbounded_channel::<Ask>();
    tokio::spawn(async move {
        while let Some(ask) = rx.recv().await {
            let request = InputRequest {
                prompt: ask.prompt.clone(),
                password: ask.password,
            };
            // The request goes to the same client identity that sent the execute request.
            let message = JupyterMessage::new(request, Some(&ask.parent));
            if let Err(e) = connection.send(message).await {
                log::warn!("could not send input_request: {e}");
                let _ = ask.answer.send(String::new());
                continue;
            }
            let answer = loop {
                tokio::select! {
                    received = connection.socket.recv() => {
                        match received.map_err(|e| e.to_string()).and_then(|m| wire::decode(m, &connection.mac)) {
                            Ok(Incoming::Message(reply)) => {
                                if let JupyterMessageContent::InputReply(reply) = reply.content {
                                    break reply.value;
                                }
                                log::warn!("stdin: ignoring a `{}` while waiting for input_reply", reply.header.msg_type);
                            }
                            Ok(Incoming::Malformed { error, .. }) => log::warn!("stdin: dropped a message: {error}"),
                            Err(e) => log::warn!("stdin: dropped a message: {e}"),
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if ask.interrupt.requested() {
                            break String::new();
                        }
                    }
                }
            };
            let _ = ask.answer.send(answer);
        }
    });
    StdinClient { tx }
}
