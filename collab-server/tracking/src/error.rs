//! The tracking store's one error type. Each kind is one of MLflow's error codes
//! ([`TrackingError::code`]), so the REST API answers with it unchanged; the HTTP
//! layer maps kinds to statuses in one place.

/// What went wrong, with a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackingError {
    /// A request's value is missing or not acceptable (`INVALID_PARAMETER_VALUE`).
    #[error("{0}")]
    InvalidParameter(String),
    /// The run, experiment, model or version does not exist (`RESOURCE_DOES_NOT_EXIST`).
    #[error("{0}")]
    NotFound(String),
    /// It exists already (`RESOURCE_ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller's role, or the promotion policy, does not allow it (`PERMISSION_DENIED`).
    #[error("{0}")]
    PermissionDenied(String),
    /// No valid token (`UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// No such endpoint (`ENDPOINT_NOT_FOUND`).
    #[error("{0}")]
    EndpointNotFound(String),
    /// The request body is not JSON (`MALFORMED_REQUEST`).
    #[error("{0}")]
    MalformedRequest(String),
    /// A limit on what runs at once is reached; try again later (`RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    Busy(String),
    /// The store itself failed (`INTERNAL_ERROR`).
    #[error("{0}")]
    Internal(String),
}

impl TrackingError {
    pub fn invalid(message: impl Into<String>) -> Self {
        TrackingError::InvalidParameter(message.into())
    }

    pub fn missing(message: impl Into<String>) -> Self {
        TrackingError::NotFound(message.into())
    }

    pub fn exists(message: impl Into<String>) -> Self {
        TrackingError::AlreadyExists(message.into())
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        TrackingError::Internal(format!("the tracking store failed: {e}"))
    }

    /// MLflow's `error_code` for it.
    pub fn code(&self) -> &'static str {
        match self {
            TrackingError::InvalidParameter(_) => "INVALID_PARAMETER_VALUE",
            TrackingError::NotFound(_) => "RESOURCE_DOES_NOT_EXIST",
            TrackingError::AlreadyExists(_) => "RESOURCE_ALREADY_EXISTS",
            TrackingError::PermissionDenied(_) => "PERMISSION_DENIED",
            TrackingError::Unauthenticated(_) => "UNAUTHENTICATED",
            TrackingError::EndpointNotFound(_) => "ENDPOINT_NOT_FOUND",
            TrackingError::MalformedRequest(_) => "MALFORMED_REQUEST",
            TrackingError::Busy(_) => "RESOURCE_EXHAUSTED",
            TrackingError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The message, which says what happened and what to do.
    pub fn message(&self) -> &str {
        match self {
            TrackingError::InvalidParameter(m)
            | TrackingError::NotFound(m)
            | TrackingError::AlreadyExists(m)
            | TrackingError::PermissionDenied(m)
            | TrackingError::Unauthenticated(m)
            | TrackingError::EndpointNotFound(m)
            | TrackingError::MalformedRequest(m)
            | TrackingError::Busy(m)
            | TrackingError::Internal(m) => m,
        }
    }
}

impl From<rusqlite::Error> for TrackingError {
    fn from(e: rusqlite::Error) -> Self {
        TrackingError::internal(e)
    }
}

impl From<tokio_postgres::Error> for TrackingError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => TrackingError::Internal(format!("the database refused: {}", db.message())),
            None => TrackingError::Internal(format!("the database connection failed: {e}")),
        }
    }
}

pub type Result<T> = std::result::Result<T, TrackingError>;
