//! Rust cells through evcxr: warm-up in the background, live output relay, and
//! errors that say what happened and what state was lost.

use crate::iopub::KernelOutput;
use crate::prelude::{self, Event};
use crossbeam_channel::{Receiver, Select};
use evcxr::{CommandContext, EvalCallbacks, EvalOutputs};
use ferrolab_magics::lock;
use ferrolab_magics::{MagicError, MimeBundle, Output, Stream};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The user's "stop" button, shared by the control channel and the executor.
#[derive(Default)]
pub struct Interrupt {
    requested: AtomicBool,
    /// The evaluation process, while a Rust cell is running in it.
    running: Mutex<Option<Arc<Mutex<Child>>>>,
}

impl Interrupt {
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Some(process) = lock(&self.running).as_ref() {
            if let Err(e) = lock(process).kill() {
                log::warn!("could not stop the evaluation process: {e}");
            }
        }
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.requested.store(false, Ordering::SeqCst);
    }

    fn set_running(&self, process: Option<Arc<Mutex<Child>>>) {
        *lock(&self.running) = process;
    }

    /// Kills the evaluation process, if one is known (at shutdown).
    pub fn kill_process(&self) {
        if let Some(process) = lock(&self.running).as_ref() {
            let _ = lock(process).kill();
        }
    }
}

/// Shared between the executor and the relay thread.
#[derive(Default)]
struct Relay {
    target: Mutex<Option<KernelOutput>>,
    panic: Mutex<Option<Panic>>,
    /// Held while a batch of lines is being forwarded.
    forwarding: Mutex<()>,
    /// The display showing a `:dep` build, while one runs.
    build: Mutex<Option<BuildDisplay>>,
}

struct BuildDisplay {
    display: ferrolab_magics::Display,
    started: Instant,
    shown: Instant,
    last: evcxr::BuildStep,
}

impl Relay {
    /// Shows (at most a few times a second) what cargo is building for a `:dep`.
    fn build_step(&self, step: &evcxr::BuildStep) {
        let Some(mut out) = lock(&self.target).clone() else {
            return;
        };
        let mut build = lock(&self.build);
        let line = MimeBundle::text(format!(
            "building for :dep: {} ({} of about {} crates done)",
            step.crate_name,
            step.done,
            step.total.max(step.done + 1)
        ));
        match build.as_mut() {
            Some(shown) => {
                shown.last = step.clone();
                if shown.shown.elapsed() >= Duration::from_millis(250) {
                    shown.display.update(&mut out, line);
                    shown.shown = Instant::now();
                }
            }
            None => {
                *build = Some(BuildDisplay {
                    display: ferrolab_magics::Display::show(&mut out, line),
                    started: Instant::now(),
                    shown: Instant::now(),
                    last: step.clone(),
                });
            }
        }
    }

    /// Replaces the build's progress with what it did, once the cell has compiled.
    fn finish_build(&self, out: &KernelOutput) {
        let Some(build) = lock(&self.build).take() else {
            return;
        };
        let crates = build.last.total.max(build.last.done + 1);
        build.display.update(
            &mut out.clone(),
            MimeBundle::text(format!(
                ":dep: about {crates} crates ready in {:.1} s",
                build.started.elapsed().as_secs_f64()
            )),
        );
    }
}

struct Panic {
    location: String,
    message: String,
    backtrace: String,
}

struct Ready {
    context: CommandContext,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Said once, on the first Rust cell's stderr (why the cell API is missing).
    notice: Option<String>,
    /// Whether cells link the cell API (`ferrolab_cell`) and the prebuilt crates.
    cell_api: bool,
}

/// What the warm-up thread reports.
enum Start {
    /// A line about building the crates for cells.
    Progress(String),
    Done(Result<Box<Ready>, String>),
}

enum State {
    Starting(std::sync::mpsc::Receiver<Start>),
    Ready(Box<Ready>),
    Failed(String),
}

/// The evcxr evaluation context, started in the background.
pub struct Evaluator {
    state: State,
    /// Warm-up statements run only while the kernel is idle (see `idle_work`).
    idle: std::collections::VecDeque<&'static str>,
    display: prelude::DisplayMode,
    relay: Arc<Relay>,
    interrupt: Arc<Interrupt>,
}

