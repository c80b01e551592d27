//! Assertions graded with promptfoo's semantics, each read from a suite the way a
//! user writes it: one row per case — assertion (as YAML), output, expected pass
//! and score.

use anyhow::Result;
use ferrolab_prompt::assertion::*;
use ferrolab_prompt::spec::ProviderSpec;
use ferrolab_prompt::{config, spec};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Embeds text as letter counts, and grades by answering the prompt's own last
/// line: enough to drive `similar` and `llm-rubric` through their logic here
/// (the suites in tests/ use real models).
struct Fixture;

impl Graders for Fixture {
    fn embed(&self, _: &ProviderSpec, text: &str) -> Result<Vec<f32>> {
        let mut v = vec![0f32; 26];
        for c in text
            .to_ascii_lowercase()
            .bytes()
            .filter(u8::is_ascii_lowercase)
        {
            v[(c - b'a') as usize] += 1.0;
        }
        Ok(v)
    }
    fn grade(&self, _: &ProviderSpec, prompt: &str) -> Result<String> {
        // The rubric prompts below are JSON lists whose last message is the answer.
        let v: Value = serde_json::from_str(prompt)?;
        Ok(v.as_array()
            .and_then(|a| a.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string())
    }
}

fn assertion(yaml: &str) -> Assertion {
    let v = spec::yaml_to_json(yaml).expect("valid yaml");
    let suite = json!({"prompts": ["p"], "providers": ["echo"], "tests": [{"vars": {"name": "Ada", "n": 3}, "assert": [v]}]});
    let parsed = config::parse(&suite.to_string(), std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{yaml}: {e:#}"));
    match &parsed.tests[0].asserts[0] {
        AssertItem::Single(a) => a.clone(),
        AssertItem::Set(_) => panic!("a set"),
    }
}

fn grade_with(
    a: &Assertion,
    output: &str,
    latency: Option<f64>,
    cost: Option<f64>,
    logprobs: Option<&[f32]>,
) -> Result<Grade> {
    let vars = BTreeMap::from([
        ("name".to_string(), json!("Ada")),
        ("n".to_string(), json!(3)),
    ]);
    let spec = ProviderSpec {
        id: "fixture".into(),
        label: None,
        config: Default::default(),
    };
    let seen = Observed {
        output,
        vars: &vars,
        latency_ms: latency,
        cost,
        logprobs,
    };
    let grading = TestGrading {
        provider: Some(&spec),
        embedding_provider: None,
        rubric_prompt: None,
    };
    a.evaluate(&seen, &grading, &Fixture)
}

fn grade(yaml: &str, output: &str) -> Grade {
    grade_with(
        &assertion(yaml),
        output,
        Some(10.0),
        Some(0.001),
        Some(&[-0.1, -0.2]),
    )
    .unwrap_or_else(|e| panic!("{yaml} on {output:?}: {e:#}"))
}

#[test]
fn every_type_passes_and_fails_as_promptfoo_does() {
    #[rustfmt::skip]
    let rows: &[(&str, &str, bool)] = &[
        ("{type: equals, value: hello}", "hello", true),
        ("{type: equals, value: hello}", "hello ", false),
        ("{type: not-equals, value: hello}", "Hello", true),
        ("{type: equals, value: 42}", "42", true),
        ("{type: equals, value: {a: 1, b: [1, 2]}}", "{\"b\": [1, 2.0], \"a\": 1}", true),
        ("{type: equals, value: {a: 1}}", "not json", false),
        ("{type: not-equals, value: {a: 1}}", "not json", false),
        ("{type: equals, value: 'Hi {{name}}'}", "Hi Ada", true),
        ("{type: contains, value: world}", "hello world", true),
        ("{type: contains, value: World}", "hello world", false),
        ("{type: contains, value: 3}", "1 2 3", true),
        ("{type: not-contains, value: cat}", "dog", true),
        ("{type: contains, value: 'ü'}", "Grüße", true),
        ("{type: icontains, value: WORLD}", "hello world", true),
        ("{type: icontains, value: 'GRÜSSE'}", "grüsse", true),
        ("{type: not-icontains, value: CAT}", "a Cat", false),
        ("{type: contains-any, value: [x, y, world]}", "hello world", true),
        ("{type: contains-any, value: 'x, \"a, b\", z'}", "has a, b", true),
        ("{type: contains-any, value: [x, y]}", "hello", false),
        ("{type: not-contains-any, value: [x, y]}", "hello", true),
        ("{type: contains-all, value: 'hello, world'}", "hello world", true),
        ("{type: contains-all, value: [hello, moon]}", "hello world", false),
        ("{type: not-contains-all, value: [hello, moon]}", "hello world", true),
        ("{type: icontains-any, value: [MOON, WORLD]}", "hello world", true),
        ("{type: icontains-all, value: [HELLO, WORLD]}", "hello world", true),
        ("{type: icontains-all, value: [HELLO, MOON]}", "hello world", false),
        ("{type: starts-with, value: hel}", "hello", true),
        ("{type: starts-with, value: Hel}", "hello", false),
        ("{type: not-starts-with, value: x}", "hello", true),
        ("{type: regex, value: '^h.*o$'}", "hello", true),
        ("{type: regex, value: '\\d{3}'}", "ab12c", false),
        ("{type: regex, value: 'foo(?=bar)'}", "foobar", true),
        ("{type: not-regex, value: '[0-9]'}", "abc", true),
        ("{type: is-json}", "{\"a\": 1}", true),
        ("{type: is-json}", "[1, 2]", true),
        ("{type: is-json}", "{a: 1}", false),
        ("{type: is-json}", "", false),
        ("{type: not-is-json}", "plain", true),
        ("{type: not-is-json}", "{}", false),
        ("{type: is-json, value: {type: object, required: [a]}}", "{\"a\": 1}", true),
        ("{type: is-json, value: {type: object, required: [a]}}", "{\"b\": 1}", false),
        ("{type: is-json, value: '{\"type\": \"array\"}'}", "[1]", true),
        ("{type: contains-json}", "Sure: {\"a\": 1} done", true),
        ("{type: contains-json}", "no json here", false),
        ("{type: contains-json}", "yaml-ish {a: 1}", true),
        ("{type: not-contains-json}", "none", true),
        ("{type: contains-json, value: {required: [b]}}", "{\"a\": 1} then {\"b\": 2}", true),
        ("{type: contains-json, value: {required: [c]}}", "{\"a\": 1} then {\"b\": 2}", false),
        ("{type: levenshtein, value: kitten}", "sitting", true),
        ("{type: levenshtein, value: kitten, threshold: 2}", "sitting", false),
        ("{type: levenshtein, value: ''}", "", true),
        ("{type: rouge-n, value: the cat sat on the mat}", "the cat sat on the mat", true),
        ("{type: rouge-n, value: the cat sat on the mat}", "a dog", false),
        ("{type: not-rouge-n, value: the cat sat on the mat}", "a dog", true),
        ("{type: bleu, value: the cat sat on the mat}", "the cat sat on the mat", true),
        ("{type: bleu, value: [the cat sat on a mat, the cat sat on the mat]}", "The cat sat on the mat", true),
        ("{type: bleu, value: the cat sat on the mat}", "the cat", false),
        ("{type: not-bleu, value: the cat sat on the mat}", "the cat", true),
        ("{type: similar, value: listen}", "silent", true),
        ("{type: similar, value: abc}", "xyz", false),
        ("{type: not-similar, value: abc}", "xyz", true),
        ("{type: similar, value: [xyz, listen]}", "silent", true),
        ("{type: latency, threshold: 100}", "x", true),
        ("{type: latency, threshold: 5}", "x", false),
        ("{type: cost, threshold: 0.01}", "x", true),
        ("{type: cost, threshold: 0.0001}", "x", false),
        ("{type: perplexity, threshold: 2}", "x", true),
        ("{type: perplexity, threshold: 1.1}", "x", false),
        ("{type: perplexity}", "x", true),
    ];
    for (yaml, output, pass) in rows {
        let g = grade(yaml, output);
        assert_eq!(g.pass, *pass, "{yaml} on {output:?}: {}", g.reason);
        if g.pass {
            assert!(g.score > 0.0 || yaml.contains("not-"), "{yaml}: {g:?}");
        } else {
            assert!(
                !g.reason.is_empty() && g.reason != "Assertion passed",
                "{yaml}: {g:?}"
            );
        }
    }
}

#[test]
fn inverted_scores_are_one_minus_the_measure() {
    let g = grade("{type: not-rouge-n, value: the cat sat}", "the cat ran");
    let plain = grade("{type: rouge-n, value: the cat sat}", "the cat ran");
    assert!((g.score - (1.0 - plain.score)).abs() < 1e-12);
    assert!(!plain.pass && g.pass);
}

#[test]
fn empty_output_gives_errors_where_promptfoo_throws() {
    assert!(grade_with(
        &assertion("{type: rouge-n, value: a}"),
        "",
        None,
        None,
        None
    )
    .is_err());
    assert!(grade_with(&assertion("{type: bleu, value: a}"), "", None, None, None).is_err());
    // A cached answer has no latency; a provider without a price has no cost.
    assert!(grade_with(
        &assertion("{type: latency, threshold: 5}"),
        "x",
        None,
        None,
        None
    )
    .is_err());
    assert!(grade_with(
        &assertion("{type: cost, threshold: 5}"),
        "x",
        None,
        None,
        None
    )
    .is_err());
    assert!(grade_with(&assertion("{type: perplexity}"), "x", None, None, Some(&[])).is_err());
    // Empty output is fine for the string checks.
    assert!(grade("{type: not-contains, value: x}", "").pass);
    assert!(!grade("{type: starts-with, value: x}", "").pass);
}

#[test]
fn llm_rubric_reads_the_graders_json() {
    let rubric = |answer: &str, threshold: Option<f64>| {
        let mut a = json!({
            "type": "llm-rubric",
            "value": "is kind",
            "rubricPrompt": json!([{"role": "user", "content": answer}]).to_string(),
        });
        if let Some(t) = threshold {
            a["threshold"] = json!(t);
        }
        grade(&a.to_string(), "out")
    };
    let g = rubric(r#"{"pass": true, "score": 0.9, "reason": "kind"}"#, None);
    assert!(g.pass && (g.score - 0.9).abs() < 1e-12 && g.reason == "kind");
    let g = rubric(r#"{"pass": "yes", "score": "0.4"}"#, Some(0.5));
    assert!(!g.pass && (g.score - 0.4).abs() < 1e-12, "{g:?}");
    let g = rubric(r#"{"reason": "no verdict"}"#, None);
    assert!(g.pass && g.score == 1.0, "{g:?}");
    let g = rubric("no json at all", None);
    assert!(!g.pass && g.reason.contains("Could not extract JSON"));
    // The rubric prompt sees the output and the rubric.
    let g = rubric(
        r#"{"pass": {{ 'true' if output == 'out' else 'false' }}, "reason": "{{ rubric }}"}"#,
        None,
    );
    assert!(g.pass && g.reason == "is kind", "{g:?}");
}

#[test]
fn weights_thresholds_metrics_and_sets() {
    let items = |yaml: &str| -> (Vec<AssertItem>, Option<f64>) {
        let v = spec::yaml_to_json(yaml).expect("valid yaml");
        let suite = json!({"prompts": ["p"], "providers": ["echo"], "tests": [v]});
        let s = config::parse(&suite.to_string(), std::path::Path::new(".")).expect("parses");
        (s.tests[0].asserts.clone(), s.tests[0].threshold)
    };
    let run = |yaml: &str, output: &str| -> Grade {
        let (asserts, threshold) = items(yaml);
        let vars = BTreeMap::new();
        let seen = Observed {
            output,
            vars: &vars,
            latency_ms: None,
            cost: None,
            logprobs: None,
        };
        let grading = TestGrading {
            provider: None,
            embedding_provider: None,
            rubric_prompt: None,
        };
        grade_test(&asserts, threshold, &seen, &grading, &Fixture).expect("grades")
    };
    // Weighted mean: (1*3 + 0*1) / 4.
    let g = run(
        "{assert: [{type: contains, value: a, weight: 3}, {type: contains, value: z}]}",
        "abc",
    );
    assert!(!g.pass && (g.score - 0.75).abs() < 1e-12);
    // A threshold overrides single failures.
    let g = run("{threshold: 0.7, assert: [{type: contains, value: a, weight: 3}, {type: contains, value: z}]}", "abc");
    assert!(g.pass, "{g:?}");
    let g = run("{threshold: 0.8, assert: [{type: contains, value: a, weight: 3}, {type: contains, value: z}]}", "abc");
    assert!(!g.pass);
    // Weight 0 records without failing.
    let g = run(
        "{assert: [{type: contains, value: a}, {type: contains, value: z, weight: 0}]}",
        "abc",
    );
    assert!(g.pass && g.score == 1.0, "{g:?}");
    // Named metrics sum their scores.
    let g = run("{assert: [{type: contains, value: a, metric: m}, {type: contains, value: b, metric: m}, {type: contains, value: z, metric: k}]}", "abc");
    assert_eq!(g.named_scores.get("m"), Some(&2.0));
    assert_eq!(g.named_scores.get("k"), Some(&0.0));
    // An assert-set passes on its own threshold and counts once, with its weight.
    let g = run("{assert: [{type: assert-set, threshold: 0.5, weight: 2, assert: [{type: contains, value: a}, {type: contains, value: z}]}, {type: contains, value: b}]}", "abc");
    assert!(g.pass, "{g:?}");
    assert!(
        (g.score - (0.5 * 2.0 + 1.0) / 3.0).abs() < 1e-12,
        "{}",
        g.score
    );
    let g = run("{assert: [{type: assert-set, assert: [{type: contains, value: a}, {type: contains, value: z}]}]}", "abc");
    assert!(!g.pass);
    // No assertions: a pass.
    let g = run("{vars: {}}", "x");
    assert!(g.pass && g.reason == "No assertions");
}

#[test]
fn not_on_types_promptfoo_ignores_it_for_is_refused() {
    for t in [
        "not-levenshtein",
        "not-latency",
        "not-cost",
        "not-perplexity",
        "not-llm-rubric",
    ] {
        let suite = json!({"prompts": ["p"], "providers": ["echo"], "tests": [{"assert": [{"type": t, "value": "x", "threshold": 1}]}]});
        let err = config::parse(&suite.to_string(), std::path::Path::new(".")).unwrap_err();
        assert!(format!("{err:#}").contains("not supported"), "{t}: {err:#}");
    }
}
