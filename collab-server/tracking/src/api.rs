//! MLflow's REST API (and ferrolab's governance endpoints under `ferrolab/`) as
//! calls on the [`Store`]: [`dispatch`] takes an endpoint, its request as JSON and
//! the caller, checks that the caller may make it, reads the request into its typed
//! [`Request`] and answers in MLflow's JSON. Transport is the caller's business: the collaboration server serves it
//! over HTTP, the kernel calls it in process on a local store.

use crate::access::{Identity, Role};
pub use crate::endpoint::{Endpoint, FERROLAB_PREFIX, PREFIX};
use crate::model::{self, to_json, ViewType};
use crate::request::{self, pairs, Decision, Page, Request, RunEffect, RunsSearch};
use crate::search;
use crate::store::{Actor, Store, TrackingError};
use serde::Serialize;
use serde_json::{json, Value};

/// Refuses `who` unless their role is at least `role` (for the artifact proxy,
/// which is not an [`Endpoint`], as for every endpoint).
pub fn require(who: &Identity, role: Role) -> Result<(), TrackingError> {
    if who.role >= role {
        Ok(())
    } else {
        Err(TrackingError::PermissionDenied(format!(
            "logging needs a token with the {} role; '{}' is a {}",
            role.as_str(),
            who.name,
            who.role.as_str()
        )))
    }
}

/// A page of results under `key`, with MLflow's `next_page_token` when there is more.
fn page<T: Serialize>(page: model::Page<T>, key: &str) -> Result<Value, TrackingError> {
    let mut out = json!({ key: to_json(&page.items)? });
    if let Some(token) = page.next_page_token {
        out["next_page_token"] = json!(token);
    }
    Ok(out)
}

/// `entity` under `key`, as MLflow's replies wrap what they return.
fn one<T: Serialize>(key: &str, entity: &T) -> Result<Value, TrackingError> {
    Ok(json!({ key: to_json(entity)? }))
}

/// Answers one call of MLflow's API (or ferrolab's governance endpoints) at
/// `path` on `store` for `who`; `body` is the request's JSON object.
pub fn call(
    store: &dyn Store,
    who: &Identity,
    path: &str,
    body: &Value,
) -> Result<Value, TrackingError> {
    dispatch(store, who, Endpoint::parse(path)?, body).map(|answer| answer.reply)
}

/// A call's reply, and the run it changed (whose live document must follow).
#[derive(Debug)]
pub struct Answer {
    pub reply: Value,
    pub changed_run: Option<String>,
}

/// Answers one call of `endpoint` on `store` for `who`: checks that `who` may make
/// it, then reads the request ([`Request::parse`]) and runs it.
pub fn dispatch(
    store: &dyn Store,
    who: &Identity,
    endpoint: Endpoint,
    body: &Value,
) -> Result<Answer, TrackingError> {
    require(who, endpoint.required_role())?;
    let request = Request::parse(endpoint, body)?;
    let reply = answer(store, who, &request)?;
    let changed_run = match request.run_effect() {
        RunEffect::None => None,
        RunEffect::Creates => reply["run"]["info"]["run_id"].as_str().map(str::to_string),
        RunEffect::Changes(run) => Some(run.to_string()),
    };
    Ok(Answer { reply, changed_run })
}