impl Evaluator {
    /// Starts evcxr on a background thread; the first Rust cell waits for it.
    /// `cell_env` is what the evaluation process needs to reach the kernel's cell
    /// calls ([`crate::cell_calls`]).
    pub fn start(interrupt: Arc<Interrupt>, cell_env: Vec<(String, OsString)>) -> Evaluator {
        let relay = Arc::new(Relay::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let relay_for_thread = relay.clone();
        let spawned = std::thread::Builder::new()
            .name("evcxr-warm-up".into())
            .spawn(move || {
                let progress = tx.clone();
                let ready = warm_up(relay_for_thread, &cell_env, &mut |line| {
                    let _ = progress.send(Start::Progress(line));
                });
                let _ = tx.send(Start::Done(ready.map(Box::new)));
            });
        let state = match spawned {
            Ok(_) => State::Starting(rx),
            Err(e) => State::Failed(format!("could not start a thread for evcxr: {e}")),
        };
        Evaluator {
            state,
            idle: prelude::WARM_UP_VARIABLE.into_iter().collect(),
            display: prelude::DisplayMode::default(),
            relay,
            interrupt,
        }
    }

    /// True once evcxr is ready (completions and inspection do not wait for it).
    pub fn is_ready(&mut self) -> bool {
        while let State::Starting(rx) = &self.state {
            match rx.try_recv() {
                Ok(Start::Progress(_)) => continue, // nobody is waiting to see it
                Ok(Start::Done(result)) => self.settle_start(result),
                Err(std::sync::mpsc::TryRecvError::Empty) => return false,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.settle_start(Err("the warm-up thread stopped".into()))
                }
            }
        }
        matches!(self.state, State::Ready(_))
    }

    /// True while evcxr is still starting in the background.
    pub fn is_starting(&mut self) -> bool {
        !self.is_ready() && matches!(self.state, State::Starting(_))
    }

    /// True when there is warm-up left to do while nobody waits.
    pub fn has_idle_work(&mut self) -> bool {
        !self.idle.is_empty() && self.is_ready()
    }

    /// Runs the idle warm-up. The first cell that defines a variable makes
    /// rust-analyzer load the standard library's types (seconds); doing it while the
    /// user is still typing saves that wait. The statements run back to back, so no
    /// cell ever sees the warm-up variable (moving the value out removes it).
    pub fn idle_work(&mut self) {
        let State::Ready(ready) = &mut self.state else {
            return;
        };
        while let Some(statement) = self.idle.pop_front() {
            if let Err(e) = ready.context.execute(statement) {
                log::info!("idle warm-up step failed (harmless): {e}");
            }
        }
        settle(&self.relay, &ready.stdout, &ready.stderr);
    }

    fn settle_start(&mut self, result: Result<Box<Ready>, String>) {
        self.state = match result {
            Ok(ready) => State::Ready(ready),
            Err(e) => State::Failed(e),
        };
    }

    /// Waits for evcxr, showing in `out` how the build of the cell crates goes.
    fn ready(&mut self, out: &KernelOutput) -> Result<&mut Ready, MagicError> {
        let mut shown: Option<ferrolab_magics::Display> = None;
        while let State::Starting(rx) = &self.state {
            match rx.recv() {
                Ok(Start::Progress(line)) => {
                    let bundle = MimeBundle::text(line);
                    let mut out = out.clone();
                    match &shown {
                        Some(display) => display.update(&mut out, bundle),
                        None => shown = Some(ferrolab_magics::Display::show(&mut out, bundle)),
                    }
                }
                Ok(Start::Done(result)) => self.settle_start(result),
                Err(_) => self.settle_start(Err("the warm-up thread stopped".into())),
            }
        }
        if shown.is_some() {
            out.clone().clear(true);
        }
        match &mut self.state {
            State::Ready(ready) => Ok(ready),
            State::Failed(why) => Err(MagicError::new(
                "EvaluatorUnavailable",
                format!(
                    "Rust cells cannot run: {why}. Magics still work. Check that `cargo` and \
                     `rustc` are on the kernel's PATH, then restart the kernel."
                ),
            )),
            State::Starting(_) => unreachable!("settled above"),
        }
    }

