//! The crates Rust cells use without building them: `ferrolab-cell` (the cell API),
//! `ferrolab-cell-tables` (the notebook's tables, with polars), serde, serde_json,
//! chrono, rand, itertools and ureq (the list is `kernel/cell/crates/Cargo.toml`),
//! built once per toolchain into `$FERROLAB_HOME/cells/<key>/` and shared by every
//! kernel on the machine. The two cell API crates are shared objects (every cell
//! links the small first one; the second, with polars inside, only cells that use
//! tables or polars); the others are rlibs a cell links what it uses of.
//!
//! `make up` (`ferrolab kernel prepare`) builds them; a kernel that finds them
//! missing, or built from another version of the cell crate, builds them before its
//! first Rust cell, showing its progress there. The folder's key is the compiler's
//! (`rustc -vV`), so a new toolchain gets a fresh folder, while a changed cell API or
//! crate list rebuilds only what changed.

use ring::digest;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The cell API crates' manifests and sources, as built into this binary, by their
/// paths under the build's workspace (as in the repository's `kernel/`).
const SOURCES: &[(&str, &str)] = &[
    ("cell/Cargo.toml", include_str!("../cell/Cargo.toml")),
    ("cell/src/lib.rs", include_str!("../cell/src/lib.rs")),
    (
        "cell/src/channel.rs",
        include_str!("../cell/src/channel.rs"),
    ),
    ("cell/src/model.rs", include_str!("../cell/src/model.rs")),
    ("cell/src/output.rs", include_str!("../cell/src/output.rs")),
    (
        "cell/src/runtime.rs",
        include_str!("../cell/src/runtime.rs"),
    ),
    ("cell/src/track.rs", include_str!("../cell/src/track.rs")),
    ("cell/src/value.rs", include_str!("../cell/src/value.rs")),
    (
        "cell/tables/Cargo.toml",
        include_str!("../cell/tables/Cargo.toml"),
    ),
    (
        "cell/tables/src/lib.rs",
        include_str!("../cell/tables/src/lib.rs"),
    ),
    (
        "cell/crates/Cargo.toml",
        include_str!("../cell/crates/Cargo.toml"),
    ),
    (
        "cell/crates/src/lib.rs",
        include_str!("../cell/crates/src/lib.rs"),
    ),
];

/// The build's workspace: the three packages, as in the repository.
const WORKSPACE: &str =
    "[workspace]\nmembers = [\"cell\", \"cell/tables\", \"cell/crates\"]\nresolver = \"2\"\n";

/// The crates every cell links as shared objects (one copy of their state per
/// process): the cell API, and the tables with polars inside.
const SHARED: &[&str] = &["ferrolab-cell", "ferrolab-cell-tables"];

/// The versions ferrolab itself is built and tested with; cargo keeps what the
/// cell crates need of it, so cells get the polars the data magics use.
const LOCK: &str = include_str!("../../Cargo.lock");

/// Which crates cells find in scope without `:dep` (in `docs/kernel.md`).
pub const CRATES: &[&str] = &[
    "ferrolab_cell",
    "ferrolab_cell_tables",
    "polars",
    "serde",
    "serde_json",
    "chrono",
    "rand",
    "itertools",
    "ureq",
];

const READY_FILE: &str = "prebuilt.json";

/// One step of a build, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Crates built (or found built) so far.
    pub done: usize,
    /// About how many there are (packages in the dependency graph).
    pub total: usize,
    /// The crate just finished.
    pub current: String,
}

impl Progress {
    /// One line: `37 of about 310 crates built (polars-core)`.
    pub fn line(&self) -> String {
        format!(
            "building the crates Rust cells use (once per machine): {} of about {} ({})",
            self.done, self.total, self.current
        )
    }
}

/// The prepared crates' folder for the compiler on the PATH.
pub struct CellCrates {
    dir: PathBuf,
    /// The compiler's host target (from the same `rustc -vV` that names the folder).
    host: String,
}

