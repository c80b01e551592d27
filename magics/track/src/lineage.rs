//! What a registered model version came from: the adapter's files, the base model,
//! the training data and config, the training run and its evaluations, all with
//! content hashes (BLAKE3), and the model card written from them.

use anyhow::{Context, Result};
use ferrolab_tracking::model::Run;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// `blake3:HEX` of a file, or of a folder's files (their relative paths and hashes,
/// sorted), so that the same bytes give the same hash wherever they live: the
/// tracking store's own rule, which the server checks an evaluated adapter against.
pub fn content_hash(path: &Path) -> Result<String> {
    ferrolab_tracking::content_hash(path).with_context(|| format!("cannot hash {}", path.display()))
}

/// The lineage of the adapter in `adapter`: its hash and LoRA settings, the base
/// model (name, resolved path, hash), and, when the adapter sits in a fine-tuning
/// run folder, that run's config and data (with its hash).
pub fn of_adapter(adapter: &Path) -> Result<Value> {
    let config_path = adapter.join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).with_context(|| {
        format!(
            "{} is not an adapter folder: it has no readable adapter_config.json (give the adapter/ folder of a %finetune run)",
            adapter.display()
        )
    })?;
    let adapter_config: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", config_path.display()))?;
    let absolute = std::fs::canonicalize(adapter).unwrap_or_else(|_| adapter.to_path_buf());
    let mut lineage = Map::new();
    lineage.insert(
        "adapter".into(),
        json!({
            "path": absolute.display().to_string(),
            "hash": content_hash(adapter)?,
            "r": adapter_config["r"],
            "lora_alpha": adapter_config["lora_alpha"],
            "target_modules": adapter_config["target_modules"],
        }),
    );
    let run_dir = absolute.parent().map(Path::to_path_buf);
    let config = run_dir
        .as_ref()
        .map(|d| d.join("config.toml"))
        .filter(|p| p.is_file());
    let mut base_name = adapter_config["base_model_name_or_path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(config) = &config {
        let text = std::fs::read_to_string(config)?;
        let parsed: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", config.display()))?;
        let training = serde_json::to_value(&parsed)?;
        if let Some(model) = training["model"].as_str() {
            base_name = model.to_string();
        }
        if let Some(data) = training["data"].as_str() {
            let path = resolve_from(run_dir.as_deref(), data);
            lineage.insert(
                "dataset".into(),
                json!({"path": path.display().to_string(), "hash": content_hash(&path).ok()}),
            );
        } else if let Some(table) = training["table"].as_str() {
            lineage.insert(
                "dataset".into(),
                json!({"table": table, "hash": null, "note": "a kernel table; its rows are not hashed"}),
            );
        }
        lineage.insert("training_config".into(), training);
        lineage.insert(
            "run_dir".into(),
            json!(run_dir.as_ref().map(|d| d.display().to_string())),
        );
    }
    let mut base = json!({"name": base_name});
    if let Ok(path) = ferrolab_llm::load::resolve(&base_name) {
        base["path"] = json!(path.display().to_string());
        base["hash"] = json!(content_hash(&path).ok());
    }
    lineage.insert("base_model".into(), base);
    Ok(Value::Object(lineage))
}

fn resolve_from(dir: Option<&Path>, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() || p.exists() {
        return p;
    }
    dir.map(|d| d.join(&p)).filter(|q| q.exists()).unwrap_or(p)
}

/// `blake3:` and the first 16 hex digits of a hash.
fn short(hash: &Value) -> String {
    hash.as_str()
        .map(|h| h.chars().take("blake3:".len() + 16).collect::<String>())
        .unwrap_or_else(|| "not hashed".to_string())
}

fn metric(run: &Run, key: &str) -> Option<f64> {
    run.data
        .metrics
        .iter()
        .find(|m| m.key == key)
        .map(|m| m.value)
        .filter(|v| v.is_finite())
}

