"""Prompt-test benchmark: a 2,000-case suite on the `echo` provider with ten string
and JSON assertions per case (contains, icontains, not-contains, starts-with, regex,
is-json, contains-json with a schema, equals, contains-any, levenshtein), run by
`ferrolab prompt-test` and by the promptfoo CLI in the same run, both with the cache
off. Checks that both give the same verdicts, then prints wall times and the ratio
ferrolab / promptfoo (goal: at most 0.05).

    make bench-prompt
    FERROLAB_BIN=... FERROLAB_PROMPTFOO=... python bench/prompt_bench.py [--cases 2000] [--rounds 3]
"""
import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def suite(cases):
    tests = []
    for i in range(cases):
        body = json.dumps({"id": i, "name": f"n{i}"})
        out = body if i % 2 == 0 else f"Item {i}: {body} end"
        tests.append({
            "description": f"case {i}",
            "vars": {"out": out},
            "assert": [
                {"type": "contains", "value": f"n{i}"},
                {"type": "icontains", "value": "ITEM" if i % 2 else "ID"},
                {"type": "not-contains", "value": "forbidden"},
                {"type": "starts-with", "value": "{" if i % 2 == 0 else "Item"},
                {"type": "regex", "value": "\\d+"},
                {"type": "is-json"},
                {"type": "contains-json", "value": {"type": "object", "required": ["id", "name"]}},
                {"type": "equals", "value": body if i % 7 == 0 else "something else"},
                {"type": "contains-any", "value": ["end", "zzz", f"n{i}"]},
                {"type": "levenshtein", "value": body, "threshold": 5},
            ],
        })
    return tests


def timed(cmd, cwd, env=None):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 100):
        sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ferrolab, promptfoo = os.environ["FERROLAB_BIN"], os.environ["FERROLAB_PROMPTFOO"]
    work = Path(tempfile.mkdtemp(prefix="prompt-bench-"))
    # Its databases, runs and kernelspec go when the bench ends, however it ends.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    (work / "tests.json").write_text(json.dumps(suite(args.cases)))
    (work / "promptfooconfig.yaml").write_text("prompts:\n  - '{{out}}'\nproviders:\n  - echo\ntests: file://tests.json\n")
    env = dict(os.environ, PROMPTFOO_DISABLE_TELEMETRY="1", PROMPTFOO_DISABLE_UPDATE="1",
               METADATA_SERVER_DETECTION="none", PROMPTFOO_DISABLE_ERROR_LOG="1",
               PROMPTFOO_DISABLE_DEBUG_LOG="1", PROMPTFOO_CONFIG_DIR=str(work / ".promptfoo"))
    ours, theirs = [], []
    for _ in range(args.rounds):
        theirs.append(timed([promptfoo, "eval", "-c", "promptfooconfig.yaml", "-o", "pf.json", "--no-cache",
                             "--no-table", "--no-progress-bar"], work, env))
        ours.append(timed([ferrolab, "prompt-test", "promptfooconfig.yaml", "--no-cache", "-o", "fl.json"], work))
    pf = json.loads((work / "pf.json").read_text())["results"]["results"]
    fl = json.loads((work / "fl.json").read_text())["results"]
    pf_verdicts = {r["testIdx"]: r["success"] for r in pf}
    fl_verdicts = {c["test"]: c["status"] == "pass" for c in fl}
    if pf_verdicts != fl_verdicts:
        diff = [k for k in pf_verdicts if pf_verdicts[k] != fl_verdicts.get(k)]
        sys.exit(f"verdicts differ on {len(diff)} cases, e.g. {diff[:5]}")
    passed = sum(fl_verdicts.values())
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"{args.cases} cases x 10 assertions, echo provider, cache off; same verdicts ({passed} pass)")
    print(f"promptfoo 0.120.0  median {theirs_s:7.2f} s   runs {', '.join(f'{t:.2f}' for t in theirs)}")
    print(f"ferrolab           median {ours_s:7.2f} s   runs {', '.join(f'{t:.3f}' for t in ours)}")
    print(f"ratio ferrolab / promptfoo: {ours_s / theirs_s:.4f}  (goal <= 0.05)")


if __name__ == "__main__":
    main()
