//! MLflow's REST API (and ferrolab's governance endpoints under `ferrolab/`) as
//! calls on the [`Store`]: [`dispatch`] takes an endpoint's name, its request as
//! JSON and the caller, checks that the caller may make it, and answers in MLflow's
//! JSON. Transport is the caller's business: the collaboration server serves it
//! over HTTP, the kernel calls it in process on a local store.

use crate::access::{Identity, Role};
use crate::registry::{Actor, Policy};
use crate::search;
use crate::store::{metric_json, now_ms, Point, Store, TrackingError};
use serde_json::{json, Map, Value};

/// Where MLflow's endpoints live on a tracking server.
pub const PREFIX: &str = "/api/2.0/mlflow";
/// Where ferrolab's governance endpoints live.
pub const FERROLAB_PREFIX: &str = "/api/2.0/ferrolab";

/// Declares [`Endpoint`] from one list of variants and their paths (under
/// [`PREFIX`], or under [`FERROLAB_PREFIX`] for those starting `ferrolab/`).
macro_rules! endpoints {
    ($($(#[$doc:meta])* $variant:ident = $path:literal,)*) => {
        /// Every endpoint the tracking API answers, parsed once from its path.
        /// Who may call each ([`Endpoint::required_role`]) and which run it
        /// changes ([`Endpoint::run_effect`]) are exhaustive matches, so an
        /// endpoint cannot be added without saying both.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Endpoint {
            $($(#[$doc])* $variant,)*
        }

        impl Endpoint {
            /// Every endpoint, in the order declared.
            pub const ALL: &'static [Endpoint] = &[$(Endpoint::$variant,)*];

            /// The endpoint's path after the API prefix (`runs/create`).
            pub fn path(self) -> &'static str {
                match self {
                    $(Endpoint::$variant => $path,)*
                }
            }
        }
    };
}

endpoints! {
    ExperimentsCreate = "experiments/create",
    ExperimentsGet = "experiments/get",
    ExperimentsGetByName = "experiments/get-by-name",
    ExperimentsSearch = "experiments/search",
    RunsCreate = "runs/create",
    RunsGet = "runs/get",
    RunsUpdate = "runs/update",
    RunsDelete = "runs/delete",
    RunsLogParameter = "runs/log-parameter",
    RunsSetTag = "runs/set-tag",
    RunsLogMetric = "runs/log-metric",
    RunsLogBatch = "runs/log-batch",
    RunsSearch = "runs/search",
    MetricsGetHistory = "metrics/get-history",
    /// MLflow 3's logged models: never kept here, always an empty list.
    LoggedModelsSearch = "logged-models/search",
    RegisteredModelsCreate = "registered-models/create",
    RegisteredModelsGet = "registered-models/get",
    RegisteredModelsSearch = "registered-models/search",
    RegisteredModelsUpdate = "registered-models/update",
    RegisteredModelsDelete = "registered-models/delete",
    /// Refused: reviews and the audit log are kept under the model's name.
    RegisteredModelsRename = "registered-models/rename",
    RegisteredModelsGetLatestVersions = "registered-models/get-latest-versions",
    RegisteredModelsSetTag = "registered-models/set-tag",
    RegisteredModelsDeleteTag = "registered-models/delete-tag",
    /// `POST registered-models/alias` (the HTTP layer maps GET and DELETE).
    RegisteredModelsSetAlias = "registered-models/alias",
    RegisteredModelsDeleteAlias = "registered-models/alias/delete",
    RegisteredModelsGetAlias = "registered-models/alias/get",
    ModelVersionsCreate = "model-versions/create",
    ModelVersionsGet = "model-versions/get",
    ModelVersionsSearch = "model-versions/search",
    ModelVersionsUpdate = "model-versions/update",
    ModelVersionsDelete = "model-versions/delete",
    ModelVersionsSetTag = "model-versions/set-tag",
    ModelVersionsDeleteTag = "model-versions/delete-tag",
    ModelVersionsGetDownloadUri = "model-versions/get-download-uri",
    /// Refused: stages are deprecated in MLflow; aliases replace them.
    ModelVersionsTransitionStage = "model-versions/transition-stage",
    WhoAmI = "ferrolab/whoami",
    /// `model-versions/create` with lineage and evaluation runs.
    FerrolabModelVersionsCreate = "ferrolab/model-versions/create",
    ModelVersionDetails = "ferrolab/model-versions/details",
    LinkEvaluation = "ferrolab/model-versions/link-evaluation",
    ReviewsCreate = "ferrolab/reviews/create",
    PolicyGet = "ferrolab/policy/get",
    PolicySet = "ferrolab/policy/set",
    AuditGet = "ferrolab/audit/get",
}

/// How a successful call changes a tracked run (its live document follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEffect {
    /// Changes no run.
    None,
    /// Creates the run the reply names.
    Creates,
    /// Changes the run the request names (`run_id`, or MLflow's older `run_uuid`).
    Changes,
}

impl Endpoint {
    /// The endpoint at `path` (after the API prefix), or MLflow's
    /// `ENDPOINT_NOT_FOUND` naming what is served.
    pub fn parse(path: &str) -> Result<Endpoint, TrackingError> {
        Endpoint::ALL
            .iter()
            .copied()
            .find(|e| e.path() == path)
            .ok_or_else(|| TrackingError::EndpointNotFound(format!(
                    "{PREFIX}/{path} is not an endpoint ferrolab serves; it serves experiments (create, get, get-by-name, search), runs (create, get, update, delete, log-parameter, log-metric, log-batch, set-tag, search), metrics/get-history, registered-models (create, get, search, update, delete, get-latest-versions, set-tag, delete-tag, alias) and model-versions (create, get, search, update, delete, set-tag, delete-tag, get-download-uri); MLflow 3's logged models (log_model) are not supported — log the files as artifacts and register them as model versions"
                )))
    }

    /// The least role that may call it: reading needs any token, writing an
    /// editor's. (Owner-only changes — deleting a model, the policy — are checked
    /// by the store, which knows what each change touches.)
    pub fn required_role(self) -> Role {
        use Endpoint::*;
        match self {
            ExperimentsGet
            | ExperimentsGetByName
            | ExperimentsSearch
            | RunsGet
            | RunsSearch
            | MetricsGetHistory
            | LoggedModelsSearch
            | RegisteredModelsGet
            | RegisteredModelsSearch
            | RegisteredModelsGetLatestVersions
            | RegisteredModelsGetAlias
            | ModelVersionsGet
            | ModelVersionsSearch
            | ModelVersionsGetDownloadUri
            | WhoAmI
            | ModelVersionDetails
            | PolicyGet
            | AuditGet => Role::Viewer,
            // Refused for everyone, with the reason and what to do instead.
            RegisteredModelsRename | ModelVersionsTransitionStage => Role::Viewer,
            ExperimentsCreate
            | RunsCreate
            | RunsUpdate
            | RunsDelete
            | RunsLogParameter
            | RunsSetTag
            | RunsLogMetric
            | RunsLogBatch
            | RegisteredModelsCreate
            | RegisteredModelsUpdate
            | RegisteredModelsDelete
            | RegisteredModelsSetTag
            | RegisteredModelsDeleteTag
            | RegisteredModelsSetAlias
            | RegisteredModelsDeleteAlias
            | ModelVersionsCreate
            | ModelVersionsUpdate
            | ModelVersionsDelete
            | ModelVersionsSetTag
            | ModelVersionsDeleteTag
            | FerrolabModelVersionsCreate
            | LinkEvaluation
            | ReviewsCreate
            | PolicySet => Role::Editor,
        }
    }

    /// Which run a successful call changes.
    pub fn run_effect(self) -> RunEffect {
        use Endpoint::*;
        match self {
            RunsCreate => RunEffect::Creates,
            RunsUpdate | RunsDelete | RunsLogParameter | RunsLogMetric | RunsLogBatch
            | RunsSetTag => RunEffect::Changes,
            ExperimentsCreate
            | ExperimentsGet
            | ExperimentsGetByName
            | ExperimentsSearch
            | RunsGet
            | RunsSearch
            | MetricsGetHistory
            | LoggedModelsSearch
            | RegisteredModelsCreate
            | RegisteredModelsGet
            | RegisteredModelsSearch
            | RegisteredModelsUpdate
            | RegisteredModelsDelete
            | RegisteredModelsRename
            | RegisteredModelsGetLatestVersions
            | RegisteredModelsSetTag
            | RegisteredModelsDeleteTag
            | RegisteredModelsSetAlias
            | RegisteredModelsDeleteAlias
            | RegisteredModelsGetAlias
            | ModelVersionsCreate
            | ModelVersionsGet
            | ModelVersionsSearch
            | ModelVersionsUpdate
            | ModelVersionsDelete
            | ModelVersionsSetTag
            | ModelVersionsDeleteTag
            | ModelVersionsGetDownloadUri
            | ModelVersionsTransitionStage
            | WhoAmI
            | FerrolabModelVersionsCreate
            | ModelVersionDetails
            | LinkEvaluation
            | ReviewsCreate
            | PolicyGet
            | PolicySet
            | AuditGet => RunEffect::None,
        }
    }

    /// The run a successful call with `request` and `reply` changed, if any.
    pub fn changed_run(self, request: &Map<String, Value>, reply: &Value) -> Option<String> {
        match self.run_effect() {
            RunEffect::None => None,
            RunEffect::Creates => reply["run"]["info"]["run_id"].as_str().map(str::to_string),
            RunEffect::Changes => request
                .get("run_id")
                .or_else(|| request.get("run_uuid"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

fn text<'a>(req: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    req.get(key).and_then(Value::as_str)
}

fn required<'a>(req: &'a Map<String, Value>, key: &str) -> Result<&'a str, TrackingError> {
    text(req, key).filter(|s| !s.is_empty()).ok_or_else(|| {
        TrackingError::invalid(format!("Missing value for required parameter '{key}'"))
    })
}

fn run_id(req: &Map<String, Value>) -> Result<&str, TrackingError> {
    text(req, "run_id")
        .filter(|s| !s.is_empty())
        .or_else(|| text(req, "run_uuid").filter(|s| !s.is_empty()))
        .ok_or_else(|| TrackingError::invalid("Missing value for required parameter 'run_id'"))
}

/// An int64 as MLflow's JSON gives it: a number or a string of digits.
fn int(req: &Map<String, Value>, key: &str) -> Result<Option<i64>, TrackingError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| {
                TrackingError::invalid(format!("'{key}' must be a whole number, got {n}"))
            }),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
            TrackingError::invalid(format!("'{key}' must be a whole number, got '{s}'"))
        }),
        Some(v) => Err(TrackingError::invalid(format!(
            "'{key}' must be a whole number, got {v}"
        ))),
    }
}

