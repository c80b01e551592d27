//! MLflow's request bodies, one serde struct per endpoint, read once into a
//! [`Request`] before the store is touched: the store's calls get typed values, and a
//! malformed body is refused as a whole with the parameter it got wrong.
//!
//! MLflow's clients are lenient in ways these types accept: int64s as numbers or as
//! strings (GET query parameters are always strings), metric values as `"NaN"` or
//! `"Infinity"`, `run_uuid` beside or instead of `run_id`, a model version as a number
//! or a string, a list as one string, and `null` for an empty list.

use crate::endpoint::Endpoint;
use crate::model::{self, Policy};
use crate::store::{now_ms, TrackingError};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// What a required text's deserializer says when the text is empty; reported like a
/// missing field.
const EMPTY: &str = "\u{0}empty";

/// Text a request must carry, not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required(pub String);

impl Required {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Required {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(text) if !text.is_empty() => Ok(Required(text)),
            Value::String(_) | Value::Null => Err(de::Error::custom(EMPTY)),
            other => Err(de::Error::custom(format!("must be text, got {other}"))),
        }
    }
}

/// A model version: MLflow sends it as a string, some clients as a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

impl Version {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(text) if !text.is_empty() => Ok(Version(text)),
            Value::Number(n) => Ok(Version(n.to_string())),
            Value::String(_) | Value::Null => Err(de::Error::custom(EMPTY)),
            other => Err(de::Error::custom(format!(
                "must be a version number, got {other}"
            ))),
        }
    }
}

/// The run a call names: `run_id`, or MLflow's older `run_uuid` (its clients send
/// both). Read from the same body as the rest of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId(pub String);

impl RunId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            #[serde(default)]
            run_id: Option<String>,
            #[serde(default)]
            run_uuid: Option<String>,
        }
        let fields = Fields::deserialize(d)?;
        fields
            .run_id
            .filter(|id| !id.is_empty())
            .or(fields.run_uuid.filter(|id| !id.is_empty()))
            .map(RunId)
            .ok_or_else(|| de::Error::missing_field("run_id"))
    }
}

/// An int64 as MLflow's JSON gives it: a number or a string of digits.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("must be a whole number, got {n}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("must be a whole number, got '{s}'"))),
        Some(other) => Err(de::Error::custom(format!(
            "must be a whole number, got {other}"
        ))),
    }
}

/// A metric's value: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` (JSON has no
/// words for them), or a number written as text.
fn metric_value<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Err(de::Error::custom(EMPTY)),
        other => model::read_metric_value(other).map_err(de::Error::custom),
    }
}

/// Optional text; numbers and booleans are taken as their text.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(scalar @ (Value::Number(_) | Value::Bool(_))) => Ok(scalar.to_string()),
        Some(other) => Err(de::Error::custom(format!("must be text, got {other}"))),
    }
}

/// A list that may be `null` or absent (empty).
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A list of text that may also come as one string (a GET query parameter) or hold
/// numbers (experiment ids).
fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let one = |v: Value| match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(de::Error::custom(format!(
            "must be a list of text, got {other}"
        ))),
    };
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::Array(items)) => items.into_iter().map(one).collect(),
        Some(scalar) => Ok(vec![one(scalar)?]),
    }
}

/// A `{key, value}` pair: a tag or a parameter.
#[derive(Debug, Deserialize)]
pub struct KeyValue {
    pub key: Required,
    #[serde(default, deserialize_with = "text")]
    pub value: String,
}

/// Turns pairs into the store's `(key, value)` form.
pub fn pairs(items: &[KeyValue]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|kv| (kv.key.0.clone(), kv.value.clone()))
        .collect()
}

/// One metric point as a request carries it.
#[derive(Debug, Deserialize)]
pub struct Metric {
    pub key: Required,
    #[serde(deserialize_with = "metric_value")]
    pub value: f64,
    #[serde(default, deserialize_with = "int64")]
    pub timestamp: Option<i64>,
    #[serde(default, deserialize_with = "int64")]
    pub step: Option<i64>,
}

impl Metric {
    /// The point to store; a missing timestamp is now, a missing step 0.
    pub fn metric(&self) -> model::Metric {
        model::Metric {
            key: self.key.0.clone(),
            value: self.value,
            timestamp: self.timestamp.unwrap_or_else(now_ms),
            step: self.step.unwrap_or(0),
        }
    }
}

