//! What a tracking store does, whatever keeps it: the [`Store`] trait, and the
//! rules every implementation applies the same way (MLflow's limits on keys, values
//! and batches; run statuses; version numbers). [`SqlStore`](crate::SqlStore)
//! is the implementation in the collaboration server's data folder; a store on a
//! shared database implements the same trait, and the REST API ([`crate::api`])
//! only ever sees the trait.
//!
//! Every write is one transaction: a batch is stored whole or not at all, and a
//! registry write is recorded in the audit log in the same transaction.

use crate::access::person_key;
pub use crate::error::{Result, TrackingError};
use crate::model::*;
use crate::search::RunRecord;
use std::path::PathBuf;
use std::sync::Arc;

/// MLflow's limits on one `log-batch`, and on keys and values.
pub const MAX_BATCH_METRICS: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;
pub const MAX_BATCH_TOTAL: usize = 1000;
pub const MAX_KEY: usize = 250;
pub const MAX_PARAM_VALUE: usize = 6000;
pub const MAX_TAG_VALUE: usize = 8000;

pub const RUN_STATUSES: &[&str] = &["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// Milliseconds since the Unix epoch, as MLflow's timestamps count.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Who does a registry action: the token's name, and whether it is an owner's.
/// Rules about people (no self-approval, one vote each) compare
/// [`person_key`]s of names, never the raw strings.
pub struct Actor<'a> {
    pub name: &'a str,
    pub owner: bool,
}

impl Actor<'_> {
    pub fn is(&self, name: &str) -> bool {
        person_key(self.name) == person_key(name)
    }
}

/// A version the server is about to evaluate; see [`Store::evaluation_target`].
#[derive(Debug, Clone)]
pub struct EvaluationTarget {
    pub name: String,
    pub version: i64,
    pub uid: String,
    pub adapter_digest: String,
    /// The training run whose uploaded adapter is evaluated.
    pub run_id: String,
    /// Each adapter file: its path inside the adapter folder and its stored bytes.
    pub files: Vec<(String, PathBuf)>,
}

/// What the server's evaluation measured, kept as the policy's evidence.
#[derive(Debug, Clone)]
pub struct EvaluationOutcome {
    /// The run the server recorded the evaluation as.
    pub run_id: String,
    pub pass_rate: f64,
    pub tests: i64,
    /// SHA-256 of the suite's text, so the audit log says what was run.
    pub suite_sha256: String,
}

/// A run as search keeps it: the record filters and orders read, and the run's
/// MLflow JSON, serialised once.
#[derive(Debug)]
pub struct CachedRun {
    pub record: RunRecord,
    pub json: String,
}

impl CachedRun {
    pub fn new(run: &Run) -> Result<CachedRun> {
        Ok(CachedRun {
            record: RunRecord::from_run(run),
            json: to_json(run)?.to_string(),
        })
    }
}

/// A tracking store: its runs ([`RunStore`]), its model registry and governance
/// ([`RegistryStore`]) and its artifacts ([`ArtifactStore`]), each a trait of its
/// own so that a deployment can keep artifacts apart from the rest. Ids are
/// MLflow's: experiment ids and version numbers are whole numbers written as text,
/// and a store refuses other text with [`TrackingError::InvalidParameter`] naming it.
pub trait Store: RunStore + RegistryStore + ArtifactStore {}

impl<T: RunStore + RegistryStore + ArtifactStore> Store for T {}

/// Experiments, runs, params, tags and metric series.
pub trait RunStore: Send + Sync {
    // ------------------------------------------------------------ experiments

    /// A new experiment's id.
    fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<String>;
    fn get_experiment(&self, id: &str) -> Result<Experiment>;
    fn get_experiment_by_name(&self, name: &str) -> Result<Experiment>;
    /// Experiments in `view`, newest first, matching a filter of `name` and
    /// `tags.KEY` clauses (`=`, `!=`, `LIKE`, `ILIKE`, joined by AND); `max_results`
    /// from `offset`.
    fn search_experiments(
        &self,
        view: ViewType,
        filter: &str,
        max_results: usize,
        offset: usize,
    ) -> Result<Page<Experiment>>;

