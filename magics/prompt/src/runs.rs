//! Run folders: each run is kept in `runs/prompt-tests/RUN/` (its results, the
//! suite it ran, and its metrics), reported through the tracking interface, and
//! can serve as the baseline of a later run.

use crate::run::RunResult;
use anyhow::{anyhow, bail, Context, Result};
use ferrolab_llm::tracker::{RunStatus, Tracker};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where runs go, relative to the working folder (as fine-tuning runs do).
pub fn runs_dir() -> PathBuf {
    PathBuf::from("runs").join("prompt-tests")
}

/// The metrics a run reports: pass rate, latency, cost, tokens.
pub fn metrics(run: &RunResult) -> BTreeMap<String, f64> {
    let s = &run.stats;
    let mut m = BTreeMap::from([
        ("pass_rate".to_string(), s.pass_rate),
        ("passed".to_string(), s.successes as f64),
        ("failed".to_string(), s.failures as f64),
        ("errors".to_string(), s.errors as f64),
        ("latency_ms_mean".to_string(), s.latency_ms_mean),
        ("cost".to_string(), s.cost),
        ("prompt_tokens".to_string(), s.prompt_tokens as f64),
        ("completion_tokens".to_string(), s.completion_tokens as f64),
        ("duration_s".to_string(), s.duration_ms / 1000.0),
    ]);
    if let Some(all) = s.pass_all_rate {
        m.insert("pass_all_rate".to_string(), all);
    }
    m
}

/// Writes the run into `dir` (replacing an earlier run of the same name), then
/// reports it to `tracker`. The folder is written first, so a tracking server that
/// cannot be reached loses nothing: its error comes back as a warning.
pub fn save(
    run: &RunResult,
    suite_text: Option<&str>,
    dir: &Path,
    tracker: &mut dyn Tracker,
) -> Result<Option<String>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the run folder {}", dir.display()))?;
    if let Some(text) = suite_text {
        ferrolab_llm::write_atomically(&dir.join("promptfooconfig.yaml"), |tmp| {
            Ok(std::fs::write(tmp, text)?)
        })?;
    }
    ferrolab_llm::write_atomically(&dir.join("results.json"), |tmp| {
        Ok(std::fs::write(tmp, serde_json::to_vec_pretty(run)?)?)
    })?;
    let values = metrics(run);
    let mut line = serde_json::Map::new();
    line.insert("step".into(), 0.into());
    for (k, v) in &values {
        line.insert(k.clone(), serde_json::Value::from(*v));
    }
    ferrolab_llm::write_atomically(&dir.join("metrics.jsonl"), |tmp| {
        Ok(std::fs::write(
            tmp,
            format!("{}\n", serde_json::Value::Object(line)),
        )?)
    })?;
    let params = serde_json::json!({
        "kind": "prompt-test",
        "run_id": run.run_id,
        "description": run.description,
        "prompts": run.prompts.len(),
        "providers": run.providers.join(", "),
        "tests": run.tests.len(),
        "repeat": run.stats.repeat,
    });
    let reported = (|| -> Result<()> {
        tracker.start(dir, &params)?;
        tracker.log_values(0, &values)?;
        tracker.log_artifact(&dir.join("results.json"))?;
        tracker.finish(RunStatus::Finished)
    })();
    Ok(reported
        .err()
        .map(|e| format!("the run was not reported to the tracking server: {e:#}")))
}

/// A run's folder name: the one asked for, else its id.
pub fn folder(run: &RunResult, name: Option<&str>) -> Result<PathBuf> {
    let name = name.unwrap_or(&run.run_id);
    if name.is_empty() || name == "latest" || name.contains(['/', '\\']) || name.starts_with('.') {
        bail!("a run name is a plain folder name (not `latest`, no slashes), got {name:?}");
    }
    Ok(runs_dir().join(name))
}

/// Reads a baseline: a results.json, a run folder, a run name under
/// `runs/prompt-tests/`, or `latest` (the newest run there other than `except`).
pub fn load(reference: &str, except: Option<&Path>) -> Result<RunResult> {
    let path = resolve(reference, except)?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the baseline {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a ferrolab prompt-test results file",
            path.display()
        )
    })
}

fn resolve(reference: &str, except: Option<&Path>) -> Result<PathBuf> {
    let direct = Path::new(reference);
    if direct.is_file() {
        return Ok(direct.to_path_buf());
    }
    if direct.join("results.json").is_file() {
        return Ok(direct.join("results.json"));
    }
    let dir = runs_dir();
    let named = dir.join(reference).join("results.json");
    if reference != "latest" && named.is_file() {
        return Ok(named);
    }
    // Only the creation time of each earlier run is needed to find the newest.
    #[derive(serde::Deserialize)]
    struct Created {
        #[serde(rename = "createdAt")]
        created_at: String,
    }
    let mut known: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| except.is_none_or(|x| x != p.as_path()))
                .filter_map(|p| {
                    let text = std::fs::read_to_string(p.join("results.json")).ok()?;
                    let created = serde_json::from_str::<Created>(&text).ok()?.created_at;
                    Some((created, p))
                })
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    if reference == "latest" {
        return known
            .last()
            .map(|(_, p)| p.join("results.json"))
            .ok_or_else(|| {
                anyhow!(
                    "there is no earlier run in {} to compare with",
                    dir.display()
                )
            });
    }
    let names: Vec<String> = known
        .iter()
        .filter_map(|(_, p)| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    bail!(
        "no baseline run {reference:?}: not a results file, a run folder, or a run in {} (known: {})",
        dir.display(),
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    )
}
