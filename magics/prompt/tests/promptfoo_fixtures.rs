//! Every case in tests/prompt/promptfoo-assertions.json was graded by promptfoo's
//! own assertion code (tests/prompt/promptfoo_fixtures.mjs); ferrolab must give the
//! same pass/fail and the same score, and fail where promptfoo throws.

use ferrolab_prompt::assertion::{AssertItem, Graders, Observed, TestGrading};
use ferrolab_prompt::config::ProviderSpec;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

struct NoGraders;

impl Graders for NoGraders {
    fn embed(&self, _: &ProviderSpec, _: &str) -> anyhow::Result<Vec<f32>> {
        anyhow::bail!("not used")
    }
    fn grade(&self, _: &ProviderSpec, _: &str) -> anyhow::Result<String> {
        anyhow::bail!("not used")
    }
}

#[test]
fn agrees_with_promptfoo_case_by_case() {
    // Where cargo runs the test from, not where it was built: a build cache shared
    // between checkouts may hand this binary to another one.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let path = manifest.join("../../tests/prompt/promptfoo-assertions.json");
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixtures")).expect("json");
    let mut disagreements = Vec::new();
    for case in &cases {
        let mut assertion = json!({"type": case["type"]});
        if !case["value"].is_null() {
            assertion["value"] = case["value"].clone();
        }
        if let Some(extra) = case["extra"].as_object() {
            for (k, v) in extra {
                assertion[k] = v.clone();
            }
        }
        let suite =
            json!({"prompts": ["p"], "providers": ["echo"], "tests": [{"assert": [assertion]}]});
        let output = case["output"].as_str().expect("string output");
        let expected = &case["result"];
        let ours =
            ferrolab_prompt::config::parse(&suite.to_string(), Path::new(".")).and_then(|s| {
                let AssertItem::Single(a) = &s.tests[0].asserts[0] else {
                    anyhow::bail!("a set")
                };
                let vars = BTreeMap::new();
                let seen = Observed {
                    output,
                    vars: &vars,
                    latency_ms: Some(5.0),
                    cost: Some(0.0),
                    logprobs: None,
                };
                let grading = TestGrading {
                    provider: None,
                    embedding_provider: None,
                    rubric_prompt: None,
                };
                a.evaluate(&seen, &grading, &NoGraders)
            });
        let agree = match (&ours, expected.get("error")) {
            (Err(_), Some(_)) => true,
            (Ok(g), None) => {
                let score = expected["score"].as_f64().unwrap_or(f64::NAN);
                g.pass == expected["pass"].as_bool().unwrap_or(!g.pass)
                    && (g.score - score).abs() < 1e-9
            }
            _ => false,
        };
        if !agree {
            disagreements.push(format!(
                "{} value={} output={:?}: promptfoo {expected}, ferrolab {}",
                case["type"],
                case["value"],
                output,
                match &ours {
                    Ok(g) => format!("pass={} score={}", g.pass, g.score),
                    Err(e) => format!("error {e:#}"),
                }
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}