    /// Runs Rust code (and evcxr `:` commands), streaming its output to `out`.
    pub fn run(
        &mut self,
        code: &str,
        out: &KernelOutput,
        input: &dyn Fn(&str, bool) -> String,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let relay = self.relay.clone();
        let interrupt = self.interrupt.clone();
        let ready = self.ready(out)?;
        if let Some(notice) = ready.notice.take() {
            out.clone().stream(Stream::Stderr, &notice);
        }
        *lock(&relay.target) = Some(out.clone());
        *lock(&relay.panic) = None;
        let before = variables(&ready.context);
        interrupt.set_running(Some(ready.context.process_handle()));
        let result = ready.context.execute_with_callbacks(
            code,
            &mut EvalCallbacks {
                input_reader: &|request| answer_input(&request.prompt, request.is_password, input),
            },
        );
        interrupt.set_running(None);
        relay.finish_build(out);
        settle(&relay, &ready.stdout, &ready.stderr);
        *lock(&relay.target) = None;
        let panic = lock(&relay.panic).take();
        let after = variables(&ready.context);
        let lost: Vec<String> = before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .cloned()
            .collect();
        match result {
            Ok(outputs) => match panic {
                Some(panic) => Err(panic_error(&panic, &lost)),
                None => {
                    if let Some(line) = timing_line(&outputs) {
                        out.clone().stream(Stream::Stdout, &line);
                    }
                    self.follow_display_commands(code, out);
                    Ok(bundle(outputs))
                }
            },
            Err(evcxr::Error::CompilationErrors(errors)) => Err(compile_error(&errors, code)),
            Err(evcxr::Error::SubprocessTerminated(status)) => {
                // evcxr has started a fresh process; give it the panic reporter again.
                if ready.cell_api {
                    if let Err(e) = ready.context.execute(prelude::START_CELL_API) {
                        log::warn!("could not reinstall the panic reporter: {e}");
                    }
                }
                Err(process_lost_error(interrupt.requested(), &status, &before))
            }
            Err(evcxr::Error::TypeRedefinedVariablesLost(names)) => Err(MagicError::new(
                "VariablesLost",
                format!(
                    "a type was redefined, so these variables of the old type were dropped: {} \
                     (re-run the cells that create them)",
                    names.join(", ")
                ),
            )),
            Err(evcxr::Error::Message(message)) => {
                if interrupt.requested() {
                    Err(MagicError::new("Interrupted", "the cell was interrupted"))
                } else {
                    Err(MagicError::new("Error", message))
                }
            }
        }
    }

    /// Keeps the prelude's value display in step with evcxr's `:fmt` and `:types`.
    fn follow_display_commands(&mut self, code: &str, out: &KernelOutput) {
        let before = self.display.clone();
        let unsupported = self.display.apply_commands(code);
        for format in unsupported {
            out.clone().stream(
                Stream::Stderr,
                &format!(
                    "ferrolab shows cell values with {{:?}} or {{:#?}}; `:fmt {format}` applies \
                     only to values whose type has no Debug implementation\n"
                ),
            );
        }
        if self.display == before {
            return;
        }
        let value = self.display.value();
        // Future evaluation processes inherit it from the kernel...
        std::env::set_var(prelude::DISPLAY_VAR, &value);
        // ...and the running one is told now.
        if let State::Ready(ready) = &mut self.state {
            let statement = format!(
                "unsafe {{ std::env::set_var({:?}, {:?}); }}",
                prelude::DISPLAY_VAR,
                value
            );
            if let Err(e) = ready.context.execute(&statement) {
                log::warn!("could not update the value display: {e}");
            }
        }
    }

    /// Completions at `cursor` (a byte offset): (matches, start, end) in bytes.
    pub fn complete(&mut self, code: &str, cursor: usize) -> Option<(Vec<String>, usize, usize)> {
        if !self.is_ready() {
            return None;
        }
        let State::Ready(ready) = &mut self.state else {
            return None;
        };
        let completions = ready.context.completions(code, cursor).ok()?;
        let matches = completions
            .completions
            .into_iter()
            .map(|c| c.code)
            .collect();
        Some((matches, completions.start_offset, completions.end_offset))
    }

    /// Hover documentation at `cursor` (a byte offset): (plain text, HTML).
    pub fn inspect(&mut self, code: &str, cursor: usize) -> Option<(String, String)> {
        if !self.is_ready() {
            return None;
        }
        let State::Ready(ready) = &mut self.state else {
            return None;
        };
        ready.context.hover_at(code, cursor).ok()
    }
}

