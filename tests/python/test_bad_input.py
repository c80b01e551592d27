"""Garbage, forgeries and floods over real sockets: the kernel stays up, answers
what it can, and never runs a message it cannot trust."""
import json
import uuid

import zmq
from jupyter_client.session import Session

from kernel_client import reply_to, run


def raw_shell(km):
    """A DEALER on the kernel's shell socket, plus a signer with the real key."""
    info = km.get_connection_info()
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
    sock.connect(f"{info['transport']}://{info['ip']}:{info['shell_port']}")
    key = info["key"]
    key = key.decode() if isinstance(key, bytes) else key
    return sock, Session(key=key.encode(), signature_scheme=info["signature_scheme"])


def signed_frames(session, msg_type, content, header_overrides=None):
    msg = session.msg(msg_type, content)
    header = dict(msg["header"])
    header.update(header_overrides or {})
    parts = [
        json.dumps(header, default=str).encode(),
        b"{}",
        b"{}",
        json.dumps(content).encode() if not isinstance(content, bytes) else content,
    ]
    signature = session.sign(parts)
    if isinstance(signature, str):
        signature = signature.encode()
    return header["msg_id"], [b"<IDS|MSG>", signature] + parts


def recv_reply(sock, session, msg_id, timeout_ms=60_000):
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while True:
        events = dict(poller.poll(timeout_ms))
        assert sock in events, f"no reply to {msg_id}"
        frames = sock.recv_multipart()
        _, msg = session.feed_identities(frames)
        msg = session.deserialize(msg)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def alive(kc):
    """The kernel still answers and still runs code."""
    content, _ = run(kc, "%env FERROLAB_ALIVE=yes")
    return content["status"] == "ok"


def test_garbage_and_truncated_frames(kernel):
    km, kc = kernel
    sock, session = raw_shell(km)
    sock.send_multipart([b"\x00\xff garbage"])
    sock.send_multipart([b"<IDS|MSG>"])
    sock.send_multipart([b"<IDS|MSG>", b"deadbeef", b"{}"])
    sock.send_multipart([b"<IDS|MSG>", b"", b"not json", b"{}", b"{}", b"{}"])
    sock.send_multipart([b""] * 50)
    assert alive(kc)
    sock.close()


def test_wrong_or_missing_signature_is_never_executed(kernel):
    km, kc = kernel
    sock, session = raw_shell(km)
    content = {"code": "%env FERROLAB_FORGED=1", "silent": False, "store_history": True,
               "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
    _, frames = signed_frames(session, "execute_request", content)
    frames[1] = b"0" * 64
    sock.send_multipart(frames)
    frames[1] = b""
    sock.send_multipart(frames)
    forger = Session(key=b"not-the-key", signature_scheme="hmac-sha256")
    _, frames = signed_frames(forger, "execute_request", content)
    sock.send_multipart(frames)
    content, _ = run(kc, "%env FERROLAB_FORGED")
    assert content["status"] == "error"
    assert content["ename"] == "KeyError"
    sock.close()


def test_unknown_type_and_bad_json_get_answers_where_possible(kernel):
    km, kc = kernel
    sock, session = raw_shell(km)
    _, frames = signed_frames(session, "no_such_request", {"x": 1})
    sock.send_multipart(frames)
    msg_id, frames = signed_frames(session, "execute_request", b"{this is not json")
    sock.send_multipart(frames)
    reply = recv_reply(sock, session, msg_id)
    assert reply["msg_type"] == "execute_reply"
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "BadRequest"
    msg_id, frames = signed_frames(session, "execute_request", {"code": 42})
    sock.send_multipart(frames)
    reply = recv_reply(sock, session, msg_id)
    assert reply["content"]["ename"] == "BadRequest"
    assert alive(kc)
    sock.close()


def test_client_that_disconnects_mid_reply(kernel):
    km, kc = kernel
    for _ in range(5):
        sock, session = raw_shell(km)
        _, frames = signed_frames(session, "execute_request", {
            "code": "%lsmagic", "silent": False, "store_history": False,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": False})
        sock.send_multipart(frames)
        sock.close()
    assert alive(kc)


def test_a_thousand_requests_without_waiting(kernel):
    km, kc = kernel
    ids = [kc.execute(f"%env FERROLAB_FLOOD={i}", stop_on_error=False) for i in range(1000)]
    counts = []
    for msg_id in ids:
        reply = reply_to(kc, msg_id)["content"]
        assert reply["status"] == "ok"
        counts.append(reply["execution_count"])
    assert counts == list(range(counts[0], counts[0] + 1000))
    content, _ = run(kc, "%env FERROLAB_FLOOD")
    assert content["status"] == "ok"
