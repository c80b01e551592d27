//! Nothing of its own: this package names the crates ferrolab's Rust cells use
//! without `:dep` (its dependencies), so that one cargo build makes all of them.
//! The kernel builds it once per toolchain into `$FERROLAB_HOME`; see
//! `docs/kernel.md`, "Crates ready for cells".
