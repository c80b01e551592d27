//! The tracking store's entities, typed: what a [`Store`](crate::Store) takes and
//! gives back. Each serializes exactly as MLflow's REST API writes it (field names,
//! ids as text, metric values that JSON cannot hold as `"NaN"` or `"Infinity"`), so
//! the API layer wraps them in its reply and adds nothing; ferrolab's own additions
//! (`ferrolab_uid`, `adapter_digest`, reviews, the audit log) sit beside MLflow's
//! fields where the `mlflow` client ignores them. They read back from the same JSON
//! (the kernel's client reads the server's replies into them), leniently: a field a
//! server leaves out (MLflow's own leaves out ferrolab's) takes its default.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A run's tag or param, an experiment's, model's or version's tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// One point of a metric series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Metric {
    pub key: String,
    #[serde(
        serialize_with = "metric_value",
        deserialize_with = "read_metric_value"
    )]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

/// A metric value as MLflow's JSON writes it: a number, or `"NaN"` / `"Infinity"` /
/// `"-Infinity"`.
fn metric_value<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() {
        s.serialize_f64(*value)
    } else if value.is_nan() {
        s.serialize_str("NaN")
    } else if *value > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

/// A metric value as MLflow's JSON writes it (a number, or one of the words), or
/// as text holding a number.
pub(crate) fn read_metric_value<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| D::Error::custom("has no usable value")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| D::Error::custom(format!("must be a number, got '{other}'"))),
        },
        other => Err(D::Error::custom(format!("must be a number, got {other}"))),
    }
}

/// `value` as MLflow's JSON writes a metric value.
pub fn metric_json(value: f64) -> Value {
    metric_value(&value, serde_json::value::Serializer).unwrap_or(Value::Null)
}

/// Which experiments or runs a search sees, by lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    #[default]
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
    /// MLflow's `view_type` (`ACTIVE_ONLY`, `DELETED_ONLY`, `ALL`); anything else is
    /// the default, active only, as MLflow's server reads it.
    pub fn parse(text: &str) -> ViewType {
        match text {
            "DELETED_ONLY" => ViewType::DeletedOnly,
            "ALL" => ViewType::All,
            _ => ViewType::ActiveOnly,
        }
    }

    /// Whether a row in `lifecycle_stage` is in view.
    pub fn shows(self, lifecycle_stage: &str) -> bool {
        match self {
            ViewType::ActiveOnly => lifecycle_stage == "active",
            ViewType::DeletedOnly => lifecycle_stage == "deleted",
            ViewType::All => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub creation_time: i64,
    pub last_update_time: i64,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RunInfo {
    pub run_id: String,
    /// MLflow's older name for `run_id`, still read by its clients.
    pub run_uuid: String,
    pub experiment_id: String,
    pub run_name: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub lifecycle_stage: String,
    pub artifact_uri: String,
}

/// A run's latest metric values, params and tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RunData {
    pub metrics: Vec<Metric>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

impl RunData {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// Dataset inputs: not tracked by ferrolab; always empty, as MLflow writes a run
/// without them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunInputs {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
    pub inputs: RunInputs,
}

/// A page of search results and the token for the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Alias {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RegisteredModel {
    pub name: String,
    pub description: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<Alias>,
    /// The newest version, as MLflow lists it; absent while there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latest_versions: Vec<ModelVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    /// Who registered it.
    pub user_id: String,
    pub source: String,
    pub run_id: String,
    pub description: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    /// MLflow's deprecated stages are not used: aliases and the policy replace them.
    pub current_stage: String,
    pub status: String,
    /// Never reused, even when a model is deleted and made again.
    pub ferrolab_uid: String,
    pub adapter_digest: String,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<String>,
}

/// A run linked to a version as its evaluation, with the `pass_rate` it logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct EvaluationRun {
    pub run_id: String,
    pub pass_rate: Option<f64>,
}

/// An evaluation the server ran itself on a version's adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ServerEvaluation {
    pub run_id: String,
    pub pass_rate: f64,
    pub tests: i64,
    pub requested_by: String,
    pub timestamp: i64,
}

/// What the audit log keeps of a server evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RecordedEvaluation {
    pub run_id: String,
    pub pass_rate: f64,
    pub tests: i64,
    pub suite_sha256: String,
    pub ferrolab_uid: String,
    pub adapter_digest: String,
    pub recorded_by: String,
}