fn metric_value(v: Option<&Value>, key: &str) -> Result<f64, TrackingError> {
    match v {
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| TrackingError::invalid(format!("metric '{key}' has no usable value"))),
        Some(Value::String(s)) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            other => other.parse().map_err(|_| {
                TrackingError::invalid(format!("metric '{key}' must be a number, got '{other}'"))
            }),
        },
        _ => Err(TrackingError::invalid(format!(
            "Missing value for required parameter 'value' of metric '{key}'"
        ))),
    }
}

fn point(m: &Map<String, Value>) -> Result<Point, TrackingError> {
    let key = required(m, "key")?.to_string();
    Ok(Point {
        value: metric_value(m.get("value"), &key)?,
        timestamp: int(m, "timestamp")?.unwrap_or_else(now_ms),
        step: int(m, "step")?.unwrap_or(0),
        key,
    })
}

fn pairs(req: &Map<String, Value>, key: &str) -> Result<Vec<(String, String)>, TrackingError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let m = item.as_object().ok_or_else(|| {
                    TrackingError::invalid(format!("each of '{key}' must be {{key, value}}"))
                })?;
                Ok((
                    required(m, "key")?.to_string(),
                    text(m, "value").unwrap_or_default().to_string(),
                ))
            })
            .collect(),
        Some(_) => Err(TrackingError::invalid(format!(
            "'{key}' must be a list of {{key, value}}"
        ))),
    }
}

