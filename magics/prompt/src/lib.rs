//! Prompt tests: promptfoo-compatible suites run in the notebook (`%%prompt_test`)
//! and from the terminal (`ferrolab prompt-test`), with the same verdicts as
//! promptfoo for the same config.

pub mod assertion;
pub mod cli;
pub mod config;
pub mod expected;
pub mod magic;
pub mod metrics;
pub mod providers;
pub mod report;
pub mod run;
pub mod runs;
pub mod spec;
pub mod template;
