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

impl Identity {
    /// The person behind the token: see [`person_key`].
    pub fn person(&self) -> String {
        person_key(&self.name)
    }
}

/// The stable identity of the person a name denotes: the name without case,
/// surrounding spaces or repeated inner spaces. Token names are limited to
/// ASCII letters, digits and ` .@_-` (so no look-alike letters), which makes
/// this one person per name: `Alice`, `alice` and ` alice ` are the same person,
/// whichever token they use; the governance rules (no self-approval, one vote
/// per reviewer) compare these keys.
pub fn person_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// Whether `name` may name a token: 1 to 64 characters of ASCII letters, digits,
/// spaces and `.@_-`, not only spaces.
pub fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '@' | '_' | '-'))
}