/// One review as a version's details list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ReviewEntry {
    pub reviewer: String,
    pub decision: String,
    pub comment: String,
    pub timestamp: i64,
}

/// A review as recorded: of exactly one version (its uid and adapter digest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Review {
    pub name: String,
    pub version: String,
    pub reviewer: String,
    pub decision: String,
    pub comment: String,
    pub timestamp: i64,
    pub ferrolab_uid: String,
    pub adapter_digest: String,
}

/// A version with its lineage, evaluations and reviews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ModelVersionDetails {
    #[serde(flatten)]
    pub version: ModelVersion,
    /// What the version was made from (adapter hash, base model, data), as the
    /// client recorded it.
    pub lineage: Value,
    pub evaluation_runs: Vec<EvaluationRun>,
    pub server_evaluations: Vec<ServerEvaluation>,
    pub reviews: Vec<ReviewEntry>,
}

/// The promotion policy. Aliases in `protected_aliases` are set only for a version
/// with `min_approvals` approvals from people other than its author (and no
/// standing rejection) and, when `require_evaluation`, an evaluation the server ran
/// whose pass rate is at least `min_pass_rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub protected_aliases: Vec<String>,
    pub min_approvals: u32,
    pub require_evaluation: bool,
    pub min_pass_rate: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            protected_aliases: vec!["production".into()],
            min_approvals: 1,
            require_evaluation: true,
            min_pass_rate: 0.9,
        }
    }
}

/// One audit entry as shown: the documents before and after the action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuditRecord {
    pub seq: i64,
    pub timestamp: i64,
    pub actor: String,
    pub action: String,
    pub model: String,
    pub version: String,
    pub before: Value,
    pub after: Value,
    pub hash: String,
}

/// The audit log (or one model's part of it) and whether the whole chain verifies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuditLog {
    pub entries: Vec<AuditRecord>,
    pub chain_verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_broken_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_problem: Option<String>,
}

/// An artifact as stored: its path, content hash and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct StoredArtifact {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// One entry of an artifact folder's listing, as MLflow's artifact proxy lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ArtifactEntry {
    pub path: String,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<i64>,
}

/// `entity` as a JSON document (for the audit log and API replies). The entities
/// above always serialize; a failure would be a bug, reported as an internal error.
pub fn to_json<T: Serialize>(entity: &T) -> crate::Result<Value> {
    serde_json::to_value(entity)
        .map_err(|e| crate::TrackingError::Internal(format!("cannot write a reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entities_read_back_what_they_write() {
        let run = Run {
            info: RunInfo {
                run_id: "r".into(),
                run_uuid: "r".into(),
                experiment_id: "0".into(),
                run_name: "a".into(),
                status: "FINISHED".into(),
                start_time: 5,
                end_time: Some(9),
                lifecycle_stage: "active".into(),
                ..RunInfo::default()
            },
            data: RunData {
                metrics: vec![Metric {
                    key: "loss".into(),
                    value: f64::INFINITY,
                    timestamp: 1,
                    step: 2,
                }],
                params: vec![KeyValue::new("lr", "0.1")],
                tags: vec![],
            },
            inputs: RunInputs {},
        };
        let written = to_json(&run).expect("json");
        assert_eq!(written["data"]["metrics"][0]["value"], json!("Infinity"));
        let read: Run = serde_json::from_value(written).expect("reads");
        assert_eq!(read, run);
    }

    #[test]
    fn what_mlflows_own_server_writes_reads_with_defaults() {
        // MLflow's server writes no ferrolab fields and, for a version, its stage.
        let version: ModelVersion = serde_json::from_value(json!({
            "name": "m", "version": "3", "creation_timestamp": 1, "current_stage": "None",
            "status": "READY", "run_id": "", "source": "s3://b/m"
        }))
        .expect("reads");
        assert_eq!(version.version, "3");
        assert_eq!(version.ferrolab_uid, "");
        let run: Run = serde_json::from_value(json!({
            "info": {"run_id": "r", "experiment_id": "1", "status": "RUNNING", "start_time": 2},
            "data": {"metrics": [{"key": "acc", "value": "NaN", "timestamp": 3, "step": 0}]},
            "inputs": {"dataset_inputs": []}
        }))
        .expect("reads");
        assert!(run.data.metrics[0].value.is_nan());
        assert_eq!(run.info.end_time, None);
        let bad = serde_json::from_value::<Metric>(json!({"key": "k", "value": "lots"}));
        assert!(bad.is_err(), "a metric value that is no number is refused");
    }
}
