//! `ferrolab kernel install` / `uninstall`: the kernelspec Jupyter finds.

use anyhow::{bail, Context};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The kernelspec's name (the folder under `kernels/`).
pub const KERNEL_NAME: &str = "ferrolab";

const LOGO_32: &[u8] = include_bytes!("../assets/logo-32x32.png");
const LOGO_64: &[u8] = include_bytes!("../assets/logo-64x64.png");
const LOGO_SVG: &[u8] = include_bytes!("../assets/logo-svg.svg");

/// Where a kernelspec goes, as in `jupyter kernelspec install`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The user's Jupyter data directory.
    User,
    /// `share/jupyter` under the active Python environment's prefix.
    SysPrefix,
    /// `share/jupyter` under the given prefix.
    Prefix(PathBuf),
}

impl Location {
    /// The `kernels/ferrolab` folder for this location.
    pub fn kernel_dir(&self) -> anyhow::Result<PathBuf> {
        let data = match self {
            Location::User => user_data_dir()?,
            Location::SysPrefix => python_prefix()?.join("share").join("jupyter"),
            Location::Prefix(prefix) => prefix.join("share").join("jupyter"),
        };
        Ok(data.join("kernels").join(KERNEL_NAME))
    }
}

fn user_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("JUPYTER_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    jupyter_zmq_client::user_data_dir()
        .map_err(|e| anyhow::anyhow!("cannot find the user's Jupyter data directory: {e}"))
}

/// The prefix of the active Python environment: `$VIRTUAL_ENV`, `$CONDA_PREFIX`, or
/// what `python3` reports.
fn python_prefix() -> anyhow::Result<PathBuf> {
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = std::env::var_os(var) {
            return Ok(PathBuf::from(prefix));
        }
    }
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .context("--sys-prefix needs python3 on PATH (or an active virtual environment)")?;
    if !output.status.success() {
        bail!("python3 could not report sys.prefix");
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// The kernel.json content for a kernel started by `exe`.
pub fn kernel_json(exe: &Path) -> serde_json::Value {
    json!({
        "argv": [exe.to_string_lossy(), "kernel", "run", "--connection-file", "{connection_file}"],
        "display_name": "Rust (ferrolab)",
        "language": "rust",
        "interrupt_mode": "message",
        "metadata": { "debugger": false },
    })
}

/// Writes the kernelspec; returns its folder.
pub fn install(location: &Location) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot find the ferrolab executable's own path")?;
    let dir = location.kernel_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = serde_json::to_string_pretty(&kernel_json(&exe))?;
    for (name, bytes) in [
        ("kernel.json", spec.as_bytes()),
        ("logo-32x32.png", LOGO_32),
        ("logo-64x64.png", LOGO_64),
        ("logo-svg.svg", LOGO_SVG),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

/// Removes the kernelspec; returns its folder, or `None` if none was there.
pub fn uninstall(location: &Location) -> anyhow::Result<Option<PathBuf>> {
    let dir = location.kernel_dir()?;
    if !dir.join("kernel.json").exists() {
        return Ok(None);
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_and_uninstall_under_a_prefix() {
        let prefix = tempfile::tempdir().unwrap();
        let location = Location::Prefix(prefix.path().to_path_buf());
        let dir = install(&location).unwrap();
        assert_eq!(dir, prefix.path().join("share/jupyter/kernels/ferrolab"));
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("kernel.json")).unwrap()).unwrap();
        assert_eq!(spec["display_name"], "Rust (ferrolab)");
        assert_eq!(spec["language"], "rust");
        assert_eq!(spec["interrupt_mode"], "message");
        let argv: Vec<&str> = spec["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            &argv[1..],
            ["kernel", "run", "--connection-file", "{connection_file}"]
        );
        assert!(dir.join("logo-64x64.png").exists());
        assert_eq!(uninstall(&location).unwrap(), Some(dir.clone()));
        assert!(!dir.exists());
        assert_eq!(uninstall(&location).unwrap(), None);
    }
}
