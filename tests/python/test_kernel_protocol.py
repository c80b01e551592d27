"""The jupyter_kernel_test suite against ferrolab, with every optional sample filled."""
import unittest

import jupyter_kernel_test
from jupyter_client.manager import start_new_kernel

from conftest import WARM_UP_TIMEOUT


class FerrolabKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = "ferrolab"
    language_name = "rust"
    file_extension = ".rs"

    @classmethod
    def setUpClass(cls):
        cls.km, cls.kc = start_new_kernel(kernel_name=cls.kernel_name, startup_timeout=60)
        # Wait for evcxr, so that each test's 15 s limit measures the kernel, not
        # the one-time warm-up.
        reply = cls.kc.execute_interactive("0", timeout=WARM_UP_TIMEOUT)
        assert reply["content"]["status"] == "ok", reply["content"]

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("something went to stderr");'

    completion_samples = [
        {"text": "let zebra_count = 1;\nzebra_c", "matches": {"zebra_count"}},
        {"text": "%lsma", "matches": {"%lsmagic"}},
        {"text": "%%mark", "matches": {"%%markdown"}},
    ]

    complete_code_samples = [
        "1 + 1",
        "let x = 1;",
        "fn f() -> i32 { 1 }",
        "%lsmagic",
        "%%html\n<div>",
        ":vars",
    ]
    incomplete_code_samples = ["fn f() {", "let v = vec![1,", 'let s = "open', "let y = 1 +"]
    invalid_code_samples = ["fn f() }", "let x = (1];", "let = 5;"]

    code_page_something = "%time?"
    code_generate_error = 'panic!("this cell fails on purpose")'

    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": '"text".to_uppercase()', "result": '"TEXT"'},
        {"code": "%env FERROLAB_SAMPLE=on\n%env FERROLAB_SAMPLE", "result": "on"},
    ]
    code_display_data = [
        {"code": 'display_html("<b>bold</b>");', "mime": "text/html"},
        {"code": 'display("application/json", r#"{"a": 1}"#);', "mime": "application/json"},
        {"code": "%%markdown\n# A title", "mime": "text/markdown"},
        {"code": '%%svg\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>', "mime": "image/svg+xml"},
        {"code": "%%latex\n$x^2$", "mime": "text/latex"},
        {"code": "%%html\n<i>it</i>", "mime": "text/html"},
    ]

    code_history_pattern = "6 * *"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "String::new"
    code_clear_output = "clear_output(false);"


class FerrolabIopubWelcomeTests(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = "ferrolab"
    support_iopub_welcome = True


if __name__ == "__main__":
    unittest.main()