impl CellCrates {
    /// The folder for this toolchain under `home` (`$FERROLAB_HOME`).
    pub fn locate(home: &Path) -> Result<CellCrates, String> {
        let version = std::process::Command::new("rustc")
            .arg("-vV")
            .output()
            .map_err(|e| format!("could not run `rustc -vV` ({e}); is Rust installed?"))?;
        if !version.status.success() {
            return Err(format!(
                "`rustc -vV` failed: {}",
                String::from_utf8_lossy(&version.stderr).trim()
            ));
        }
        let host = String::from_utf8_lossy(&version.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .map(str::to_string)
            .ok_or("`rustc -vV` named no host")?;
        let key = short_digest(&[&version.stdout]);
        Ok(CellCrates {
            dir: home.join("cells").join(key),
            host,
        })
    }

    /// Where `:dep` crates built by any kernel are kept for the others (evcxr's
    /// compilation cache, one per toolchain like the prepared crates).
    /// `FERROLAB_DEP_CACHE_DIR` puts it elsewhere (a larger disk, a test's folder).
    pub fn dep_cache_dir(&self) -> PathBuf {
        match std::env::var_os("FERROLAB_DEP_CACHE_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => self.dir.join("dep-cache"),
        }
    }

    /// Where this toolchain's crates live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The build's workspace folder.
    fn sources_dir(&self) -> PathBuf {
        self.dir.join("sources")
    }

    /// The prepared crates, when a build finished for this toolchain and this
    /// version of the cell API.
    pub fn ready(&self) -> Option<evcxr::Prebuilt> {
        let bytes = std::fs::read(self.dir.join(READY_FILE)).ok()?;
        let value: Value = serde_json::from_slice(&bytes).ok()?;
        if value["sources"].as_str() != Some(&sources_digest()) {
            return None; // built from another version of the cell API
        }
        let prebuilt = from_json(&value)?;
        prebuilt
            .externs
            .iter()
            .all(|(_, path)| path.exists())
            .then_some(prebuilt)
    }

    /// Builds the crates (cargo does only what changed), reporting progress, and
    /// records what cells need to link them.
    pub fn build(&self, progress: &mut dyn FnMut(&Progress)) -> Result<evcxr::Prebuilt, String> {
        let sources = self.sources_dir();
        // Before the cell API was split in two, its one crate lived here.
        let _ = std::fs::remove_dir_all(self.dir.join("ferrolab-cell"));
        for (path, text) in SOURCES {
            let is_shared = *path == "cell/Cargo.toml" || *path == "cell/tables/Cargo.toml";
            let text = if is_shared {
                // One shared object per crate, holding every crate below it that no
                // other shared object holds (those are rlibs), so that a cell links
                // two libraries, not hundreds.
                format!("{text}\n[lib]\ncrate-type = [\"dylib\"]\n")
            } else {
                text.to_string()
            };
            write_if_changed(&sources.join(path), &text)?;
        }
        write_if_changed(&sources.join("Cargo.toml"), WORKSPACE)?;
        let lock = sources.join("Cargo.lock");
        if !lock.exists() {
            write_if_changed(&lock, LOCK)?;
        }
        let manifest = sources.join("cell/crates/Cargo.toml");
        let metadata = cargo_metadata(&manifest)?;
        let total = metadata["packages"].as_array().map_or(0, Vec::len);

        let target = self.dir.join("target");
        let host = &self.host;
        let std_dir = std_library_dir()?;
        let mut command = std::process::Command::new("cargo");
        command
            .args(["build", "--manifest-path"])
            .arg(&manifest)
            .args(["--target", host, "--message-format=json-render-diagnostics"])
            .env("CARGO_TARGET_DIR", &target)
            .env("CARGO_BUILD_BUILD_DIR", &target)
            // Everything links the standard library as a shared object, as cells do.
            .env("RUSTFLAGS", "-Cprefer-dynamic")
            // Proc-macros linked that way need it when rustc loads them.
            .env("LD_LIBRARY_PATH", &std_dir)
            // Optimised (a cell's polars at opt-level 0 would be many times slower),
            // unwinding panics, no debug info: as evcxr builds a cell's dependencies.
            .env("CARGO_PROFILE_DEV_OPT_LEVEL", "2")
            .env("CARGO_PROFILE_DEV_DEBUG", "false")
            .env("CARGO_PROFILE_DEV_DEBUG_ASSERTIONS", "false")
            .env("CARGO_PROFILE_DEV_OVERFLOW_CHECKS", "false")
            .env("CARGO_PROFILE_DEV_INCREMENTAL", "false");
        let deps_dirs = vec![
            target.join(host).join("debug").join("deps"),
            target.join("debug").join("deps"),
        ];
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run cargo: {e}"))?;
        let stderr = child.stderr.take();
        let stderr_thread = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_string(&mut text);
            }
            text
        });
        let mut artifacts: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let mut link_paths: Vec<String> = Vec::new();
        let mut done = 0;
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(message) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if message["reason"] == "build-script-executed" {
                    for path in message["linked_paths"].as_array().into_iter().flatten() {
                        if let Some(path) = path.as_str() {
                            if !link_paths.iter().any(|p| p == path) {
                                link_paths.push(path.to_string());
                            }
                        }
                    }
                }
                if message["reason"] != "compiler-artifact" {
                    continue;
                }
                let id = message["package_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let is_lib = message["target"]["kind"].as_array().is_some_and(|kinds| {
                    kinds.iter().any(|k| {
                        matches!(k.as_str(), Some("lib" | "rlib" | "dylib" | "proc-macro"))
                    })
                });
                if is_lib {
                    let files = message["filenames"]
                        .as_array()
                        .map(|f| {
                            f.iter()
                                .filter_map(Value::as_str)
                                .map(PathBuf::from)
                                .collect()
                        })
                        .unwrap_or_default();
                    artifacts.insert(id, files);
                    done += 1;
                    progress(&Progress {
                        done,
                        total,
                        current: message["target"]["name"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string(),
                    });
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| format!("cargo did not finish: {e}"))?;
        let stderr = stderr_thread.join().unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
            return Err(format!(
                "building the crates for Rust cells failed (in {}):\n{}",
                self.dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        let mut lib_dirs = deps_dirs;
        // The standard library's shared object, which the cell crate links.
        lib_dirs.push(std_dir);
        let mut prebuilt = prebuilt_from(&metadata, &artifacts, &sources, lib_dirs)?;
        prebuilt.link_paths = link_paths;
        let json = to_json(&prebuilt);
        let tmp = self
            .dir
            .join(format!("{READY_FILE}.{}", std::process::id()));
        std::fs::write(&tmp, json.to_string())
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join(READY_FILE))
            .map_err(|e| format!("writing {READY_FILE}: {e}"))?;
        Ok(prebuilt)
    }
}

