"""Small helpers over jupyter_client for the ferrolab suites."""
from queue import Empty

TIMEOUT = 120


def collect(kc, msg_id, timeout=TIMEOUT):
    """Every iopub message of one request, up to and including its idle status."""
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        out.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out


def reply_to(kc, msg_id, timeout=TIMEOUT):
    """The shell reply to one request, skipping replies to others."""
    while True:
        msg = kc.get_shell_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def run(kc, code, timeout=TIMEOUT, **kwargs):
    """Executes code; returns (reply content, iopub messages)."""
    msg_id = kc.execute(code, **kwargs)
    reply = reply_to(kc, msg_id, timeout)
    return reply["content"], collect(kc, msg_id, timeout)


def of_type(messages, msg_type):
    return [m for m in messages if m["msg_type"] == msg_type]


def stream_text(messages, name="stdout"):
    return "".join(m["content"]["text"] for m in of_type(messages, "stream") if m["content"]["name"] == name)


def drain(channel_get, timeout=0.2):
    while True:
        try:
            channel_get(timeout=timeout)
        except Empty:
            return
