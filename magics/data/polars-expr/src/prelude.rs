pub use crate::expressions::*;
pub use crate::state::*;
