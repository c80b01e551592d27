// ferrolab addition (PATCHES.md, 2): crates built ahead of time, and cells compiled
// by calling rustc directly once cargo has shown the way.

use crate::errors::Error;
use crate::errors::bail;
use anyhow::Context;
use std::collections::HashMap;
use std::ffi::OsString;
use std::hash::Hash;
use std::hash::Hasher;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

/// Names the prebuilt crates for the rustc wrapper, as JSON.
pub(crate) const PREBUILT_ENV: &str = "EVCXR_PREBUILT";
/// The file the rustc wrapper records the cell crate's final rustc command in.
pub(crate) const RECORD_ENV: &str = "EVCXR_CTX_RECORD";
/// What the recorded command was made for (see [`record_key`]).
pub(crate) const RECORD_KEY_ENV: &str = "EVCXR_CTX_RECORD_KEY";
const RECORD_FILE: &str = ".evcxr-ctx-rustc.json";
/// Where cargo's manifest for the cell crate lives when crates are prebuilt; the
/// crate folder's own `Cargo.toml` then describes the crate for rust-analyzer.
pub(crate) const BUILD_DIR: &str = "build";

/// Crates built once, outside the cell crate, that every cell can name without
/// cargo building them: `--extern` paths to their shared objects, the folders their
/// own dependencies are in, and how rust-analyzer should see them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Prebuilt {
    /// Crate name and the path of its shared object (or rlib for a proc-macro).
    pub externs: Vec<(String, PathBuf)>,
    /// Folders of the prebuilt crates' own dependencies (`-L dependency=`).
    pub lib_dirs: Vec<PathBuf>,
    /// What their build scripts asked to search for native libraries, as `-L`
    /// takes it (`native=/path`): a `-l` a build script named travels in the crate's
    /// metadata to every final link.
    pub link_paths: Vec<String>,
    /// `[dependencies]` lines, one per crate, that describe the same crates to cargo
    /// (for rust-analyzer's view of the cell crate; cargo never builds them).
    pub manifest_dependencies: String,
    /// The lock file the prebuilt crates were built with, so that rust-analyzer
    /// sees the same versions.
    pub lock_file: Option<PathBuf>,
    /// Words that bring a prebuilt crate into rust-analyzer's view, by the crate's
    /// name in `manifest_dependencies` (without a list, the crate's own name does).
    /// Loading a large crate graph into rust-analyzer takes seconds, so a crate
    /// joins only once a cell's code names it.
    pub analysis_words: Vec<(String, Vec<String>)>,
    /// Code every cell gets once a cell has named one of a prelude's words (a crate
    /// that is costly to load, brought into scope only in sessions that use it).
    pub preludes: Vec<Prelude>,
    /// A module of a prebuilt crate that cells use as evcxr's variable store
    /// (same API as `evcxr_internal_runtime.rs`), instead of compiling their own
    /// copy of it every time.
    pub runtime_module: Option<String>,
}

/// A `use` item (and a statement run first) that cells get once the session names
/// one of `words`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Prelude {
    /// Any of these words in a cell turns the prelude on for the rest of the session.
    pub words: Vec<String>,
    /// An item added to every cell's crate (`use some_crate::*;`).
    pub item: String,
    /// A statement run at the start of every cell (empty for none).
    pub statement: String,
}

/// The preludes (by index) whose words `code` names.
pub(crate) fn preludes_named<'a>(
    prebuilt: &'a Prebuilt,
    code: &'a str,
) -> impl Iterator<Item = usize> + 'a {
    let words: std::collections::HashSet<&str> = words_in(code).collect();
    prebuilt
        .preludes
        .iter()
        .enumerate()
        .filter(move |(_, p)| p.words.iter().any(|w| words.contains(w.as_str())))
        .map(|(i, _)| i)
}

