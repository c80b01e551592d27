// Regenerates promptfoo-assertions.json: each case run through promptfoo's own
// assertion code (`runAssertion`), so the Rust port can be compared number for
// number. Usage: node promptfoo_fixtures.mjs PROMPTFOO_DIR OUT.json
// (PROMPTFOO_DIR: node_modules/promptfoo of version 0.120.0, whose bundle exports
// runAssertion from evaluator-CXMHwP_y.js as `s`).
import fs from 'fs';
const [dir, outPath] = process.argv.slice(2);
const ev = await import(`${dir}/dist/src/evaluator-CXMHwP_y.js`);
const A = ev.s;
async function run(type, value, output, extra = {}) {
  try {
    const r = await A.runAssertion({ prompt: 'p', assertion: { type, ...(value === null ? {} : { value }), ...extra }, test: { vars: {} }, latencyMs: 5, providerResponse: { output, cost: 0 } });
    return { pass: r.pass, score: r.score, reason: r.reason };
  } catch (e) { return { error: String(e.message).slice(0, 300) }; }
}
const texts = ["the cat sat on the mat", "The cat sat on the mat.", "the cat was on the mat", "a cat sat on a mat", "Hello, world! It's John's cat.", "hello world", "Hello world. Foo bar.", "hello world foo bar", "the the the the", "the", "Dr. Smith went to Washington. He arrived at 3 p.m.", "I don't know what you're saying", "x", "   ", "😀 emoji 😃 test", "Café au lait", "one two three four five six seven eight"];
const cases = [];
for (const type of ["rouge-n", "bleu", "levenshtein"]) for (const o of texts) for (const v of texts.slice(0, 9)) cases.push([type, v, o]);
cases.push(["bleu", ["the cat is on the mat", "there is a cat on the mat"], "the cat the cat on the mat"]);
cases.push(["bleu", ["a b c", "a b c d e f g"], "a b c d"]);
cases.push(["not-bleu", "the cat sat on the mat", "the cat sat on the mat"]);
cases.push(["not-rouge-n", "the cat sat on the mat", "the cat"]);
cases.push(["rouge-n", "the cat sat on the mat", "the cat", { threshold: 0.5 }]);
cases.push(["levenshtein", "kitten", "sitting", { threshold: 3 }]);
for (const o of ['{"a":1}', 'pre {"a": {"b": 2}} post', 'x {a: 1, b: yes} y', 'x {"a": 1', '{"a": "}"}', '{"a": // c\n 1}', '[1,2,3]', 'no json', '{} {"b":1}', '{"x": 1} and {"y": 2}', "{'a': 1}", '{"a": 1,}', '{{"a":1}}'])
  for (const v of [null, { type: "object", required: ["b"] }, "type: object\nrequired: [a]"])
    for (const t of ["contains-json", "not-contains-json", "is-json", "not-is-json"]) cases.push([t, v, o]);
for (const v of ['a, "b,c" , d', 'a,"b,c",d', 'foo,bar', ' x ,y ', '"q"'])
  for (const o of ['xx c', 'b,c', 'BAR', 'q', '"q"', 'x'])
    for (const t of ["contains-any", "icontains-any", "contains-all", "icontains-all"]) cases.push([t, v, o]);
const out = [];
for (const c of cases) out.push({ type: c[0], value: c[1], output: c[2], extra: c[3] || {}, result: await run(...c) });
fs.writeFileSync(outPath, JSON.stringify(out, null, 1) + '\n');
console.log(`${out.length} cases`);
process.exit(0);
