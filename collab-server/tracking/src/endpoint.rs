//! The endpoints of the tracking API: MLflow's paths (and ferrolab's governance
//! paths under `ferrolab/`), parsed once, and who may call each.

use crate::access::Role;
use crate::store::TrackingError;

/// Where MLflow's endpoints live on a tracking server.
pub const PREFIX: &str = "/api/2.0/mlflow";
/// Where ferrolab's governance endpoints live.
pub const FERROLAB_PREFIX: &str = "/api/2.0/ferrolab";

/// Declares [`Endpoint`] from one list of variants and their paths (under
/// [`PREFIX`], or under [`FERROLAB_PREFIX`] for those starting `ferrolab/`).
macro_rules! endpoints {
    ($($(#[$doc:meta])* $variant:ident = $path:literal,)*) => {
        /// Every endpoint the tracking API answers, parsed once from its path.
        /// Who may call each ([`Endpoint::required_role`]), its request's body
        /// ([`crate::request::Request::parse`]) and which run it changes
        /// ([`crate::request::Request::run_effect`])
        /// are exhaustive matches, so an endpoint cannot be added without saying
        /// all three.
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
}