    // ------------------------------------------------------------ runs

    /// A new run by `author` (the caller) for `user_id` (who MLflow says it is for).
    fn create_run(
        &self,
        experiment_id: &str,
        user_id: &str,
        author: &str,
        run_name: Option<&str>,
        start_time: Option<i64>,
        tags: &[(String, String)],
    ) -> Result<Run>;
    fn get_run(&self, run_id: &str) -> Result<Run>;
    fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunInfo>;
    fn delete_run(&self, run_id: &str) -> Result<()>;
    /// Params are written once: the same value again is accepted, another refused.
    fn log_param(&self, run_id: &str, key: &str, value: &str) -> Result<()>;
    fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()>;
    fn log_metric(&self, run_id: &str, metric: &Metric) -> Result<()>;
    /// A whole batch, or nothing.
    fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()>;
    /// Every point of one metric, in step then time order.
    fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>>;
    /// The runs of some experiments in `view`, as search needs them.
    fn runs_of(&self, experiment_ids: &[String], view: ViewType) -> Result<Vec<Arc<CachedRun>>>;

    /// A run's live document and its notes document ('' for a run recorded before
    /// notes had a document of their own), once it has them.
    fn run_doc(&self, run_id: &str) -> Result<Option<(String, String)>>;
    /// Every run's notes document (those collaborators may edit).
    fn run_notes_docs(&self) -> Result<Vec<String>>;
    /// Records a run's live document and its notes document, and names the live
    /// document in the run's tag `ferrolab.doc`.
    fn set_run_doc(&self, run_id: &str, url: &str, notes_url: &str) -> Result<()>;
}

/// The model registry and its governance: registered models, versions (with
/// lineage), aliases, reviews, evaluations, the promotion policy and the audit log.
/// Every write appends its audit entry in the same transaction.
pub trait RegistryStore: Send + Sync {
    // ------------------------------------------------------------ registered models

