//! A Rust client of the server: a samod [`Dialer`] over a plain WebSocket.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! let repo = samod::Repo::build_tokio().load().await;
//! let dialer = ferrolab_collab::client::WsDialer::new("ws://127.0.0.1:7878/sync?token=flb_...")?;
//! repo.dial(samod::BackoffConfig::default(), Arc::new(dialer))?.established().await?;
//! # Ok(()) }
//! ```

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use samod::{DialError, Dialer, Transport};
use tokio_tungstenite::tungstenite::Message;

/// Dials `ws://HOST/sync?token=TOKEN` (reconnects with samod's backoff).
pub struct WsDialer {
    url: samod::Url,
}

impl WsDialer {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            url: samod::Url::parse(url)?,
        })
    }
}

#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

impl Dialer for WsDialer {
    type Error = ClientError;

    fn url(&self) -> samod::Url {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'static, Result<Transport, DialError<ClientError>>> {
        let url = self.url.to_string();
        Box::pin(async move {
            let (socket, _) = tokio_tungstenite::connect_async(url)
                .await
                .map_err(|e| match e {
                    // A refused token will not start working on a retry.
                    tokio_tungstenite::tungstenite::Error::Http(response)
                        if response.status() == 401 =>
                    {
                        DialError::PermanentFailure(ClientError(
                            "the server refused the token (401)".into(),
                        ))
                    }
                    other => DialError::transient(ClientError(other.to_string())),
                })?;
            let (sink, stream) = socket.split();
            let stream = stream.filter_map(|message| async move {
                match message {
                    Ok(Message::Binary(bytes)) => Some(Ok(bytes.to_vec())),
                    Ok(_) => None,
                    Err(e) => Some(Err(ClientError(e.to_string()))),
                }
            });
            let sink = sink.sink_map_err(|e| ClientError(e.to_string())).with(
                |bytes: Vec<u8>| async move { Ok::<_, ClientError>(Message::Binary(bytes.into())) },
            );
            Ok(Transport::new(Box::pin(stream), Box::pin(sink)))
        })
    }
}
