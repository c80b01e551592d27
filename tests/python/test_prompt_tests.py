"""`ferrolab prompt-test` against the real promptfoo CLI (same configs, same verdicts
for every test and every assertion), against a running `ferrolab serve` through the
`openai:` provider and the model in-process through `ferrolab:`, with JUnit XML read
by a JUnit parser, `--fail-under` exit codes, the cache, `--repeat`, baselines and
bad input."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from junitparser import Error, Failure, JUnitXml

from conftest import BIN, SMOLLM2
from test_serve import Server

PROMPTFOO = os.environ.get("FERROLAB_PROMPTFOO")
# Offline and quiet: no telemetry or update check; no probing for cloud credentials
# (the default graders look for Google's metadata server); no log files (promptfoo
# 0.120's file logger can crash the process at exit after an error was logged).
PROMPTFOO_ENV = {"PROMPTFOO_DISABLE_TELEMETRY": "1", "PROMPTFOO_DISABLE_UPDATE": "1",
                 "METADATA_SERVER_DETECTION": "none", "PROMPTFOO_DISABLE_ERROR_LOG": "1",
                 "PROMPTFOO_DISABLE_DEBUG_LOG": "1"}


def ferrolab(cwd, *args, check_code=None, timeout=900):
    proc = subprocess.run([BIN, "prompt-test", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check_code is not None:
        assert proc.returncode == check_code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def write_suite(path, suite):
    path.write_text(yaml.safe_dump(suite, sort_keys=False, allow_unicode=True))
    return path


def ours(cwd, config):
    out = Path(cwd) / "ferrolab-out.json"
    proc = ferrolab(cwd, config, "--no-cache", "-o", out)
    assert proc.returncode in (0, 100), proc.stderr
    return json.loads(out.read_text())


def theirs(cwd, config):
    if not PROMPTFOO or not Path(PROMPTFOO).exists():
        pytest.fail("set FERROLAB_PROMPTFOO to the promptfoo 0.120.0 CLI (make test installs it)")
    out = Path(cwd) / "promptfoo-out.json"
    env = dict(os.environ, **PROMPTFOO_ENV, PROMPTFOO_CONFIG_DIR=str(Path(cwd) / ".promptfoo"))
    proc = subprocess.run([PROMPTFOO, "eval", "-c", str(config), "-o", str(out), "--no-cache", "--no-table",
                           "--no-progress-bar"], cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode in (0, 100), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def flatten(components):
    """promptfoo lists an assert-set's result and then its parts; so does this."""
    out = []
    for c in components or []:
        out.append(c)
        out.extend(flatten(c.get("componentResults")))
    return out


def their_rows(out):
    rows = {}
    for r in out["results"]["results"]:
        status = "pass" if r["success"] else ("error" if r.get("failureReason") == 2 else "fail")
        grading = r.get("gradingResult") or {}
        parts = [(c["pass"], c["score"]) for c in flatten(grading.get("componentResults"))]
        rows[(r["testIdx"], r["promptIdx"])] = (status, r.get("score"), parts, r["response"]["output"] if r.get("response") else None)
    return rows


def our_rows(out):
    rows = {}
    for c in out["results"]:
        grading = c.get("gradingResult") or {}
        parts = [(g["pass"], g["score"]) for g in flatten(grading.get("componentResults"))]
        rows[(c["test"], c["prompt"])] = (c["status"], c["score"], parts, c["response"]["output"] if c.get("response") else None)
    return rows


def assert_same_verdicts(tmp_path, config, expect_tests):
    mine, pf = our_rows(ours(tmp_path, config)), their_rows(theirs(tmp_path, config))
    assert len(pf) == expect_tests, len(pf)
    assert sorted(mine) == sorted(pf)
    differences = []
    for key in sorted(pf):
        (s1, score1, parts1, out1), (s2, score2, parts2, out2) = mine[key], pf[key]
        # promptfoo keeps no answer for an errored cell; ferrolab does.
        same = s1 == s2 and (out1 == out2 or s1 == "error")
        if same and s1 != "error":
            same = abs(score1 - score2) < 1e-9 and [p for p, _ in parts1] == [p for p, _ in parts2] and all(
                abs(a - b) < 1e-9 for (_, a), (_, b) in zip(parts1, parts2))
        if not same:
            differences.append(f"{key}: ferrolab {s1} {score1} {parts1} {out1!r} / promptfoo {s2} {score2} {parts2} {out2!r}")
    assert not differences, f"{len(differences)} of {len(pf)} differ:\n" + "\n".join(differences[:40])
    return mine


