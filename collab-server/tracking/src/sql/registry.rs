//! The model registry and its governance, in the tracking store's SQLite file:
//! registered models, model versions (with lineage and a model card), aliases,
//! reviews, evaluation links, the promotion policy, and an append-only audit log.
//!
//! Every registry write is one transaction that also appends its audit entry, so an
//! action is either recorded and done or neither. The audit table refuses UPDATE and
//! DELETE (SQLite triggers) and each entry carries the SHA-256 of the one before, so
//! an edit made to the file by other means shows when the chain is verified.

use super::audit::AuditEntry;
use super::db::{args, Tx};
use super::SqlStore;
use crate::access::person_key;
use crate::model::*;
use crate::search::{field, filter_matches, registry_filter};
use crate::store::{
    check_alias, check_name, now_ms, parse_version, Actor, EvaluationOutcome, EvaluationTarget,
    RegistryStore, Result, TrackingError,
};
use serde_json::{json, Value};

fn denied(message: String) -> TrackingError {
    TrackingError::PermissionDenied(message)
}

fn alias_missing(alias: &str) -> TrackingError {
    TrackingError::missing(format!("Registered model alias {alias} not found."))
}

impl SqlStore {
    /// Appends an audit entry for an action in `tx` (see [`crate::audit`]).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        tx: &Tx<'_>,
        actor: &str,
        action: &str,
        model: &str,
        version: &str,
        before: &Value,
        after: &Value,
    ) -> Result<()> {
        self.audit
            .append(tx, actor, action, model, version, before, after)
    }

    fn model_exists(tx: &Tx<'_>, name: &str) -> Result<()> {
        let found: Option<String> = tx.query_opt(
            "SELECT name FROM registered_models WHERE name = ?1",
            args![name],
            |r| r.get(0),
        )?;
        found.map(|_| ()).ok_or_else(|| {
            TrackingError::missing(format!("Registered Model with name={name} not found"))
        })
    }

    fn version_entity(tx: &Tx<'_>, name: &str, version: i64) -> Result<ModelVersion> {
        let mut v = tx
            .query_opt(
                "SELECT author, source, run_id, description, creation_timestamp, last_updated_timestamp,
                        uid, adapter_digest
                 FROM model_versions WHERE name = ?1 AND version = ?2",
                args![name, version],
                |r| {
                    Ok(ModelVersion {
                        name: name.to_string(),
                        version: version.to_string(),
                        user_id: r.get(0)?,
                        source: r.get(1)?,
                        run_id: r.get(2)?,
                        description: r.get(3)?,
                        creation_timestamp: r.get(4)?,
                        last_updated_timestamp: r.get(5)?,
                        current_stage: "None".into(),
                        status: "READY".into(),
                        ferrolab_uid: r.get(6)?,
                        adapter_digest: r.get(7)?,
                        tags: Vec::new(),
                        aliases: Vec::new(),
                    })
                },
            )?
            .ok_or_else(|| {
                TrackingError::missing(format!(
                    "Model Version (name={name}, version={version}) not found"
                ))
            })?;
        v.tags = Self::pairs(
            tx,
            "SELECT key, value FROM model_version_tags WHERE name = ?1 AND version = ?2 ORDER BY key",
            &[&name, &version],
        )?;
        let mut stmt = tx.prepare(
            "SELECT alias FROM model_aliases WHERE name = ?1 AND version = ?2 ORDER BY alias",
        )?;
        v.aliases = stmt
            .query_map(args![name, version], |r| r.get(0))?
            .collect::<Result<_>>()?;
        Ok(v)
    }

    fn model_entity(tx: &Tx<'_>, name: &str) -> Result<RegisteredModel> {
        let mut m = tx
            .query_opt(
                "SELECT description, creation_timestamp, last_updated_timestamp FROM registered_models WHERE name = ?1",
                args![name],
                |r| {
                    Ok(RegisteredModel {
                        name: name.to_string(),
                        description: r.get(0)?,
                        creation_timestamp: r.get(1)?,
                        last_updated_timestamp: r.get(2)?,
                        tags: Vec::new(),
                        aliases: Vec::new(),
                        latest_versions: Vec::new(),
                    })
                },
            )?
            .ok_or_else(|| {
                TrackingError::missing(format!("Registered Model with name={name} not found"))
            })?;
        m.tags = Self::pairs(
            tx,
            "SELECT key, value FROM registered_model_tags WHERE name = ?1 ORDER BY key",
            &[&name],
        )?;
        let mut stmt =
            tx.prepare("SELECT alias, version FROM model_aliases WHERE name = ?1 ORDER BY alias")?;
        m.aliases = stmt
            .query_map(args![name], |r| {
                Ok(Alias {
                    alias: r.get(0)?,
                    version: r.get::<i64>(1)?.to_string(),
                })
            })?
            .collect::<Result<_>>()?;
        let latest: Option<i64> = tx.query_one(
            "SELECT MAX(version) FROM model_versions WHERE name = ?1",
            args![name],
            |r| r.get(0),
        )?;
        if let Some(v) = latest {
            m.latest_versions = vec![Self::version_entity(tx, name, v)?];
        }
        Ok(m)
    }

    /// The version's immutable identity: its uid and registered adapter digest.
    fn version_identity(tx: &Tx<'_>, name: &str, version: i64) -> Result<(String, String)> {
        tx.query_one(
            "SELECT uid, adapter_digest FROM model_versions WHERE name = ?1 AND version = ?2",
            args![name, version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn version_author(tx: &Tx<'_>, name: &str, version: i64) -> Result<String> {
        Self::model_exists(tx, name)?;
        tx.query_opt(
            "SELECT author FROM model_versions WHERE name = ?1 AND version = ?2",
            args![name, version],
            |r| r.get(0),
        )?
        .ok_or_else(|| {
            TrackingError::missing(format!(
                "Model Version (name={name}, version={version}) not found"
            ))
        })
    }

    fn run_exists(tx: &Tx<'_>, run_id: &str) -> Result<()> {
        let found: Option<String> = tx.query_opt(
            "SELECT run_id FROM runs WHERE run_id = ?1",
            args![run_id],
            |r| r.get(0),
        )?;
        found
            .map(|_| ())
            .ok_or_else(|| TrackingError::missing(format!("Run with id={run_id} not found")))
    }

    fn evaluations(tx: &Tx<'_>, name: &str, version: i64) -> Result<Vec<EvaluationRun>> {
        let mut stmt = tx.prepare(
            "SELECT e.run_id, m.value FROM model_evaluations e
             LEFT JOIN latest_metrics m ON m.run_id = e.run_id AND m.key = 'pass_rate' AND m.is_nan = 0
             WHERE e.name = ?1 AND e.version = ?2 ORDER BY e.run_id",
        )?;
        let rows = stmt.query_map(args![name, version], |r| {
            Ok(EvaluationRun {
                run_id: r.get(0)?,
                pass_rate: r.get(1)?,
            })
        })?;
        rows.collect::<Result<_>>()
    }

    /// The evaluations the server ran on exactly this version (its uid and adapter
    /// digest), oldest first.
    fn server_evaluations(tx: &Tx<'_>, name: &str, version: i64) -> Result<Vec<ServerEvaluation>> {
        let (uid, digest) = Self::version_identity(tx, name, version)?;
        let mut stmt = tx.prepare(
            "SELECT run_id, pass_rate, tests, requested_by, timestamp FROM server_evaluations
             WHERE version_uid = ?1 AND adapter_digest = ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(args![uid, digest], |r| {
            Ok(ServerEvaluation {
                run_id: r.get(0)?,
                pass_rate: r.get(1)?,
                tests: r.get(2)?,
                requested_by: r.get(3)?,
                timestamp: r.get(4)?,
            })
        })?;
        rows.collect::<Result<_>>()
    }

    /// Why the policy forbids giving `alias` to this version: every failed rule.
    fn policy_failures(
        tx: &Tx<'_>,
        policy: &Policy,
        name: &str,
        version: i64,
        author: &str,
    ) -> Result<Vec<String>> {
        let mut failures = Vec::new();
        // Only reviews of exactly this version count: same uid (never reused) and
        // the adapter digest it had when reviewed. Each person's latest review.
        let (uid, digest) = Self::version_identity(tx, name, version)?;
        let mut stmt = tx.prepare(
            "SELECT reviewer, decision, comment FROM model_reviews
             WHERE version_uid = ?1 AND adapter_digest = ?2 ORDER BY id",
        )?;
        let reviews: Vec<(String, String, String)> = stmt
            .query_map(args![uid, digest], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_>>()?;
        let mut by_person: Vec<(String, (String, String, String))> = Vec::new();
        for review in reviews {
            let person = person_key(&review.0);
            match by_person.iter_mut().find(|(p, _)| *p == person) {
                Some(slot) => slot.1 = review,
                None => by_person.push((person, review)),
            }
        }
        let author_person = person_key(author);
        let approvals = by_person
            .iter()
            .filter(|(person, (_, d, _))| d == "approve" && *person != author_person)
            .count() as u32;
        let latest: Vec<(String, String, String)> =
            by_person.into_iter().map(|(_, review)| review).collect();
        for (who, d, comment) in &latest {
            if d == "reject" {
                failures.push(format!(
                    "rejected by {who}: \"{comment}\" (a new approval from {who} lifts it)"
                ));
            }
        }
        if approvals < policy.min_approvals {
            failures.push(format!(
                "approvals: {approvals} of the {} needed from someone other than the author ({author}); ask a reviewer to run %review {name} {version} --approve \"...\"",
                policy.min_approvals
            ));
        }
        if policy.require_evaluation {
            // Only what the server measured itself on this version's own adapter
            // counts: a linked run's metrics are whatever a client logged.
            let best: Option<f64> = tx.query_one(
                "SELECT MAX(pass_rate) FROM server_evaluations WHERE version_uid = ?1 AND adapter_digest = ?2",
                args![uid, digest],
                |r| r.get(0),
            )?;
            match best {
                None => failures.push(format!(
                    "evaluation: the server has not evaluated version {version}; run a prompt-test suite on it with %%evaluate {name} {version} (the server runs it on the version's own adapter and needs a pass rate of at least {:.1}%; runs linked with --eval or %link_eval are shown, not counted)",
                    policy.min_pass_rate * 100.0
                )),
                Some(rate) if rate + 1e-12 < policy.min_pass_rate => failures.push(format!(
                    "evaluation: the best evaluation the server ran on version {version} passed {:.1}%, under the {:.1}% the policy needs",
                    rate * 100.0,
                    policy.min_pass_rate * 100.0
                )),
                Some(_) => {}
            }
        }
        Ok(failures)
    }

    fn refuse_if_protected(
        tx: &Tx<'_>,
        policy: &Policy,
        name: &str,
        version: Option<i64>,
    ) -> Result<()> {
        let mut stmt = tx.prepare("SELECT alias, version FROM model_aliases WHERE name = ?1")?;
        let held: Vec<(String, i64)> = stmt
            .query_map(args![name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_>>()?;
        for (alias, v) in held {
            if policy.protected_aliases.contains(&alias) && version.is_none_or(|x| x == v) {
                return Err(denied(format!(
                    "'{name}' version {v} holds the protected alias '{alias}'; move or remove the alias first"
                )));
            }
        }
        Ok(())
    }

    /// The version `alias` points at, if it is set.
    fn alias_version(tx: &Tx<'_>, name: &str, alias: &str) -> Result<Option<i64>> {
        tx.query_opt(
            "SELECT version FROM model_aliases WHERE name = ?1 AND alias = ?2",
            args![name, alias],
            |r| r.get(0),
        )
    }

    // ------------------------------------------------------------ policy and audit

    fn policy_in(tx: &Tx<'_>) -> Result<Policy> {
        let text: Option<String> = tx.query_opt(
            "SELECT value FROM governance_policy WHERE key = 'policy'",
            args![],
            |r| r.get(0),
        )?;
        match text {
            None => Ok(Policy::default()),
            Some(t) => serde_json::from_str(&t).map_err(|e| {
                TrackingError::Internal(format!(
                    "the stored governance policy is damaged ({e}); an owner can set it again"
                ))
            }),
        }
    }
}

impl RegistryStore for SqlStore {
    // ------------------------------------------------------------ registered models

    fn create_registered_model(
        &self,
        who: &Actor<'_>,
        name: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<RegisteredModel> {
        check_name("registered model", name)?;
        self.with(|tx| {
            if Self::model_exists(tx, name).is_ok() {
                return Err(TrackingError::exists(format!(
                    "Registered Model (name={name}) already exists."
                )));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO registered_models (name, description, created_by, creation_timestamp, last_updated_timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                args![name, description, who.name, now],
            )?;
            for (k, v) in tags {
                tx.execute(
                    "INSERT INTO registered_model_tags (name, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
                    args![name, k, v],
                )?;
            }
            let after = Self::model_entity(tx, name)?;
            self.record(tx, who.name, "registered_model.create", name, "", &Value::Null, &to_json(&after)?)?;
            Ok(after)
        })
    }

    fn get_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        self.with(|tx| Self::model_entity(tx, name))
    }

    fn search_registered_models(
        &self,
        filter: &str,
        max: usize,
        offset: usize,
    ) -> Result<Page<RegisteredModel>> {
        let clauses = registry_filter(filter, &["name", "tags"])?;
        self.with(|tx| {
            let mut stmt = tx.prepare("SELECT name FROM registered_models ORDER BY name")?;
            let names: Vec<String> = stmt
                .query_map(args![], |r| r.get(0))?
                .collect::<Result<_>>()?;
            let mut hits: Vec<&String> = Vec::new();
            for n in &names {
                let tags = Self::pairs(
                    tx,
                    "SELECT key, value FROM registered_model_tags WHERE name = ?1",
                    &[n],
                )?;
                if filter_matches(&clauses, |key| field(key, n, &tags)) {
                    hits.push(n);
                }
            }
            let items = hits
                .iter()
                .skip(offset)
                .take(max)
                .map(|n| Self::model_entity(tx, n))
                .collect::<Result<Vec<_>>>()?;
            let next_page_token = (offset + max < hits.len()).then(|| (offset + max).to_string());
            Ok(Page {
                items,
                next_page_token,
            })
        })
    }

    fn update_registered_model(
        &self,
        who: &Actor<'_>,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel> {
        self.with(|tx| {
            let before = Self::model_entity(tx, name)?;
            tx.execute(
                "UPDATE registered_models SET description = ?2, last_updated_timestamp = ?3 WHERE name = ?1",
                args![name, description, now_ms()],
            )?;
            let after = Self::model_entity(tx, name)?;
            self.record(tx, who.name, "registered_model.update", name, "", &to_json(&before)?, &to_json(&after)?)?;
            Ok(after)
        })
    }

    fn delete_registered_model(&self, who: &Actor<'_>, name: &str) -> Result<()> {
        self.with(|tx| {
            let before = Self::model_entity(tx, name)?;
            let policy = Self::policy_in(tx)?;
            Self::refuse_if_protected(tx, &policy, name, None)?;
            tx.execute("DELETE FROM registered_models WHERE name = ?1", args![name])?;
            self.record(
                tx,
                who.name,
                "registered_model.delete",
                name,
                "",
                &to_json(&before)?,
                &Value::Null,
            )
        })
    }

    fn set_registered_model_tag(
        &self,
        who: &Actor<'_>,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        self.with(|tx| {
            let before = Self::model_entity(tx, name)?;
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO registered_model_tags (name, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
                    args![name, key, v],
                )?,
                None => tx.execute(
                    "DELETE FROM registered_model_tags WHERE name = ?1 AND key = ?2",
                    args![name, key],
                )?,
            };
            let after = Self::model_entity(tx, name)?;
            let action = if value.is_some() { "registered_model.set_tag" } else { "registered_model.delete_tag" };
            self.record(tx, who.name, action, name, "", &to_json(&before)?, &to_json(&after)?)
        })
    }

    // ------------------------------------------------------------ model versions

    /// A new version of `name` (its author is `who`), with its lineage, evaluation
    /// runs and, as its description when none is given, a model card.
    #[allow(clippy::too_many_arguments)]
    fn create_model_version(
        &self,
        who: &Actor<'_>,
        name: &str,
        source: &str,
        run_id: &str,
        description: &str,
        tags: &[(String, String)],
        lineage: &Value,
        evaluations: &[String],
    ) -> Result<ModelVersion> {
        if source.trim().is_empty() {
            return Err(TrackingError::invalid(
                "Missing value for required parameter 'source'",
            ));
        }
        self.with(|tx| {
            Self::model_exists(tx, name)?;
            if !run_id.is_empty() {
                Self::run_exists(tx, run_id)?;
            }
            for run in evaluations {
                Self::run_exists(tx, run)?;
            }
            // Numbers are never reused, even after the model is deleted and made
            // again: a review of "version 3" must never count for another version 3.
            let version: i64 = tx.query_one(
                "SELECT COALESCE(MAX(n), 0) + 1 FROM (
                     SELECT last AS n FROM model_version_numbers WHERE name = ?1
                     UNION ALL SELECT MAX(version) AS n FROM model_versions WHERE name = ?1) AS numbers",
                args![name],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO model_version_numbers (name, last) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET last = excluded.last",
                args![name, version],
            )?;
            let uid = uuid::Uuid::new_v4().simple().to_string();
            let digest = lineage["adapter"]["hash"].as_str().unwrap_or_default();
            let now = now_ms();
            tx.execute(
                "INSERT INTO model_versions (name, version, author, source, run_id, description, lineage,
                     creation_timestamp, last_updated_timestamp, uid, adapter_digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10)",
                args![name, version, who.name, source, run_id, description, lineage.to_string(), now, uid, digest],
            )?;
            for (k, v) in tags {
                tx.execute(
                    "INSERT INTO model_version_tags (name, version, key, value) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
                    args![name, version, k, v],
                )?;
            }
            for run in evaluations {
                tx.execute(
                    "INSERT INTO model_evaluations (name, version, run_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    args![name, version, run],
                )?;
            }
            tx.execute(
                "UPDATE registered_models SET last_updated_timestamp = ?2 WHERE name = ?1",
                args![name, now],
            )?;
            let after = Self::version_entity(tx, name, version)?;
            let mut recorded = to_json(&after)?;
            recorded["lineage"] = lineage.clone();
            recorded["evaluation_runs"] = json!(evaluations);
            self.record(
                tx,
                who.name,
                "model_version.create",
                name,
                &version.to_string(),
                &Value::Null,
                &recorded,
            )?;
            Ok(after)
        })
    }

    fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion> {
        let version = parse_version(version)?;
        self.with(|tx| {
            Self::model_exists(tx, name)?;
            Self::version_entity(tx, name, version)
        })
    }

    fn search_model_versions(
        &self,
        filter: &str,
        max: usize,
        offset: usize,
    ) -> Result<Page<ModelVersion>> {
        let clauses =
            registry_filter(filter, &["name", "run_id", "source", "source_path", "tags"])?;
        self.with(|tx| {
            let mut stmt = tx.prepare(
                "SELECT name, version, run_id, source FROM model_versions ORDER BY name, version DESC",
            )?;
            let rows: Vec<(String, i64, String, String)> = stmt
                .query_map(args![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_>>()?;
            let mut hits: Vec<&(String, i64, String, String)> = Vec::new();
            for row in &rows {
                let (n, v, run, source) = row;
                let tags = Self::pairs(
                    tx,
                    "SELECT key, value FROM model_version_tags WHERE name = ?1 AND version = ?2",
                    &[n, v],
                )?;
                let matched = filter_matches(&clauses, |key| match key {
                    "run_id" => run.clone(),
                    "source" | "source_path" => source.clone(),
                    _ => field(key, n, &tags),
                });
                if matched {
                    hits.push(row);
                }
            }
            let items = hits
                .iter()
                .skip(offset)
                .take(max)
                .map(|(n, v, _, _)| Self::version_entity(tx, n, *v))
                .collect::<Result<Vec<_>>>()?;
            let next_page_token = (offset + max < hits.len()).then(|| (offset + max).to_string());
            Ok(Page { items, next_page_token })
        })
    }

    fn update_model_version(
        &self,
        who: &Actor<'_>,
        name: &str,
        version: &str,
        description: &str,
    ) -> Result<ModelVersion> {
        let version = parse_version(version)?;
        self.with(|tx| {
            Self::version_author(tx, name, version)?;
            let before = Self::version_entity(tx, name, version)?;
            tx.execute(
                "UPDATE model_versions SET description = ?3, last_updated_timestamp = ?4 WHERE name = ?1 AND version = ?2",
                args![name, version, description, now_ms()],
            )?;
            let after = Self::version_entity(tx, name, version)?;
            self.record(tx, who.name, "model_version.update", name, &version.to_string(), &to_json(&before)?, &to_json(&after)?)?;
            Ok(after)
        })
    }

    fn delete_model_version(&self, who: &Actor<'_>, name: &str, version: &str) -> Result<()> {
        let version = parse_version(version)?;
        self.with(|tx| {
            Self::version_author(tx, name, version)?;
            let before = Self::version_entity(tx, name, version)?;
            let policy = Self::policy_in(tx)?;
            Self::refuse_if_protected(tx, &policy, name, Some(version))?;
            tx.execute(
                "DELETE FROM model_aliases WHERE name = ?1 AND version = ?2",
                args![name, version],
            )?;
            tx.execute(
                "DELETE FROM model_versions WHERE name = ?1 AND version = ?2",
                args![name, version],
            )?;
            self.record(
                tx,
                who.name,
                "model_version.delete",
                name,
                &version.to_string(),
                &to_json(&before)?,
                &Value::Null,
            )
        })
    }

    fn set_model_version_tag(
        &self,
        who: &Actor<'_>,
        name: &str,
        version: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let version = parse_version(version)?;
        self.with(|tx| {
            Self::version_author(tx, name, version)?;
            let before = Self::version_entity(tx, name, version)?;
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO model_version_tags (name, version, key, value) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
                    args![name, version, key, v],
                )?,
                None => tx.execute(
                    "DELETE FROM model_version_tags WHERE name = ?1 AND version = ?2 AND key = ?3",
                    args![name, version, key],
                )?,
            };
            let after = Self::version_entity(tx, name, version)?;
            let action = if value.is_some() { "model_version.set_tag" } else { "model_version.delete_tag" };
            self.record(tx, who.name, action, name, &version.to_string(), &to_json(&before)?, &to_json(&after)?)
        })
    }

    /// A version's lineage, evaluation runs (with their pass rates) and reviews.
    fn model_version_details(&self, name: &str, version: &str) -> Result<ModelVersionDetails> {
        let version = parse_version(version)?;
        self.with(|tx| {
            Self::version_author(tx, name, version)?;
            let entity = Self::version_entity(tx, name, version)?;
            let lineage: String = tx.query_one(
                "SELECT lineage FROM model_versions WHERE name = ?1 AND version = ?2",
                args![name, version],
                |r| r.get(0),
            )?;
            let mut stmt = tx.prepare(
                "SELECT reviewer, decision, comment, timestamp FROM model_reviews
                 WHERE version_uid = (SELECT uid FROM model_versions WHERE name = ?1 AND version = ?2)
                 ORDER BY id",
            )?;
            let reviews = stmt
                .query_map(args![name, version], |r| {
                    Ok(ReviewEntry {
                        reviewer: r.get(0)?,
                        decision: r.get(1)?,
                        comment: r.get(2)?,
                        timestamp: r.get(3)?,
                    })
                })?
                .collect::<Result<_>>()?;
            Ok(ModelVersionDetails {
                version: entity,
                lineage: serde_json::from_str(&lineage).unwrap_or(Value::Null),
                evaluation_runs: Self::evaluations(tx, name, version)?,
                server_evaluations: Self::server_evaluations(tx, name, version)?,
                reviews,
            })
        })
    }

    /// Links a prompt-test run to a version as its evaluation.
    fn link_evaluation(
        &self,
        who: &Actor<'_>,
        name: &str,
        version: &str,
        run_id: &str,
    ) -> Result<Vec<EvaluationRun>> {
        let version = parse_version(version)?;
        self.with(|tx| {
            Self::version_author(tx, name, version)?;
            Self::run_exists(tx, run_id)?;
            let before = json!(Self::evaluations(tx, name, version)?.into_iter().map(|e| e.run_id).collect::<Vec<_>>());
            tx.execute(
                "INSERT INTO model_evaluations (name, version, run_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                args![name, version, run_id],
            )?;
            let runs = Self::evaluations(tx, name, version)?;
            let after = json!(runs.iter().map(|e| e.run_id.clone()).collect::<Vec<_>>());
            self.record(tx, who.name, "model_version.link_evaluation", name, &version.to_string(), &before, &after)?;
            Ok(runs)
        })
    }

    /// What the server evaluates for `name` `version`: the version's identity and the
    /// adapter files its training run uploaded (path inside the adapter folder, the
    /// stored bytes). A version with no run, or whose run uploaded no adapter, cannot
    /// be evaluated by the server, and the error says how to register one that can.
    fn evaluation_target(&self, name: &str, version: &str) -> Result<EvaluationTarget> {
        let version = parse_version(version)?;
        let (uid, adapter_digest, run_id, rows) = self.with(|tx| {
            Self::version_author(tx, name, version)?;
            let (uid, digest) = Self::version_identity(tx, name, version)?;
            let run_id: String = tx.query_one(
                "SELECT run_id FROM model_versions WHERE name = ?1 AND version = ?2",
                args![name, version],
                |r| r.get(0),
            )?;
            if run_id.is_empty() {
                return Err(TrackingError::invalid(format!(
                    "version {version} of {name} names no training run, so the server has no adapter to evaluate: register the adapter/ of a %finetune run reported to this server (%register {name} --adapter runs/RUN/adapter)"
                )));
            }
            let experiment: i64 = tx
                .query_opt("SELECT experiment_id FROM runs WHERE run_id = ?1", args![&run_id], |r| r.get(0))?
                .ok_or_else(|| TrackingError::missing(format!("Run with id={run_id} not found")))?;
            let prefix = format!("{experiment}/{run_id}/artifacts/adapter/");
            let mut stmt = tx.prepare(
                "SELECT path, sha256 FROM artifacts WHERE run_id = ?1 AND substr(path, 1, length(CAST(?2 AS TEXT))) = CAST(?2 AS TEXT) ORDER BY path",
            )?;
            let rows: Vec<(String, String)> = stmt
                .query_map(args![run_id, prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_>>()?;
            let rows = rows
                .into_iter()
                .map(|(path, hash)| (path[prefix.len()..].to_string(), hash))
                .collect::<Vec<_>>();
            Ok((uid, digest, run_id, rows))
        })?;
        if rows.is_empty() {
            return Err(TrackingError::invalid(format!(
                "the training run {run_id} of version {version} uploaded no adapter/ folder, so the server has nothing to evaluate: train with this server as the tracking server (FERROLAB_TRACKING_URI), which uploads the adapter, then register that run's adapter"
            )));
        }
        let files = rows
            .into_iter()
            .map(|(path, hash)| Ok((path, self.local_blob(&hash)?)))
            .collect::<Result<_>>()?;
        Ok(EvaluationTarget {
            name: name.to_string(),
            version,
            uid,
            adapter_digest,
            run_id,
            files,
        })
    }

    /// Keeps the outcome of an evaluation the server ran on `target` as evidence for
    /// the policy, links its run to the version, and writes the audit entry. Refused
    /// when the version changed identity while the evaluation ran.
    fn record_server_evaluation(
        &self,
        who: &Actor<'_>,
        target: &EvaluationTarget,
        outcome: &EvaluationOutcome,
    ) -> Result<RecordedEvaluation> {
        let (name, version) = (target.name.as_str(), target.version);
        self.with(|tx| {
            Self::version_author(tx, name, version)?;
            let identity = Self::version_identity(tx, name, version)?;
            if identity != (target.uid.clone(), target.adapter_digest.clone()) {
                return Err(TrackingError::invalid(format!(
                    "version {version} of {name} was replaced while it was evaluated; evaluate the new version"
                )));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO server_evaluations (name, version, version_uid, adapter_digest, run_id,
                     requested_by, pass_rate, tests, suite_sha256, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                args![name, version, target.uid, target.adapter_digest, outcome.run_id, who.name,
                        outcome.pass_rate, outcome.tests, outcome.suite_sha256, now],
            )?;
            tx.execute(
                "INSERT INTO model_evaluations (name, version, run_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                args![name, version, outcome.run_id],
            )?;
            let after = RecordedEvaluation {
                run_id: outcome.run_id.clone(),
                pass_rate: outcome.pass_rate,
                tests: outcome.tests,
                suite_sha256: outcome.suite_sha256.clone(),
                ferrolab_uid: target.uid.clone(),
                adapter_digest: target.adapter_digest.clone(),
                recorded_by: "server".into(),
            };
            self.record(tx, who.name, "model_version.evaluate", name, &version.to_string(), &Value::Null, &to_json(&after)?)?;
            Ok(after)
        })
    }

    // ------------------------------------------------------------ reviews and aliases

    /// Records `who`'s review of a version. Nobody approves their own version.
    fn review(
        &self,
        who: &Actor<'_>,
        name: &str,
        version: &str,
        approve: bool,
        comment: &str,
    ) -> Result<Review> {
        let version = parse_version(version)?;
        if comment.trim().is_empty() {
            return Err(TrackingError::invalid(
                "a review needs a comment saying what was checked",
            ));
        }
        self.with(|tx| {
            let author = Self::version_author(tx, name, version)?;
            if approve && who.is(&author) {
                return Err(denied(format!(
                    "self-approval refused: '{}' created version {version} of '{name}'; an approval must come from someone else",
                    who.name
                )));
            }
            let decision = if approve { "approve" } else { "reject" };
            let (uid, digest) = Self::version_identity(tx, name, version)?;
            let review = Review {
                name: name.to_string(),
                version: version.to_string(),
                reviewer: who.name.to_string(),
                decision: decision.to_string(),
                comment: comment.to_string(),
                timestamp: now_ms(),
                ferrolab_uid: uid,
                adapter_digest: digest,
            };
            tx.execute(
                "INSERT INTO model_reviews (name, version, reviewer, decision, comment, timestamp,
                     version_uid, adapter_digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                args![name, version, who.name, decision, comment, review.timestamp, review.ferrolab_uid, review.adapter_digest],
            )?;
            self.record(tx, who.name, &format!("review.{decision}"), name, &version.to_string(), &Value::Null, &to_json(&review)?)?;
            Ok(review)
        })
    }

    /// Points `alias` at a version; a protected alias only when the policy allows.
    fn set_alias(&self, who: &Actor<'_>, name: &str, alias: &str, version: &str) -> Result<Alias> {
        let version = parse_version(version)?;
        check_alias(alias)?;
        self.with(|tx| {
            let author = Self::version_author(tx, name, version)?;
            let policy = Self::policy_in(tx)?;
            if policy.protected_aliases.iter().any(|a| a == alias) {
                let failures = Self::policy_failures(tx, &policy, name, version, &author)?;
                if !failures.is_empty() {
                    return Err(denied(format!(
                        "promotion of '{name}' version {version} to '{alias}' refused by the policy:\n- {}",
                        failures.join("\n- ")
                    )));
                }
            }
            let before = Self::alias_version(tx, name, alias)?;
            tx.execute(
                "INSERT INTO model_aliases (name, alias, version) VALUES (?1, ?2, ?3) ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                args![name, alias, version],
            )?;
            let alias_of = |version: i64| Alias {
                alias: alias.to_string(),
                version: version.to_string(),
            };
            let before = match before {
                Some(v) => to_json(&alias_of(v))?,
                None => Value::Null,
            };
            let after = alias_of(version);
            self.record(tx, who.name, "alias.set", name, &version.to_string(), &before, &to_json(&after)?)?;
            Ok(after)
        })
    }

    /// Removes `alias`; a protected alias only by an owner (taking a model out of
    /// production is a policy decision too, and it is what made deleting and
    /// re-creating a reviewed model possible).
    fn delete_alias(&self, who: &Actor<'_>, name: &str, alias: &str) -> Result<()> {
        self.with(|tx| {
            Self::model_exists(tx, name)?;
            let before =
                Self::alias_version(tx, name, alias)?.ok_or_else(|| alias_missing(alias))?;
            let policy = Self::policy_in(tx)?;
            if policy.protected_aliases.iter().any(|a| a == alias) && !who.owner {
                return Err(denied(format!(
                    "'{alias}' is a protected alias: only an owner removes it ('{}' is not one); to replace the version, promote another one that the policy allows",
                    who.name
                )));
            }
            tx.execute(
                "DELETE FROM model_aliases WHERE name = ?1 AND alias = ?2",
                args![name, alias],
            )?;
            self.record(
                tx,
                who.name,
                "alias.delete",
                name,
                &before.to_string(),
                &json!({"alias": alias, "version": before.to_string()}),
                &Value::Null,
            )
        })
    }

    fn version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        self.with(|tx| {
            Self::model_exists(tx, name)?;
            let version =
                Self::alias_version(tx, name, alias)?.ok_or_else(|| alias_missing(alias))?;
            Self::version_entity(tx, name, version)
        })
    }

    fn policy(&self) -> Result<Policy> {
        self.with(Self::policy_in)
    }

    /// Replaces the policy (owners only), recording the change.
    fn set_policy(&self, who: &Actor<'_>, policy: &Policy) -> Result<Policy> {
        if !who.owner {
            return Err(denied(format!(
                "only an owner changes the governance policy; '{}' is not one",
                who.name
            )));
        }
        if !(0.0..=1.0).contains(&policy.min_pass_rate) {
            return Err(TrackingError::invalid(format!(
                "min_pass_rate is a fraction between 0 and 1, got {}",
                policy.min_pass_rate
            )));
        }
        self.with(|tx| {
            let before = Self::policy_in(tx)?;
            tx.execute(
                "INSERT INTO governance_policy (key, value) VALUES ('policy', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                args![json!(policy).to_string()],
            )?;
            self.record(
                tx,
                who.name,
                "policy.update",
                "*",
                "",
                &json!(before),
                &json!(policy),
            )?;
            Ok(policy.clone())
        })
    }

    /// The audit log (of one model, or all when `model` is None), oldest first, and
    /// whether the whole hash chain verifies.
    fn audit(&self, model: Option<&str>) -> Result<AuditLog> {
        self.with(|tx| {
            let mut stmt = tx.prepare(
                "SELECT seq, timestamp, actor, action, model, version, before, after, prev_hash, hash
                 FROM audit_log ORDER BY seq",
            )?;
            let entries: Vec<AuditEntry> = stmt
                .query_map(args![], |r| {
                    Ok(AuditEntry {
                        seq: r.get(0)?,
                        timestamp: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        model: r.get(4)?,
                        version: r.get(5)?,
                        before: r.get(6)?,
                        after: r.get(7)?,
                        prev_hash: r.get(8)?,
                        hash: r.get(9)?,
                    })
                })?
                .collect::<Result<_>>()?;
            let verdict = self.audit.verify(&entries, self.audit.read_anchor(tx));
            let shown = entries
                .into_iter()
                .filter(|e| model.is_none_or(|m| e.model == m || e.model == "*"))
                .map(|e| AuditRecord {
                    before: serde_json::from_str(&e.before).unwrap_or(Value::Null),
                    after: serde_json::from_str(&e.after).unwrap_or(Value::Null),
                    seq: e.seq,
                    timestamp: e.timestamp,
                    actor: e.actor,
                    action: e.action,
                    model: e.model,
                    version: e.version,
                    hash: e.hash,
                })
                .collect();
            Ok(AuditLog {
                entries: shown,
                chain_verified: verdict.problem.is_none(),
                chain_broken_at: verdict.broken_at,
                chain_problem: verdict.problem,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest_hex;
    use crate::store::{ArtifactStore, RunStore};

    fn store() -> (tempfile::TempDir, SqlStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqlStore::open_sqlite(&dir.path().join("t.sqlite")).expect("open");
        (dir, store)
    }

    const ALICE: Actor<'static> = Actor {
        name: "alice",
        owner: false,
    };
    const BOB: Actor<'static> = Actor {
        name: "bob",
        owner: false,
    };

    #[test]
    fn promotion_follows_the_policy_and_everything_is_audited() {
        let (_dir, s) = store();
        s.create_registered_model(&ALICE, "m", "", &[])
            .expect("model");
        let run = s
            .create_run("0", "alice", "alice", Some("eval"), None, &[])
            .expect("run");
        let run_id = run.info.run_id;
        s.create_model_version(&ALICE, "m", "file:///a", "", "", &[], &json!({}), &[])
            .expect("version");
        let refused = s
            .set_alias(&ALICE, "m", "production", "1")
            .expect_err("no approval");
        assert_eq!(refused.code(), "PERMISSION_DENIED");
        assert!(
            refused.message().contains("approvals: 0 of the 1"),
            "{}",
            refused.message()
        );
        assert!(
            refused
                .message()
                .contains("the server has not evaluated version 1"),
            "{}",
            refused.message()
        );
        let selfish = s
            .review(&ALICE, "m", "1", true, "looks good")
            .expect_err("self");
        assert!(selfish.message().contains("self-approval refused"));
        s.review(&BOB, "m", "1", true, "checked the eval")
            .expect("review");
        // A client's run with a perfect pass rate, linked: shown, not counted.
        log_pass_rate(&s, &run_id, 1.0, 0);
        s.link_evaluation(&ALICE, "m", "1", &run_id).expect("link");
        let unproven = s
            .set_alias(&ALICE, "m", "production", "1")
            .expect_err("a linked run is no evidence");
        assert!(
            unproven
                .message()
                .contains("the server has not evaluated version 1"),
            "{}",
            unproven.message()
        );
        server_evaluated(&s, "m", "1", 0.5);
        let low = s
            .set_alias(&ALICE, "m", "production", "1")
            .expect_err("low pass rate");
        assert!(low.message().contains("passed 50.0%"), "{}", low.message());
        server_evaluated(&s, "m", "1", 0.95);
        s.set_alias(&ALICE, "m", "production", "1")
            .expect("promoted");
        // An unprotected alias needs nothing.
        s.set_alias(&ALICE, "m", "staging", "1").expect("staging");
        let audit = s.audit(Some("m")).expect("audit");
        let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "registered_model.create",
                "model_version.create",
                "review.approve",
                "model_version.link_evaluation",
                "model_version.evaluate",
                "model_version.evaluate",
                "alias.set",
                "alias.set"
            ]
        );
        assert!(audit.chain_verified);
        // A refused promotion wrote nothing.
        assert_eq!(
            s.get_model_version("m", "1").expect("v").aliases,
            ["production", "staging"]
        );
    }

    #[test]
    fn the_audit_log_refuses_edits_and_shows_tampering() {
        let (dir, s) = store();
        s.create_registered_model(&ALICE, "m", "", &[])
            .expect("model");
        s.create_registered_model(&ALICE, "n", "", &[])
            .expect("model");
        let conn = rusqlite::Connection::open(dir.path().join("t.sqlite")).expect("open");
        let err = conn
            .execute("UPDATE audit_log SET actor = 'mallory'", [])
            .expect_err("update refused");
        assert!(err.to_string().contains("append-only"));
        assert!(conn.execute("DELETE FROM audit_log", []).is_err());
        // Dropping the trigger is possible only with the file itself; the chain shows it.
        conn.execute_batch("DROP TRIGGER audit_log_no_update; UPDATE audit_log SET actor = 'mallory' WHERE seq = 1;")
            .expect("tamper");
        let audit = s.audit(None).expect("audit");
        assert!(!audit.chain_verified);
        assert_eq!(audit.chain_broken_at, Some(1));
    }

    const OWNER: Actor<'static> = Actor {
        name: "olga",
        owner: true,
    };

    /// Logs `pass_rate` = `value` at `step`, as a client's prompt-test run would.
    fn log_pass_rate(s: &SqlStore, run_id: &str, value: f64, step: i64) {
        s.log_metric(
            run_id,
            &crate::model::Metric {
                key: "pass_rate".into(),
                value,
                timestamp: step + 1,
                step,
            },
        )
        .expect("metric");
    }

    fn passing_run(s: &SqlStore) -> String {
        let run = s
            .create_run("0", "alice", "alice", Some("eval"), None, &[])
            .expect("run");
        let run_id = run.info.run_id;
        log_pass_rate(s, &run_id, 1.0, 0);
        run_id
    }

    /// Records an evaluation as the server does after running a suite on the
    /// version's adapter.
    fn server_evaluated(s: &SqlStore, name: &str, version: &str, pass_rate: f64) {
        let v = s.get_model_version(name, version).expect("version");
        let target = EvaluationTarget {
            name: name.into(),
            version: version.parse().expect("number"),
            uid: v.ferrolab_uid,
            adapter_digest: v.adapter_digest,
            run_id: String::new(),
            files: Vec::new(),
        };
        let outcome = EvaluationOutcome {
            run_id: passing_run(s),
            pass_rate,
            tests: 4,
            suite_sha256: "0".repeat(64),
        };
        s.record_server_evaluation(&ALICE, &target, &outcome)
            .expect("recorded");
    }

    /// What the server evaluates is the adapter the version's run uploaded; its
    /// evidence is refused for a version that changed identity meanwhile.
    #[test]
    fn the_server_evaluates_the_adapter_the_run_uploaded() {
        let (_dir, s) = store();
        s.create_registered_model(&ALICE, "m", "", &[])
            .expect("model");
        s.create_model_version(&ALICE, "m", "file:///a", "", "", &[], &json!({}), &[])
            .expect("version");
        let err = s.evaluation_target("m", "1").expect_err("no run");
        assert!(
            err.message().contains("names no training run"),
            "{}",
            err.message()
        );
        let run = s
            .create_run("0", "alice", "alice", Some("train"), None, &[])
            .expect("run");
        let run_id = run.info.run_id;
        let lineage = json!({"adapter": {"hash": "blake3:abc"}});
        s.create_model_version(&ALICE, "m", "file:///a", &run_id, "", &[], &lineage, &[])
            .expect("version");
        let err = s
            .evaluation_target("m", "2")
            .expect_err("no adapter uploaded");
        assert!(
            err.message().contains("uploaded no adapter/"),
            "{}",
            err.message()
        );
        let base = format!("0/{run_id}/artifacts");
        s.put_artifact(&format!("{base}/adapter/adapter_config.json"), b"{}")
            .expect("put");
        s.put_artifact(&format!("{base}/adapter/nested/w.bin"), b"w")
            .expect("put");
        s.put_artifact(&format!("{base}/adapter-notes.txt"), b"not the adapter")
            .expect("put");
        let target = s.evaluation_target("m", "2").expect("target");
        let names: Vec<&str> = target.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["adapter_config.json", "nested/w.bin"]);
        assert_eq!(
            std::fs::read(&target.files[1].1).expect("stored bytes"),
            b"w"
        );
        assert_eq!(target.adapter_digest, "blake3:abc");
        // The version is deleted and made again while the suite runs: no evidence.
        s.delete_model_version(&ALICE, "m", "2").expect("delete");
        let outcome = EvaluationOutcome {
            run_id: run_id.clone(),
            pass_rate: 1.0,
            tests: 1,
            suite_sha256: "0".repeat(64),
        };
        assert!(s
            .record_server_evaluation(&ALICE, &target, &outcome)
            .is_err());
    }

    /// The attack: remove `production`, delete the model, create it and "v1" again,
    /// link a run with pass_rate 1, promote — on the old approval. Each step that
    /// made it work is now refused or changed.
    #[test]
    fn an_approval_does_not_outlive_its_version() {
        let (_dir, s) = store();
        s.create_registered_model(&ALICE, "m", "", &[])
            .expect("model");
        let lineage = json!({"adapter": {"hash": "sha256:aaa"}});
        let v1 = s
            .create_model_version(&ALICE, "m", "file:///a", "", "", &[], &lineage, &[])
            .expect("version");
        s.review(&BOB, "m", "1", true, "checked").expect("review");
        server_evaluated(&s, "m", "1", 1.0);
        s.set_alias(&ALICE, "m", "production", "1")
            .expect("promoted");

        let removal = s
            .delete_alias(&ALICE, "m", "production")
            .expect_err("an editor removes production");
        assert_eq!(removal.code(), "PERMISSION_DENIED");
        assert!(
            removal.message().contains("only an owner"),
            "{}",
            removal.message()
        );
        assert!(
            s.delete_registered_model(&ALICE, "m").is_err(),
            "still protected"
        );

        // Even with the alias gone (an owner's decision), the old review stays behind.
        s.delete_alias(&OWNER, "m", "production")
            .expect("owner removes");
        s.delete_registered_model(&ALICE, "m").expect("delete");
        s.create_registered_model(&ALICE, "m", "", &[])
            .expect("again");
        let again = s
            .create_model_version(&ALICE, "m", "file:///evil", "", "", &[], &lineage, &[])
            .expect("version");
        assert_eq!(again.version, "2", "numbers are never reused");
        assert_ne!(again.ferrolab_uid, v1.ferrolab_uid);
        assert!(s.get_model_version("m", "1").is_err());
        s.link_evaluation(&ALICE, "m", "2", &passing_run(&s))
            .expect("link");
        let refused = s
            .set_alias(&ALICE, "m", "production", "2")
            .expect_err("no review of this version");
        assert!(
            refused
                .message()
                .contains("the server has not evaluated version 2"),
            "the old evaluation does not count either: {}",
            refused.message()
        );
        assert!(
            refused.message().contains("approvals: 0 of the 1"),
            "{}",
            refused.message()
        );
        let details = s.model_version_details("m", "2").expect("details");
        assert!(details.reviews.is_empty());
    }

    /// A person is their name without case or spacing: a second token called
    /// "Alice " is still Alice, who cannot approve her own version.
    #[test]
    fn a_person_is_not_a_spelling() {
        let (_dir, s) = store();
        s.create_registered_model(&ALICE, "m", "", &[])
            .expect("model");
        s.create_model_version(&ALICE, "m", "file:///a", "", "", &[], &json!({}), &[])
            .expect("version");
        let twin = Actor {
            name: "  ALICE ",
            owner: false,
        };
        let refused = s.review(&twin, "m", "1", true, "lgtm").expect_err("self");
        assert!(refused.message().contains("self-approval refused"));
        // Two spellings of Bob are one vote.
        s.set_policy(
            &OWNER,
            &Policy {
                min_approvals: 2,
                require_evaluation: false,
                ..Policy::default()
            },
        )
        .expect("policy");
        s.review(&BOB, "m", "1", true, "ok").expect("bob");
        s.review(
            &Actor {
                name: "Bob",
                owner: false,
            },
            "m",
            "1",
            true,
            "ok again",
        )
        .expect("Bob");
        let refused = s
            .set_alias(&ALICE, "m", "production", "1")
            .expect_err("one person");
        assert!(
            refused.message().contains("approvals: 1 of the 2"),
            "{}",
            refused.message()
        );
    }

    /// Without the key nobody can add, re-sign or cut off entries unseen.
    #[test]
    fn the_audit_log_is_keyed_and_anchored() {
        let (dir, s) = store();
        for name in ["a", "b", "c"] {
            s.create_registered_model(&ALICE, name, "", &[])
                .expect("model");
        }
        assert!(s.audit(None).expect("audit").chain_verified);
        let conn = rusqlite::Connection::open(dir.path().join("t.sqlite")).expect("open");
        // Cutting off the last entry: every remaining link verifies, the anchor does not.
        conn.execute_batch(
            "DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 3;",
        )
        .expect("truncate");
        let audit = s.audit(None).expect("audit");
        assert!(!audit.chain_verified);
        assert!(
            audit
                .chain_problem
                .as_deref()
                .unwrap_or_default()
                .contains("cut short"),
            "{audit:?}"
        );
        // Re-adding it with an unkeyed hash (what the old chain used) is seen too.
        let (prev, timestamp): (String, i64) = conn
            .query_row(
                "SELECT hash, timestamp FROM audit_log WHERE seq = 2",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("prev");
        let text = json!([
            prev,
            timestamp,
            "mallory",
            "policy.update",
            "*",
            "",
            "null",
            "null"
        ])
        .to_string();
        conn.execute(
            "INSERT INTO audit_log (seq, timestamp, actor, action, model, version, before, after, prev_hash, hash)
             VALUES (3, ?1, 'mallory', 'policy.update', '*', '', 'null', 'null', ?2, ?3)",
            rusqlite::params![timestamp, prev, digest_hex(text.as_bytes())],
        )
        .expect("forge");
        let audit = s.audit(None).expect("audit");
        assert_eq!(audit.chain_broken_at, Some(3), "{audit:?}");
        // The key is the store's own file, readable by its user only.
        let key = dir.path().join("t.audit-key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_rejection_blocks_until_the_reviewer_approves() {
        let (_dir, s) = store();
        s.set_policy(
            &Actor {
                name: "root",
                owner: true,
            },
            &Policy {
                require_evaluation: false,
                ..Policy::default()
            },
        )
        .expect("policy");
        assert!(s.set_policy(&BOB, &Policy::default()).is_err());
        s.create_registered_model(&ALICE, "m", "", &[])
            .expect("model");
        s.create_model_version(&ALICE, "m", "s", "", "", &[], &json!({}), &[])
            .expect("v");
        s.review(&BOB, "m", "1", false, "toxic answers")
            .expect("reject");
        let e = s
            .set_alias(&ALICE, "m", "production", "1")
            .expect_err("rejected");
        assert!(e.message().contains("rejected by bob"), "{}", e.message());
        s.review(&BOB, "m", "1", true, "fixed by the new eval")
            .expect("approve");
        s.set_alias(&ALICE, "m", "production", "1")
            .expect("promote");
        let e = s
            .delete_model_version(&ALICE, "m", "1")
            .expect_err("protected");
        assert!(e.message().contains("protected alias"));
    }

    #[test]
    fn registry_filters() {
        let c = registry_filter("name = 'a b' AND run_id LIKE 'x%'", &["name", "run_id"])
            .expect("parse");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1], ("run_id".into(), "LIKE".into(), "x%".into()));
        assert!(registry_filter("tags.x = 'y'", &["name"]).is_err());
        let c = registry_filter(
            "name LIKE 's%' AND tag.`mlflow.prompt.is_prompt` != 'true'",
            &["name", "tags"],
        )
        .expect("tags");
        assert_eq!(
            c[1],
            (
                "tag:mlflow.prompt.is_prompt".into(),
                "!=".into(),
                "true".into()
            )
        );
        assert!(registry_filter("name = y", &["name"]).is_err());
    }
}
