"""llama.cpp's OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`), as
the serving benchmark's anchor, with one change where the processor has AMX tiles:
ggml's AMX matrix product crashes there (a segmentation fault in
`ggml_backend_amx_mul_mat` on the first prompt of more than one token, seen with
llama-cpp-python 0.3.36 on a virtual machine), so the model is loaded without ggml's
extra buffer types, which only AMX and weight repacking use. Everything else is the
stock server: `python bench/llama_server.py [llama_cpp.server arguments]`."""
import runpy
import sys

import llama_cpp.llama_cpp as native


def has_amx():
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_tile" in f.read()
    except OSError:
        return False


if has_amx():
    stock = native.llama_model_default_params

    def without_extra_buffer_types():
        params = stock()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = without_extra_buffer_types
    print("llama_server: AMX present; ggml's extra buffer types off", file=sys.stderr, flush=True)

sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