# Outputs (through echo: the prompt is just the var) and the assertions each meets.
OUTPUTS = ["hello world", "Hello, World!", "", "  padded  ", "Grüße aus Köln", "😀 emoji 😃", '{"a": 1, "b": [1, 2]}',
           'Sure: {"name": "Ada", "age": 36} done', "[1, 2, 3]", "line one\nline two", "The cat sat on the mat.", "42"]
RUBRIC = json.dumps({"pass": "{{ 'yes' if 'world' in output else 'no' }}",
                     "score": "{{ 1 if 'world' in output else 0.25 }}", "reason": "looked for world"})
ASSERTIONS = [
    {"type": "equals", "value": "hello world"}, {"type": "equals", "value": 42},
    {"type": "equals", "value": {"b": [1, 2], "a": 1}}, {"type": "not-equals", "value": "hello world"},
    {"type": "contains", "value": "world"}, {"type": "icontains", "value": "WORLD"},
    {"type": "not-contains", "value": "cat"}, {"type": "contains", "value": 42}, {"type": "icontains", "value": "KÖLN"},
    {"type": "contains-any", "value": ["cat", "world"]}, {"type": "contains-any", "value": 'x, "b,c" , Ada'},
    {"type": "contains-all", "value": ["hello", "world"]}, {"type": "icontains-any", "value": "CAT, KÖLN"},
    {"type": "icontains-all", "value": ["GRÜSSE", "köln"]}, {"type": "not-contains-all", "value": "line, two"},
    {"type": "starts-with", "value": "Hello"}, {"type": "not-starts-with", "value": "h"},
    {"type": "regex", "value": "^[Hh]ello"}, {"type": "regex", "value": "\\d+"}, {"type": "not-regex", "value": "cat"},
    {"type": "regex", "value": "(?<=Sure: )\\{"}, {"type": "regex", "value": "one$"},
    {"type": "is-json"}, {"type": "not-is-json"}, {"type": "is-json", "value": {"type": "object", "required": ["a"]}},
    {"type": "contains-json"}, {"type": "not-contains-json"},
    {"type": "contains-json", "value": {"type": "object", "required": ["name"]}},
    {"type": "levenshtein", "value": "hello world"}, {"type": "levenshtein", "value": "hello world", "threshold": 1},
    {"type": "rouge-n", "value": "The cat sat on the mat."}, {"type": "rouge-n", "value": "hello world", "threshold": 0.3},
    {"type": "not-rouge-n", "value": "The cat sat on the mat."},
    {"type": "bleu", "value": "The cat sat on the mat."}, {"type": "bleu", "value": ["hello there world", "hello world"], "threshold": 0.1},
    {"type": "cost", "threshold": 0.001}, {"type": "latency", "threshold": 600000}, {"type": "perplexity"},
    {"type": "llm-rubric", "value": "mentions the world", "provider": "echo", "rubricPrompt": RUBRIC},
    {"type": "llm-rubric", "value": "anything", "provider": "echo", "threshold": 0.5, "rubricPrompt": RUBRIC},
    {"type": "llm-rubric", "value": "graded by echo with the default prompt", "provider": "echo"},
]


def test_every_assertion_type_gives_promptfoos_verdict(tmp_path):
    tests = [{"description": f"{i}-{j}", "vars": {"out": o}, "assert": [a]}
             for i, o in enumerate(OUTPUTS) for j, a in enumerate(ASSERTIONS)]
    config = write_suite(tmp_path / "suite.yaml", {"prompts": ["{{out}}"], "providers": ["echo"], "tests": tests})
    rows = assert_same_verdicts(tmp_path, config, len(tests))
    # The corpus exercises every verdict, not only passes.
    statuses = [s for s, *_ in rows.values()]
    assert statuses.count("pass") > 100 and statuses.count("fail") > 100 and statuses.count("error") >= len(OUTPUTS)


