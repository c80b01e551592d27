"""What Hugging Face transformers makes of a GGUF model, as JSON on stdout.

For each prompt: its token ids, the greedy continuation, and the logits of the
prompt's last position. transformers dequantizes the GGUF weights and rebuilds the
tokenizer from the file's metadata, so this is an independent reading of the same
file ferrolab reads.

    python smollm2_reference.py MODEL.gguf PROMPTS.json [--max-new-tokens 32] [--chat]
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("gguf")
    parser.add_argument("prompts", help="JSON file: list of {prompt, chat}")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    with open(args.prompts) as f:
        cases = json.load(f)
    results = []
    for case in cases:
        text = case["prompt"]
        if case.get("chat"):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        result = {"prompt": text, "prompt_ids": ids}
        if case.get("generate", True):
            input_ids = torch.tensor([ids])
            with torch.no_grad():
                logits = model(input_ids).logits[0, -1].tolist()
                out = model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=args.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.eos_token_id,
                )
            completion = out[0, len(ids):].tolist()
            eos = tokenizer.eos_token_id
            if eos in completion:
                completion = completion[: completion.index(eos)]
            result.update(
                completion_ids=completion,
                text=tokenizer.decode(completion, skip_special_tokens=True),
                last_logits=logits,
            )
        results.append(result)
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
