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
    pub target_id: Option<String>,
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
            "targetId" => envelope.target_id = Some(d.str().map_err(err)?.to_string()),
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

/// One entry of a CBOR map: the raw key and value, and the key when it is text.
type RawEntry<'a> = (&'a [u8], &'a [u8], Option<String>);

/// A CBOR map's entries as raw byte spans, in order.
fn map_entries(bytes: &[u8]) -> Result<Vec<RawEntry<'_>>, WireError> {
    let mut d = Decoder::new(bytes);
    let entries = d.map().map_err(err)?;
    let mut out = Vec::new();
    loop {
        match entries {
            Some(n) if out.len() as u64 >= n => break,
            None if d.datatype().map_err(err)? == Type::Break => break,
            _ => {}
        }
        let key_start = d.position();
        let key = match d.datatype().map_err(err)? {
            Type::String => Some(d.str().map_err(err)?.to_string()),
            _ => {
                d.skip().map_err(err)?;
                None
            }
        };
        let value_start = d.position();
        d.skip().map_err(err)?;
        let end = d.position();
        out.push((
            &bytes[key_start..value_start],
            &bytes[value_start..end],
            key,
        ));
    }
    Ok(out)
}

/// Re-encodes the map `bytes` without the entries named in `drop`, then with
/// `add` (string keys, already-encoded CBOR values) after the rest.
fn rebuild_map(bytes: &[u8], drop: &[&str], add: &[(&str, Vec<u8>)]) -> Result<Vec<u8>, WireError> {
    let kept: Vec<_> = map_entries(bytes)?
        .into_iter()
        .filter(|(_, _, key)| key.as_deref().is_none_or(|k| !drop.contains(&k)))
        .collect();
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut e = minicbor::Encoder::new(&mut out);
    e.map((kept.len() + add.len()) as u64).map_err(err)?;
    for (key, value, _) in &kept {
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    for (key, value) in add {
        let mut e = minicbor::Encoder::new(&mut out);
        e.str(key).map_err(err)?;
        out.extend_from_slice(value);
    }
    Ok(out)
}

fn cbor_str(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let written: Result<_, minicbor::encode::Error<std::convert::Infallible>> =
        minicbor::Encoder::new(&mut out).str(text).map(|_| ());
    debug_assert!(written.is_ok(), "encoding into a Vec cannot fail");
    out
}

fn cbor_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let written: Result<_, minicbor::encode::Error<std::convert::Infallible>> =
        minicbor::Encoder::new(&mut out).bytes(bytes).map(|_| ());
    debug_assert!(written.is_ok(), "encoding into a Vec cannot fail");
    out
}

/// An `ephemeral` message with its payload's `name` and `role` replaced by the
/// sender's authenticated ones, so that nobody can appear to others as someone
/// else. The payload must be a CBOR map (what automerge-repo's `broadcast` of an
/// object sends).
pub fn stamp_ephemeral(bytes: &[u8], name: &str, role: &str) -> Result<Vec<u8>, WireError> {
    let envelope = decode(bytes)?;
    let data = envelope
        .data
        .ok_or_else(|| WireError("an ephemeral message without data".into()))?;
    let stamped = rebuild_map(
        &data,
        &["name", "role"],
        &[("name", cbor_str(name)), ("role", cbor_str(role))],
    )
    .map_err(|e| {
        WireError(format!(
            "an ephemeral message's data must be a CBOR map ({e})"
        ))
    })?;
    rebuild_map(bytes, &["data"], &[("data", cbor_bytes(&stamped))])
}