def test_scoring_defaults_sets_var_lists_csv_and_chat_prompts_agree(tmp_path):
    (tmp_path / "chat.json").write_text(json.dumps(
        [{"role": "system", "content": "You answer about {{a}}."}, {"role": "user", "content": "Say \"{{b}}\""}]))
    suite = {
        "description": "semantics",
        "prompts": ["Topic {{a}} and {{b}}", "file://chat.json"],
        "providers": ["echo"],
        "defaultTest": {"vars": {"b": "base"}, "assert": [{"type": "contains", "value": "Topic", "weight": 2}]},
        "tests": [
            {"vars": {"a": ["x", "y"], "b": ["1", "2"]}, "assert": [{"type": "icontains", "value": "X"}]},
            {"vars": {"a": "alpha", "n": [1, 2]}, "threshold": 0.6,
             "assert": [{"type": "contains", "value": "zzz"}, {"type": "contains", "value": "alpha", "weight": 3}]},
            {"vars": {"a": "beta"}, "threshold": 0,
             "assert": [{"type": "contains", "value": "zzz", "weight": 0}, {"type": "contains", "value": "beta", "metric": "m"}]},
            {"vars": {"a": "gamma"}, "assert": [
                {"type": "assert-set", "threshold": 0.5, "weight": 2, "metric": "set",
                 "assert": [{"type": "contains", "value": "gamma"}, {"type": "contains", "value": "nope"}]},
                {"type": "assert-set", "assert": [{"type": "starts-with", "value": "Topic"}, {"type": "regex", "value": "g.mma"}]},
                {"type": "not-icontains", "value": "GAMMA", "weight": 0.5}]},
            {"description": "json prompt", "vars": {"a": "quote\"d"}, "assert": [
                {"type": "is-json"}, {"type": "contains", "value": "\"role\": \"system\""}, {"type": "contains-json"}]},
            {"vars": {"a": "trailing newline\n"}, "assert": [{"type": "contains", "value": "newline and"}]},
        ],
    }
    config = write_suite(tmp_path / "suite.yaml", suite)
    # 4 combinations + 1 + 1 + 1 + 1 + 1 tests, each against two prompts.
    assert_same_verdicts(tmp_path, config, 9 * 2)


def test_csv_tests_with_expected_columns_agree(tmp_path):
    (tmp_path / "cases.csv").write_text(
        "topic,__expected,__expected2,__description,__threshold,__metric\n"
        "cats,contains: cat,not-icontains: DOG,one,,animals\n"
        "dogs,Tell me about dogs,,two,,\n"
        'birds,levenshtein(3):Tell me about bird,"contains-any: x, y, birds",three,,\n'
        'fish,"icontains-all:TELL,FISH",starts-with:Tell,four,0.5,\n'
        '"a, b",is-json,regex:^Tell,five,,\n'
        "  spaced  ,  Tell me about   spaced  ,,six,,\n")
    config = write_suite(tmp_path / "suite.yaml", {"prompts": ["Tell me about {{topic}}"], "providers": ["echo"],
                                                  "tests": "file://cases.csv"})
    assert_same_verdicts(tmp_path, config, 6)


def test_junit_fail_under_and_exit_codes(tmp_path):
    config = write_suite(tmp_path / "suite.yaml", {
        "prompts": ["Say {{word}}", "Shout {{word}}!"], "providers": ["echo"],
        "tests": [{"vars": {"word": w}, "assert": [{"type": "contains", "value": "Say"}]} for w in ["a", "b<&>\"", "c"]]})
    junit = tmp_path / "out" / "junit.xml"
    # Half pass (the "Say" prompt), half fail.
    proc = ferrolab(tmp_path, config, "--junit", junit, check_code=100)
    assert "3 passed, 3 failed, 0 errors of 6 (50.0% pass rate)" in proc.stdout
    xml = JUnitXml.fromfile(str(junit))
    suites = list(xml)
    assert len(suites) == 2
    assert [s.tests for s in suites] == [3, 3] and [s.failures for s in suites] == [0, 3]
    failed = [c for c in suites[1] if any(isinstance(r, Failure) for r in c.result)]
    assert len(failed) == 3 and 'b<&>"' in failed[1].name
    assert "Expected output to contain" in failed[0].result[0].message
    ferrolab(tmp_path, config, "--fail-under", "0.5", check_code=0)
    ferrolab(tmp_path, config, "--fail-under", "50%", check_code=0)
    ferrolab(tmp_path, config, "--fail-under", "0.51", check_code=100)
    bad = ferrolab(tmp_path, config, "--fail-under", "2%%", check_code=2)
    assert "pass rate" in bad.stderr
    passing = write_suite(tmp_path / "ok.yaml", {"prompts": ["Say {{word}}"], "providers": ["echo"], "tests": [{"vars": {"word": "x"}}]})
    ferrolab(tmp_path, passing, check_code=0)


