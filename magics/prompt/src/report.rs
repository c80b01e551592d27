//! What a run shows: a text summary, a self-contained HTML matrix (prompts ×
//! providers across, test cases down), JUnit XML for CI, and the comparison with
//! a baseline run.

use crate::run::{Cell, RunResult, Status};
use ferrolab_magics::escape_html as esc;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A cell's identity across runs: test name and vars, the prompt's position (an
/// edited prompt is the same prompt, changed), provider, repeat.
fn identity(run: &RunResult, c: &Cell) -> (String, usize, String, usize) {
    let test = run
        .tests
        .get(c.test)
        .map(|t| {
            format!(
                "{}\u{0}{}",
                t.name,
                serde_json::to_string(&t.vars).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    (
        test,
        c.prompt,
        run.providers.get(c.provider).cloned().unwrap_or_default(),
        c.repeat,
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub test: String,
    pub prompt: String,
    pub provider: String,
    pub before: Status,
    pub after: Status,
}

/// What changed since a baseline run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// The baseline as the user named it (`v1`, `latest`, a path).
    pub baseline: String,
    #[serde(rename = "baselineRunId")]
    pub baseline_run_id: String,
    #[serde(rename = "baselinePassRate")]
    pub baseline_pass_rate: f64,
    /// Passed before, fail or error now.
    pub regressed: Vec<Change>,
    /// Failed or errored before, pass now.
    pub fixed: Vec<Change>,
    pub unchanged: usize,
    /// Cells with no counterpart in the baseline.
    pub new: usize,
    /// Baseline cells with no counterpart now.
    pub removed: usize,
    /// (test, prompt, provider) index of each cell that regressed or got fixed.
    #[serde(skip)]
    marks: BTreeMap<(usize, usize, usize), bool>,
}

pub fn compare(current: &RunResult, baseline: &RunResult, name: &str) -> Comparison {
    let before: BTreeMap<_, Status> = baseline
        .results
        .iter()
        .map(|c| (identity(baseline, c), c.status))
        .collect();
    let mut out = Comparison {
        baseline: name.to_string(),
        baseline_run_id: baseline.run_id.clone(),
        baseline_pass_rate: baseline.stats.pass_rate,
        ..Comparison::default()
    };
    let mut seen = 0;
    for c in &current.results {
        let id = identity(current, c);
        let Some(&was) = before.get(&id) else {
            out.new += 1;
            continue;
        };
        seen += 1;
        let change = || Change {
            test: current.tests[c.test].name.clone(),
            prompt: current.prompts.get(c.prompt).cloned().unwrap_or_default(),
            provider: id.2.clone(),
            before: was,
            after: c.status,
        };
        match (was == Status::Pass, c.status == Status::Pass) {
            (true, false) => {
                out.regressed.push(change());
                out.marks.insert((c.test, c.prompt, c.provider), false);
            }
            (false, true) => {
                out.fixed.push(change());
                out.marks.insert((c.test, c.prompt, c.provider), true);
            }
            _ => out.unchanged += 1,
        }
    }
    out.removed = before.len().saturating_sub(seen);
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A few lines for the terminal and for `text/plain`.
pub fn summary(run: &RunResult, comparison: Option<&Comparison>) -> String {
    let s = &run.stats;
    let total = s.successes + s.failures + s.errors;
    let mut out = format!(
        "{} passed, {} failed, {} errors of {} ({} pass rate) in {:.2} s\n",
        s.successes,
        s.failures,
        s.errors,
        total,
        pct(s.pass_rate),
        s.duration_ms / 1000.0
    );
    let _ = writeln!(
        out,
        "latency {:.0} ms mean, tokens {} prompt + {} completion, cost {:.6}",
        s.latency_ms_mean, s.prompt_tokens, s.completion_tokens, s.cost
    );
    if let Some(all) = s.pass_all_rate {
        let _ = writeln!(
            out,
            "repeat {}: every repetition passed for {}",
            s.repeat,
            pct(all)
        );
    }
    if let Some(c) = comparison {
        let _ = writeln!(
            out,
            "since {} ({}): {} regressed, {} fixed, {} unchanged, {} new",
            c.baseline,
            pct(c.baseline_pass_rate),
            c.regressed.len(),
            c.fixed.len(),
            c.unchanged,
            c.new
        );
        for (what, changes) in [("regressed", &c.regressed), ("fixed", &c.fixed)] {
            for ch in changes {
                let _ = writeln!(
                    out,
                    "  {what}: {} | {} | {}",
                    ch.test,
                    short(&ch.prompt, 40),
                    ch.provider
                );
            }
        }
    }
    for c in run
        .results
        .iter()
        .filter(|c| c.status != Status::Pass)
        .take(20)
    {
        let why = c
            .error
            .clone()
            .or_else(|| c.grade.as_ref().map(|g| g.reason.clone()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}: {} | {} | {}: {}",
            if c.status == Status::Error {
                "ERROR"
            } else {
                "FAIL"
            },
            run.tests[c.test].name,
            short(&run.prompts[c.prompt], 40),
            run.providers[c.provider],
            short(&why, 200)
        );
    }
    out
}

fn short(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut t: String = one_line.chars().take(n).collect();
        t.push('…');
        t
    }
}

const STYLE: &str = "
.pt{font-family:system-ui,-apple-system,sans-serif;font-size:13px;color:#1f2328}
.pt table{border-collapse:collapse;margin:6px 0}
.pt th,.pt td{border:1px solid #d0d7de;padding:4px 6px;vertical-align:top;text-align:left}
.pt th{background:#f6f8fa}
.pt td.pass{background:#dafbe1}.pt td.fail{background:#ffebe9}.pt td.error{background:#fff8c5}
.pt .badge{font-weight:600}.pt .why{color:#57606a;margin:2px 0}
.pt pre{white-space:pre-wrap;max-width:40em;margin:2px 0;font-size:12px}
.pt .tag{font-size:11px;padding:0 4px;border-radius:3px;margin-left:4px}
.pt .regressed{background:#cf222e;color:#fff}.pt .fixed{background:#1a7f37;color:#fff}
";

/// The matrix: one row per test case, one column per prompt × provider.
pub fn html(run: &RunResult, comparison: Option<&Comparison>) -> String {
    let s = &run.stats;
    let mut h = String::new();
    let _ = write!(h, "<div class=\"pt\"><style>{STYLE}</style>");
    if let Some(d) = &run.description {
        let _ = write!(h, "<h3>{}</h3>", esc(d));
    }
    let _ = write!(
        h,
        "<p><b>{}</b> pass rate: {} passed, {} failed, {} errors · latency {:.0} ms mean · tokens {} + {} · cost {:.6} · {:.2} s",
        pct(s.pass_rate),
        s.successes,
        s.failures,
        s.errors,
        s.latency_ms_mean,
        s.prompt_tokens,
        s.completion_tokens,
        s.cost,
        s.duration_ms / 1000.0
    );
    if let Some(all) = s.pass_all_rate {
        let _ = write!(h, " · repeat {}: all passed for {}", s.repeat, pct(all));
    }
    h.push_str("</p>");
    if let Some(c) = comparison {
        let _ = write!(
            h,
            "<p>Since <code>{}</code> ({}): <span class=\"tag regressed\">{} regressed</span><span class=\"tag fixed\">{} fixed</span> {} unchanged, {} new</p>",
            esc(&c.baseline),
            pct(c.baseline_pass_rate),
            c.regressed.len(),
            c.fixed.len(),
            c.unchanged,
            c.new
        );
    }
    // Columns: every (prompt, provider) pair, with its pass rate.
    let columns: Vec<(usize, usize)> = (0..run.prompts.len())
        .flat_map(|p| (0..run.providers.len()).map(move |v| (p, v)))
        .collect();
    let mut by_cell: BTreeMap<(usize, usize, usize), Vec<&Cell>> = BTreeMap::new();
    for c in &run.results {
        by_cell
            .entry((c.test, c.prompt, c.provider))
            .or_default()
            .push(c);
    }
    h.push_str("<table><tr><th>test</th>");
    for &(p, v) in &columns {
        let cells: Vec<&Cell> = run
            .results
            .iter()
            .filter(|c| c.prompt == p && c.provider == v)
            .collect();
        let passed = cells.iter().filter(|c| c.status == Status::Pass).count();
        let _ = write!(
            h,
            "<th><div>{}</div><div class=\"why\">{}</div><div>{}/{} passed</div></th>",
            esc(&short(&run.prompts[p], 80)),
            esc(&run.providers[v]),
            passed,
            cells.len()
        );
    }
    h.push_str("</tr>");
    for (t, test) in run.tests.iter().enumerate() {
        let _ = write!(h, "<tr><td><b>{}</b>", esc(&test.name));
        if test.description.is_some() && !test.vars.is_empty() {
            for (k, v) in &test.vars {
                let _ = write!(
                    h,
                    "<div class=\"why\">{}: {}</div>",
                    esc(k),
                    esc(&short(&crate::config::value_text(v), 80))
                );
            }
        }
        h.push_str("</td>");
        for &(p, v) in &columns {
            let Some(cells) = by_cell.get(&(t, p, v)) else {
                h.push_str("<td>not run</td>");
                continue;
            };
            let passed = cells.iter().filter(|c| c.status == Status::Pass).count();
            let first = cells[0];
            let class = if cells.iter().any(|c| c.status == Status::Error) && passed == 0 {
                "error"
            } else if passed == cells.len() {
                "pass"
            } else {
                "fail"
            };
            let label = match (class, cells.len()) {
                ("pass", 1) => "PASS".to_string(),
                ("fail", 1) => "FAIL".to_string(),
                ("error", 1) => "ERROR".to_string(),
                (_, n) => format!("{passed}/{n} passed"),
            };
            let _ = write!(
                h,
                "<td class=\"{class}\"><span class=\"badge\">{label}</span> {:.2}",
                first.score
            );
            if first.cached {
                h.push_str(" <span class=\"why\">(cached)</span>");
            }
            if let Some(mark) = comparison.and_then(|c| c.marks.get(&(t, p, v))) {
                let _ = write!(
                    h,
                    "<span class=\"tag {0}\">{0}</span>",
                    if *mark { "fixed" } else { "regressed" }
                );
            }
            if let Some(e) = &first.error {
                let _ = write!(h, "<div class=\"why\">{}</div>", esc(&short(e, 300)));
            }
            if let Some(g) = &first.grade {
                for part in g.components.iter().filter(|g| !g.pass) {
                    let _ = write!(
                        h,
                        "<div class=\"why\">✗ {}</div>",
                        esc(&short(&part.reason, 200))
                    );
                }
                if !g.pass && g.components.is_empty() {
                    let _ = write!(
                        h,
                        "<div class=\"why\">✗ {}</div>",
                        esc(&short(&g.reason, 200))
                    );
                }
            }
            if let Some(r) = &first.response {
                let _ = write!(
                    h,
                    "<details><summary>output ({} tokens, {:.0} ms)</summary><pre>{}</pre></details>",
                    r.completion_tokens,
                    r.latency_ms,
                    esc(&r.output)
                );
            }
            h.push_str("</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
    h
}

/// A whole HTML page around [`html`], for `--output results.html`.
pub fn html_page(run: &RunResult, comparison: Option<&Comparison>) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Prompt tests {}</title></head><body>{}</body></html>\n",
        esc(&run.run_id),
        html(run, comparison)
    )
}

/// XML text: HTML's escapes, without the characters XML 1.0 cannot hold.
fn xml(text: &str) -> String {
    let allowed: String = text
        .chars()
        .filter(|&c| {
            ((c as u32) >= 0x20 || matches!(c, '\t' | '\n' | '\r'))
                && c != '\u{FFFE}'
                && c != '\u{FFFF}'
        })
        .collect();
    esc(&allowed)
}

/// JUnit XML: one `<testsuite>` per prompt × provider, one `<testcase>` per test
/// (and repetition), `<failure>` for a failed test and `<error>` for an error.
pub fn junit(run: &RunResult) -> String {
    let s = &run.stats;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"ferrolab prompt-test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
        run.results.len(),
        s.failures,
        s.errors,
        s.duration_ms / 1000.0
    );
    for p in 0..run.prompts.len() {
        for v in 0..run.providers.len() {
            let cells: Vec<&Cell> = run
                .results
                .iter()
                .filter(|c| c.prompt == p && c.provider == v)
                .collect();
            let failures = cells.iter().filter(|c| c.status == Status::Fail).count();
            let errors = cells.iter().filter(|c| c.status == Status::Error).count();
            let time: f64 = cells
                .iter()
                .filter_map(|c| c.response.as_ref().map(|r| r.latency_ms))
                .sum::<f64>()
                / 1000.0;
            let name = format!("{} | {}", short(&run.prompts[p], 60), run.providers[v]);
            let _ = writeln!(
                x,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">",
                xml(&name),
                cells.len()
            );
            for c in cells {
                let mut case = run.tests[c.test].name.clone();
                if run.stats.repeat > 1 {
                    case = format!("{case} [repeat {}]", c.repeat + 1);
                }
                let t = c.response.as_ref().map_or(0.0, |r| r.latency_ms / 1000.0);
                let _ = write!(
                    x,
                    "    <testcase name=\"{}\" classname=\"{}\" time=\"{t:.3}\"",
                    xml(&case),
                    xml(&name)
                );
                match c.status {
                    Status::Pass => x.push_str("/>\n"),
                    Status::Fail => {
                        let reason = c
                            .grade
                            .as_ref()
                            .map(|g| g.reason.clone())
                            .unwrap_or_default();
                        let detail: Vec<String> = c
                            .grade
                            .iter()
                            .flat_map(|g| g.components.iter())
                            .filter(|g| !g.pass)
                            .map(|g| g.reason.clone())
                            .collect();
                        let _ = write!(
                            x,
                            ">\n      <failure message=\"{}\" type=\"assertion\">{}</failure>\n    </testcase>\n",
                            xml(&reason),
                            xml(&detail.join("\n"))
                        );
                    }
                    Status::Error => {
                        let e = c.error.clone().unwrap_or_default();
                        let _ = write!(
                            x,
                            ">\n      <error message=\"{}\" type=\"provider\">{}</error>\n    </testcase>\n",
                            xml(&short(&e, 300)),
                            xml(&e)
                        );
                    }
                }
            }
            x.push_str("  </testsuite>\n");
        }
    }
    x.push_str("</testsuites>\n");
    x
}