/// Checks that the sync payload of an incoming message decodes, without letting
/// a panic in the decoder escape, and that its changes inflate to at most
/// `max_inflated` bytes. Returns a reason when not, and whether it carries changes.
pub fn check_sync_payload(data: &[u8], max_inflated: u64) -> Result<bool, String> {
    let decoded = std::panic::catch_unwind(|| automerge::sync::Message::decode(data));
    match decoded {
        Ok(Ok(message)) => {
            let mut total = 0u64;
            for chunk in message.changes.iter() {
                total += crate::inflation::inflated_size(chunk, max_inflated - total)?;
            }
            Ok(!message.changes.is_empty())
        }
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

/// An outgoing `sync` message, taken apart so that several can be coalesced.
pub struct OutgoingSync {
    pub document_id: String,
    sender_id: String,
    target_id: String,
    message: automerge::sync::Message,
}

impl OutgoingSync {
    /// Reads a `sync` message (not `request` or anything else).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let envelope = decode(bytes).ok()?;
        if envelope.kind != "sync" {
            return None;
        }
        let message = automerge::sync::Message::decode(envelope.data.as_deref()?).ok()?;
        Some(Self {
            document_id: envelope.document_id?,
            sender_id: envelope.sender_id?,
            target_id: envelope.target_id?,
            message,
        })
    }

    /// Folds a later message for the same document and peer into this one: the
    /// changes of both, the later one's heads, needs and haves. Receiving the
    /// result is the same as receiving both in order. Gives `later` back when the
    /// two cannot be folded (different flags or versions).
    pub fn absorb(&mut self, later: Self) -> Option<Self> {
        let compatible = later.document_id == self.document_id
            && later.target_id == self.target_id
            && later.message.flags == self.message.flags
            && later.message.version == self.message.version;
        if !compatible {
            return Some(later);
        }
        let mut changes: Vec<Vec<u8>> = self.message.changes.iter().map(<[u8]>::to_vec).collect();
        changes.extend(later.message.changes.iter().map(<[u8]>::to_vec));
        self.message = automerge::sync::Message {
            heads: later.message.heads,
            need: later.message.need,
            have: later.message.have,
            changes: changes.into(),
            flags: later.message.flags,
            version: later.message.version,
        };
        None
    }

    pub fn heads(&self) -> &[ChangeHash] {
        &self.message.heads
    }

    /// The wire bytes of this message.
    pub fn encode(self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = minicbor::Encoder::new(&mut out);
        let data = self.message.encode();
        let written: Result<(), minicbor::encode::Error<std::convert::Infallible>> = (|| {
            e.map(5)?;
            e.str("type")?.str("sync")?;
            e.str("senderId")?.str(&self.sender_id)?;
            e.str("targetId")?.str(&self.target_id)?;
            e.str("documentId")?.str(&self.document_id)?;
            e.str("data")?.bytes(&data)?;
            Ok(())
        })();
        debug_assert!(written.is_ok(), "encoding into a Vec cannot fail");
        out
    }
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
        assert!(check_sync_payload(&payload, 1 << 30).is_ok());
        let (document, heads) = announced_heads(&bytes).expect("heads");
        assert_eq!(document, "doc");
        assert!(heads.is_empty());
    }

    #[test]
    fn coalesced_sync_messages_deliver_every_change() {
        use automerge::sync::SyncDoc;
        use automerge::transaction::Transactable;
        let mut server = automerge::AutoCommit::new();
        let mut client = automerge::AutoCommit::new();
        let (mut server_state, mut client_state) =
            (automerge::sync::State::new(), automerge::sync::State::new());
        // Get both in sync first.
        for _ in 0..4 {
            if let Some(m) = server.sync().generate_sync_message(&mut server_state) {
                client
                    .sync()
                    .receive_sync_message(&mut client_state, m)
                    .expect("receive");
            }
            if let Some(m) = client.sync().generate_sync_message(&mut client_state) {
                server
                    .sync()
                    .receive_sync_message(&mut server_state, m)
                    .expect("receive");
            }
        }
        let wrap = |m: automerge::sync::Message| {
            let mut out = Vec::new();
            let mut e = Encoder::new(&mut out);
            e.map(5).expect("cbor");
            e.str("type").expect("cbor").str("sync").expect("cbor");
            e.str("senderId")
                .expect("cbor")
                .str("server")
                .expect("cbor");
            e.str("targetId")
                .expect("cbor")
                .str("client")
                .expect("cbor");
            e.str("documentId").expect("cbor").str("doc").expect("cbor");
            e.str("data")
                .expect("cbor")
                .bytes(&m.encode())
                .expect("cbor");
            OutgoingSync::parse(&out).expect("a sync message")
        };
        server.put(automerge::ROOT, "a", 1).expect("put");
        let first = wrap(
            server
                .sync()
                .generate_sync_message(&mut server_state)
                .expect("first"),
        );
        server.put(automerge::ROOT, "b", 2).expect("put");
        let second = wrap(
            server
                .sync()
                .generate_sync_message(&mut server_state)
                .expect("second"),
        );
        let mut merged = first;
        assert!(merged.absorb(second).is_none());
        let bytes = merged.encode();
        let envelope = decode(&bytes).expect("envelope");
        let message =
            automerge::sync::Message::decode(&envelope.data.expect("data")).expect("message");
        client
            .sync()
            .receive_sync_message(&mut client_state, message)
            .expect("receive");
        assert_eq!(
            client.get_heads(),
            server.get_heads(),
            "one merged message carried both changes"
        );
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
        assert!(check_sync_payload(b"\x42\x00\x01", 1 << 30).is_err());
    }

    #[test]
    fn ephemeral_messages_carry_the_senders_real_name() {
        let mut data = Vec::new();
        let mut e = Encoder::new(&mut data);
        e.map(3).unwrap();
        e.str("kind").unwrap().str("ferrolab.presence").unwrap();
        e.str("name").unwrap().str("the owner").unwrap();
        e.str("role").unwrap().str("owner").unwrap();
        let bytes = message("ephemeral", "peer-1", Some(&data));
        let stamped = stamp_ephemeral(&bytes, "mallory", "viewer").expect("stamped");
        let envelope = decode(&stamped).expect("decodes");
        assert_eq!(envelope.kind, "ephemeral");
        assert_eq!(envelope.sender_id.as_deref(), Some("peer-1"));
        let fields = map_entries(envelope.data.as_deref().expect("data")).expect("map");
        let text = |k: &str| {
            fields
                .iter()
                .find(|(_, _, key)| key.as_deref() == Some(k))
                .map(|(_, v, _)| Decoder::new(v).str().expect("str").to_string())
        };
        assert_eq!(text("name").as_deref(), Some("mallory"));
        assert_eq!(text("role").as_deref(), Some("viewer"));
        assert_eq!(text("kind").as_deref(), Some("ferrolab.presence"));
        assert_eq!(fields.len(), 3);
        let not_a_map = message("ephemeral", "peer-1", Some(&[0x01]));
        assert!(stamp_ephemeral(&not_a_map, "m", "viewer").is_err());
    }
}