def test_an_unreachable_provider_errors_its_cells_and_the_rest_runs(tmp_path):
    config = write_suite(tmp_path / "suite.yaml", {
        "prompts": ["Say {{word}}"],
        "providers": ["echo", {"id": "openai:chat:nobody", "config": {"apiBaseUrl": "http://127.0.0.1:9/v1"}}],
        "tests": [{"vars": {"word": "hi"}, "assert": [{"type": "contains", "value": "hi"}]}]})
    junit = tmp_path / "junit.xml"
    proc = ferrolab(tmp_path, config, "--junit", junit, "-o", tmp_path / "r.json", check_code=100)
    assert "1 passed, 0 failed, 1 errors" in proc.stdout
    assert "cannot reach http://127.0.0.1:9/v1/chat/completions" in proc.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert [c["status"] for c in result["results"]] == ["pass", "error"]
    errors = [r for s in JUnitXml.fromfile(str(junit)) for c in s for r in c.result if isinstance(r, Error)]
    assert len(errors) == 1


def test_the_cache_repeat_and_a_baseline(tmp_path):
    suite = {"prompts": ["Say {{word}}"], "providers": ["echo"],
             "tests": [{"vars": {"word": w}, "assert": [{"type": "contains", "value": "x"}]} for w in ["ax", "b", "cx"]]}
    config = write_suite(tmp_path / "suite.yaml", suite)
    first = ferrolab(tmp_path, config, "--name", "base", "-o", tmp_path / "1.json", check_code=100)
    assert "run kept in runs/prompt-tests/base" in first.stdout
    assert (tmp_path / "runs/prompt-tests/base/results.json").exists()
    metrics = json.loads((tmp_path / "runs/prompt-tests/base/metrics.jsonl").read_text())
    assert metrics["pass_rate"] == pytest.approx(2 / 3) and metrics["failed"] == 1
    assert not any(c["cached"] for c in json.loads((tmp_path / "1.json").read_text())["results"])
    # The same prompts again come from the cache; a latency assertion then cannot judge.
    suite["tests"][0]["assert"].append({"type": "latency", "threshold": 100000})
    write_suite(config, suite)
    ferrolab(tmp_path, config, "-o", tmp_path / "2.json", check_code=100)
    second = json.loads((tmp_path / "2.json").read_text())["results"]
    assert all(c["cached"] for c in second)
    assert second[0]["status"] == "error" and "--no-cache" in second[0]["error"]
    ferrolab(tmp_path, config, "--no-cache", "-o", tmp_path / "3.json", check_code=100)
    assert not any(c["cached"] for c in json.loads((tmp_path / "3.json").read_text())["results"])
    # Now "ax" regresses, "b" gets fixed and "cx" still passes.
    suite["tests"] = [{"vars": {"word": w}, "assert": [{"type": "contains", "value": v}]}
                      for w, v in [("ax", "zz"), ("b", "b"), ("cx", "x")]]
    write_suite(config, suite)
    html = tmp_path / "report.html"
    proc = ferrolab(tmp_path, config, "--baseline", "base", "-o", html, "--repeat", "3", "--no-cache", check_code=100)
    assert "since " in proc.stdout and "1 regressed, 1 fixed" in proc.stdout, proc.stdout
    assert "repeat 3: every repetition passed for 66.7%" in proc.stdout
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "regressed</span>" in page and "3/3 passed" in page
    missing = ferrolab(tmp_path, config, "--baseline", "nope", check_code=1)
    assert "no baseline run" in missing.stderr and "base" in missing.stderr


def test_bad_input_gets_a_clear_error(tmp_path):
    cases = [
        ("prompts: [hi\nproviders: [echo]\n", "invalid YAML at line 2, column"),
        ("prompts: [hi]\nproviders: [echo]\ntests: [{assert: [{type: containz, value: a}]}]\n", "unknown assertion type `containz`; supported: equals, contains"),
        ("prompts: ['{{name}} and {{place}}']\nproviders: [echo]\ntests: [{vars: {name: a}}]\n", "does not define: place"),
        ("prompts: [hi]\nproviders: [echo]\ntests: [{assert: [{type: regex, value: '(a'}]}]\n", "invalid regex"),
        ("prompts: [hi]\nproviders: [echo]\ntests: [{assert: [{type: is-json, value: {type: 5}}]}]\n", "invalid JSON schema"),
        ("prompts: [hi]\nproviders: [bogus:thing]\n", "unknown provider `bogus:thing`"),
        ("prompts: [hi]\nproviders: [echo]\ntests: file://missing.csv\n", "cannot read file://missing.csv"),
        ("prompts: [hi]\nproviders: [echo]\nscenarios: []\n", "`scenarios` is not supported"),
    ]
    for i, (text, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text)
        proc = ferrolab(tmp_path, path, check_code=1)
        assert message in proc.stderr, (text, proc.stderr)
    proc = ferrolab(tmp_path, tmp_path / "nothing.yaml", check_code=1)
    assert "cannot read the suite" in proc.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Server(SMOLLM2, "--bind", "127.0.0.1:0", "--model-name", "smollm2", "--name", "prompt-tests")
    yield server
    server.stop()