fn std_library_dir() -> Result<PathBuf, String> {
    let output = std::process::Command::new("rustc")
        .args(["--print", "target-libdir"])
        .output()
        .map_err(|e| format!("could not run `rustc --print target-libdir`: {e}"))?;
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || dir.is_empty() {
        return Err("`rustc --print target-libdir` named no folder".into());
    }
    Ok(PathBuf::from(dir))
}

fn sources_digest() -> String {
    let parts: Vec<&[u8]> = SOURCES
        .iter()
        .flat_map(|(path, text)| [path.as_bytes(), text.as_bytes()])
        .collect();
    short_digest(&parts)
}

/// The first 8 bytes of the SHA-256 of `parts`, in hex.
fn short_digest(parts: &[&[u8]]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(part);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_if_changed(path: &Path, text: &str) -> Result<(), String> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(()); // keep the mtime, or cargo rebuilds the crate
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("could not create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("could not write {}: {e}", path.display()))
}

fn cargo_metadata(manifest: &Path) -> Result<Value, String> {
    let output = std::process::Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .output()
        .map_err(|e| format!("could not run `cargo metadata`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo metadata` for the cell crates failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("`cargo metadata` answered badly: {e}"))
}

/// What cells link: the direct dependencies of `ferrolab-cells`, the cell API crates
/// as shared objects and the others as rlibs.
fn prebuilt_from(
    metadata: &Value,
    artifacts: &BTreeMap<String, Vec<PathBuf>>,
    sources: &Path,
    lib_dirs: Vec<PathBuf>,
) -> Result<evcxr::Prebuilt, String> {
    let root = metadata["resolve"]["root"]
        .as_str()
        .ok_or("`cargo metadata` named no root package")?;
    let nodes = metadata["resolve"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let node = |id: &str| nodes.iter().find(|n| n["id"] == id).cloned();
    let package = |id: &str| {
        metadata["packages"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"] == id).cloned())
    };
    let root_node = node(root).ok_or("the cell crates are missing from `cargo metadata`")?;
    let shared_object = |id: &str| -> Result<PathBuf, String> {
        let files = artifacts
            .get(id)
            .ok_or_else(|| format!("cargo built nothing for {id}"))?;
        for file in files {
            // The shared object itself, or the one beside the crate's metadata.
            if file
                .extension()
                .is_some_and(|e| e == "rmeta" || e == std::env::consts::DLL_EXTENSION)
            {
                let so = file.with_extension(std::env::consts::DLL_EXTENSION);
                if so.exists() {
                    return Ok(so);
                }
            }
        }
        Err(format!("no shared object was built for {id}: {files:?}"))
    };
    // The direct dependencies are linked into the cell crate's shared object; cells
    // read their metadata from the rlibs (a proc-macro is its own shared object).
    let rlib = |id: &str| -> Result<PathBuf, String> {
        let files = artifacts
            .get(id)
            .ok_or_else(|| format!("cargo built nothing for {id}"))?;
        files
            .iter()
            .find(|f| {
                f.extension()
                    .is_some_and(|e| e == "rlib" || e == std::env::consts::DLL_EXTENSION)
            })
            .cloned()
            .ok_or_else(|| format!("no library was built for {id}: {files:?}"))
    };
    let mut externs = Vec::new();
    let mut manifest_dependencies = String::new();
    for dep in root_node["deps"].as_array().cloned().unwrap_or_default() {
        let normal = dep["dep_kinds"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()));
        let (Some(name), Some(id)) = (dep["name"].as_str(), dep["pkg"].as_str()) else {
            continue;
        };
        if !normal {
            continue;
        }
        let pkg = package(id).ok_or_else(|| format!("{id} is missing from `cargo metadata`"))?;
        let package_name = pkg["name"].as_str().unwrap_or(name);
        if SHARED.contains(&package_name) {
            externs.push((name.to_string(), shared_object(id)?));
            let dir = Path::new(pkg["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .unwrap_or(sources)
                .to_path_buf();
            manifest_dependencies.push_str(&format!(
                "{package_name} = {{ path = {:?} }}\n",
                dir.to_string_lossy()
            ));
            continue;
        }
        externs.push((name.to_string(), rlib(id)?));
        let features: Vec<String> = node(id)
            .and_then(|n| n["features"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| *f != "default")
            .map(|f| format!("{f:?}"))
            .collect();
        manifest_dependencies.push_str(&format!(
            "{name} = {{ package = {:?}, version = \"={}\", default-features = false, features = [{}] }}\n",
            package_name,
            pkg["version"].as_str().unwrap_or("*"),
            features.join(", ")
        ));
    }
    Ok(evcxr::Prebuilt {
        externs,
        lib_dirs,
        link_paths: Vec::new(),
        manifest_dependencies,
        lock_file: Some(sources.join("Cargo.lock")),
        analysis_words: analysis_words(),
        preludes: preludes(),
        runtime_module: Some(RUNTIME_MODULE.into()),
    })
}

/// evcxr's variable store, compiled once in the cell API (`kernel/cell/src/runtime.rs`).
const RUNTIME_MODULE: &str = "ferrolab_cell::__evcxr_runtime";

/// The tables crate (and polars, inside it) come into a session's cells once one
/// names them: loading polars' metadata costs every cell about a tenth of a second,
/// which cells that use no table should not pay. The statement registers how a
/// `DataFrame` value is shown.
fn preludes() -> Vec<evcxr::Prelude> {
    vec![evcxr::Prelude {
        words: [TABLE_NAMES.as_slice(), &["polars", "DataFrame"]]
            .concat()
            .iter()
            .map(|w| w.to_string())
            .collect(),
        item: "use ferrolab_cell_tables::*;".into(),
        statement: "ferrolab_cell_tables::__ferrolab_tables();".into(),
    }]
}

/// What brings a prebuilt crate into rust-analyzer's view (so that a variable's type
/// from it is known, by a path the cell can write): the cell API's names bring
/// `ferrolab-cell`; the tables' names bring `ferrolab-cell-tables`, polars and
/// `ferrolab-cell` (their values' types, `DataFrame` and `CellError`, are theirs);
/// polars' commonest names bring polars; the other crates come by their own names.
/// The tables crate's names in a cell: what brings it (and polars) into a session.
const TABLE_NAMES: [&str; 3] = ["table", "save_table", "ferrolab_cell_tables"];

fn analysis_words() -> Vec<(String, Vec<String>)> {
    let list = |crate_name: &str, words: &[&str]| {
        (
            crate_name.to_string(),
            words.iter().map(|w| w.to_string()).collect(),
        )
    };
    vec![
        list(
            "ferrolab-cell",
            &[
                TABLE_NAMES.as_slice(),
                &[
                    "generate",
                    "chat",
                    "embed",
                    "log_param",
                    "log_metric",
                    "log_metric_at",
                    "display",
                    "display_html",
                    "display_markdown",
                    "clear_output",
                    "input",
                    "Generate",
                    "Message",
                    "CellError",
                    "Display",
                ],
            ]
            .concat(),
        ),
        list("ferrolab-cell-tables", &TABLE_NAMES),
        list(
            "polars",
            &[
                TABLE_NAMES.as_slice(),
                &[
                    "polars",
                    "DataFrame",
                    "LazyFrame",
                    "Series",
                    "Column",
                    "df",
                    "col",
                    "lit",
                ],
            ]
            .concat(),
        ),
        list("serde", &["serde", "Serialize", "Deserialize"]),
        list("itertools", &["itertools", "Itertools"]),
    ]
}

fn to_json(prebuilt: &evcxr::Prebuilt) -> Value {
    serde_json::json!({
        "sources": sources_digest(),
        "externs": prebuilt.externs.iter().map(|(n, p)| serde_json::json!([n, p])).collect::<Vec<_>>(),
        "lib_dirs": prebuilt.lib_dirs,
        "link_paths": prebuilt.link_paths,
        "manifest_dependencies": prebuilt.manifest_dependencies,
        "lock_file": prebuilt.lock_file,
    })
}

fn from_json(value: &Value) -> Option<evcxr::Prebuilt> {
    let externs = value["externs"]
        .as_array()?
        .iter()
        .map(|pair| {
            Some((
                pair[0].as_str()?.to_string(),
                PathBuf::from(pair[1].as_str()?),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    let lib_dirs = value["lib_dirs"]
        .as_array()?
        .iter()
        .map(|d| d.as_str().map(PathBuf::from))
        .collect::<Option<Vec<_>>>()?;
    let link_paths = value["link_paths"]
        .as_array()?
        .iter()
        .map(|d| d.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()?;
    Some(evcxr::Prebuilt {
        analysis_words: analysis_words(),
        preludes: preludes(),
        runtime_module: Some(RUNTIME_MODULE.into()),
        externs,
        lib_dirs,
        link_paths,
        manifest_dependencies: value["manifest_dependencies"].as_str()?.to_string(),
        lock_file: value["lock_file"].as_str().map(PathBuf::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_of_a_build_reads_back() {
        let prebuilt = evcxr::Prebuilt {
            externs: vec![("polars".into(), PathBuf::from("/x/libpolars-1.so"))],
            lib_dirs: vec![PathBuf::from("/x")],
            link_paths: vec!["native=/x/out".into()],
            manifest_dependencies: "polars = { version = \"=0.55.2\" }\n".into(),
            lock_file: Some(PathBuf::from("/x/Cargo.lock")),
            analysis_words: analysis_words(),
            preludes: preludes(),
            runtime_module: Some(RUNTIME_MODULE.into()),
        };
        assert_eq!(from_json(&to_json(&prebuilt)), Some(prebuilt));
        assert_eq!(from_json(&serde_json::json!({"externs": 3})), None);
    }

    #[test]
    fn every_source_of_the_cell_crates_is_built_in() {
        let kernel = Path::new(env!("CARGO_MANIFEST_DIR"));
        for folder in ["cell/src", "cell/tables/src", "cell/crates/src"] {
            for entry in std::fs::read_dir(kernel.join(folder)).unwrap() {
                let name = format!("{folder}/{}", entry.unwrap().file_name().to_string_lossy());
                assert!(
                    SOURCES.iter().any(|(path, _)| *path == name),
                    "{name} is not in cell_crates::SOURCES"
                );
            }
        }
    }
}