    fn create_registered_model(
        &self,
        who: &Actor<'_>,
        name: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<RegisteredModel>;
    fn get_registered_model(&self, name: &str) -> Result<RegisteredModel>;
    fn search_registered_models(
        &self,
        filter: &str,
        max: usize,
        offset: usize,
    ) -> Result<Page<RegisteredModel>>;
    fn update_registered_model(
        &self,
        who: &Actor<'_>,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel>;
    /// Refused while a version holds a protected alias.
    fn delete_registered_model(&self, who: &Actor<'_>, name: &str) -> Result<()>;
    /// Sets a tag, or deletes it when `value` is None.
    fn set_registered_model_tag(
        &self,
        who: &Actor<'_>,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()>;

    // ------------------------------------------------------------ model versions

    /// A new version of `name` (its author is `who`), with its lineage and the runs
    /// that evaluate it. Version numbers are never reused, even after the model is
    /// deleted and made again.
    #[allow(clippy::too_many_arguments)]
    fn create_model_version(
        &self,
        who: &Actor<'_>,
        name: &str,
        source: &str,
        run_id: &str,
        description: &str,
        tags: &[(String, String)],
        lineage: &serde_json::Value,
        evaluations: &[String],
    ) -> Result<ModelVersion>;
    fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion>;
    fn search_model_versions(
        &self,
        filter: &str,
        max: usize,
        offset: usize,
    ) -> Result<Page<ModelVersion>>;
    fn update_model_version(
        &self,
        who: &Actor<'_>,
        name: &str,
        version: &str,
        description: &str,
    ) -> Result<ModelVersion>;
    /// Refused while the version holds a protected alias.
    fn delete_model_version(&self, who: &Actor<'_>, name: &str, version: &str) -> Result<()>;
    /// Sets a tag, or deletes it when `value` is None.
    fn set_model_version_tag(
        &self,
        who: &Actor<'_>,
        name: &str,
        version: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()>;
    /// A version's lineage, evaluation runs (with their pass rates) and reviews.
    fn model_version_details(&self, name: &str, version: &str) -> Result<ModelVersionDetails>;
    /// Links a prompt-test run to a version as its evaluation; the version's
    /// evaluation runs after it.
    fn link_evaluation(
        &self,
        who: &Actor<'_>,
        name: &str,
        version: &str,
        run_id: &str,
    ) -> Result<Vec<EvaluationRun>>;
    /// What the server evaluates for `name` `version`: the version's identity and
    /// the adapter files its training run uploaded. Refused, saying how to register
    /// one that can be evaluated, when there are none.
    fn evaluation_target(&self, name: &str, version: &str) -> Result<EvaluationTarget>;
    /// Keeps the outcome of an evaluation the server ran on `target` as evidence for
    /// the policy, links its run to the version, and writes the audit entry. Refused
    /// when the version changed identity while the evaluation ran.
    fn record_server_evaluation(
        &self,
        who: &Actor<'_>,
        target: &EvaluationTarget,
        outcome: &EvaluationOutcome,
    ) -> Result<RecordedEvaluation>;

    // ------------------------------------------------------------ reviews and aliases

    /// Records `who`'s review of a version. Nobody approves their own version.
    fn review(
        &self,
        who: &Actor<'_>,
        name: &str,
        version: &str,
        approve: bool,
        comment: &str,
    ) -> Result<Review>;
    /// Points `alias` at a version; a protected alias only when the policy allows,
    /// and the refusal lists every rule that failed.
    fn set_alias(&self, who: &Actor<'_>, name: &str, alias: &str, version: &str) -> Result<Alias>;
    /// Removes `alias`; a protected alias only by an owner.
    fn delete_alias(&self, who: &Actor<'_>, name: &str, alias: &str) -> Result<()>;
    fn version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion>;

    // ------------------------------------------------------------ policy and audit

    fn policy(&self) -> Result<Policy>;
    /// Replaces the policy (owners only), recording the change.
    fn set_policy(&self, who: &Actor<'_>, policy: &Policy) -> Result<Policy>;
    /// The audit log (of one model, or all when `model` is None), oldest first, and
    /// whether the whole chain verifies.
    fn audit(&self, model: Option<&str>) -> Result<AuditLog>;
}

/// Run artifacts, under the paths MLflow's artifact URIs name
/// (`EXPERIMENT/RUN/artifacts/…`). A store checks that the run exists, is in that
/// experiment and, for writes, is active.
pub trait ArtifactStore: Send + Sync {
    /// Stores `bytes` as the artifact at `path` (replacing what was there).
    fn put_artifact(&self, path: &str, bytes: &[u8]) -> Result<StoredArtifact> {
        let mut upload = self.start_upload(path)?;
        upload.write(bytes)?;
        self.finish_upload(upload)
    }
    /// Begins storing the artifact at `path`, refused before any byte is sent when
    /// the path or its run cannot take it.
    fn start_upload(&self, path: &str) -> Result<Upload>;
    /// Stores what was written to `upload` under its path.
    fn finish_upload(&self, upload: Upload) -> Result<StoredArtifact>;
    fn get_artifact(&self, path: &str) -> Result<Vec<u8>> {
        let (file, _) = self.artifact_file(path)?;
        std::fs::read(&file).map_err(|e| {
            TrackingError::Internal(format!(
                "the bytes of artifact '{path}' ({}) cannot be read: {e}",
                file.display()
            ))
        })
    }
    /// The file holding an artifact's bytes, and its size.
    fn artifact_file(&self, path: &str) -> Result<(PathBuf, u64)>;
    /// A folder's entries (files with their sizes, and sub-folders), by name.
    fn list_artifacts(&self, dir: &str) -> Result<Vec<ArtifactEntry>>;
    /// Removes an artifact, or a folder of them.
    fn delete_artifact(&self, path: &str) -> Result<()>;
}

pub use crate::upload::Upload;

// ---------------------------------------------------------------- shared rules

pub(crate) fn check_key(kind: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(TrackingError::invalid(format!(
            "a {kind} key must not be empty"
        )));
    }
    if key.len() > MAX_KEY {
        return Err(TrackingError::invalid(format!(
            "{kind} key '{}…' is {} characters; the limit is {MAX_KEY}",
            &key[..key.char_indices().nth(40).map_or(key.len(), |(i, _)| i)],
            key.len()
        )));
    }
    if key.contains("..") || key.starts_with('/') {
        return Err(TrackingError::invalid(format!(
            "invalid {kind} key '{key}': keys may not start with '/' or contain '..'"
        )));
    }
    Ok(())
}

/// A key and a value within MLflow's length limits.
pub(crate) fn check_entry(kind: &str, key: &str, value: &str, max: usize) -> Result<()> {
    check_key(kind, key)?;
    if value.len() > max {
        return Err(TrackingError::invalid(format!(
            "{kind} '{key}' has a value of {} characters; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

/// A run status MLflow knows.
pub(crate) fn check_status(status: &str) -> Result<()> {
    if RUN_STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(TrackingError::invalid(format!(
            "invalid run status '{status}'; use one of {}",
            RUN_STATUSES.join(", ")
        )))
    }
}

/// MLflow's limits on one batch, and one value per param key.
pub(crate) fn check_batch(
    metrics: &[Metric],
    params: &[(String, String)],
    tags: &[(String, String)],
) -> Result<()> {
    let limit = |what: &str, n: usize, max: usize| {
        if n > max {
            Err(TrackingError::invalid(format!(
                "A batch logging request can contain at most {max} {what}. Got {n} {what}. Please split up {what} across multiple requests and try again."
            )))
        } else {
            Ok(())
        }
    };
    limit("metrics", metrics.len(), MAX_BATCH_METRICS)?;
    limit("params", params.len(), MAX_BATCH_PARAMS)?;
    limit("tags", tags.len(), MAX_BATCH_TAGS)?;
    limit(
        "entities",
        metrics.len() + params.len() + tags.len(),
        MAX_BATCH_TOTAL,
    )?;
    let mut seen = std::collections::BTreeMap::new();
    for (k, v) in params {
        if let Some(old) = seen.insert(k.as_str(), v.as_str()) {
            if old != v {
                return Err(TrackingError::invalid(format!(
                    "Duplicate parameter keys have been submitted: '{k}' with two values"
                )));
            }
        }
    }
    Ok(())
}

/// An experiment id: a whole number, written as text.
pub(crate) fn parse_experiment_id(id: &str) -> Result<i64> {
    id.trim()
        .parse::<i64>()
        .map_err(|_| TrackingError::invalid(format!("experiment_id must be a number, got '{id}'")))
}

/// A model version number: a positive whole number, written as text.
pub fn parse_version(version: &str) -> Result<i64> {
    version
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            TrackingError::invalid(format!(
                "model version must be a positive whole number, got '{version}'"
            ))
        })
}

/// A registered model's or alias's name: not empty, at most 256 characters, no
/// `/` or `:` (they would be read as part of a model URI).
pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(TrackingError::invalid(format!(
            "a {kind} name must not be empty"
        )));
    }
    if name.len() > 256 || name.contains('/') || name.contains(':') {
        return Err(TrackingError::invalid(format!(
            "invalid {kind} name '{name}': at most 256 characters, without '/' or ':'"
        )));
    }
    Ok(())
}

/// An alias a version may be given: a valid name that is not `latest` or `vN`, which
/// name versions in model URIs.
pub(crate) fn check_alias(alias: &str) -> Result<()> {
    check_name("alias", alias)?;
    if alias.eq_ignore_ascii_case("latest")
        || (alias.starts_with('v') && alias[1..].parse::<u64>().is_ok())
    {
        return Err(TrackingError::invalid(format!(
            "'{alias}' is reserved (latest and vN name versions); pick another alias"
        )));
    }
    Ok(())
}