fn max_results(req: &Map<String, Value>, default: usize) -> Result<usize, TrackingError> {
    let n = int(req, "max_results")?.unwrap_or(default as i64);
    if !(1..=50_000).contains(&n) {
        return Err(TrackingError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be between 1 and 50000"
        )));
    }
    Ok(n as usize)
}

fn offset(req: &Map<String, Value>) -> Result<usize, TrackingError> {
    match text(req, "page_token").filter(|t| !t.is_empty()) {
        None => Ok(0),
        Some(t) => t
            .parse()
            .map_err(|_| TrackingError::invalid(format!("Invalid page token '{t}'"))),
    }
}

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

fn version_arg(req: &Map<String, Value>) -> Result<String, TrackingError> {
    match req.get("version") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(TrackingError::invalid(
            "Missing value for required parameter 'version'",
        )),
    }
}

fn page(items: Vec<Value>, next: Option<String>, key: &str) -> Value {
    let mut out = json!({ key: items });
    if let Some(token) = next {
        out["next_page_token"] = json!(token);
    }
    out
}

fn string_list(req: &Map<String, Value>, key: &str) -> Vec<String> {
    match req.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Answers one call of MLflow's API (or ferrolab's governance endpoints) at
/// `path` on `store` for `who`.
pub fn call(
    store: &Store,
    who: &Identity,
    path: &str,
    req: &Map<String, Value>,
) -> Result<Value, TrackingError> {
    dispatch(store, who, Endpoint::parse(path)?, req)
}

