"""Behaviour a notebook user relies on, through jupyter_client against the real kernel."""
import signal

from jupyter_client.manager import start_new_kernel

from conftest import WARM_UP_TIMEOUT
from kernel_client import collect, of_type, reply_to, run, stream_text


def test_execution_count_starts_at_one_and_skips_silent_and_unstored(kernel):
    km, kc = kernel
    # The fixture ran one cell already.
    content, _ = run(kc, "1")
    assert content["execution_count"] == 2
    content, messages = run(kc, "2", silent=True)
    assert content["status"] == "ok"
    assert of_type(messages, "execute_result") == []
    assert of_type(messages, "execute_input") == []
    content, _ = run(kc, "3", store_history=False)
    assert content["execution_count"] == 2
    content, _ = run(kc, "4")
    assert content["execution_count"] == 3


def test_first_count_is_one():
    km, kc = start_new_kernel(kernel_name="ferrolab", startup_timeout=60)
    try:
        content, messages = run(kc, "%lsmagic")
        assert content["execution_count"] == 1
        assert of_type(messages, "execute_input")[0]["content"]["execution_count"] == 1
        result = of_type(messages, "execute_result")[0]
        assert "%time" in result["content"]["data"]["text/plain"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def test_output_streams_while_the_cell_runs_and_input_works(kernel):
    km, kc = kernel
    code = 'println!("before input");\nlet name = input("Your name: ");\nprintln!("hello {name}");'
    msg_id = kc.execute(code, allow_stdin=True)
    # The first line must arrive while the cell is still blocked on input():
    # nothing has answered the input request yet.
    while True:
        msg = kc.get_iopub_msg(timeout=WARM_UP_TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            assert msg["content"]["text"] == "before input\n"
            break
    request = kc.get_stdin_msg(timeout=60)
    assert request["msg_type"] == "input_request"
    assert request["content"]["prompt"] == "Your name: "
    assert request["content"]["password"] is False
    kc.input("Ada: 100% sure")
    reply = reply_to(kc, msg_id)
    assert reply["content"]["status"] == "ok", reply["content"]
    messages = collect(kc, msg_id)
    assert stream_text(messages) == "hello Ada: 100% sure\n"


def test_input_without_stdin_is_a_clear_error(kernel):
    km, kc = kernel
    content, messages = run(kc, 'let s = input("x");', allow_stdin=False)
    assert content["status"] == "error"
    assert "allow_stdin is false" in content["evalue"]
    assert len(of_type(messages, "error")) == 1


def test_compile_error_sends_one_error_with_the_diagnostic(kernel):
    km, kc = kernel
    content, messages = run(kc, 'let n: i32 = "text";')
    assert content["status"] == "error"
    assert content["ename"] == "CompileError"
    assert content["evalue"] == "mismatched types"
    assert any("mismatched types" in line for line in content["traceback"])
    errors = of_type(messages, "error")
    assert len(errors) == 1
    assert errors[0]["content"]["traceback"] == content["traceback"]


def test_panic_keeps_earlier_variables_and_says_so(kernel):
    km, kc = kernel
    assert run(kc, "let kept = 41;")[0]["status"] == "ok"
    content, messages = run(kc, 'let fresh = 1;\npanic!("boom {}", kept);')
    assert content["status"] == "error"
    assert content["ename"] == "Panic"
    assert content["evalue"] == "boom 41"
    assert "No variables were lost." in content["traceback"]
    assert stream_text(messages, "stderr") == "", "the panic is reported once, as the error"
    content, messages = run(kc, "kept + 1")
    assert of_type(messages, "execute_result")[0]["content"]["data"]["text/plain"] == "42"


def test_interrupt_stops_the_cell_says_what_was_lost_and_keeps_the_kernel(kernel):
    km, kc = kernel
    assert run(kc, "let counter = 7;\nfn twice(x: i32) -> i32 { x * 2 }")[0]["status"] == "ok"
    msg_id = kc.execute('println!("started");\nstd::thread::sleep(std::time::Duration::from_secs(600));')
    while True:
        msg = kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    km.interrupt_kernel()
    reply = reply_to(kc, msg_id)["content"]
    assert reply["status"] == "error"
    assert reply["ename"] == "Interrupted"
    assert "Variables lost: counter." in reply["traceback"]
    collect(kc, msg_id)
    # Functions survive; variables do not, and the error says how to get them back.
    content, messages = run(kc, "twice(21)")
    assert of_type(messages, "execute_result")[0]["content"]["data"]["text/plain"] == "42"
    assert run(kc, "counter")[0]["status"] == "error"


def test_stop_on_error_aborts_queued_cells(kernel):
    km, kc = kernel
    # The first cell waits for input, so the next two are surely queued behind it.
    first = kc.execute('let answer = input("go? ");\npanic!("failed after {answer}");', allow_stdin=True)
    assert kc.get_stdin_msg(timeout=120)["msg_type"] == "input_request"
    second = kc.execute("%lsmagic")
    third = kc.execute("%lsmagic", stop_on_error=False)
    kc.input("yes")
    assert reply_to(kc, first)["content"]["status"] == "error"
    assert reply_to(kc, second)["content"]["status"] == "aborted"
    assert reply_to(kc, third)["content"]["status"] == "aborted"
    # The kernel goes on afterwards.
    assert run(kc, "%lsmagic")[0]["status"] == "ok"


def test_errors_with_stop_on_error_false_do_not_abort(kernel):
    km, kc = kernel
    first = kc.execute("%nonexistent_magic", stop_on_error=False)
    second = kc.execute("%lsmagic")
    assert reply_to(kc, first)["content"]["status"] == "error"
    assert reply_to(kc, second)["content"]["status"] == "ok"


def test_unknown_magic_names_the_closest(kernel):
    km, kc = kernel
    content, _ = run(kc, "%lsmagc")
    assert content["ename"] == "UnknownMagic"
    assert "did you mean %lsmagic" in content["evalue"]


def test_magics_and_rust_mix_in_one_cell(kernel):
    km, kc = kernel
    content, messages = run(kc, "let base = 20;\n%time base + 1\nbase * 2")
    assert content["status"] == "ok", content
    displays = of_type(messages, "display_data")
    assert displays[0]["content"]["data"]["text/plain"] == "21"
    assert "Wall time:" in stream_text(messages)
    assert of_type(messages, "execute_result")[0]["content"]["data"]["text/plain"] == "40"


def test_live_display_updates_in_place(kernel):
    km, kc = kernel
    code = 'let d = display("text/plain", "0%");\nfor p in [50, 100] { d.update("text/plain", &format!("{p}%")); }'
    content, messages = run(kc, code)
    assert content["status"] == "ok", content
    shown = of_type(messages, "display_data")
    updates = of_type(messages, "update_display_data")
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert [u["content"]["data"]["text/plain"] for u in updates] == ["50%", "100%"]
    assert all(u["content"]["transient"]["display_id"] == display_id for u in updates)


def test_evcxr_commands_and_rich_display_convention(kernel):
    km, kc = kernel
    content, messages = run(kc, "let listed = 3;\n:vars")
    assert content["status"] == "ok", content
    result = of_type(messages, "execute_result")[0]["content"]["data"]
    assert "listed" in result["text/plain"]
    code = (
        "struct Card;\n"
        "impl Card { fn evcxr_display(&self) {\n"
        '  println!("EVCXR_BEGIN_CONTENT text/html\\n<b>card</b>\\nEVCXR_END_CONTENT");\n'
        "} }\nCard"
    )
    content, messages = run(kc, code)
    assert content["status"] == "ok", content
    assert of_type(messages, "execute_result")[0]["content"]["data"]["text/html"] == "<b>card</b>"


def test_comms_are_answered(kernel):
    km, kc = kernel
    msg_id = kc.comm_info()
    assert reply_to(kc, msg_id)["content"] == {"status": "ok", "comms": {}}
    msg = kc.session.msg("comm_open", {"comm_id": "c-1", "target_name": "jupyter.widget", "data": {}})
    kc.shell_channel.send(msg)
    closes = [m for m in collect(kc, msg["header"]["msg_id"]) if m["msg_type"] == "comm_close"]
    assert closes[0]["content"]["comm_id"] == "c-1"


def test_kernel_info_on_control_and_history_across_restarts(kernel):
    km, kc = kernel
    msg = kc.session.msg("kernel_info_request", {})
    kc.control_channel.send(msg)
    reply = kc.get_control_msg(timeout=30)
    assert reply["content"]["language_info"]["name"] == "rust"
    assert reply["content"]["implementation"] == "ferrolab"

    marker = "let remembered_across_restarts = 1;"
    assert run(kc, marker)[0]["status"] == "ok"
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=60)
    msg_id = kc.history(hist_access_type="search", pattern="let remembered_across*", output=False, raw=True)
    history = reply_to(kc, msg_id)["content"]["history"]
    assert history and history[-1][2] == marker
    # It was recorded by an earlier session than the one answering now.
    msg_id = kc.history(hist_access_type="range", session=0, start=1, stop=0, output=False, raw=True)
    current = reply_to(kc, msg_id)["content"]["history"]
    assert all(entry[0] > history[-1][0] for entry in current)


def test_inspect_shows_magic_help(kernel):
    km, kc = kernel
    msg_id = kc.inspect("%time 1 + 1", cursor_pos=3)
    reply = reply_to(kc, msg_id)["content"]
    assert reply["found"] is True
    assert "wall-clock" in reply["data"]["text/plain"]


def test_sigint_interrupts_the_cell_instead_of_killing_the_kernel(kernel):
    km, kc = kernel
    msg_id = kc.execute('println!("started");\nstd::thread::sleep(std::time::Duration::from_secs(600));')
    while True:
        msg = kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    km.signal_kernel(signal.SIGINT)
    reply = reply_to(kc, msg_id)["content"]
    assert reply["ename"] == "Interrupted"
    assert km.is_alive()
    assert run(kc, "%lsmagic")[0]["status"] == "ok"


def test_a_cell_sent_after_a_failed_cells_reply_runs(kernel):
    # stop_on_error aborts what was queued behind the failed cell, never what the
    # client sent once it had the failure's reply (as a person running the next cell).
    km, kc = kernel
    for _ in range(30):
        content, _ = run(kc, "%load /no/such/file.csv --name t")
        assert content["status"] == "error", content
        content, _ = run(kc, "%lsmagic")
        assert content["status"] == "ok", content


def result_text(kc, code):
    content, messages = run(kc, code)
    assert content["status"] == "ok", content
    return of_type(messages, "execute_result")[0]["content"]["data"]["text/plain"]


def test_value_display_follows_fmt_and_types(kernel):
    km, kc = kernel
    assert result_text(kc, "vec![1, 2]") == "[1, 2]"
    result_text(kc, ":fmt {:#?}")
    assert result_text(kc, "vec![1, 2]") == "[\n    1,\n    2,\n]"
    result_text(kc, ":types")
    assert result_text(kc, "7u8") == ": u8 = 7"
    result_text(kc, ":fmt {:?}\n:types")
    assert result_text(kc, "Some(3)") == "Some(3)"


def test_a_unit_value_shows_nothing(kernel):
    # As IPython shows nothing for None: `Out[n]: ()` is noise.
    km, kc = kernel
    content, messages = run(kc, 'println!("side effect")')
    assert content["status"] == "ok", content
    assert of_type(messages, "execute_result") == []
    assert "side effect" in stream_text(messages)
    content, messages = run(kc, "let unit = (); unit")
    assert of_type(messages, "execute_result") == []
    assert result_text(kc, "(1, 2)") == "(1, 2)"


def test_kernel_exits_when_its_front_end_is_killed():
    import os
    import subprocess
    import sys
    import time

    front_end = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from jupyter_client.manager import start_new_kernel\n"
            "km, kc = start_new_kernel(kernel_name='ferrolab', startup_timeout=60)\n"
            "print(km.provisioner.process.pid, flush=True)\n"
            "time.sleep(600)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    kernel_pid = int(front_end.stdout.readline())
    front_end.kill()
    front_end.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(kernel_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(kernel_pid, 9)
        raise AssertionError("the kernel outlived its front end by a minute")
