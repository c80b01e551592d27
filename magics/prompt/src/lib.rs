//! Prompt tests: promptfoo-compatible suites run in the notebook (`%%prompt_test`)
//! and from the terminal (`ferrolab prompt-test`), with the same verdicts as
//! promptfoo for the same config.

pub mod assertion;
pub mod config;
pub mod expected;
pub mod metrics;
pub mod providers;
pub mod run;
pub mod template;
