mod execution_state;
mod node_timer;

pub use execution_state::*;
use node_timer::*;
