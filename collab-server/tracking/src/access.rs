//! Who is calling, and what their role lets them do. The collaboration server's
//! tokens resolve to an [`Identity`]; the tracking API checks its [`Role`].

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Edits notebooks and creates new ones.
    Editor,
    /// Everything, including deleting notebooks.
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }

    pub fn can_write(self) -> bool {
        self >= Role::Editor
    }
}

/// Who a request is: the token's record.
#[derive(Debug, Clone)]
pub struct Identity {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}