fn warm_up(
    relay: Arc<Relay>,
    cell_env: &[(String, OsString)],
    progress: &mut dyn FnMut(String),
) -> Result<Ready, String> {
    let crates = cell_crates(progress);
    let mut env = cell_env.to_vec();
    if let Ok((prebuilt, _)) = &crates {
        // The prebuilt shared objects find each other (and the standard library's)
        // through the evaluation process's library path.
        let mut path = std::env::join_paths(&prebuilt.lib_dirs).unwrap_or_default();
        if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
            path.push(":");
            path.push(existing);
        }
        env.push(("LD_LIBRARY_PATH".to_string(), path));
    }
    let (eval_context, outputs) =
        evcxr::EvalContext::with_runtime_env(&env).map_err(|e| e.to_string())?;
    let mut context = CommandContext::with_eval_context(eval_context);
    let steps = relay.clone();
    context.set_build_progress(Some(evcxr::BuildProgress(Arc::new(move |step| {
        steps.build_step(step)
    }))));
    spawn_relay(relay, outputs.stdout.clone(), outputs.stderr.clone())?;
    // Fast builds of small cells matter more than fast code; `:opt 2` restores
    // evcxr's default, and the user's own config (loaded next) may set it.
    context.set_opt_level("0").map_err(|e| e.to_string())?;
    if let Err(e) = context.execute(":load_config --quiet") {
        log::warn!("could not load the evcxr config: {e}");
    }
    let notice = match crates {
        Ok((prebuilt, dep_cache)) => {
            context.set_prebuilt(Some(prebuilt));
            context.set_dep_cache(dep_cache, dep_cache_bytes());
            match context.execute(prelude::START_CELL_API) {
                Ok(_) => None,
                Err(e) => {
                    context.set_prebuilt(None);
                    Some(format!("the cell API did not load: {e}"))
                }
            }
        }
        Err(why) => Some(why),
    };
    let notice = notice.map(|why| {
        log::warn!("Rust cells run without the cell API: {why}");
        format!(
            "ferrolab: Rust cells run without the cell API (table, display, generate, …) and \
             the prebuilt crates: {why}\nRun `ferrolab kernel prepare` in a terminal to see \
             the build, then restart the kernel.\n"
        )
    });
    Ok(Ready {
        context,
        stdout: outputs.stdout,
        stderr: outputs.stderr,
        cell_api: notice.is_none(),
        notice,
    })
}

/// The crates cells link: ready, or built now with progress reported (once per
/// machine and toolchain), and the folder of the cache `:dep` builds share.
/// `FERROLAB_CELL_CRATES=off` runs cells without them.
fn cell_crates(
    progress: &mut dyn FnMut(String),
) -> Result<(evcxr::Prebuilt, std::path::PathBuf), String> {
    if std::env::var("FERROLAB_CELL_CRATES").is_ok_and(|v| v == "off") {
        return Err("FERROLAB_CELL_CRATES is off".into());
    }
    let crates = crate::cell_crates::CellCrates::locate(&crate::home())?;
    let dep_cache = crates.dep_cache_dir();
    if let Some(prebuilt) = crates.ready() {
        return Ok((prebuilt, dep_cache));
    }
    let mut last = Instant::now() - Duration::from_secs(1);
    let prebuilt = crates.build(&mut |step| {
        if last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            progress(step.line());
        }
    })?;
    Ok((prebuilt, dep_cache))
}

/// How much the shared `:dep` cache keeps: `FERROLAB_DEP_CACHE_MB`, 4 GiB unless
/// set (0 turns it off; evcxr's `:cache` changes it for one kernel).
fn dep_cache_bytes() -> u64 {
    let mb = match std::env::var("FERROLAB_DEP_CACHE_MB") {
        Ok(value) => value.trim().parse::<u64>().unwrap_or_else(|_| {
            log::warn!("FERROLAB_DEP_CACHE_MB={value:?} is not a number of MiB; using 4096");
            4096
        }),
        Err(_) => 4096,
    };
    mb.saturating_mul(1024 * 1024)
}

fn variables(context: &CommandContext) -> BTreeMap<String, String> {
    context
        .variables_and_types()
        .map(|(name, ty)| (name.to_string(), ty.to_string()))
        .collect()
}

fn answer_input(prompt: &str, is_password: bool, input: &dyn Fn(&str, bool) -> String) -> String {
    match prelude::decode_prompt(prompt) {
        Some(prompt) => prelude::encode_answer(&input(&prompt, is_password)),
        None => {
            // evcxr_input's own protocol: one line, no way to say "no stdin".
            let answer = input(prompt, is_password);
            if answer == prelude::NO_STDIN {
                String::new()
            } else {
                answer.replace(['\n', '\r'], " ")
            }
        }
    }
}

