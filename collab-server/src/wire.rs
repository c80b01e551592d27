//! Just enough of the automerge-repo wire format to guard the server.
//!
//! Every message is a CBOR map with a `type`. The server reads the handshake's
//! `senderId` (to bind the connection to the peer that authenticated), checks that
//! sync payloads decode before samod sees them, and reads the heads of outgoing
//! sync messages (to hold them until those heads are on disk).

use automerge::ChangeHash;
use minicbor::data::Type;
use minicbor::Decoder;

/// The fields of a message the server looks at.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Envelope {
    pub kind: String,
    pub sender_id: Option<String>,
    pub document_id: Option<String>,
    pub data: Option<Vec<u8>>,
}

#[derive(Debug)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn err(e: impl std::fmt::Display) -> WireError {
    WireError(format!("malformed message: {e}"))
}

/// Reads the envelope of one message.
pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
    let mut d = Decoder::new(bytes);
    let entries = d.map().map_err(err)?;
    let mut envelope = Envelope::default();
    let mut index = 0u64;
    loop {
        match entries {
            Some(n) if index >= n => break,
            None if d.datatype().map_err(err)? == Type::Break => break,
            _ => {}
        }
        index += 1;
        let key = match d.datatype().map_err(err)? {
            Type::String => d.str().map_err(err)?.to_string(),
            _ => {
                d.skip().map_err(err)?;
                d.skip().map_err(err)?;
                continue;
            }
        };
        match key.as_str() {
            "type" => envelope.kind = d.str().map_err(err)?.to_string(),
            "senderId" => envelope.sender_id = Some(d.str().map_err(err)?.to_string()),
            "documentId" => envelope.document_id = Some(d.str().map_err(err)?.to_string()),
            "data" => envelope.data = Some(d.bytes().map_err(err)?.to_vec()),
            _ => d.skip().map_err(err)?,
        }
    }
    if envelope.kind.is_empty() {
        return Err(WireError("malformed message: no \"type\"".into()));
    }
    Ok(envelope)
}

impl Envelope {
    /// Whether this message carries an automerge sync message in `data`.
    pub fn is_sync(&self) -> bool {
        matches!(self.kind.as_str(), "sync" | "request")
    }
}

/// Checks that the sync payload of an incoming message decodes, without letting
/// a panic in the decoder escape. Returns a reason when it does not.
pub fn check_sync_payload(data: &[u8]) -> Result<(), String> {
    let decoded = std::panic::catch_unwind(|| automerge::sync::Message::decode(data));
    match decoded {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("sync message does not decode: {e}")),
        Err(_) => Err("sync message made the decoder panic".into()),
    }
}

/// The document and heads announced by an outgoing sync message.
pub fn announced_heads(bytes: &[u8]) -> Option<(String, Vec<ChangeHash>)> {
    let envelope = decode(bytes).ok()?;
    if !envelope.is_sync() {
        return None;
    }
    let message = automerge::sync::Message::decode(envelope.data.as_deref()?).ok()?;
    Some((envelope.document_id?, message.heads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use minicbor::Encoder;

    fn message(kind: &str, sender: &str, data: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        e.map(if data.is_some() { 4 } else { 2 }).expect("cbor");
        e.str("type").expect("cbor").str(kind).expect("cbor");
        e.str("senderId").expect("cbor").str(sender).expect("cbor");
        if let Some(data) = data {
            e.str("documentId").expect("cbor").str("doc").expect("cbor");
            e.str("data").expect("cbor").bytes(data).expect("cbor");
        }
        out
    }

    #[test]
    fn reads_join_and_sync() {
        let join = decode(&message("join", "peer-1", None)).expect("join");
        assert_eq!(
            (join.kind.as_str(), join.sender_id.as_deref()),
            ("join", Some("peer-1"))
        );
        let doc = automerge::Automerge::new();
        let mut state = automerge::sync::State::new();
        use automerge::sync::SyncDoc;
        let payload = doc
            .generate_sync_message(&mut state)
            .expect("a first message")
            .encode();
        let bytes = message("sync", "p", Some(&payload));
        assert!(check_sync_payload(&payload).is_ok());
        let (document, heads) = announced_heads(&bytes).expect("heads");
        assert_eq!(document, "doc");
        assert!(heads.is_empty());
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bytes in [
            &b""[..],
            b"\xff",
            b"\xa1\x64type",
            b"\x40",
            &[0xbf, 0x61, 0x61][..],
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?}");
        }
        assert!(check_sync_payload(b"\x42\x00\x01").is_err());
    }
}