/// Answers one call of `endpoint` on `store` for `who`, after checking that `who`
/// may make it.
pub fn dispatch(
    store: &Store,
    who: &Identity,
    endpoint: Endpoint,
    req: &Map<String, Value>,
) -> Result<Value, TrackingError> {
    use Endpoint::*;
    require(who, endpoint.required_role())?;
    let actor = &Actor {
        name: &who.name,
        owner: who.role >= Role::Owner,
    };
    let name = || required(req, "name");
    Ok(match endpoint {
        ExperimentsCreate => {
            let id = store.create_experiment(
                required(req, "name")?,
                text(req, "artifact_location"),
                &pairs(req, "tags")?,
            )?;
            json!({"experiment_id": id})
        }
        ExperimentsGet => json!({"experiment": store.get_experiment(required(req, "experiment_id")?)?}),
        ExperimentsGetByName => json!({
            "experiment": store.get_experiment_by_name(required(req, "experiment_name")?)?
        }),
        ExperimentsSearch => {
            let (experiments, next) = store.search_experiments(
                text(req, "view_type").unwrap_or("ACTIVE_ONLY"),
                text(req, "filter").unwrap_or_default(),
                max_results(req, 1000)?,
                offset(req)?,
            )?;
            page(experiments, next, "experiments")
        }
        RunsCreate => {
            let experiment = text(req, "experiment_id").filter(|s| !s.is_empty()).unwrap_or("0");
            let user = text(req, "user_id").filter(|s| !s.is_empty()).unwrap_or(&who.name);
            let run = store.create_run(
                experiment,
                user,
                &who.name,
                text(req, "run_name"),
                int(req, "start_time")?,
                &pairs(req, "tags")?,
            )?;
            json!({"run": run})
        }
        RunsGet => json!({"run": store.get_run(run_id(req)?)?}),
        RunsUpdate => {
            let info = store.update_run(
                run_id(req)?,
                text(req, "status").filter(|s| !s.is_empty()),
                int(req, "end_time")?,
                text(req, "run_name"),
            )?;
            json!({"run_info": info})
        }
        RunsDelete => {
            store.delete_run(run_id(req)?)?;
            json!({})
        }
        RunsLogParameter => {
            store.log_param(run_id(req)?, required(req, "key")?, text(req, "value").unwrap_or_default())?;
            json!({})
        }
        RunsSetTag => {
            store.set_tag(run_id(req)?, required(req, "key")?, text(req, "value").unwrap_or_default())?;
            json!({})
        }
        RunsLogMetric => {
            store.log_metric(run_id(req)?, &point(req)?)?;
            json!({})
        }
        RunsLogBatch => {
            let metrics = match req.get("metrics") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|m| {
                        m.as_object()
                            .ok_or_else(|| TrackingError::invalid("each metric must be {key, value, timestamp, step}"))
                            .and_then(point)
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(TrackingError::invalid("'metrics' must be a list")),
            };
            store.log_batch(run_id(req)?, &metrics, &pairs(req, "params")?, &pairs(req, "tags")?)?;
            json!({})
        }
        MetricsGetHistory => {
            let points = store.metric_history(run_id(req)?, required(req, "metric_key")?)?;
            let metrics: Vec<Value> = points
                .iter()
                .map(|p| json!({"key": p.key, "value": metric_json(p.value), "timestamp": p.timestamp, "step": p.step}))
                .collect();
            json!({"metrics": metrics})
        }
        RunsSearch => search_runs(store, req)?,
        // MLflow 3's logged models (`mlflow.<flavor>.log_model`) are not kept here;
        // the client looks for them when listing a run's artifacts.
        LoggedModelsSearch => json!({"models": []}),
        RegisteredModelsCreate => json!({"registered_model": store.create_registered_model(
            actor,
            name()?,
            text(req, "description").unwrap_or_default(),
            &pairs(req, "tags")?,
        )?}),
        RegisteredModelsGet => json!({"registered_model": store.get_registered_model(name()?)?}),
        RegisteredModelsSearch => {
            let (models, next) = store.search_registered_models(
                text(req, "filter").unwrap_or_default(),
                max_results(req, 100)?,
                offset(req)?,
            )?;
            page(models, next, "registered_models")
        }
        RegisteredModelsUpdate => json!({"registered_model": store.update_registered_model(
            actor,
            name()?,
            text(req, "description").unwrap_or_default(),
        )?}),
        RegisteredModelsDelete => {
            store.delete_registered_model(actor, name()?)?;
            json!({})
        }
        RegisteredModelsRename => {
            return Err(TrackingError::invalid(
                "renaming a registered model is not supported: its reviews and audit log are kept under its name; register a new model instead",
            ))
        }
        RegisteredModelsGetLatestVersions => {
            let model = store.get_registered_model(name()?)?;
            json!({"model_versions": model.get("latest_versions").cloned().unwrap_or(json!([]))})
        }
        RegisteredModelsSetTag => {
            store.set_registered_model_tag(actor, name()?, required(req, "key")?, Some(text(req, "value").unwrap_or_default()))?;
            json!({})
        }
        RegisteredModelsDeleteTag => {
            store.set_registered_model_tag(actor, name()?, required(req, "key")?, None)?;
            json!({})
        }
        RegisteredModelsSetAlias => {
            store.set_alias(actor, name()?, required(req, "alias")?, &version_arg(req)?)?;
            json!({})
        }
        RegisteredModelsDeleteAlias => {
            store.delete_alias(actor, name()?, required(req, "alias")?)?;
            json!({})
        }
        RegisteredModelsGetAlias => json!({"model_version": store.version_by_alias(name()?, required(req, "alias")?)?}),
        ModelVersionsCreate | FerrolabModelVersionsCreate => {
            let lineage = req.get("lineage").cloned().unwrap_or(json!({}));
            json!({"model_version": store.create_model_version(
                actor,
                name()?,
                required(req, "source")?,
                text(req, "run_id").unwrap_or_default(),
                text(req, "description").unwrap_or_default(),
                &pairs(req, "tags")?,
                &lineage,
                &string_list(req, "evaluation_runs"),
            )?})
        }
        ModelVersionsGet => json!({"model_version": store.get_model_version(name()?, &version_arg(req)?)?}),
        ModelVersionsSearch => {
            let (versions, next) = store.search_model_versions(
                text(req, "filter").unwrap_or_default(),
                max_results(req, 10_000)?,
                offset(req)?,
            )?;
            page(versions, next, "model_versions")
        }
        ModelVersionsUpdate => json!({"model_version": store.update_model_version(
            actor,
            name()?,
            &version_arg(req)?,
            text(req, "description").unwrap_or_default(),
        )?}),
        ModelVersionsDelete => {
            store.delete_model_version(actor, name()?, &version_arg(req)?)?;
            json!({})
        }
        ModelVersionsSetTag => {
            store.set_model_version_tag(actor, name()?, &version_arg(req)?, required(req, "key")?, Some(text(req, "value").unwrap_or_default()))?;
            json!({})
        }
        ModelVersionsDeleteTag => {
            store.set_model_version_tag(actor, name()?, &version_arg(req)?, required(req, "key")?, None)?;
            json!({})
        }
        ModelVersionsGetDownloadUri => {
            let v = store.get_model_version(name()?, &version_arg(req)?)?;
            json!({"artifact_uri": v["source"]})
        }
        ModelVersionsTransitionStage => {
            return Err(TrackingError::invalid(
                "model stages are not supported (MLflow deprecated them); use aliases: set_registered_model_alias(name, 'production', version), which the promotion policy governs",
            ))
        }
        WhoAmI => json!({"name": who.name, "role": who.role.as_str()}),
        ModelVersionDetails => json!({"model_version": store.model_version_details(name()?, &version_arg(req)?)?}),
        LinkEvaluation => store.link_evaluation(actor, name()?, &version_arg(req)?, required(req, "run_id")?)?,
        ReviewsCreate => {
            let approve = match required(req, "decision")? {
                "approve" => true,
                "reject" => false,
                other => {
                    return Err(TrackingError::invalid(format!(
                        "decision must be 'approve' or 'reject', got '{other}'"
                    )))
                }
            };
            json!({"review": store.review(actor, name()?, &version_arg(req)?, approve, text(req, "comment").unwrap_or_default())?})
        }
        PolicyGet => json!({"policy": store.policy()?}),
        PolicySet => {
            let policy: Policy = serde_json::from_value(req.get("policy").cloned().unwrap_or(Value::Null))
                .map_err(|e| TrackingError::invalid(format!(
                    "'policy' must be {{protected_aliases: [..], min_approvals: N, require_evaluation: bool, min_pass_rate: 0..1}}: {e}"
                )))?;
            json!({"policy": store.set_policy(actor, &policy)?})
        }
        AuditGet => store.audit(text(req, "name").filter(|n| !n.is_empty()))?,
    })
}

