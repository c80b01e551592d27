//! The tracking store's one error type, in MLflow's terms (`error_code` and a
//! message), so the REST API can answer with it unchanged.

/// An error in MLflow's terms: its error code, and a message that says what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackingError {
    pub code: &'static str,
    pub message: String,
}

impl TrackingError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }
    pub fn missing(message: impl Into<String>) -> Self {
        Self {
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }
    pub fn exists(message: impl Into<String>) -> Self {
        Self {
            code: "RESOURCE_ALREADY_EXISTS",
            message: message.into(),
        }
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self {
            code: "INTERNAL_ERROR",
            message: format!("the tracking store failed: {e}"),
        }
    }
}

impl From<rusqlite::Error> for TrackingError {
    fn from(e: rusqlite::Error) -> Self {
        TrackingError::internal(e)
    }
}

pub type Result<T> = std::result::Result<T, TrackingError>;