fn words_in(code: &str) -> impl Iterator<Item = &str> {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

impl Prebuilt {
    pub(crate) fn to_env(&self) -> String {
        serde_json::json!({
            "externs": self.externs.iter().map(|(name, path)| [name.clone(), path.to_string_lossy().into_owned()]).collect::<Vec<_>>(),
            "lib_dirs": self.lib_dirs.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>(),
            "link_paths": self.link_paths,
        })
        .to_string()
    }
}

/// Adds the prebuilt crates to the cell crate's rustc command (in the wrapper):
/// an `--extern` for each one cargo did not already pass (a crate the user added
/// with `:dep` wins), and their folders.
pub(crate) fn add_to_ctx_command(command: &mut Command) -> anyhow::Result<()> {
    let Ok(json) = std::env::var(PREBUILT_ENV) else {
        return Ok(());
    };
    let value: serde_json::Value =
        serde_json::from_str(&json).with_context(|| format!("{PREBUILT_ENV} is not JSON"))?;
    let passed: Vec<String> = {
        let mut args = command.get_args();
        let mut names = Vec::new();
        while let Some(arg) = args.next() {
            if arg == "--extern"
                && let Some(next) = args.next()
            {
                let next = next.to_string_lossy();
                names.push(next.split('=').next().unwrap_or_default().to_owned());
            }
        }
        names
    };
    if let Some(externs) = value["externs"].as_array() {
        for pair in externs {
            let (Some(name), Some(path)) = (pair[0].as_str(), pair[1].as_str()) else {
                continue;
            };
            if !passed.iter().any(|p| p == name) {
                command.arg("--extern").arg(format!("{name}={path}"));
            }
        }
    }
    if let Some(dirs) = value["lib_dirs"].as_array() {
        for dir in dirs.iter().filter_map(|d| d.as_str()) {
            command.arg("-L").arg(format!("dependency={dir}"));
        }
    }
    if let Some(paths) = value["link_paths"].as_array() {
        for path in paths.iter().filter_map(|d| d.as_str()) {
            command.arg("-L").arg(path);
        }
    }
    Ok(())
}

/// The cell crate's rustc command as cargo ran it, kept so that later cells with
/// the same manifest and settings skip cargo.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    key: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
}

/// Saves the command (in the wrapper) when it builds the cell crate's shared object.
pub(crate) fn record(command: &Command) -> anyhow::Result<()> {
    let (Some(path), Ok(key)) = (std::env::var_os(RECORD_ENV), std::env::var(RECORD_KEY_ENV))
    else {
        return Ok(());
    };
    let links = command
        .get_args()
        .any(|arg| arg.to_string_lossy().starts_with("--emit=") && arg.to_string_lossy().contains("link"));
    if !links {
        return Ok(());
    }
    let record = Record {
        key,
        program: PathBuf::from(command.get_program()),
        args: command.get_args().map(OsString::from).collect(),
        env: std::env::vars_os()
            .filter(|(name, _)| {
                // Not cargo's jobserver: its pipes are gone when the command reruns.
                let name = name.to_string_lossy();
                !name.starts_with("EVCXR_CTX_RECORD")
                    && name != "EVCXR_EXECUTION_SO_PATH"
                    && !name.ends_with("MAKEFLAGS")
            })
            .collect(),
        cwd: std::env::current_dir()?,
    };
    let tmp = PathBuf::from(&path).with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&record)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// What a recorded command is good for: the cargo command that would run now (its
/// environment and arguments) and the build manifest it would read.
pub(crate) fn record_key(cargo: &Command, manifest: &Path) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for arg in cargo.get_args() {
        arg.hash(&mut hasher);
    }
    let mut envs: Vec<_> = cargo.get_envs().collect();
    envs.sort();
    envs.hash(&mut hasher);
    std::fs::read(manifest).unwrap_or_default().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

pub(crate) fn record_path(crate_dir: &Path) -> PathBuf {
    crate_dir.join(RECORD_FILE)
}

/// The recorded command, when it was made for `key`.
pub(crate) fn recorded_command(crate_dir: &Path, key: &str) -> Option<(Command, PathBuf)> {
    let bytes = std::fs::read(record_path(crate_dir)).ok()?;
    let record: Record = serde_json::from_slice(&bytes).ok()?;
    if record.key != key {
        return None;
    }
    let so_path = out_dir(&record.args)?.join(crate::module::ctx_shared_object_name());
    let mut command = Command::new(&record.program);
    command
        .args(&record.args)
        .env_clear()
        .envs(record.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&record.cwd);
    Some((command, so_path))
}