/// `runs/search` as MLflow's JSON, written straight from the cached runs' JSON.
pub fn search_runs_raw(store: &Store, req: &Map<String, Value>) -> Result<String, TrackingError> {
    let experiment_ids: Vec<String> = match req.get("experiment_ids") {
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    if experiment_ids.is_empty() {
        return Err(TrackingError::invalid(
            "runs/search needs at least one of 'experiment_ids'",
        ));
    }
    let clauses =
        search::parse(text(req, "filter").unwrap_or_default()).map_err(TrackingError::invalid)?;
    let orders = match req.get("order_by") {
        Some(Value::Array(terms)) => terms
            .iter()
            .filter_map(Value::as_str)
            .map(search::parse_order)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TrackingError::invalid)?,
        Some(Value::String(term)) => {
            vec![search::parse_order(term).map_err(TrackingError::invalid)?]
        }
        _ => Vec::new(),
    };
    let limit = max_results(req, 1000)?;
    let start = offset(req)?;
    let mut runs = store.runs_of(
        &experiment_ids,
        text(req, "run_view_type").unwrap_or("ACTIVE_ONLY"),
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

fn search_runs(store: &Store, req: &Map<String, Value>) -> Result<Value, TrackingError> {
    let body = search_runs_raw(store, req)?;
    serde_json::from_str(&body)
        .map_err(|e| TrackingError::Internal(format!("the search answer is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Identity, Role};

    fn call(store: &Store, endpoint: &str, body: Value) -> Result<Value, TrackingError> {
        let who = Identity {
            token_id: "t".into(),
            name: "tester".into(),
            role: Role::Editor,
        };
        let Value::Object(req) = body else {
            panic!("a request body is an object")
        };
        super::call(store, &who, endpoint, &req)
    }

    #[test]
    fn search_sees_every_write_after_the_runs_are_cached() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("t.sqlite")).expect("open");
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
        let store = Store::open(&path).expect("open");
        let owner = Identity {
            token_id: "o".into(),
            name: "olga".into(),
            role: Role::Owner,
        };
        let as_owner = |endpoint: &str, body: Value| {
            let Value::Object(req) = body else {
                panic!("a request body is an object")
            };
            super::call(&store, &owner, endpoint, &req)
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
        let Value::Object(request) = json!({
            "name": "m", "version": "1", "alias": "staging", "experiment_id": "0",
            "experiment_ids": ["0"], "experiment_name": "Default", "run_id": run_id,
            "metric_key": "acc", "key": "k", "value": "v", "source": "runs:/y",
            "decision": "approve", "status": "KILLED", "description": "pwned",
            "policy": {"protected_aliases": [], "min_approvals": 0},
            "metrics": [{"key": "acc", "value": 1.0, "timestamp": 1, "step": 9}],
        }) else {
            unreachable!()
        };
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
