//! `ferrolab prompt-test FILE`: runs a suite from the terminal or CI, writes JSON,
//! HTML and JUnit reports, and exits non-zero under the bar.

use crate::config::{self, Suite};
use crate::report::{self, Comparison};
use crate::run::{self, RunOptions, RunResult};
use crate::runs;
use anyhow::{bail, Context, Result};
use ferrolab_llm::tracker::Tracking;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The exit code when the pass rate is under the bar (promptfoo's, too).
pub const EXIT_BELOW_BAR: i32 = 100;

/// What both the command and `%%prompt_test` take.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Do not read or write the answer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Run every test N times; reports each test's pass rate and pass^N.
    #[arg(long, value_name = "N")]
    pub repeat: Option<usize>,
    /// Provider calls in flight at once (default 4).
    #[arg(short = 'j', long, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// Compare with an earlier run: its name, folder, results.json, or `latest`.
    #[arg(long, value_name = "RUN")]
    pub baseline: Option<String>,
    /// Name this run (its folder under runs/prompt-tests/); default: a timestamp.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Fail when the pass rate is under RATE (0.9 or 90%); without it, any failure fails.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub fail_under: Option<f64>,
    /// Write the results to FILE: .json (all results) or .html (the matrix). Repeatable.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,
    /// Write JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PromptTestArgs {
    /// The suite: a promptfoo config file (YAML).
    pub config: PathBuf,
    /// Run the suite on this provider only (`ferrolab:MODEL+ADAPTER`, …): the suite's
    /// one provider keeps its label and config; a suite without `providers` gets ID.
    #[arg(long, value_name = "ID")]
    pub provider: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, percent) = match t.strip_suffix('%') {
        Some(n) => (n, true),
        None => (t, false),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("a pass rate is a number such as 0.9 or 90%, got {text:?}"))?;
    let rate = if percent || value > 1.0 {
        value / 100.0
    } else {
        value
    };
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!(
            "a pass rate is between 0 and 1 (or 0% and 100%), got {text:?}"
        ));
    }
    Ok(rate)
}

/// A finished run with where it was kept and what changed since the baseline.
pub struct Outcome {
    pub run: RunResult,
    /// Set when the run could not be reported to the tracking server.
    pub warning: Option<String>,
    pub folder: PathBuf,
    pub comparison: Option<Comparison>,
    /// Whether the run meets the bar (`--fail-under`, else no failures).
    pub passed: bool,
}

/// Runs a parsed suite with the shared options, keeps the run (reported through
/// `tracking`), writes reports. `cell` is the notebook cell that runs it, if one does
/// (its run is tagged with it).
pub fn execute(
    suite: &Suite,
    suite_text: Option<&str>,
    args: &RunArgs,
    progress: Option<&(dyn Fn(usize, usize) + Sync)>,
    interrupted: &(dyn Fn() -> bool + Sync),
    tracking: &Tracking,
    cell: Option<&str>,
) -> Result<Outcome> {
    if args.repeat == Some(0) {
        bail!("--repeat must be at least 1");
    }
    if args.max_concurrency == Some(0) {
        bail!("--max-concurrency must be at least 1");
    }
    for out in &args.outputs {
        match out.extension().and_then(|e| e.to_str()) {
            Some("json" | "html") => {}
            _ => bail!("--output {}: write .json or .html", out.display()),
        }
    }
    // Read before the run: a missing baseline is a mistake worth knowing first. The
    // run's own folder (a reused name) is not its own `latest`.
    let baseline = match &args.baseline {
        Some(reference) => {
            let own = args.name.as_deref().map(|n| runs::runs_dir().join(n));
            Some((reference, runs::load(reference, own.as_deref())?))
        }
        None => None,
    };
    let options = RunOptions {
        max_concurrency: args
            .max_concurrency
            .or(suite.options.max_concurrency)
            .unwrap_or(4),
        repeat: args.repeat.or(suite.options.repeat).unwrap_or(1),
        cache: !args.no_cache && suite.options.cache.unwrap_or(true),
        cache_dir: RunOptions::default_cache_dir(),
        progress,
        interrupted,
    };
    let run = run::run(suite, &options)?;
    let folder = runs::folder(&run, args.name.as_deref())?;
    let comparison = baseline
        .as_ref()
        .map(|(reference, before)| report::compare(&run, before, reference));

    let warning = runs::save(
        &run,
        suite_text,
        &folder,
        &mut *tracking.tracker("prompt-tests", cell),
    )?;
    for out in &args.outputs {
        let text = if out.extension().and_then(|e| e.to_str()) == Some("html") {
            report::html_page(&run, comparison.as_ref())
        } else {
            serde_json::to_string_pretty(&run)?
        };
        write_file(out, &text)?;
    }
    if let Some(path) = &args.junit {
        write_file(path, &report::junit(&run))?;
    }
    let s = &run.stats;
    let passed = match args.fail_under {
        Some(rate) => s.pass_rate + 1e-12 >= rate,
        None => s.failures == 0 && s.errors == 0,
    };
    Ok(Outcome {
        run,
        warning,
        folder,
        comparison,
        passed,
    })
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The command; returns the process exit code (0, or 100 under the bar).
pub fn prompt_test(
    args: PromptTestArgs,
    interrupted: &(dyn Fn() -> bool + Sync),
    tracking: &Tracking,
) -> Result<i32> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read the suite {}", args.config.display()))?;
    let suite = config::load_on(&args.config, args.provider.as_deref())?;
    let tty = std::io::stderr().is_terminal();
    let progress = |done: usize, total: usize| {
        if tty {
            eprint!("\r{done}/{total} ");
            let _ = std::io::stderr().flush();
        }
    };
    let outcome = execute(
        &suite,
        Some(&text),
        &args.run,
        Some(&progress),
        interrupted,
        tracking,
        None,
    )?;
    if tty {
        eprintln!();
    }
    print!(
        "{}",
        report::summary(&outcome.run, outcome.comparison.as_ref())
    );
    println!("run kept in {}", outcome.folder.display());
    if let Some(w) = &outcome.warning {
        eprintln!("warning: {w}");
    }
    if interrupted() {
        eprintln!("interrupted: the results above cover the cells finished before the stop");
    }
    if !outcome.passed {
        match args.run.fail_under {
            Some(rate) => eprintln!(
                "pass rate {:.1}% is under --fail-under {:.1}%",
                outcome.run.stats.pass_rate * 100.0,
                rate * 100.0
            ),
            None => {
                eprintln!("some tests failed (set --fail-under RATE to allow a share of failures)")
            }
        }
        return Ok(EXIT_BELOW_BAR);
    }
    Ok(0)
}