/// Forwards the evaluation process's stdout and stderr to the current cell, one
/// message per burst of lines, as they arrive.
fn spawn_relay(
    relay: Arc<Relay>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("output-relay".into())
        .spawn(move || {
            let mut select = Select::new();
            let out_index = select.recv(&stdout);
            let err_index = select.recv(&stderr);
            let mut open = 2;
            while open > 0 {
                let op = select.select();
                let index = op.index();
                let (receiver, stream) = if index == out_index {
                    (&stdout, Stream::Stdout)
                } else if index == err_index {
                    (&stderr, Stream::Stderr)
                } else {
                    continue;
                };
                let Ok(first) = op.recv(receiver) else {
                    select.remove(index);
                    open -= 1;
                    continue;
                };
                let _forwarding = lock(&relay.forwarding);
                let mut lines = vec![first];
                // Coalesce a burst into one message; 256 lines keeps messages small.
                while lines.len() < 256 {
                    match receiver.try_recv() {
                        Ok(line) => lines.push(line),
                        Err(_) => break,
                    }
                }
                forward(&relay, stream, lines);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("could not start the output relay: {e}"))
}

fn forward(relay: &Relay, stream: Stream, lines: Vec<String>) {
    let mut target = lock(&relay.target).clone();
    let mut text = String::new();
    for line in lines {
        if stream == Stream::Stdout {
            if let Some(event) = prelude::decode(&line) {
                if let Some(out) = target.as_mut() {
                    out.stream(stream, &std::mem::take(&mut text));
                }
                match event {
                    Event::Display { id, mime, data } => {
                        if let Some(out) = target.as_mut() {
                            out.display(with_plain(mime, data), Some(&id));
                        }
                    }
                    Event::Update { id, mime, data } => {
                        if let Some(out) = target.as_mut() {
                            out.update_display(with_plain(mime, data), &id);
                        }
                    }
                    Event::Clear { wait } => {
                        if let Some(out) = target.as_mut() {
                            out.clear(wait);
                        }
                    }
                    Event::Panic {
                        location,
                        message,
                        backtrace,
                    } => {
                        *lock(&relay.panic) = Some(Panic {
                            location,
                            message,
                            backtrace,
                        });
                    }
                }
                continue;
            }
        }
        text.push_str(&line);
        text.push('\n');
    }
    match target.as_mut() {
        Some(out) => out.stream(stream, &text),
        None if !text.is_empty() => log::debug!("output outside any cell: {text}"),
        None => {}
    }
}

fn with_plain(mime: String, data: Value) -> MimeBundle {
    let bundle = MimeBundle::default().with(&mime, data.clone());
    if mime == "text/plain" {
        bundle
    } else {
        // Consoles and exporters need a text form; text/markdown is readable as is.
        let plain = match (&mime[..], &data) {
            ("text/markdown" | "text/latex", Value::String(s)) => s.clone(),
            _ => format!("[{mime}]"),
        };
        bundle.with("text/plain", plain)
    }
}

/// Waits until every line the evaluation process wrote has been forwarded.
fn settle(relay: &Relay, stdout: &Receiver<String>, stderr: &Receiver<String>) {
    // evcxr reads stderr on its own thread, so a line may still be in flight when
    // the cell returns; give it a moment to land, bounded.
    for _ in 0..2 {
        let mut waited = 0;
        while !(stdout.is_empty() && stderr.is_empty()) && waited < 2000 {
            std::thread::sleep(Duration::from_millis(1));
            waited += 1;
        }
        drop(lock(&relay.forwarding));
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(lock(&relay.forwarding));
}

/// What `:timing` asks for: the cell's total time and evcxr's phases.
fn timing_line(outputs: &EvalOutputs) -> Option<String> {
    let total = outputs.timing?;
    if outputs.phases.is_empty() {
        return None;
    }
    let phases: Vec<String> = outputs
        .phases
        .iter()
        .map(|p| format!("{} {} ms", p.name, p.duration.as_millis()))
        .collect();
    Some(format!(
        "Took {} ms ({})\n",
        total.as_millis(),
        phases.join(", ")
    ))
}

fn bundle(outputs: EvalOutputs) -> Option<MimeBundle> {
    if outputs.content_by_mime_type.is_empty() {
        return None;
    }
    // A cell whose value is `()` has no result to show (as IPython shows nothing
    // for `None`), not `Out[1]: ()`.
    if outputs.content_by_mime_type.len() == 1
        && outputs
            .content_by_mime_type
            .get("text/plain")
            .is_some_and(|text| text.trim() == "()")
    {
        return None;
    }
    let mut bundle = MimeBundle::default();
    for (mime, content) in outputs.content_by_mime_type {
        let value = if mime.ends_with("json") {
            serde_json::from_str(&content).unwrap_or(Value::from(content))
        } else {
            Value::from(content)
        };
        bundle = bundle.with(&mime, value);
    }
    if bundle.get("text/plain").is_none() {
        let mimes: Vec<String> = bundle.data.keys().cloned().collect();
        bundle = bundle.with("text/plain", format!("[{}]", mimes.join(", ")));
    }
    Some(bundle)
}

fn compile_error(errors: &[evcxr::CompilationError], source: &str) -> MagicError {
    let mut traceback = Vec::new();
    let mut messages = Vec::new();
    for error in errors {
        messages.push(error.message());
        if error.is_from_user_code() {
            let file_name = "cell".to_string();
            if let Some(report) =
                error.build_report(file_name.clone(), source.to_string(), evcxr::Theme::Light)
            {
                let mut rendered = Vec::new();
                if report
                    .write(ariadne::sources([(file_name, source)]), &mut rendered)
                    .is_ok()
                {
                    traceback.extend(
                        String::from_utf8_lossy(&rendered)
                            .lines()
                            .map(str::to_string),
                    );
                    continue;
                }
            }
            for spanned in error.spanned_messages() {
                traceback.extend(spanned.lines.iter().cloned());
                traceback.push(spanned.label.clone());
            }
            traceback.push(error.message());
            traceback.extend(error.help().into_iter().map(|h| format!("help: {h}")));
        } else {
            traceback.push(error.message());
        }
    }
    let evalue = messages.first().cloned().unwrap_or_default();
    MagicError {
        ename: "CompileError".into(),
        evalue,
        traceback,
    }
}

/// The backtrace frames that belong to the cell: those between the panic machinery
/// and evcxr's `catch_unwind` around the cell.
fn user_frames(backtrace: &str) -> Vec<String> {
    if backtrace.trim().is_empty() {
        return Vec::new();
    }
    let mut frames = vec!["stack backtrace:".to_string()];
    let mut started = false;
    for line in backtrace.lines() {
        let frame = line.trim_start();
        let is_header = frame
            .split(':')
            .next()
            .is_some_and(|n| n.trim().parse::<u32>().is_ok());
        if is_header && (frame.contains("catch_unwind") || frame.contains("__rust_try")) {
            break;
        }
        if is_header
            && !started
            && (frame.contains("rust_begin_unwind")
                || frame.contains("core::panicking")
                || frame.contains("std::panicking")
                || frame.contains("PanicHookInfo")
                || frame.contains("__ferrolab_install_panic_hook"))
        {
            continue;
        }
        if is_header {
            started = true;
        }
        if started {
            frames.push(line.to_string());
        }
    }
    frames
}

fn lost_sentence(names: &[String]) -> String {
    if names.is_empty() {
        "No variables were lost.".to_string()
    } else {
        format!("Variables lost: {}.", names.join(", "))
    }
}

fn panic_error(panic: &Panic, lost: &[String]) -> MagicError {
    let evalue = panic.message.clone();
    let mut traceback = vec![
        format!("thread panicked at {}:", panic.location),
        panic.message.clone(),
    ];
    traceback.extend(user_frames(&panic.backtrace));
    traceback.push(lost_sentence(lost));
    MagicError {
        ename: "Panic".into(),
        evalue,
        traceback,
    }
}

fn process_lost_error(
    interrupted: bool,
    status: &str,
    before: &BTreeMap<String, String>,
) -> MagicError {
    let names: Vec<String> = before.keys().cloned().collect();
    let (ename, what) = if interrupted {
        (
            "Interrupted",
            "The cell was interrupted: the process that runs Rust code was stopped.".to_string(),
        )
    } else {
        (
            "EvaluationProcessCrashed",
            format!(
                "The process that runs Rust code stopped unexpectedly ({}).",
                status.trim().lines().last().unwrap_or("no exit status")
            ),
        )
    };
    let traceback = vec![
        what.clone(),
        lost_sentence(&names),
        "Functions, types, `use` items and `:dep` dependencies are kept; re-run the cells \
         that create the variables you need."
            .to_string(),
    ];
    MagicError {
        ename: ename.into(),
        evalue: format!("{what} {}", lost_sentence(&names)),
        traceback,
    }
}
