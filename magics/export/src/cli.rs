//! `ferrolab export NOTEBOOK.ipynb [--to html|markdown|ipynb] [-o OUT] [--no-input] [--toc] [--title T] [--interactive [--chart-script FILE]]`

use crate::{export, Format, Options};
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The notebook (.ipynb, nbformat 4).
    pub notebook: PathBuf,
    /// What to write: html (a self-contained report), markdown (images beside it) or ipynb.
    #[arg(long = "to", default_value = "html")]
    pub to: String,
    /// Where to write it (default: the notebook's name with the format's extension; `-` for stdout).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Leave every code cell's input out.
    #[arg(long)]
    pub no_input: bool,
    /// A table of contents from the markdown headings (HTML).
    #[arg(long)]
    pub toc: bool,
    /// The report's title (default: the notebook's metadata.title, else its file name).
    #[arg(long)]
    pub title: Option<String>,
    /// HTML: inline the chart library so Vega-Lite charts are interactive where the
    /// reader allows scripts (the static SVG stays for everyone else). Adds about 1 MB.
    #[arg(long)]
    pub interactive: bool,
    /// The chart script for --interactive (report-charts.js, or the web build's folder);
    /// default: $FERROLAB_WEB_DIR, else collab-server/web/dist here or above.
    #[arg(long, value_name = "FILE", requires = "interactive")]
    pub chart_script: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let format: Format = args.to.parse()?;
    if args.interactive && format != Format::Html {
        anyhow::bail!(
            "--interactive is for HTML reports; leave it out for --to {}",
            args.to
        );
    }
    let chart_script = if args.interactive {
        Some(crate::chart_script(args.chart_script.as_deref())?)
    } else {
        None
    };
    let bytes = std::fs::read(&args.notebook)
        .with_context(|| format!("cannot read {}", args.notebook.display()))?;
    let notebook: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a notebook: it is not valid JSON",
            args.notebook.display()
        )
    })?;
    let stem = args
        .notebook
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "notebook".into());
    let output = args.output.clone().unwrap_or_else(|| {
        let mut out = args.notebook.with_extension(format.extension());
        if out == args.notebook {
            out = args
                .notebook
                .with_file_name(format!("{stem}.exported.{}", format.extension()));
        }
        out
    });
    let to_stdout = output == Path::new("-");
    let files_dir = (format == Format::Markdown && !to_stdout).then(|| {
        let name = output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| stem.clone());
        format!("{name}_files")
    });
    let options = Options {
        format,
        no_input: args.no_input,
        toc: args.toc,
        title: args.title.clone(),
        fallback_title: stem,
        files_dir: files_dir.clone(),
        chart_script,
    };
    let exported = export(&notebook, &options)
        .with_context(|| format!("cannot export {}", args.notebook.display()))?;
    if to_stdout {
        use std::io::Write;
        std::io::stdout().write_all(&exported.document)?;
        return Ok(());
    }
    let base = output.parent().unwrap_or(Path::new("."));
    for (name, bytes) in &exported.files {
        let path = base.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_atomically(&path, bytes)?;
    }
    write_atomically(&output, &exported.document)?;
    eprintln!(
        "wrote {}{}",
        output.display(),
        if exported.files.is_empty() {
            String::new()
        } else {
            format!(
                " and {} file(s) in {}",
                exported.files.len(),
                base.join(files_dir.unwrap_or_default()).display()
            )
        }
    );
    Ok(())
}

/// A crash leaves the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.partial",
        path.extension().and_then(|e| e.to_str()).unwrap_or("out")
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
