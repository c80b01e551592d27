//! `%%prompt_test`: the cell is a promptfoo config; the result is a colour-coded
//! matrix of prompts × providers × test cases with a summary, kept as a run.

use crate::cli::{execute, RunArgs};
use crate::config;
use crate::report;
use clap::Parser;
use ferrolab_llm::tracker::Tracking;
use ferrolab_magics::{
    Display, Invocation, Magic, MagicContext, MagicError, MagicKind, MimeBundle, Registry,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Adds `%%prompt_test`, whose runs are reported through `tracking`.
pub fn register(registry: &mut Registry, tracking: Arc<Tracking>) {
    registry.register(Arc::new(PromptTest { tracking }));
}

#[derive(Parser)]
#[command(
    name = "%%prompt_test",
    no_binary_name = true,
    disable_help_flag = true
)]
struct Line {
    #[command(flatten)]
    args: RunArgs,
}

const USAGE: &str = "%%prompt_test [--no-cache] [--repeat N] [-j N] [--baseline RUN] [--name NAME]
               [--fail-under RATE] [-o FILE.json|FILE.html]... [--junit FILE.xml]
<promptfoo config: prompts, providers, tests, defaultTest>

Runs a prompt-test suite written in promptfoo's format (the same as `ferrolab prompt-test
FILE`): every test case against every prompt and provider, graded by its assertions.
Providers: echo, ferrolab:MODEL[+ADAPTER] (smollm2, a .gguf, a folder; in this kernel),
openai:chat:MODEL / openai:completion:MODEL with config.apiBaseUrl (ferrolab serve or any
OpenAI-compatible server). Assertions: equals, contains, icontains, contains-any,
contains-all, icontains-any, icontains-all, starts-with, regex, is-json, contains-json,
levenshtein, rouge-n, bleu, similar, latency, cost, perplexity, llm-rubric (each with
`not-`, weight, threshold, metric) and assert-set.
Shows a matrix (outputs expandable, failed assertions' reasons) and a summary; the run is
kept in runs/prompt-tests/NAME (default: a timestamp). --baseline RUN (a name, a folder, or
`latest`) marks what regressed and what got fixed. --fail-under makes the cell fail when
the pass rate is under RATE. Relative file:// paths resolve from the kernel's folder.";

struct PromptTest {
    tracking: Arc<Tracking>,
}

impl Magic for PromptTest {
    fn name(&self) -> &str {
        "prompt_test"
    }

    fn summary(&self) -> &str {
        "run a promptfoo-format prompt-test suite and show the results matrix"
    }

    fn usage(&self) -> &str {
        USAGE
    }

    fn kinds(&self) -> &[MagicKind] {
        &[MagicKind::Cell]
    }

    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let line: Line = ferrolab_magics::parse_args(&invocation.args, USAGE)?;
        if invocation.body.trim().is_empty() {
            return Err(MagicError::usage(format!(
                "the cell is empty: write a promptfoo config below %%prompt_test\n\n{USAGE}"
            )));
        }
        let suite = config::parse(&invocation.body, Path::new("."))
            .map_err(|e| MagicError::new("PromptTestConfigError", format!("{e:#}")))?;
        let done = AtomicUsize::new(0);
        let total = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let finished = AtomicBool::new(false);
        let progress = |d: usize, t: usize| {
            done.store(d, Ordering::Relaxed);
            total.store(t, Ordering::Relaxed);
        };
        let interrupted = || stop.load(Ordering::Relaxed);
        let cell = cx.host.current_cell().map(str::to_string);
        let display = Display::show(cx.out, MimeBundle::text("prompt tests: starting…"));
        let outcome = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let r = execute(
                    &suite,
                    Some(&invocation.body),
                    &line.args,
                    Some(&progress),
                    &interrupted,
                    &self.tracking,
                    cell.as_deref(),
                );
                finished.store(true, Ordering::Release);
                r
            });
            let mut shown = usize::MAX;
            while !finished.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
                if cx.host.interrupted() {
                    stop.store(true, Ordering::Relaxed);
                }
                let d = done.load(Ordering::Relaxed);
                if d != shown {
                    shown = d;
                    let t = total.load(Ordering::Relaxed);
                    display.update(
                        cx.out,
                        MimeBundle::text(format!("prompt tests: {d}/{t} done")),
                    );
                }
            }
            worker.join()
        })
        .map_err(|_| MagicError::new("PromptTestError", "the prompt-test run panicked"))?
        .map_err(|e| MagicError::new("PromptTestError", format!("{e:#}")))?;
        let summary = report::summary(&outcome.run, outcome.comparison.as_ref());
        let mut text = summary.clone();
        text.push_str(&format!("run kept in {}\n", outcome.folder.display()));
        if let Some(w) = &outcome.warning {
            text.push_str(&format!("warning: {w}\n"));
        }
        if stop.load(Ordering::Relaxed) {
            text.push_str("interrupted: only the cells finished before the stop are shown\n");
        }
        let stats = serde_json::to_value(&outcome.run.stats).unwrap_or_default();
        let bundle = MimeBundle::text(text)
            .with(
                "text/html",
                report::html(&outcome.run, outcome.comparison.as_ref()),
            )
            .with_data(
                "prompt-test",
                serde_json::json!({
                    "runId": outcome.run.run_id,
                    "folder": outcome.folder.display().to_string(),
                    "stats": stats,
                    "regressed": outcome.comparison.as_ref().map(|c| c.regressed.len()),
                    "fixed": outcome.comparison.as_ref().map(|c| c.fixed.len()),
                }),
            );
        display.update(cx.out, bundle);
        if !outcome.passed {
            if let Some(rate) = line.args.fail_under {
                return Err(MagicError::new(
                    "PromptTestFailed",
                    format!(
                        "pass rate {:.1}% is under --fail-under {:.1}%",
                        outcome.run.stats.pass_rate * 100.0,
                        rate * 100.0
                    ),
                ));
            }
        }
        Ok(None)
    }
}