fn answer(store: &dyn Store, who: &Identity, request: &Request) -> Result<Value, TrackingError> {
    use Request::*;
    let actor = &Actor {
        name: &who.name,
        owner: who.role >= Role::Owner,
    };
    Ok(match request {
        ExperimentsCreate(r) => {
            let id = store.create_experiment(
                r.name.as_str(),
                r.artifact_location.as_deref(),
                &pairs(&r.tags),
            )?;
            json!({"experiment_id": id})
        }
        ExperimentsGet(r) => one("experiment", &store.get_experiment(r.experiment_id.as_str())?)?,
        ExperimentsGetByName(r) => one(
            "experiment",
            &store.get_experiment_by_name(r.experiment_name.as_str())?,
        )?,
        ExperimentsSearch(r, page) => self::page(
            store.search_experiments(
                ViewType::parse(r.view_type.as_deref().unwrap_or_default()),
                r.filter.as_deref().unwrap_or_default(),
                page.limit(1000)?,
                page.offset()?,
            )?,
            "experiments",
        )?,
        RunsCreate(r) => {
            let experiment = r.experiment_id.as_deref().filter(|s| !s.is_empty()).unwrap_or("0");
            let user = r.user_id.as_deref().filter(|s| !s.is_empty()).unwrap_or(&who.name);
            let run = store.create_run(
                experiment,
                user,
                &who.name,
                r.run_name.as_deref(),
                r.start_time,
                &pairs(&r.tags),
            )?;
            one("run", &run)?
        }
        RunsGet(run) => one("run", &store.get_run(run.as_str())?)?,
        RunsUpdate(run, r) => {
            let info = store.update_run(
                run.as_str(),
                r.status.as_deref().filter(|s| !s.is_empty()),
                r.end_time,
                r.run_name.as_deref(),
            )?;
            one("run_info", &info)?
        }
        RunsDelete(run) => {
            store.delete_run(run.as_str())?;
            json!({})
        }
        RunsLogParameter(run, kv) => {
            store.log_param(run.as_str(), kv.key.as_str(), &kv.value)?;
            json!({})
        }
        RunsSetTag(run, kv) => {
            store.set_tag(run.as_str(), kv.key.as_str(), &kv.value)?;
            json!({})
        }
        RunsLogMetric(run, metric) => {
            store.log_metric(run.as_str(), &metric.metric())?;
            json!({})
        }
        RunsLogBatch(run, r) => {
            let metrics: Vec<_> = r.metrics.iter().map(|m| m.metric()).collect();
            store.log_batch(run.as_str(), &metrics, &pairs(&r.params), &pairs(&r.tags))?;
            json!({})
        }
        MetricsGetHistory(run, r) => {
            one("metrics", &store.metric_history(run.as_str(), r.metric_key.as_str())?)?
        }
        RunsSearch(r, page) => {
            let body = search_runs_page(store, r, page)?;
            serde_json::from_str(&body).map_err(|e| {
                TrackingError::Internal(format!("the search answer is not valid JSON: {e}"))
            })?
        }
        // MLflow 3's logged models (`mlflow.<flavor>.log_model`) are not kept here;
        // the client looks for them when listing a run's artifacts.
        LoggedModelsSearch => json!({"models": []}),
        RegisteredModelsCreate(r) => one(
            "registered_model",
            &store.create_registered_model(actor, r.name.as_str(), &r.description, &pairs(&r.tags))?,
        )?,
        RegisteredModelsGet(r) => one("registered_model", &store.get_registered_model(r.name.as_str())?)?,
        RegisteredModelsSearch(r, page) => self::page(
            store.search_registered_models(
                r.filter.as_deref().unwrap_or_default(),
                page.limit(100)?,
                page.offset()?,
            )?,
            "registered_models",
        )?,
        RegisteredModelsUpdate(r) => one(
            "registered_model",
            &store.update_registered_model(actor, r.name.as_str(), &r.description)?,
        )?,
        RegisteredModelsDelete(r) => {
            store.delete_registered_model(actor, r.name.as_str())?;
            json!({})
        }
        RegisteredModelsRename => {
            return Err(TrackingError::invalid(
                "renaming a registered model is not supported: its reviews and audit log are kept under its name; register a new model instead",
            ))
        }
        RegisteredModelsGetLatestVersions(r) => {
            let model = store.get_registered_model(r.name.as_str())?;
            one("model_versions", &model.latest_versions)?
        }
        RegisteredModelsSetTag(r) => {
            store.set_registered_model_tag(actor, r.name.as_str(), r.key.as_str(), Some(&r.value))?;
            json!({})
        }
        RegisteredModelsDeleteTag(r) => {
            store.set_registered_model_tag(actor, r.name.as_str(), r.key.as_str(), None)?;
            json!({})
        }
        RegisteredModelsSetAlias(r) => {
            store.set_alias(actor, r.name.as_str(), r.alias.as_str(), r.version.as_str())?;
            json!({})
        }
        RegisteredModelsDeleteAlias(r) => {
            store.delete_alias(actor, r.name.as_str(), r.alias.as_str())?;
            json!({})
        }
        RegisteredModelsGetAlias(r) => one(
            "model_version",
            &store.version_by_alias(r.name.as_str(), r.alias.as_str())?,
        )?,
        ModelVersionsCreate(r) | FerrolabModelVersionsCreate(r) => one(
            "model_version",
            &store.create_model_version(
                actor,
                r.name.as_str(),
                r.source.as_str(),
                &r.run_id,
                &r.description,
                &pairs(&r.tags),
                r.lineage.as_ref().unwrap_or(&json!({})),
                &r.evaluation_runs,
            )?,
        )?,
        ModelVersionsGet(r) => one(
            "model_version",
            &store.get_model_version(r.name.as_str(), r.version.as_str())?,
        )?,
        ModelVersionsSearch(r, page) => self::page(
            store.search_model_versions(
                r.filter.as_deref().unwrap_or_default(),
                page.limit(10_000)?,
                page.offset()?,
            )?,
            "model_versions",
        )?,
        ModelVersionsUpdate(r) => one(
            "model_version",
            &store.update_model_version(actor, r.name.as_str(), r.version.as_str(), &r.description)?,
        )?,
        ModelVersionsDelete(r) => {
            store.delete_model_version(actor, r.name.as_str(), r.version.as_str())?;
            json!({})
        }
        ModelVersionsSetTag(r) => {
            store.set_model_version_tag(actor, r.name.as_str(), r.version.as_str(), r.key.as_str(), Some(&r.value))?;
            json!({})
        }
        ModelVersionsDeleteTag(r) => {
            store.set_model_version_tag(actor, r.name.as_str(), r.version.as_str(), r.key.as_str(), None)?;
            json!({})
        }
        ModelVersionsGetDownloadUri(r) => {
            let v = store.get_model_version(r.name.as_str(), r.version.as_str())?;
            json!({"artifact_uri": v.source})
        }
        ModelVersionsTransitionStage => {
            return Err(TrackingError::invalid(
                "model stages are not supported (MLflow deprecated them); use aliases: set_registered_model_alias(name, 'production', version), which the promotion policy governs",
            ))
        }
        WhoAmI => json!({"name": who.name, "role": who.role.as_str()}),
        ModelVersionDetails(r) => one(
            "model_version",
            &store.model_version_details(r.name.as_str(), r.version.as_str())?,
        )?,
        LinkEvaluation(r) => one(
            "evaluation_runs",
            &store.link_evaluation(actor, r.name.as_str(), r.version.as_str(), r.run_id.as_str())?,
        )?,
        ReviewsCreate(r) => {
            let approve = r.decision == Decision::Approve;
            one("review", &store.review(actor, r.name.as_str(), r.version.as_str(), approve, &r.comment)?)?
        }
        PolicyGet => one("policy", &store.policy()?)?,
        PolicySet(r) => one("policy", &store.set_policy(actor, &r.policy)?)?,
        AuditGet(r) => to_json(&store.audit(r.name.as_deref().filter(|n| !n.is_empty()))?)?,
    })
}

