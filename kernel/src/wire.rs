//! Reading Jupyter messages off a socket, leniently where the protocol allows and
//! strictly where it matters: the signature is always checked, and a message whose
//! content does not parse is reported with its header so the kernel can still answer.

use jupyter_protocol::{Header, JupyterMessage, JupyterMessageContent};
use jupyter_zmq_client::RawMessage;
use serde_json::{json, Value};

/// What came in on a socket.
pub enum Incoming {
    Message(Box<JupyterMessage>),
    /// Signed correctly, but the content does not fit its message type.
    Malformed {
        identities: Vec<bytes::Bytes>,
        header: Box<Header>,
        error: String,
    },
}

/// Decodes one multipart message. Errors (bad framing, bad signature, bad header)
/// mean the message must be dropped.
pub fn decode(
    multipart: zeromq::ZmqMessage,
    mac: &Option<ring_key::Key>,
) -> Result<Incoming, String> {
    let raw = RawMessage::from_multipart(multipart, mac).map_err(|e| match e {
        jupyter_zmq_client::RuntimeError::VerifyError(_) => {
            "wrong signature (HMAC-SHA256 does not match the connection key)".to_string()
        }
        jupyter_zmq_client::RuntimeError::MissingHmac => "missing signature".to_string(),
        other => other.to_string(),
    })?;
    let part = |i: usize| raw.jparts.get(i).map(|b| &b[..]).unwrap_or(b"{}");
    let header: Header = serde_json::from_slice(part(0)).map_err(|e| format!("bad header: {e}"))?;
    let mut content: Value = match serde_json::from_slice(part(3)) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Incoming::Malformed {
                identities: raw.zmq_identities,
                header: Box::new(header),
                error: format!("content is not JSON: {e}"),
            })
        }
    };
    normalize(&header.msg_type, &mut content);
    let content = match JupyterMessageContent::from_type_and_content(&header.msg_type, content) {
        Ok(c) => c,
        Err(e) => {
            let error = format!("content does not fit `{}`: {e}", header.msg_type);
            return Ok(Incoming::Malformed {
                identities: raw.zmq_identities,
                header: Box::new(header),
                error,
            });
        }
    };
    let parent_header = serde_json::from_slice(part(1)).ok();
    let metadata = serde_json::from_slice(part(2)).unwrap_or_else(|_| json!({}));
    Ok(Incoming::Message(Box::new(JupyterMessage {
        zmq_identities: raw.zmq_identities.clone(),
        header,
        parent_header,
        metadata,
        content,
        buffers: raw.jparts.iter().skip(4).cloned().collect(),
        channel: None,
    })))
}

/// Fills in fields that real clients omit but the message types require, with the
/// defaults the messaging spec gives.
fn normalize(msg_type: &str, content: &mut Value) {
    let Some(map) = content.as_object_mut() else {
        return;
    };
    // Null is as good as missing for these; the defaults below then apply.
    map.retain(|key, value| !(value.is_null() && (key == "n" || key == "session")));
    let mut default = |key: &str, value: Value| {
        map.entry(key.to_string()).or_insert(value);
    };
    match msg_type {
        "execute_request" => {
            default("silent", json!(false));
            default("store_history", json!(true));
            default("user_expressions", json!({}));
            default("allow_stdin", json!(true));
            default("stop_on_error", json!(true));
        }
        "history_request" => {
            default("output", json!(false));
            default("raw", json!(true));
            default("n", json!(0));
            default("unique", json!(false));
            default("start", json!(0));
            default("stop", json!(0));
            default("pattern", json!("*"));
            default("hist_access_type", json!("tail"));
        }
        "comm_open" | "comm_msg" | "comm_close" => {
            default("data", json!({}));
        }
        "shutdown_request" => default("restart", json!(false)),
        "inspect_request" => default("detail_level", json!(0)),
        _ => {}
    }
}

/// The HMAC key type used by `jupyter-zmq-client`'s connections.
pub mod ring_key {
    pub use ring::hmac::Key;
}