/// A model card in Markdown, from the lineage, the training run and the evaluation
/// runs (as the tracking store has them).
pub fn model_card(
    name: &str,
    author: &str,
    lineage: &Value,
    training: Option<&Run>,
    evaluations: &[Run],
) -> String {
    let mut card = format!(
        "# {name}\n\nA LoRA adapter registered by {author} on {}.\n\n## Model\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let base = &lineage["base_model"];
    card.push_str(&format!(
        "- Base model: `{}` ({})\n",
        base["name"].as_str().unwrap_or("unknown"),
        short(&base["hash"])
    ));
    let adapter = &lineage["adapter"];
    card.push_str(&format!(
        "- Adapter: `{}` ({}), LoRA r = {}, alpha = {}, targets {}\n",
        adapter["path"].as_str().unwrap_or_default(),
        short(&adapter["hash"]),
        adapter["r"],
        adapter["lora_alpha"],
        adapter["target_modules"]
    ));
    card.push_str("\n## Training\n\n");
    let dataset = &lineage["dataset"];
    if let Some(path) = dataset["path"].as_str() {
        card.push_str(&format!("- Data: `{path}` ({})\n", short(&dataset["hash"])));
    } else if let Some(table) = dataset["table"].as_str() {
        card.push_str(&format!(
            "- Data: the kernel table `{table}` (not hashed)\n"
        ));
    } else {
        card.push_str("- Data: not recorded (the adapter is not in a fine-tuning run folder)\n");
    }
    let config = &lineage["training_config"];
    if config.is_object() {
        let keys = [
            "steps",
            "epochs",
            "lr",
            "batch_size",
            "grad_accum",
            "max_length",
            "r",
            "alpha",
            "seed",
        ];
        let set: Vec<String> = keys
            .iter()
            .filter(|k| !config[**k].is_null())
            .map(|k| format!("{k} = {}", config[*k]))
            .collect();
        if !set.is_empty() {
            card.push_str(&format!("- Config: {}\n", set.join(", ")));
        }
    }
    match training {
        Some(run) => {
            card.push_str(&format!(
                "- Run: `{}` ({}), status {}",
                run.info.run_name,
                run.info.run_id,
                Some(run.info.status.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or("unknown")
            ));
            if let Some(loss) = metric(run, "loss") {
                card.push_str(&format!(", final loss {loss:.4}"));
            }
            if let Some(loss) = metric(run, "eval_loss") {
                card.push_str(&format!(", eval loss {loss:.4}"));
            }
            card.push('\n');
        }
        None => card.push_str("- Run: not linked\n"),
    }
    card.push_str("\n## Evaluation\n\n");
    if evaluations.is_empty() {
        card.push_str("No prompt-test run is linked yet (`%link_eval NAME VERSION RUN`).\n");
    }
    for run in evaluations {
        let rate = metric(run, "pass_rate")
            .map(|r| format!("{:.1}% passed", r * 100.0))
            .unwrap_or_else(|| "no pass_rate".to_string());
        card.push_str(&format!(
            "- `{}` ({}): {rate}\n",
            run.info.run_name, run.info.run_id
        ));
    }
    card.push_str(
        "\n## Governance\n\nReviews, promotions and every change to this version are in its audit log (`%audit`).\n",
    );
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_hash_depends_on_content_not_place() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        for dir in [a.path(), b.path()] {
            std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
            std::fs::write(dir.join("x.bin"), b"weights").expect("write");
            std::fs::write(dir.join("sub/y.json"), b"{}").expect("write");
        }
        let ha = content_hash(a.path()).expect("hash");
        assert_eq!(ha, content_hash(b.path()).expect("hash"));
        assert!(ha.starts_with("blake3:"));
        std::fs::write(b.path().join("x.bin"), b"weightz").expect("write");
        assert_ne!(ha, content_hash(b.path()).expect("hash"));
        assert!(content_hash(&a.path().join("missing")).is_err());
    }

    #[test]
    fn an_adapter_outside_a_run_folder_still_has_lineage() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = of_adapter(dir.path()).expect_err("no config");
        assert!(err.to_string().contains("adapter_config.json"));
        std::fs::write(
            dir.path().join("adapter_config.json"),
            r#"{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "base_model_name_or_path": "nowhere"}"#,
        )
        .expect("write");
        let lineage = of_adapter(dir.path()).expect("lineage");
        assert_eq!(lineage["adapter"]["r"], 4);
        assert_eq!(lineage["base_model"]["name"], "nowhere");
        assert!(lineage["base_model"]["hash"].is_null());
        let card = model_card("m", "alice", &lineage, None, &[]);
        assert!(card.contains("LoRA r = 4") && card.contains("No prompt-test run is linked"));
    }
}
