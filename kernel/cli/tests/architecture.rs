//! The invariants of `docs/architecture.md`, read from `cargo metadata`: which crate
//! may depend on which. A change that breaks one fails here, with the path of
//! dependencies that broke it.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::Command;

/// The resolved dependency graph: package name to the names it depends on, with
/// dev-dependencies only for the workspace's own crates (their tests count too).
struct Graph {
    deps: BTreeMap<String, BTreeSet<String>>,
    dev: BTreeMap<String, BTreeSet<String>>,
    members: BTreeSet<String>,
    /// Each workspace crate's normal dependencies that no feature turns off.
    required: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This platform's graph only: the other platforms' crates need not be downloaded.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        // Where cargo runs the test from (a shared build cache may have built it elsewhere).
        .current_dir(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let name_of: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let members: BTreeSet<String> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(|id| name_of[id.as_str().unwrap()].to_string())
        .collect();
    let required = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| members.contains(p["name"].as_str().unwrap()))
        .map(|p| {
            let always = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null() && d["optional"] == false)
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            (p["name"].as_str().unwrap().to_string(), always)
        })
        .collect();
    let mut deps = BTreeMap::<String, BTreeSet<String>>::new();
    let mut dev = BTreeMap::<String, BTreeSet<String>>::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("resolve") {
        let from = name_of[node["id"].as_str().unwrap()].to_string();
        for dep in node["deps"].as_array().unwrap() {
            let to = name_of[dep["pkg"].as_str().unwrap()].to_string();
            for kind in dep["dep_kinds"].as_array().unwrap() {
                let target = if kind["kind"] == "dev" {
                    &mut dev
                } else {
                    &mut deps
                };
                target.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    Graph {
        deps,
        dev,
        members,
        required,
    }
}

impl Graph {
    /// The path from `from` to `to` through normal and build dependencies (and
    /// `from`'s own dev-dependencies), if there is one.
    fn path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut came_from = BTreeMap::<String, String>::new();
        let mut queue = VecDeque::from([from.to_string()]);
        let mut seen = BTreeSet::from([from.to_string()]);
        while let Some(at) = queue.pop_front() {
            if at == to {
                let mut path = vec![at.clone()];
                let mut step = at;
                while let Some(prev) = came_from.get(&step) {
                    path.push(prev.clone());
                    step = prev.clone();
                }
                path.reverse();
                return Some(path);
            }
            let own_dev = (at == from).then(|| self.dev.get(&at)).flatten();
            for next in self.deps.get(&at).into_iter().chain(own_dev).flatten() {
                if seen.insert(next.clone()) {
                    came_from.insert(next.clone(), at.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        None
    }

    /// Every broken rule "`from` never depends on any of `forbidden`".
    fn violations(&self, from: &str, forbidden: &[&str]) -> Vec<String> {
        assert!(
            self.members.contains(from),
            "{from} is not a workspace crate"
        );
        forbidden
            .iter()
            .filter_map(|to| self.path(from, to))
            .map(|path| format!("{from} depends on {}", path.join(" -> ")))
            .collect()
    }
}

const MAGIC_FAMILIES: &[&str] = &[
    "ferrolab-data",
    "ferrolab-llm",
    "ferrolab-serve",
    "ferrolab-prompt",
    "ferrolab-track",
];

#[test]
fn dependencies_point_the_way_the_architecture_says() {
    let graph = graph();
    let mut broken = Vec::new();

    // The kernel knows the Jupyter protocol, evcxr and the magic framework only.
    let mut not_in_kernel = MAGIC_FAMILIES.to_vec();
    not_in_kernel.extend([
        "ferrolab-export",
        "ferrolab-collab",
        "ferrolab-tracking",
        "polars",
        "candle-core",
        "axum",
        "rusqlite",
    ]);
    broken.extend(graph.violations("ferrolab-kernel", &not_in_kernel));

    // The collaboration server and the tracking store know no model and no table
    // (the exporter they share with the kernel side uses only `magics/core`).
    for server in ["ferrolab-collab", "ferrolab-tracking"] {
        let mut forbidden = MAGIC_FAMILIES.to_vec();
        forbidden.extend(["ferrolab-kernel", "polars", "candle-core"]);
        broken.extend(graph.violations(server, &forbidden));
    }
    // The tracking store knows no transport: no HTTP server, no CRDT, no ZeroMQ.
    broken.extend(graph.violations(
        "ferrolab-tracking",
        &["ferrolab-collab", "axum", "samod", "automerge", "zeromq"],
    ));

    // Magics never depend on ZeroMQ, the kernel or the collaboration server.
    let mut magic_crates = MAGIC_FAMILIES.to_vec();
    magic_crates.extend(["ferrolab-magics", "ferrolab-export"]);
    for magic in &magic_crates {
        broken.extend(graph.violations(
            magic,
            &["zeromq", "ferrolab-kernel", "ferrolab-collab", "ferrolab"],
        ));
    }
    // The framework every magic builds on stays small.
    broken.extend(graph.violations(
        "ferrolab-magics",
        &["polars", "candle-core", "axum", "tokio", "rusqlite"],
    ));
    // A family does not reach into another's engine: prompt tests and the data
    // magics never link the model engine's training code through each other.
    broken.extend(graph.violations("ferrolab-data", &["ferrolab-llm", "candle-core"]));
    broken.extend(graph.violations("ferrolab-llm", &["ferrolab-data", "polars"]));

    // Without its `notebook` feature the binary is the collaboration server alone,
    // which `make up` builds first: nothing it always needs pulls in an engine.
    for dep in &graph.required["ferrolab"] {
        for heavy in ["polars", "candle-core", "evcxr", "ra_ap_syntax"] {
            if let Some(path) = graph.path(dep, heavy) {
                broken.push(format!(
                    "ferrolab without `notebook` depends on {}",
                    path.join(" -> ")
                ));
            }
        }
    }

    // Only the binary knows every crate.
    for member in &graph.members {
        if member != "ferrolab" {
            broken.extend(graph.violations(member, &["ferrolab"]));
        }
    }

    assert!(
        broken.is_empty(),
        "the dependency rules of docs/architecture.md are broken:\n  {}",
        broken.join("\n  ")
    );
}

/// The rules above are only worth something if they can see a dependency: the
/// binary does depend on everything, through these very paths.
#[test]
fn the_graph_sees_real_dependencies() {
    let graph = graph();
    for to in [
        "ferrolab-kernel",
        "ferrolab-collab",
        "polars",
        "candle-core",
        "zeromq",
    ] {
        assert!(
            graph.path("ferrolab", to).is_some(),
            "ferrolab -> {to} not seen"
        );
    }
    assert_eq!(
        graph.path("ferrolab-track", "ferrolab-tracking"),
        Some(vec![
            "ferrolab-track".to_string(),
            "ferrolab-tracking".to_string()
        ])
    );
}