/// A page of a search: how many (`max_results`, each search its own default) and
/// from where (`page_token`, the offset a previous page gave). Read from the same
/// body as the search.
#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default, deserialize_with = "int64")]
    max_results: Option<i64>,
    #[serde(default)]
    page_token: Option<String>,
}

impl Page {
    pub fn limit(&self, default: usize) -> Result<usize, TrackingError> {
        let n = self.max_results.unwrap_or(default as i64);
        if !(1..=50_000).contains(&n) {
            return Err(TrackingError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied. It must be between 1 and 50000"
            )));
        }
        Ok(n as usize)
    }

    pub fn offset(&self) -> Result<usize, TrackingError> {
        match self.page_token.as_deref().filter(|t| !t.is_empty()) {
            None => Ok(0),
            Some(t) => t
                .parse()
                .map_err(|_| TrackingError::invalid(format!("Invalid page token '{t}'"))),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ExperimentsCreate {
    pub name: Required,
    #[serde(default)]
    pub artifact_location: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
pub struct ExperimentsGet {
    pub experiment_id: Required,
}

#[derive(Debug, Deserialize)]
pub struct ExperimentsGetByName {
    pub experiment_name: Required,
}

#[derive(Debug, Deserialize)]
pub struct ExperimentsSearch {
    #[serde(default)]
    pub view_type: Option<String>,
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RunsCreate {
    #[serde(default)]
    pub experiment_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub run_name: Option<String>,
    #[serde(default, deserialize_with = "int64")]
    pub start_time: Option<i64>,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
pub struct RunsUpdate {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "int64")]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub run_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RunsLogBatch {
    #[serde(default, deserialize_with = "list")]
    pub metrics: Vec<Metric>,
    #[serde(default, deserialize_with = "list")]
    pub params: Vec<KeyValue>,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
pub struct MetricsGetHistory {
    pub metric_key: Required,
}

#[derive(Debug, Deserialize)]
pub struct RunsSearch {
    #[serde(default, deserialize_with = "texts")]
    pub experiment_ids: Vec<String>,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub run_view_type: Option<String>,
    #[serde(default, deserialize_with = "texts")]
    pub order_by: Vec<String>,
}

/// A call that names only a registered model.
#[derive(Debug, Deserialize)]
pub struct ModelRef {
    pub name: Required,
}

#[derive(Debug, Deserialize)]
pub struct RegisteredModelsCreate {
    pub name: Required,
    #[serde(default, deserialize_with = "text")]
    pub description: String,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<KeyValue>,
}

/// A search over models or versions.
#[derive(Debug, Deserialize)]
pub struct FilteredSearch {
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RegisteredModelsUpdate {
    pub name: Required,
    #[serde(default, deserialize_with = "text")]
    pub description: String,
}

/// A tag to set on a registered model.
#[derive(Debug, Deserialize)]
pub struct ModelTag {
    pub name: Required,
    pub key: Required,
    #[serde(default, deserialize_with = "text")]
    pub value: String,
}

/// A tag to delete from a registered model.
#[derive(Debug, Deserialize)]
pub struct ModelTagKey {
    pub name: Required,
    pub key: Required,
}

#[derive(Debug, Deserialize)]
pub struct SetAlias {
    pub name: Required,
    pub alias: Required,
    pub version: Version,
}

/// An alias to read or delete.
#[derive(Debug, Deserialize)]
pub struct AliasRef {
    pub name: Required,
    pub alias: Required,
}

#[derive(Debug, Deserialize)]
pub struct ModelVersionsCreate {
    pub name: Required,
    pub source: Required,
    #[serde(default, deserialize_with = "text")]
    pub run_id: String,
    #[serde(default, deserialize_with = "text")]
    pub description: String,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<KeyValue>,
    /// Where the version came from (ferrolab's create): base model, data, adapter.
    #[serde(default)]
    pub lineage: Option<Value>,
    /// Evaluation runs to link at once (ferrolab's create).
    #[serde(default, deserialize_with = "texts")]
    pub evaluation_runs: Vec<String>,
}

/// A call that names one model version.
#[derive(Debug, Deserialize)]
pub struct VersionRef {
    pub name: Required,
    pub version: Version,
}

#[derive(Debug, Deserialize)]
pub struct ModelVersionsUpdate {
    pub name: Required,
    pub version: Version,
    #[serde(default, deserialize_with = "text")]
    pub description: String,
}

/// A tag to set on a model version.
#[derive(Debug, Deserialize)]
pub struct VersionTag {
    pub name: Required,
    pub version: Version,
    pub key: Required,
    #[serde(default, deserialize_with = "text")]
    pub value: String,
}

/// A tag to delete from a model version.
#[derive(Debug, Deserialize)]
pub struct VersionTagKey {
    pub name: Required,
    pub version: Version,
    pub key: Required,
}

#[derive(Debug, Deserialize)]
pub struct LinkEvaluation {
    pub name: Required,
    pub version: Version,
    pub run_id: Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

#[derive(Debug, Deserialize)]
pub struct ReviewsCreate {
    pub name: Required,
    pub version: Version,
    pub decision: Decision,
    #[serde(default, deserialize_with = "text")]
    pub comment: String,
}

#[derive(Debug, Deserialize)]
pub struct PolicySet {
    pub policy: Policy,
}

#[derive(Debug, Deserialize)]
pub struct AuditGet {
    /// One model's entries; all of them when absent or empty.
    #[serde(default)]
    pub name: Option<String>,
}

/// One call's request, typed: one variant per [`Endpoint`], each with its body.
#[derive(Debug)]
pub enum Request {
    ExperimentsCreate(ExperimentsCreate),
    ExperimentsGet(ExperimentsGet),
    ExperimentsGetByName(ExperimentsGetByName),
    ExperimentsSearch(ExperimentsSearch, Page),
    RunsCreate(RunsCreate),
    RunsGet(RunId),
    RunsUpdate(RunId, RunsUpdate),
    RunsDelete(RunId),
    RunsLogParameter(RunId, KeyValue),
    RunsSetTag(RunId, KeyValue),
    RunsLogMetric(RunId, Metric),
    RunsLogBatch(RunId, RunsLogBatch),
    RunsSearch(RunsSearch, Page),
    MetricsGetHistory(RunId, MetricsGetHistory),
    LoggedModelsSearch,
    RegisteredModelsCreate(RegisteredModelsCreate),
    RegisteredModelsGet(ModelRef),
    RegisteredModelsSearch(FilteredSearch, Page),
    RegisteredModelsUpdate(RegisteredModelsUpdate),
    RegisteredModelsDelete(ModelRef),
    RegisteredModelsRename,
    RegisteredModelsGetLatestVersions(ModelRef),
    RegisteredModelsSetTag(ModelTag),
    RegisteredModelsDeleteTag(ModelTagKey),
    RegisteredModelsSetAlias(SetAlias),
    RegisteredModelsDeleteAlias(AliasRef),
    RegisteredModelsGetAlias(AliasRef),
    ModelVersionsCreate(ModelVersionsCreate),
    ModelVersionsGet(VersionRef),
    ModelVersionsSearch(FilteredSearch, Page),
    ModelVersionsUpdate(ModelVersionsUpdate),
    ModelVersionsDelete(VersionRef),
    ModelVersionsSetTag(VersionTag),
    ModelVersionsDeleteTag(VersionTagKey),
    ModelVersionsGetDownloadUri(VersionRef),
    ModelVersionsTransitionStage,
    WhoAmI,
    FerrolabModelVersionsCreate(ModelVersionsCreate),
    ModelVersionDetails(VersionRef),
    LinkEvaluation(LinkEvaluation),
    ReviewsCreate(ReviewsCreate),
    PolicyGet,
    PolicySet(PolicySet),
    AuditGet(AuditGet),
}

/// How a successful call changes a tracked run (its live document follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEffect<'a> {
    /// Changes no run.
    None,
    /// Creates the run the reply names.
    Creates,
    /// Changes this run.
    Changes(&'a str),
}

impl Request {
    /// Reads `endpoint`'s request from `body` (a JSON object; query parameters
    /// already merged in), or says which parameter is missing or wrong.
    pub fn parse(endpoint: Endpoint, body: &Value) -> Result<Request, TrackingError> {
        use Endpoint as E;
        use Request as R;
        Ok(match endpoint {
            E::ExperimentsCreate => R::ExperimentsCreate(read(body)?),
            E::ExperimentsGet => R::ExperimentsGet(read(body)?),
            E::ExperimentsGetByName => R::ExperimentsGetByName(read(body)?),
            E::ExperimentsSearch => R::ExperimentsSearch(read(body)?, read(body)?),
            E::RunsCreate => R::RunsCreate(read(body)?),
            E::RunsGet => R::RunsGet(read(body)?),
            E::RunsUpdate => R::RunsUpdate(read(body)?, read(body)?),
            E::RunsDelete => R::RunsDelete(read(body)?),
            E::RunsLogParameter => R::RunsLogParameter(read(body)?, read(body)?),
            E::RunsSetTag => R::RunsSetTag(read(body)?, read(body)?),
            E::RunsLogMetric => R::RunsLogMetric(read(body)?, read(body)?),
            E::RunsLogBatch => R::RunsLogBatch(read(body)?, read(body)?),
            E::RunsSearch => R::RunsSearch(read(body)?, read(body)?),
            E::MetricsGetHistory => R::MetricsGetHistory(read(body)?, read(body)?),
            E::LoggedModelsSearch => R::LoggedModelsSearch,
            E::RegisteredModelsCreate => R::RegisteredModelsCreate(read(body)?),
            E::RegisteredModelsGet => R::RegisteredModelsGet(read(body)?),
            E::RegisteredModelsSearch => R::RegisteredModelsSearch(read(body)?, read(body)?),
            E::RegisteredModelsUpdate => R::RegisteredModelsUpdate(read(body)?),
            E::RegisteredModelsDelete => R::RegisteredModelsDelete(read(body)?),
            E::RegisteredModelsRename => R::RegisteredModelsRename,
            E::RegisteredModelsGetLatestVersions => {
                R::RegisteredModelsGetLatestVersions(read(body)?)
            }
            E::RegisteredModelsSetTag => R::RegisteredModelsSetTag(read(body)?),
            E::RegisteredModelsDeleteTag => R::RegisteredModelsDeleteTag(read(body)?),
            E::RegisteredModelsSetAlias => R::RegisteredModelsSetAlias(read(body)?),
            E::RegisteredModelsDeleteAlias => R::RegisteredModelsDeleteAlias(read(body)?),
            E::RegisteredModelsGetAlias => R::RegisteredModelsGetAlias(read(body)?),
            E::ModelVersionsCreate => R::ModelVersionsCreate(read(body)?),
            E::ModelVersionsGet => R::ModelVersionsGet(read(body)?),
            E::ModelVersionsSearch => R::ModelVersionsSearch(read(body)?, read(body)?),
            E::ModelVersionsUpdate => R::ModelVersionsUpdate(read(body)?),
            E::ModelVersionsDelete => R::ModelVersionsDelete(read(body)?),
            E::ModelVersionsSetTag => R::ModelVersionsSetTag(read(body)?),
            E::ModelVersionsDeleteTag => R::ModelVersionsDeleteTag(read(body)?),
            E::ModelVersionsGetDownloadUri => R::ModelVersionsGetDownloadUri(read(body)?),
            E::ModelVersionsTransitionStage => R::ModelVersionsTransitionStage,
            E::WhoAmI => R::WhoAmI,
            E::FerrolabModelVersionsCreate => R::FerrolabModelVersionsCreate(read(body)?),
            E::ModelVersionDetails => R::ModelVersionDetails(read(body)?),
            E::LinkEvaluation => R::LinkEvaluation(read(body)?),
            E::ReviewsCreate => R::ReviewsCreate(read(body)?),
            E::PolicyGet => R::PolicyGet,
            E::PolicySet => R::PolicySet(read(body)?),
            E::AuditGet => R::AuditGet(read(body)?),
        })
    }

    /// Which run a successful call changes.
    pub fn run_effect(&self) -> RunEffect<'_> {
        use Request::*;
        match self {
            RunsCreate(_) => RunEffect::Creates,
            RunsUpdate(run, _)
            | RunsDelete(run)
            | RunsLogParameter(run, _)
            | RunsSetTag(run, _)
            | RunsLogMetric(run, _)
            | RunsLogBatch(run, _) => RunEffect::Changes(run.as_str()),
            ExperimentsCreate(_)
            | ExperimentsGet(_)
            | ExperimentsGetByName(_)
            | ExperimentsSearch(..)
            | RunsGet(_)
            | RunsSearch(..)
            | MetricsGetHistory(..)
            | LoggedModelsSearch
            | RegisteredModelsCreate(_)
            | RegisteredModelsGet(_)
            | RegisteredModelsSearch(..)
            | RegisteredModelsUpdate(_)
            | RegisteredModelsDelete(_)
            | RegisteredModelsRename
            | RegisteredModelsGetLatestVersions(_)
            | RegisteredModelsSetTag(_)
            | RegisteredModelsDeleteTag(_)
            | RegisteredModelsSetAlias(_)
            | RegisteredModelsDeleteAlias(_)
            | RegisteredModelsGetAlias(_)
            | ModelVersionsCreate(_)
            | ModelVersionsGet(_)
            | ModelVersionsSearch(..)
            | ModelVersionsUpdate(_)
            | ModelVersionsDelete(_)
            | ModelVersionsSetTag(_)
            | ModelVersionsDeleteTag(_)
            | ModelVersionsGetDownloadUri(_)
            | ModelVersionsTransitionStage
            | WhoAmI
            | FerrolabModelVersionsCreate(_)
            | ModelVersionDetails(_)
            | LinkEvaluation(_)
            | ReviewsCreate(_)
            | PolicyGet
            | PolicySet(_)
            | AuditGet(_) => RunEffect::None,
        }
    }
}

/// Reads one request body, naming the parameter that is missing or wrong the way
/// MLflow does (`INVALID_PARAMETER_VALUE`).
pub fn read<T: DeserializeOwned>(body: &Value) -> Result<T, TrackingError> {
    let empty = Value::Object(Default::default());
    let body = match body {
        Value::Object(_) => body,
        Value::Null => &empty,
        other => {
            return Err(TrackingError::invalid(format!(
                "The request must be a JSON object of parameters, got {other}"
            )))
        }
    };
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let name = |field: &str| match path.as_str() {
            "." | "" => field.to_string(),
            parent => format!("{parent}.{field}"),
        };
        let message = if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            format!("Missing value for required parameter '{}'", name(field))
        } else if inner.starts_with(EMPTY) {
            format!("Missing value for required parameter '{path}'")
        } else {
            format!("Invalid value for parameter '{path}': {inner}")
        };
        TrackingError::invalid(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error<T: DeserializeOwned + std::fmt::Debug>(body: Value) -> String {
        read::<T>(&body).expect_err("refused").message().to_string()
    }

    #[test]
    fn mlflow_leniencies_are_accepted() {
        let body = json!({
            "run_uuid": "r1", "key": "loss", "value": "NaN", "timestamp": "17", "step": 3
        });
        let Ok(Request::RunsLogMetric(run, metric)) =
            Request::parse(Endpoint::RunsLogMetric, &body)
        else {
            panic!("log-metric reads")
        };
        assert_eq!(run.as_str(), "r1");
        let point = metric.metric();
        assert!(point.value.is_nan() && point.timestamp == 17 && point.step == 3);
        let both: RunId = read(&json!({"run_id": "a", "run_uuid": "b"})).expect("reads");
        assert_eq!(both.as_str(), "a");
        let version: VersionRef = read(&json!({"name": "m", "version": 2})).expect("reads");
        assert_eq!(version.version.as_str(), "2");
        let body = json!({"experiment_ids": 0, "order_by": null, "max_results": "5"});
        let search: RunsSearch = read(&body).expect("reads");
        assert_eq!(search.experiment_ids, ["0"]);
        assert_eq!(read::<Page>(&body).expect("page").limit(1000), Ok(5));
        let batch: RunsLogBatch =
            read(&json!({"metrics": null, "params": [{"key": "lr", "value": 0.1}]}))
                .expect("reads");
        assert_eq!(
            pairs(&batch.params),
            [("lr".to_string(), "0.1".to_string())]
        );
    }

    #[test]
    fn a_bad_body_names_the_parameter() {
        assert_eq!(
            error::<RunId>(json!({})),
            "Missing value for required parameter 'run_id'"
        );
        assert_eq!(
            error::<ModelRef>(json!({"name": ""})),
            "Missing value for required parameter 'name'"
        );
        assert_eq!(
            error::<RunsLogBatch>(json!({"metrics": [{"key": "a"}]})),
            "Missing value for required parameter 'metrics[0].value'"
        );
        assert!(error::<Metric>(json!({"key": "a", "value": "x"}))
            .contains("'value': must be a number, got 'x'"));
        assert!(error::<RunsUpdate>(json!({"end_time": 1.5}))
            .contains("'end_time': must be a whole number"));
        assert!(error::<Page>(json!({"max_results": "many"}))
            .contains("'max_results': must be a whole number"));
        assert!(
            error::<ReviewsCreate>(json!({"name": "m", "version": "1", "decision": "maybe"}))
                .contains("'decision'")
        );
        assert!(error::<ModelRef>(json!([1, 2])).contains("JSON object"));
    }
}