fn out_dir(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--out-dir" {
            return args.next().map(PathBuf::from);
        }
    }
    None
}

/// Runs rustc directly and returns its output the way `run_cargo` would.
pub(crate) fn run(mut command: Command) -> Result<std::process::Output, Error> {
    match command.output() {
        Ok(output) => Ok(output),
        Err(error) => bail!("Error running rustc: {}", error),
    }
}

/// Adds to `analysed` the prebuilt crates `code` names (a crate stays once added,
/// so that rust-analyzer does not reload its project back and forth).
pub(crate) fn note_used(
    prebuilt: &Prebuilt,
    code: &str,
    analysed: &mut std::collections::BTreeSet<String>,
) {
    let words: std::collections::HashSet<&str> = words_in(code).collect();
    for line in prebuilt.manifest_dependencies.lines() {
        let Some(name) = line.split('=').next().map(str::trim) else {
            continue;
        };
        if name.is_empty() || analysed.contains(name) {
            continue;
        }
        let list = prebuilt
            .analysis_words
            .iter()
            .find(|(crate_name, _)| crate_name == name)
            .map(|(_, list)| list);
        let named = match list {
            Some(list) => list.iter().any(|w| words.contains(w.as_str())),
            None => words.contains(name.replace('-', "_").as_str()),
        };
        if named {
            analysed.insert(name.to_owned());
        }
    }
}

/// The manifest rust-analyzer reads: the build manifest with the prebuilt crates
/// named so far added to its dependencies.
pub(crate) fn analysis_manifest(
    build_manifest: &str,
    prebuilt: &Prebuilt,
    analysed: &std::collections::BTreeSet<String>,
) -> String {
    // The build manifest's `[dependencies]` section is last; the prebuilt crates go
    // at its top, so that a `:dep` of the same name replaces them.
    let mut seen: HashMap<String, ()> = HashMap::new();
    let user_lines: Vec<&str> = build_manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    for line in &user_lines {
        if let Some(name) = line.split('=').next() {
            seen.insert(name.trim().to_owned(), ());
        }
    }
    let prebuilt_lines: Vec<&str> = prebuilt
        .manifest_dependencies
        .lines()
        .filter(|l| {
            l.split('=').next().is_some_and(|name| {
                !seen.contains_key(name.trim()) && analysed.contains(name.trim())
            })
        })
        .collect();
    let head = build_manifest.split("[dependencies]").next().unwrap_or_default();
    format!(
        "{}[dependencies]\n{}\n{}\n",
        head,
        prebuilt_lines.join("\n"),
        user_lines.join("\n")
    )
}

/// The build manifest, one folder down: its library is the cell crate's `src/lib.rs`.
pub(crate) fn build_manifest(manifest: &str) -> String {
    manifest.replace("path = \"src/lib.rs\"", "path = \"../src/lib.rs\"")
}


/// ferrolab: one step of a `:dep` build, for a progress display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildStep {
    /// The crate cargo has started on.
    pub crate_name: String,
    /// Crates finished so far (built, found built, or taken from the cache).
    pub done: usize,
    /// About how many the build has (packages in its lock file), 0 if not known yet.
    pub total: usize,
}

/// Called with each step of a `:dep` build.
#[derive(Clone)]
pub struct BuildProgress(pub std::sync::Arc<dyn Fn(&BuildStep) + Send + Sync>);

impl std::fmt::Debug for BuildProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuildProgress")
    }
}

/// Packages in a lock file, less the cell crate itself.
pub(crate) fn packages_in_lock(lock: &Path) -> usize {
    std::fs::read_to_string(lock)
        .map(|text| {
            text.lines()
                .filter(|line| line.trim() == "[[package]]")
                .count()
                .saturating_sub(1)
        })
        .unwrap_or(0)
}
