"""Last-position logits of a prompt from transformers, with and without a PEFT
adapter, as JSON on stdout. The base is a GGUF file (dequantized by transformers)
or a Hugging Face folder.

    python peft_logits.py BASE ADAPTER_DIR PROMPT
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def main() -> int:
    base, adapter, prompt = sys.argv[1:4]
    torch.set_num_threads(2)
    if os.path.isdir(base):
        kwargs, folder = {}, base
    else:
        folder, name = os.path.split(os.path.abspath(base))
        kwargs = {"gguf_file": name}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        base_logits = model(ids).logits[0, -1].tolist()
        model = PeftModel.from_pretrained(model, adapter).eval()
        adapted = model(ids).logits[0, -1].tolist()
    json.dump({"prompt_ids": ids[0].tolist(), "base_logits": base_logits, "adapted_logits": adapted}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