/// `runs/search` as MLflow's JSON, written straight from the cached runs' JSON (the
/// HTTP layer sends it as it is; see [`search_runs_page`]).
pub fn search_runs_raw(store: &dyn Store, body: &Value) -> Result<String, TrackingError> {
    search_runs_page(store, &request::read(body)?, &request::read(body)?)
}

fn search_runs_page(
    store: &dyn Store,
    r: &RunsSearch,
    page: &Page,
) -> Result<String, TrackingError> {
    if r.experiment_ids.is_empty() {
        return Err(TrackingError::invalid(
            "runs/search needs at least one of 'experiment_ids'",
        ));
    }
    let clauses =
        search::parse(r.filter.as_deref().unwrap_or_default()).map_err(TrackingError::invalid)?;
    let orders = r
        .order_by
        .iter()
        .map(|term| search::parse_order(term))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TrackingError::invalid)?;
    let limit = page.limit(1000)?;
    let start = page.offset()?;
    let mut runs = store.runs_of(
        &r.experiment_ids,
        ViewType::parse(r.run_view_type.as_deref().unwrap_or_default()),
    )?;
    runs.retain(|r| search::matches(&r.record, &clauses));
    search::sort(&mut runs, |r| &r.record, &orders);
    let page = runs.iter().skip(start).take(limit);
    let mut body =
        String::with_capacity(64 + page.clone().map(|r| r.json.len() + 1).sum::<usize>());
    body.push_str("{\"runs\":[");
    for (i, run) in page.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&run.json);
    }
    body.push(']');
    if start + limit < runs.len() {
        body.push_str(&format!(",\"next_page_token\":\"{}\"", start + limit));
    }
    body.push('}');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Identity, Role};

    fn call(store: &dyn Store, endpoint: &str, body: Value) -> Result<Value, TrackingError> {
        let who = Identity {
            token_id: "t".into(),
            name: "tester".into(),
            role: Role::Editor,
        };
        super::call(store, &who, endpoint, &body)
    }

    #[test]
    fn search_sees_every_write_after_the_runs_are_cached() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = crate::SqlStore::open_sqlite(&dir.path().join("t.sqlite")).expect("open");
        let mut ids = Vec::new();
        for i in 0..3 {
            let run = call(&store, "runs/create", json!({"experiment_id": "0"})).expect("create");
            let id = run["run"]["info"]["run_id"]
                .as_str()
                .expect("id")
                .to_string();
            call(
                &store,
                "runs/log-metric",
                json!({"run_id": id, "key": "acc", "value": i as f64 / 10.0}),
            )
            .expect("log");
            ids.push(id);
        }
        let search = |filter: &str| -> Vec<String> {
            call(&store, "runs/search", json!({"experiment_ids": ["0"], "filter": filter, "order_by": ["metrics.acc DESC"]}))
                .expect("search")["runs"]
                .as_array()
                .expect("runs")
                .iter()
                .map(|r| r["info"]["run_id"].as_str().expect("id").to_string())
                .collect()
        };
        assert_eq!(
            search("metrics.acc >= 0.1"),
            [ids[2].clone(), ids[1].clone()]
        );
        // Each kind of write reaches the next search.
        call(
            &store,
            "runs/log-metric",
            json!({"run_id": ids[0], "key": "acc", "value": 0.9, "step": 1}),
        )
        .expect("log");
        assert_eq!(search("metrics.acc >= 0.1")[0], ids[0]);
        call(
            &store,
            "runs/set-tag",
            json!({"run_id": ids[1], "key": "team", "value": "nlp"}),
        )
        .expect("tag");
        assert_eq!(search("tags.team = 'nlp'"), [ids[1].clone()]);
        call(
            &store,
            "runs/log-batch",
            json!({"run_id": ids[2], "params": [{"key": "lr", "value": "0.1"}]}),
        )
        .expect("batch");
        assert_eq!(search("params.lr = '0.1'"), [ids[2].clone()]);
        call(
            &store,
            "runs/update",
            json!({"run_id": ids[2], "status": "FAILED"}),
        )
        .expect("update");
        assert_eq!(search("attributes.status = 'FAILED'"), [ids[2].clone()]);
        call(&store, "runs/delete", json!({"run_id": ids[1]})).expect("delete");
        assert!(!search("").contains(&ids[1]));
        let answer = call(
            &store,
            "runs/search",
            json!({"experiment_ids": ["0"], "max_results": 1}),
        )
        .expect("page");
        assert_eq!(answer["next_page_token"], json!("1"));
    }

    /// Every path reads back as its endpoint, and no two endpoints share a path.
    #[test]
    fn endpoints_parse_from_their_paths() {
        let mut seen = std::collections::HashSet::new();
        for &endpoint in Endpoint::ALL {
            assert!(seen.insert(endpoint.path()), "{} twice", endpoint.path());
            assert_eq!(Endpoint::parse(endpoint.path()), Ok(endpoint));
        }
        let unknown = Endpoint::parse("runs/steal").unwrap_err();
        assert_eq!(unknown.code(), "ENDPOINT_NOT_FOUND");
        assert!(unknown.message().contains("runs/steal"));
    }

    /// Every table's rows, to compare a store before and after calls.
    fn snapshot(path: &std::path::Path) -> Vec<String> {
        let conn = rusqlite::Connection::open(path).expect("open");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .expect("tables")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("names");
        let mut rows = Vec::new();
        for table in tables {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM \"{table}\""))
                .expect("select");
            let n = stmt.column_count();
            let mut found = stmt.query([]).expect("rows");
            while let Some(row) = found.next().expect("row") {
                let cells: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", row.get_ref(i).expect("cell")))
                    .collect();
                rows.push(format!("{table}: {}", cells.join(" | ")));
            }
        }
        rows
    }

    /// The attack: a viewer calls every endpoint with arguments that name real
    /// runs, models and versions. Each one the table lets a viewer call changes
    /// nothing; each other one is refused with PERMISSION_DENIED.
    #[test]
    fn a_viewer_can_change_nothing_through_any_endpoint() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.sqlite");
        let store = crate::SqlStore::open_sqlite(&path).expect("open");
        let owner = Identity {
            token_id: "o".into(),
            name: "olga".into(),
            role: Role::Owner,
        };
        let as_owner = |endpoint: &str, body: Value| {
            super::call(&store, &owner, endpoint, &body)
                .unwrap_or_else(|e| panic!("{endpoint}: {e:?}"))
        };
        let run = as_owner("runs/create", json!({"experiment_id": "0"}));
        let run_id = run["run"]["info"]["run_id"]
            .as_str()
            .expect("id")
            .to_string();
        as_owner(
            "runs/log-metric",
            json!({"run_id": run_id, "key": "acc", "value": 0.5}),
        );
        as_owner("registered-models/create", json!({"name": "m"}));
        as_owner(
            "model-versions/create",
            json!({"name": "m", "source": "runs:/x", "run_id": run_id}),
        );
        as_owner(
            "registered-models/alias",
            json!({"name": "m", "alias": "staging", "version": "1"}),
        );

        let viewer = Identity {
            token_id: "v".into(),
            name: "vic".into(),
            role: Role::Viewer,
        };
        let request = json!({
            "name": "m", "version": "1", "alias": "staging", "experiment_id": "0",
            "experiment_ids": ["0"], "experiment_name": "Default", "run_id": run_id,
            "metric_key": "acc", "key": "k", "value": "v", "source": "runs:/y",
            "decision": "approve", "status": "KILLED", "description": "pwned",
            "policy": {"protected_aliases": [], "min_approvals": 0},
            "metrics": [{"key": "acc", "value": 1.0, "timestamp": 1, "step": 9}],
        });
        let before = snapshot(&path);
        for &endpoint in Endpoint::ALL {
            let outcome = dispatch(&store, &viewer, endpoint, &request);
            if endpoint.required_role() > Role::Viewer {
                let refused = outcome.expect_err(endpoint.path());
                assert_eq!(refused.code(), "PERMISSION_DENIED", "{}", endpoint.path());
            }
            assert_eq!(
                snapshot(&path),
                before,
                "{} changed the store",
                endpoint.path()
            );
        }
    }
}
