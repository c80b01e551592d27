//! The text measures behind the assertions, written to give the numbers promptfoo
//! gives: Levenshtein distance over UTF-16 code units, ROUGE-1 F-measure over Penn
//! Treebank-style tokens, BLEU-4 with brevity penalty, cosine similarity, and
//! promptfoo's way of finding JSON objects inside text.

use anyhow::{bail, Result};
use serde_json::Value;
use std::collections::HashMap;

/// Edit distance counted in UTF-16 code units, as JavaScript strings count.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<u16> = a.encode_utf16().collect();
    let b: Vec<u16> = b.encode_utf16().collect();
    if a.is_empty() {
        return b.len();
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ROUGE-N with n = 1 (what promptfoo's `rouge-n` computes): the F1 of clipped
/// unigram matches between candidate and reference, case-sensitive.
pub fn rouge_n(candidate: &str, reference: &str) -> Result<f64> {
    if candidate.trim().is_empty() {
        bail!("rouge-n cannot score an empty output");
    }
    if reference.trim().is_empty() {
        bail!("rouge-n needs a non-empty reference");
    }
    let cand = tokenize_summary(candidate);
    let refs = tokenize_summary(reference);
    if cand.is_empty() || refs.is_empty() {
        return Ok(0.0);
    }
    let mut remaining: HashMap<&str, usize> = HashMap::new();
    for t in &refs {
        *remaining.entry(t.as_str()).or_default() += 1;
    }
    let mut matches = 0usize;
    for t in &cand {
        if let Some(count) = remaining.get_mut(t.as_str()) {
            if *count > 0 {
                matches += 1;
                *count -= 1;
            }
        }
    }
    if matches == 0 {
        return Ok(0.0);
    }
    let p = matches as f64 / cand.len() as f64;
    let r = matches as f64 / refs.len() as f64;
    Ok(if p == r { p } else { 2.0 * p * r / (p + r) })
}

/// Sentences, then Penn Treebank tokens within each.
fn tokenize_summary(text: &str) -> Vec<String> {
    sentences(text).iter().flat_map(|s| treebank(s)).collect()
}

/// Splits after `.`, `!` or `?` followed by white space, except after a title
/// (`Dr.`, `Mr.`) or when the next word starts in lower case.
fn sentences(text: &str) -> Vec<String> {
    const TITLES: &[&str] = &[
        "dr", "mr", "mrs", "ms", "prof", "st", "jr", "sr", "mt", "gen", "gov", "sen", "rep", "col",
        "capt", "lt", "sgt", "vs", "etc", "no", "fig", "inc", "ltd", "co", "corp",
    ];
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        if !matches!(c, '.' | '!' | '?') || !chars.get(i + 1).is_some_and(|n| n.is_whitespace()) {
            continue;
        }
        let next_word = chars[i + 1..].iter().find(|c| !c.is_whitespace());
        if next_word.is_some_and(|n| n.is_lowercase()) {
            continue;
        }
        if c == '.' {
            let word: String = current
                .trim_end_matches('.')
                .chars()
                .rev()
                .take_while(|c| c.is_alphabetic())
                .collect::<String>()
                .chars()
                .rev()
                .collect();
            if TITLES.contains(&word.to_lowercase().as_str()) {
                continue;
            }
        }
        out.push(std::mem::take(&mut current));
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The Penn Treebank tokenizer's rules for ordinary prose.
fn treebank(sentence: &str) -> Vec<String> {
    let text = sentence.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return Vec::new();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut i = 0;
    // The position of the sentence-final period (with closing brackets or quotes after).
    let final_period = {
        let mut k = chars.len();
        while k > 0 && matches!(chars[k - 1], ']' | ')' | '}' | '>' | '\'' | '"') {
            k -= 1;
        }
        if k > 1 && chars[k - 1] == '.' && chars[k - 2] != '.' {
            // Not for single-letter abbreviations such as "U.S."
            let abbreviation = k >= 4
                && chars[k - 2].is_ascii_alphabetic()
                && chars[k - 3] == '.'
                && chars[k - 4].is_ascii_alphabetic();
            if abbreviation {
                None
            } else {
                Some(k - 1)
            }
        } else {
            None
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '.' && next == Some('.') && chars.get(i + 2) == Some(&'.') {
            out.push_str(" ... ");
            i += 3;
            continue;
        }
        match c {
            ':' | ',' if !next.is_some_and(|n| n.is_numeric()) => {
                out.push(' ');
                out.push(c);
                out.push(' ');
            }
            ';' | '@' | '#' | '$' | '%' | '&' | '?' | '!' | '[' | ']' | '(' | ')' | '{' | '}'
            | '<' | '>' | '"' => {
                out.push(' ');
                out.push(c);
                out.push(' ');
            }
            '-' if next == Some('-') => {
                out.push_str(" -- ");
                i += 2;
                continue;
            }
            '.' if Some(i) == final_period => out.push_str(" . "),
            _ => out.push(c),
        }
        i += 1;
    }
    let spaced = format!(" {out} ");
    let mut tokens = Vec::new();
    for word in spaced.split(' ').filter(|w| !w.is_empty()) {
        split_contraction(word, &mut tokens);
    }
    tokens
}

/// `'s 'm 'd 'll 're 've n't` and a closing apostrophe become tokens of their own.
fn split_contraction(word: &str, out: &mut Vec<String>) {
    let lower = word.to_lowercase();
    for suffix in ["n't", "'ll", "'re", "'ve", "'s", "'m", "'d"] {
        if lower.ends_with(suffix) && word.len() > suffix.len() {
            let cut = word.len() - suffix.len();
            out.push(word[..cut].to_string());
            out.push(word[cut..].to_string());
            return;
        }
    }
    if word.len() > 1 && word.ends_with('\'') && !word[..word.len() - 1].ends_with('\'') {
        out.push(word[..word.len() - 1].to_string());
        out.push("'".to_string());
        return;
    }
    out.push(word.to_string());
}

fn ngrams(words: &[&str], n: usize) -> Vec<String> {
    if n == 0 || n > words.len() {
        return Vec::new();
    }
    words.windows(n).map(|w| w.join(" ")).collect()
}

/// BLEU-4 with uniform weights, clipped counts against the best reference, the
/// closest reference length for the brevity penalty, and 1e-7 for empty precisions.
pub fn bleu(candidate: &str, references: &[String]) -> f64 {
    let lower = candidate.to_lowercase();
    let cand: Vec<&str> = split_ws(&lower);
    let refs_lower: Vec<String> = references.iter().map(|r| r.to_lowercase()).collect();
    let refs: Vec<Vec<&str>> = refs_lower.iter().map(|r| split_ws(r)).collect();
    let Some(closest) = refs.iter().map(Vec::len).reduce(|prev, cur| {
        if cur.abs_diff(cand.len()) < prev.abs_diff(cand.len()) {
            cur
        } else {
            prev
        }
    }) else {
        return 0.0;
    };
    let mut log_sum = 0.0;
    for n in 1..=4 {
        let cand_grams = ngrams(&cand, n);
        let mut cand_counts: HashMap<&str, usize> = HashMap::new();
        for g in &cand_grams {
            *cand_counts.entry(g.as_str()).or_default() += 1;
        }
        let mut best = 0usize;
        for r in &refs {
            let ref_grams = ngrams(r, n);
            let mut ref_counts: HashMap<&str, usize> = HashMap::new();
            for g in &ref_grams {
                *ref_counts.entry(g.as_str()).or_default() += 1;
            }
            let clipped: usize = cand_counts
                .iter()
                .map(|(g, c)| (*c).min(ref_counts.get(g).copied().unwrap_or(0)))
                .sum();
            best = best.max(clipped);
        }
        let p = if cand_grams.is_empty() {
            0.0
        } else {
            best as f64 / cand_grams.len() as f64
        };
        log_sum += 0.25 * if p == 0.0 { 1e-7f64.ln() } else { p.ln() };
    }
    let bp = if cand.len() > closest {
        1.0
    } else {
        (1.0 - cand.len() as f64 / closest as f64).exp()
    };
    bp * log_sum.exp()
}

/// JavaScript's `s.trim().split(/\s+/)`: an empty string gives one empty word.
fn split_ws(s: &str) -> Vec<&str> {
    let t = s.trim();
    if t.is_empty() {
        return vec![""];
    }
    t.split_whitespace().collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        dot += *x as f64 * *y as f64;
        na += *x as f64 * *x as f64;
        nb += *y as f64 * *y as f64;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Every `{…}` in `text` that parses (as JSON, or as a YAML flow mapping, with
/// `//` comments allowed, as promptfoo reads them), outermost first.
pub fn extract_json_objects(text: &str) -> Vec<Value> {
    const MAX: usize = 100_000;
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            let (mut open, mut close) = (1usize, 0usize);
            let mut j = i + 1;
            let end = (i + MAX).min(bytes.len());
            while j < end && open > close {
                match bytes[j] {
                    b'{' => open += 1,
                    b'}' => close += 1,
                    _ => {}
                }
                j += 1;
                if open == close || j == bytes.len() || j == i + MAX {
                    let mut candidate = text[i..j].to_string();
                    if open > close {
                        candidate.push_str(&"}".repeat(open - close));
                    }
                    match parse_lenient(&candidate) {
                        Some(v @ Value::Object(_)) => {
                            found.push(v);
                            i = j - 1;
                            break;
                        }
                        Some(_) => {}
                        None => {
                            if open == close {
                                break;
                            }
                        }
                    }
                }
            }
        }
        i += 1;
    }
    found
}

fn parse_lenient(candidate: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(candidate) {
        return Some(v);
    }
    let hashed = slash_comments_to_hash(candidate);
    let yaml: serde_norway::Value = serde_norway::from_str(&hashed).ok()?;
    Some(yaml_to_js(yaml))
}

/// A YAML value as JavaScript sees it after js-yaml: keys that are not strings
/// become their string form (`[object Object]` for mappings).
fn yaml_to_js(v: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_js).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match yaml_to_js(k) {
                        Value::String(s) => s,
                        Value::Null => "null".to_string(),
                        Value::Object(_) => "[object Object]".to_string(),
                        Value::Array(items) => items
                            .iter()
                            .map(|i| match i {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        other => other.to_string(),
                    };
                    (key, yaml_to_js(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_js(t.value),
    }
}

/// `// comment` to `# comment` outside quoted strings, line by line.
fn slash_comments_to_hash(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            let mut result = String::new();
            let mut state = 0u8; // 0 normal, 1 single-quoted, 2 double-quoted
            let mut i = 0;
            while i < chars.len() {
                let c = chars[i];
                let prev = if i > 0 { chars[i - 1] } else { '\0' };
                let next = chars.get(i + 1).copied().unwrap_or('\0');
                match state {
                    0 => {
                        if c == '\'' && !prev.is_ascii_alphabetic() {
                            state = 1;
                            result.push(c);
                        } else if c == '"' {
                            state = 2;
                            result.push(c);
                        } else if c == '/' && next == '/' {
                            let mut count = 2;
                            while i + count < chars.len() && chars[i + count] == '/' {
                                count += 1;
                            }
                            result.push_str(&"#".repeat(count / 2));
                            result.extend(&chars[i + count..]);
                            return result;
                        } else {
                            result.push(c);
                        }
                    }
                    1 => {
                        result.push(c);
                        if c == '\'' && prev != '\\' && !next.is_ascii_alphabetic() {
                            state = 0;
                        }
                    }
                    _ => {
                        result.push(c);
                        if c == '"' && prev != '\\' {
                            state = 0;
                        }
                    }
                }
                i += 1;
            }
            result
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_counts_utf16_units() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("héllo", "hello"), 1);
        // An emoji is two UTF-16 units, as JavaScript counts it.
        assert_eq!(levenshtein("😀", ""), 2);
    }

    #[test]
    fn rouge_is_unigram_f1() {
        let s = rouge_n("the cat sat on the mat", "the cat lay on the mat").unwrap();
        assert!((s - 5.0 / 6.0).abs() < 1e-9, "{s}");
        assert_eq!(rouge_n("a b", "c d").unwrap(), 0.0);
        // Punctuation is its own token; case matters.
        let s = rouge_n("Hello, world.", "hello world").unwrap();
        assert!(
            (s - 2.0 * (1.0 / 4.0) * (1.0 / 2.0) / (0.75)).abs() < 1e-9,
            "{s}"
        );
        assert!(rouge_n("", "x").is_err());
    }

    #[test]
    fn bleu_matches_the_reference_formula() {
        assert!(
            (bleu("the cat sat on the mat", &["the cat sat on the mat".into()]) - 1.0).abs()
                < 1e-12
        );
        let short = bleu("the cat", &["the cat sat on the mat".into()]);
        // No 3- or 4-grams: 1e-7 precisions make it tiny but not zero.
        assert!(short > 0.0 && short < 1e-3, "{short}");
        let two = bleu(
            "the cat is on the mat",
            &[
                "there is a cat on the mat".into(),
                "the cat is on the mat".into(),
            ],
        );
        assert!((two - 1.0).abs() < 1e-12);
    }

    #[test]
    fn json_objects_are_found_in_prose() {
        let found =
            extract_json_objects(r#"Sure! {"a": 1, "b": {"c": [1, 2]}} and {bad then {x: 2}"#);
        assert_eq!(
            found,
            vec![
                serde_json::json!({"a": 1, "b": {"c": [1, 2]}}),
                serde_json::json!({"x": 2})
            ]
        );
        assert_eq!(extract_json_objects("no braces"), Vec::<Value>::new());
        // An unclosed object is closed for it, as promptfoo does.
        assert_eq!(
            extract_json_objects(r#"{"a": {"b": 1}"#),
            vec![serde_json::json!({"a": {"b": 1}})]
        );
    }

    #[test]
    fn cosine_of_parallel_and_orthogonal() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-9);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
    }
}