def test_a_suite_against_ferrolab_serve_and_the_in_process_engine(served, tmp_path):
    question = "What is the capital of France?"
    answer = served.client().chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0)
    text = answer.choices[0].message.content
    usage = answer.usage
    price = {"inputCost": 0.000002, "outputCost": 0.000004}
    config = write_suite(tmp_path / "suite.yaml", {
        "prompts": ["{{question}}"],
        "providers": [
            {"id": "openai:chat:smollm2", "label": "served",
             "config": {"apiBaseUrl": served.url + "/v1", "apiKey": "unused", "temperature": 0, "max_tokens": 24, **price}},
            {"id": "ferrolab:" + str(SMOLLM2), "label": "in-process", "config": {"max_tokens": 24, **price}},
        ],
        "defaultTest": {"options": {"provider": {"embedding": "ferrolab:" + str(SMOLLM2)}}},
        "tests": [{"vars": {"question": question}, "assert": [
            {"type": "equals", "value": text},
            {"type": "contains", "value": text.split()[0]},
            {"type": "not-contains", "value": "zzzz"},
            {"type": "similar", "value": text, "threshold": 0.999},
            {"type": "cost", "threshold": 1},
            {"type": "latency", "threshold": 600000},
        ]}, {"vars": {"question": question}, "assert": [{"type": "perplexity", "threshold": 1000}]}],
    })
    out = tmp_path / "r.json"
    proc = ferrolab(tmp_path, config, "--no-cache", "-o", out, timeout=1200)
    result = json.loads(out.read_text())
    cells = {(c["test"], c["provider"]): c for c in result["results"]}
    # Served and in-process give the same greedy answer, so every check passes on both...
    for provider in (0, 1):
        cell = cells[(0, provider)]
        assert cell["status"] == "pass", (cell, proc.stdout)
        assert cell["response"]["output"] == text
    served_cell = cells[(0, 0)]["response"]
    assert served_cell["promptTokens"] == usage.prompt_tokens and served_cell["completionTokens"] == usage.completion_tokens
    assert served_cell["cost"] == pytest.approx(usage.prompt_tokens * 0.000002 + usage.completion_tokens * 0.000004)
    # ...except perplexity, which needs log-probabilities the OpenAI API route does not give.
    assert cells[(1, 0)]["status"] == "error" and "log-probabilities" in cells[(1, 0)]["error"]
    assert cells[(1, 1)]["status"] == "pass"
    logprobs = cells[(1, 1)]["response"]["logProbs"]
    assert len(logprobs) == cells[(1, 1)]["response"]["completionTokens"] and all(lp <= 0 for lp in logprobs)
    assert proc.returncode == 100


def test_an_adapter_after_plus_and_raw_prompts_match_the_engine(tmp_path):
    from test_serve import EXAMPLES, engine

    folder = tmp_path / "adapter"
    folder.mkdir()
    data = folder / "train.jsonl"
    data.write_text("\n".join(json.dumps(e) for e in EXAMPLES) + "\n")
    (folder / "run.toml").write_text(
        f'model = "{SMOLLM2}"\ndata = "{data}"\nsteps = 4\nbatch_size = 2\nmax_length = 32\nlr = 1e-2\n'
        f'r = 8\ntargets = ["q", "v"]\neval_fraction = 0.0\ndevice = "cpu"\noutput = "{folder / "run"}"\n')
    subprocess.run([BIN, "finetune", str(folder / "run.toml")], check=True, capture_output=True, timeout=900)
    adapter = folder / "run" / "adapter"
    prompt = "Q: what is 2 plus 1?\nA:"
    base = engine("--model", SMOLLM2, "--max-tokens", 12, prompt)["text"]
    tuned = engine("--model", SMOLLM2, "--adapter", adapter, "--max-tokens", 12, prompt)["text"]
    assert base != tuned
    raw = {"raw": True, "max_tokens": 12}
    config = write_suite(tmp_path / "suite.yaml", {
        "prompts": [prompt],
        "providers": [{"id": f"ferrolab:{SMOLLM2}", "config": raw}, {"id": f"ferrolab:{SMOLLM2}+{adapter}", "config": raw}],
        "tests": [{"assert": [{"type": "equals", "value": base}]}],
    })
    out = tmp_path / "r.json"
    ferrolab(tmp_path, config, "--no-cache", "-o", out, check_code=100)
    cells = json.loads(out.read_text())["results"]
    assert [c["response"]["output"] for c in cells] == [base, tuned]
    assert [c["status"] for c in cells] == ["pass", "fail"]
