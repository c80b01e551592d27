//! Data exploration magics on polars: `%load`, `%tables`, `%schema`, `%head`,
//! `%drop` and `%sql` / `%%sql`.
//!
//! Tables are lazy: `%load` registers a scan (nothing is read until a query
//! needs it), `%sql --out` registers the query itself. All data magics of one
//! kernel share one [`Catalog`].

pub mod chart;
pub mod describe;
pub mod profile;
pub mod render;
pub use ferrolab_magics::svg;

use ferrolab_magics::{
    Invocation, Magic, MagicContext, MagicError, MagicKind, MimeBundle, Registry,
};
use polars::prelude::*;
use polars::sql::SQLContext;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How a table was loaded, for `%tables`.
#[derive(Clone)]
pub struct Table {
    pub frame: LazyFrame,
    pub source: String,
    /// Whether counting rows is cheap (file metadata, or already in memory).
    pub cheap_count: bool,
}

/// The tables of one kernel, by name.
#[derive(Default)]
pub struct Catalog {
    tables: Mutex<BTreeMap<String, Table>>,
}

impl Catalog {
    fn get(&self, name: &str) -> Result<Table, MagicError> {
        let tables = self.lock()?;
        tables.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = tables.keys().map(String::as_str).collect();
            MagicError::new(
                "UnknownTable",
                if known.is_empty() {
                    format!("no table named `{name}`: no tables are loaded yet; `%load NAME PATH` loads one")
                } else {
                    format!("no table named `{name}`; loaded tables: {}", known.join(", "))
                },
            )
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Table>>, MagicError> {
        // A magic that crashed while holding the lock left the map whole (every
        // change to it is one insert or remove), so the tables stay usable.
        Ok(self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn insert(&self, name: &str, table: Table) -> Result<(), MagicError> {
        self.lock()?.insert(name.to_string(), table);
        Ok(())
    }

    fn snapshot(&self) -> Result<BTreeMap<String, Table>, MagicError> {
        Ok(self.lock()?.clone())
    }

    /// A SQL query over every table, as a lazy frame (nothing runs yet).
    pub fn query(&self, query: &str) -> Result<LazyFrame, MagicError> {
        let mut context = SQLContext::new();
        for (name, table) in self.snapshot()? {
            context.register(&name, table.frame);
        }
        context.execute(query).map_err(|e| sql_error(query, e))
    }

    /// Every row of a table as a JSON object, strings whole (for magics that consume
    /// data, such as `%finetune --table`).
    pub fn rows(
        &self,
        name: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, MagicError> {
        let table = self.get(name)?;
        let df = run(table.frame).map_err(|e| polars_error(&format!("reading `{name}`"), e))?;
        let columns = df.columns();
        let mut rows = Vec::with_capacity(df.height());
        for i in 0..df.height() {
            let mut row = serde_json::Map::new();
            for column in columns {
                let value = column
                    .get(i)
                    .map_err(|e| polars_error(&format!("reading `{name}`"), e))?;
                let json = match &value {
                    AnyValue::String(s) => serde_json::Value::String(s.to_string()),
                    AnyValue::StringOwned(s) => serde_json::Value::String(s.to_string()),
                    other => render::cell_json(other),
                };
                row.insert(column.name().to_string(), json);
            }
            rows.push(row);
        }
        Ok(rows)
    }

    /// A table by name, or else a SQL query (anything that is not a bare name).
    pub fn source(&self, source: &str) -> Result<LazyFrame, MagicError> {
        let source = source.trim();
        if valid_name(source).is_ok() {
            Ok(self.get(source)?.frame)
        } else {
            self.query(source)
        }
    }
}

/// Registers the data magics, sharing one catalog.
pub fn register(registry: &mut Registry) -> Arc<Catalog> {
    let catalog = Arc::new(Catalog::default());
    registry.register(Arc::new(Load(catalog.clone())));
    registry.register(Arc::new(Tables(catalog.clone())));
    registry.register(Arc::new(SchemaMagic(catalog.clone())));
    registry.register(Arc::new(Head(catalog.clone())));
    registry.register(Arc::new(Drop(catalog.clone())));
    registry.register(Arc::new(Sql(catalog.clone())));
    registry.register(Arc::new(describe::Describe(catalog.clone())));
    registry.register(Arc::new(profile::Profile(catalog.clone())));
    registry.register(Arc::new(chart::Plot(catalog.clone())));
    catalog
}

fn polars_error(what: &str, error: PolarsError) -> MagicError {
    let message = error.to_string();
    let ename = match &error {
        PolarsError::SQLSyntax(_) => "SqlSyntaxError",
        PolarsError::SQLInterface(_) => "SqlError",
        PolarsError::ColumnNotFound(_) => "ColumnNotFound",
        PolarsError::SchemaMismatch(_) | PolarsError::ShapeMismatch(_) => "SchemaMismatch",
        PolarsError::IO { .. } => "IOError",
        _ => "DataError",
    };
    MagicError::new(ename, format!("{what}: {message}"))
}

/// Runs a query on polars' streaming engine: it works through a table in
/// batches, so memory stays bounded for tables larger than RAM, and it was
/// faster than the in-memory engine on most of the benchmark's queries
/// (docs/benchmarks.md).
///
/// The streaming engine does not cover every plan yet (some joins reach an
/// `unreachable!` inside it); a panic there is caught and the query runs again
/// on the in-memory engine. A panic in polars never takes the kernel down.
pub fn run(frame: LazyFrame) -> PolarsResult<DataFrame> {
    let attempt = |engine: Engine, frame: LazyFrame| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            frame
                .collect_with_engine(engine)
                .map(|result| result.unwrap_single())
        }))
    };
    match attempt(Engine::Streaming, frame.clone()) {
        Ok(result) => result,
        Err(_) => match attempt(Engine::InMemory, frame) {
            Ok(result) => result,
            Err(panic) => {
                let what = ferrolab_magics::panic_message(panic.as_ref());
                Err(PolarsError::ComputeError(
                    format!("polars failed inside ({what}); the tables are unchanged, try the query in another form").into(),
                ))
            }
        },
    }
}

/// The number of rows a query gives.
pub fn row_count(frame: &LazyFrame) -> PolarsResult<u64> {
    let df = run(frame.clone().select([len()]))?;
    df.column("len")?.get(0)?.try_extract::<u64>()
}

/// A SQL failure, named by kind: the parser's message with its position
/// (`SqlSyntaxError`), a construct polars SQL does not support
/// (`SqlUnsupported`), or anything else the query ran into.
fn sql_error(query: &str, error: PolarsError) -> MagicError {
    let mut message = error.to_string();
    let lower = message.to_lowercase();
    let ename = if lower.contains("sql parser error") {
        if lower.contains("found: eof") && !message.contains("Line:") {
            // The parser gives no position at the end of the input; say where that is.
            let lines: Vec<&str> = query.trim_end().lines().collect();
            let column = lines.last().map_or(0, |l| l.chars().count()) + 1;
            message.push_str(&format!(
                " at the end of the query (Line: {}, Column: {column})",
                lines.len().max(1)
            ));
        }
        "SqlSyntaxError"
    } else if lower.contains("not supported") || lower.contains("unsupported") {
        "SqlUnsupported"
    } else {
        return polars_error("the query failed", error);
    };
    MagicError::new(ename, format!("the query failed: {message}"))
}

/// The bundle of a table: polars-style HTML, a text table, and the same bounded
/// view as JSON for programs.
pub fn frame_bundle(df: &DataFrame) -> MimeBundle {
    MimeBundle::text(render::text(df))
        .with("text/html", render::html(df))
        .with(render::TABLE_MIME, render::json(df))
}

fn valid_name(name: &str) -> Result<(), MagicError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(MagicError::usage(format!(
            "`{name}` is not a table name: use letters, digits and `_`, starting with a letter, so SQL can name it"
        )))
    }
}

// ---------------------------------------------------------------- %load

struct Load(Arc<Catalog>);

const LINE: &[MagicKind] = &[MagicKind::Line];
const BOTH: &[MagicKind] = &[MagicKind::Line, MagicKind::Cell];

#[derive(Debug, Clone, PartialEq)]
struct LoadArgs {
    name: String,
    path: String,
    format: String,
    separator: Option<u8>,
    header: bool,
}

fn parse_load(args: &[String]) -> Result<LoadArgs, MagicError> {
    let mut positional = Vec::new();
    let mut format = None;
    let mut separator = None;
    let mut header = true;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--format" => {
                format = Some(
                    iter.next()
                        .ok_or_else(|| {
                            MagicError::usage(
                                "--format needs a value: csv, tsv, parquet, json, ndjson or ipc",
                            )
                        })?
                        .to_lowercase(),
                )
            }
            "--sep" => {
                let value = iter.next().ok_or_else(|| {
                    MagicError::usage("--sep needs one character, e.g. --sep ';'")
                })?;
                let value = if value == "\\t" { "\t" } else { value.as_str() };
                let [byte] = value.as_bytes() else {
                    return Err(MagicError::usage(format!(
                        "--sep takes one ASCII character, got `{value}`"
                    )));
                };
                separator = Some(*byte);
            }
            "--no-header" => header = false,
            flag if flag.starts_with("--") => {
                return Err(MagicError::usage(format!(
                    "unknown option `{flag}`; %load takes --format, --sep and --no-header"
                )))
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [name, path] = positional.as_slice() else {
        return Err(MagicError::usage("usage: %load NAME PATH [--format csv|tsv|parquet|json|ndjson|ipc] [--sep C] [--no-header]"));
    };
    valid_name(name)?;
    let format = match format {
        Some(f) => f,
        None => {
            let lower = path.to_lowercase();
            let ext = lower.rsplit('.').next().unwrap_or("");
            match ext {
                "csv" => "csv",
                "tsv" | "tab" => "tsv",
                "parquet" | "pq" => "parquet",
                "json" => "json",
                "ndjson" | "jsonl" => "ndjson",
                "ipc" | "arrow" | "feather" => "ipc",
                _ => return Err(MagicError::usage(format!("cannot tell the format of `{path}` from its extension; add --format csv|tsv|parquet|json|ndjson|ipc"))),
            }
            .to_string()
        }
    };
    if !matches!(
        format.as_str(),
        "csv" | "tsv" | "parquet" | "json" | "ndjson" | "ipc"
    ) {
        return Err(MagicError::usage(format!(
            "unknown format `{format}`; use csv, tsv, parquet, json, ndjson or ipc"
        )));
    }
    Ok(LoadArgs {
        name: name.clone(),
        path: path.clone(),
        format,
        separator,
        header,
    })
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?'])
}

/// `*` and `?` matching of one file name.
fn matches(pattern: &[char], name: &[char]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some('*'), _) => {
            matches(&pattern[1..], name) || (!name.is_empty() && matches(pattern, &name[1..]))
        }
        (Some('?'), Some(_)) => matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The files a path names: itself, or the matches of a glob in its last part.
fn expand(path: &str) -> Result<Vec<String>, MagicError> {
    let cwd = || {
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    };
    if !is_glob(path) {
        if Path::new(path).exists() {
            return Ok(vec![path.to_string()]);
        }
        return Err(MagicError::new(
            "FileNotFound",
            format!("{path} does not exist (relative paths start at {})", cwd()),
        ));
    }
    let (dir, pattern) = path.rsplit_once('/').unwrap_or((".", path));
    if is_glob(dir) {
        return Err(MagicError::usage(format!(
            "only the file name part of a path may have wildcards, not `{dir}`"
        )));
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let mut found: Vec<String> = std::fs::read_dir(if dir.is_empty() { "/" } else { dir })
        .map_err(|e| {
            MagicError::new(
                "FileNotFound",
                format!("cannot list {dir}: {e} (relative paths start at {})", cwd()),
            )
        })?
        .flatten()
        .filter(|entry| {
            matches(
                &pattern,
                &entry
                    .file_name()
                    .to_string_lossy()
                    .chars()
                    .collect::<Vec<_>>(),
            )
        })
        .map(|entry| entry.path().display().to_string())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(MagicError::new(
            "FileNotFound",
            format!("no file matches {path}"),
        ));
    }
    Ok(found)
}

fn scan(args: &LoadArgs) -> Result<(LazyFrame, bool), MagicError> {
    let files = expand(&args.path)?;
    let mut frames = Vec::new();
    let mut first_schema: Option<(String, SchemaRef)> = None;
    for file in &files {
        let one = LoadArgs {
            path: file.clone(),
            ..args.clone()
        };
        let (mut frame, cheap) = scan_one(&one)?;
        let schema = frame
            .collect_schema()
            .map_err(|e| polars_error(&format!("cannot read {file}"), e))?;
        match &first_schema {
            None => first_schema = Some((file.clone(), schema)),
            Some((first, expected)) if **expected != *schema => {
                return Err(MagicError::new(
                    "SchemaMismatch",
                    format!(
                        "{file} does not have the columns of {first}:\n  {first}: {}\n  {file}: {}\nload them as separate tables, or fix the files",
                        schema_text(expected),
                        schema_text(&schema)
                    ),
                ))
            }
            Some(_) => {}
        }
        frames.push((frame, cheap));
    }
    if frames.len() == 1 {
        return frames
            .pop()
            .ok_or_else(|| MagicError::new("FileNotFound", "no file"));
    }
    // One scan over all the files (not a concat of scans), so polars plans them
    // as one source.
    let paths = || files.iter().map(|f| PlRefPath::new(f.as_str())).collect();
    let failed = |e| polars_error(&format!("cannot read {}", args.path), e);
    let cheap = frames.iter().all(|(_, cheap)| *cheap);
    let all = match args.format.as_str() {
        "csv" | "tsv" => {
            let separator =
                args.separator
                    .unwrap_or(if args.format == "tsv" { b'\t' } else { b',' });
            LazyCsvReader::new_paths(paths())
                .with_separator(separator)
                .with_has_header(args.header)
                .with_try_parse_dates(true)
                .finish()
                .map_err(failed)?
        }
        "parquet" => {
            LazyFrame::scan_parquet_sources(ScanSources::Paths(paths()), ScanArgsParquet::default())
                .map_err(failed)?
        }
        "ipc" => LazyFrame::scan_ipc_sources(
            ScanSources::Paths(paths()),
            Default::default(),
            Default::default(),
        )
        .map_err(failed)?,
        "ndjson" => LazyJsonLineReader::new_paths(paths())
            .finish()
            .map_err(failed)?,
        _ => concat(
            frames.into_iter().map(|(f, _)| f).collect::<Vec<_>>(),
            UnionArgs::default(),
        )
        .map_err(failed)?,
    };
    Ok((all, cheap))
}

fn scan_one(args: &LoadArgs) -> Result<(LazyFrame, bool), MagicError> {
    let path = PlRefPath::new(args.path.as_str());
    let failed = |e| polars_error(&format!("cannot read {}", args.path), e);
    let frame = match args.format.as_str() {
        "csv" | "tsv" => {
            let separator =
                args.separator
                    .unwrap_or(if args.format == "tsv" { b'\t' } else { b',' });
            (
                LazyCsvReader::new(path)
                    .with_separator(separator)
                    .with_has_header(args.header)
                    .with_try_parse_dates(true)
                    .finish()
                    .map_err(failed)?,
                false,
            )
        }
        "parquet" => (
            LazyFrame::scan_parquet(path, ScanArgsParquet::default()).map_err(failed)?,
            true,
        ),
        "ipc" => (
            LazyFrame::scan_ipc(path, Default::default(), Default::default()).map_err(failed)?,
            true,
        ),
        "ndjson" => (
            LazyJsonLineReader::new(path).finish().map_err(failed)?,
            false,
        ),
        _ => {
            // A JSON array cannot be scanned; it is read once into memory.
            let file = std::fs::File::open(&args.path).map_err(|e| {
                MagicError::new("IOError", format!("cannot open {}: {e}", args.path))
            })?;
            (JsonReader::new(file).finish().map_err(failed)?.lazy(), true)
        }
    };
    Ok(frame)
}

fn schema_text(schema: &Schema) -> String {
    schema
        .iter()
        .map(|(name, dtype)| format!("{name}: {dtype}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Magic for Load {
    fn name(&self) -> &str {
        "load"
    }
    fn summary(&self) -> &str {
        "Register a file (or a glob of files) as a lazy table"
    }
    fn usage(&self) -> &str {
        "%load NAME PATH [--format csv|tsv|parquet|json|ndjson|ipc] [--sep C] [--no-header]\n\n\
         Registers PATH as table NAME without reading it: queries scan it when they run.\n\
         PATH may be a glob (`logs/*.parquet`): the files load as one table.\n\
         The format comes from the extension unless --format says otherwise.\n\
         JSON arrays (`.json`) cannot be scanned and are read into memory once."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let args = parse_load(&invocation.args)?;
        let (mut frame, cheap_count) = scan(&args)?;
        // Reading the schema checks the files (readable, one schema) before the
        // table is registered; a failure leaves the catalog as it was.
        let schema = frame
            .collect_schema()
            .map_err(|e| polars_error(&format!("cannot read {}", args.path), e))?;
        self.0.insert(
            &args.name,
            Table {
                frame,
                source: format!("{} ({})", args.path, args.format),
                cheap_count,
            },
        )?;
        Ok(Some(MimeBundle::text(format!(
            "loaded `{}` from {}: {} columns ({})",
            args.name,
            args.path,
            schema.len(),
            schema_text(&schema)
        ))))
    }
}

// ---------------------------------------------------------------- %tables, %schema, %head, %drop

/// The one table name a magic like `%schema NAME` takes.
fn table_arg(invocation: &Invocation) -> Result<&str, MagicError> {
    match invocation.args.as_slice() {
        [name] => Ok(name),
        _ => Err(MagicError::usage(format!(
            "usage: %{} NAME",
            invocation.name
        ))),
    }
}

struct Tables(Arc<Catalog>);

impl Magic for Tables {
    fn name(&self) -> &str {
        "tables"
    }
    fn summary(&self) -> &str {
        "List the loaded tables with their schema"
    }
    fn usage(&self) -> &str {
        "%tables\n\nLists every table: where it comes from, its row count when that is cheap (Parquet, IPC, in memory), and its columns."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        _invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let tables = self.0.snapshot()?;
        if tables.is_empty() {
            return Ok(Some(MimeBundle::text(
                "no tables loaded; `%load NAME PATH` loads one",
            )));
        }
        let mut names = Vec::new();
        let mut rows: Vec<Option<i64>> = Vec::new();
        let mut sources = Vec::new();
        let mut schemas = Vec::new();
        for (name, table) in tables {
            let mut frame = table.frame.clone();
            let schema = frame
                .collect_schema()
                .map(|s| schema_text(&s))
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            let count = if table.cheap_count {
                row_count(&table.frame).ok().map(|n| n as i64)
            } else {
                None
            };
            names.push(name);
            rows.push(count);
            sources.push(table.source);
            schemas.push(schema);
        }
        let df = df!("table" => names, "rows" => rows, "source" => sources, "columns" => schemas)
            .map_err(|e| polars_error("listing tables", e))?;
        Ok(Some(frame_bundle(&df)))
    }
}

struct SchemaMagic(Arc<Catalog>);

impl Magic for SchemaMagic {
    fn name(&self) -> &str {
        "schema"
    }
    fn summary(&self) -> &str {
        "Show a table's columns and types"
    }
    fn usage(&self) -> &str {
        "%schema NAME\n\nShows the columns of table NAME and their polars types."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let name = table_arg(invocation)?;
        let mut frame = self.0.get(name)?.frame;
        let schema = frame
            .collect_schema()
            .map_err(|e| polars_error(&format!("reading the schema of `{name}`"), e))?;
        let (names, types): (Vec<String>, Vec<String>) = schema
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .unzip();
        let df = df!("column" => names, "type" => types).map_err(|e| polars_error("schema", e))?;
        Ok(Some(frame_bundle(&df)))
    }
}

struct Head(Arc<Catalog>);

impl Magic for Head {
    fn name(&self) -> &str {
        "head"
    }
    fn summary(&self) -> &str {
        "Show the first rows of a table"
    }
    fn usage(&self) -> &str {
        "%head NAME [N]\n\nShows the first N rows (default 5, at most 1000) of table NAME; only those rows are read."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let (name, n) = match invocation.args.as_slice() {
            [name] => (name, 5),
            [name, n] => (
                name,
                n.parse::<u32>()
                    .map_err(|_| MagicError::usage(format!("N must be a whole number, got `{n}`")))?
                    .min(1000),
            ),
            _ => return Err(MagicError::usage("usage: %head NAME [N]")),
        };
        let frame = self.0.get(name)?.frame;
        let df = run(frame.limit(n)).map_err(|e| polars_error(&format!("reading `{name}`"), e))?;
        Ok(Some(frame_bundle(&df)))
    }
}

struct Drop(Arc<Catalog>);

impl Magic for Drop {
    fn name(&self) -> &str {
        "drop"
    }
    fn summary(&self) -> &str {
        "Forget a table"
    }
    fn usage(&self) -> &str {
        "%drop NAME\n\nRemoves table NAME from the catalog (its files are not touched)."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let name = table_arg(invocation)?;
        self.0.get(name)?;
        self.0.lock()?.remove(name);
        Ok(Some(MimeBundle::text(format!("dropped `{name}`"))))
    }
}

// ---------------------------------------------------------------- %sql

struct Sql(Arc<Catalog>);

#[derive(Debug, PartialEq)]
struct SqlArgs {
    out: Option<String>,
    limit: Option<u32>,
    query: String,
}

fn parse_sql(invocation: &Invocation) -> Result<SqlArgs, MagicError> {
    let mut out = None;
    let mut limit = None;
    let mut rest = Vec::new();
    let mut iter = invocation.args.iter();
    let options_end = invocation.kind == MagicKind::Line;
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--out" if rest.is_empty() => {
                let name = iter
                    .next()
                    .ok_or_else(|| MagicError::usage("--out needs a table name"))?;
                valid_name(name)?;
                out = Some(name.clone());
            }
            "--limit" if rest.is_empty() => {
                let n = iter
                    .next()
                    .ok_or_else(|| MagicError::usage("--limit needs a number"))?;
                limit = Some(n.parse().map_err(|_| {
                    MagicError::usage(format!("--limit takes a whole number, got `{n}`"))
                })?);
            }
            _ => rest.push(arg.clone()),
        }
    }
    let query = if options_end {
        // The line form: everything after the options, as typed.
        let raw = invocation.raw_args.trim();
        match rest.first() {
            Some(first) => raw[raw.find(first.as_str()).unwrap_or(0)..].to_string(),
            None => String::new(),
        }
    } else {
        if !rest.is_empty() {
            return Err(MagicError::usage(format!(
                "%%sql takes only --out and --limit on its first line, got `{}`",
                rest.join(" ")
            )));
        }
        invocation.body.clone()
    };
    if query.trim().is_empty() {
        return Err(MagicError::usage(
            "no query: `%sql SELECT ...`, or `%%sql` with the query on the following lines",
        ));
    }
    Ok(SqlArgs { out, limit, query })
}

impl Magic for Sql {
    fn name(&self) -> &str {
        "sql"
    }
    fn summary(&self) -> &str {
        "Query the loaded tables with SQL (polars SQL)"
    }
    fn usage(&self) -> &str {
        "%sql [--out NAME] [--limit N] QUERY\n%%sql [--out NAME] [--limit N]\nQUERY...\n\n\
         Runs QUERY with polars SQL over every loaded table (by its %load name) and shows\n\
         the result (first and last rows). --out NAME keeps the result as a new lazy table;\n\
         --limit N caps the rows computed."
    }
    fn kinds(&self) -> &[MagicKind] {
        BOTH
    }
    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let args = parse_sql(invocation)?;
        let mut frame = self.0.query(&args.query)?;
        if let Some(limit) = args.limit {
            frame = frame.limit(limit);
        }
        if let Some(out) = &args.out {
            let mut check = frame.clone();
            check
                .collect_schema()
                .map_err(|e| polars_error("the query failed", e))?;
            self.0.insert(
                out,
                Table {
                    frame: frame.clone(),
                    source: format!("%sql: {}", args.query.trim()),
                    cheap_count: false,
                },
            )?;
        }
        let df = run(frame).map_err(|e| polars_error("the query failed", e))?;
        Ok(Some(frame_bundle(&df)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_magics::{NoHost, RecordingOutput};

    fn run(registry: &Registry, source: &str) -> Result<Option<MimeBundle>, MagicError> {
        let mut out = RecordingOutput::default();
        let mut host = NoHost;
        let invocation = ferrolab_magics::parse(source)
            .expect("parses")
            .expect("a magic");
        let magic = registry.get(&invocation.name).expect("registered").clone();
        let mut cx = MagicContext {
            out: &mut out,
            host: &mut host,
            registry,
        };
        magic.run(&invocation, &mut cx)
    }

    fn setup() -> (Registry, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.csv"),
            "model,tokens\nsmol,10\nsmol,30\nllama,5\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("b.csv"), "model,tokens\nqwen,7\n").expect("write");
        std::fs::write(dir.path().join("bad.csv"), "other\n1\n").expect("write");
        let mut registry = Registry::empty();
        register(&mut registry);
        (registry, dir)
    }

    #[test]
    fn load_parses_options_and_infers_formats() {
        let args = |s: &str| parse_load(&s.split(' ').map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(args("t x.TSV").expect("ok").format, "tsv");
        assert_eq!(args("t x.jsonl").expect("ok").format, "ndjson");
        let parsed = args("t x.txt --format csv --sep ; --no-header").expect("ok");
        assert_eq!((parsed.separator, parsed.header), (Some(b';'), false));
        assert!(args("t x.txt")
            .expect_err("no format")
            .evalue
            .contains("--format"));
        assert!(args("1t x.csv")
            .expect_err("bad name")
            .evalue
            .contains("table name"));
        assert!(args("t x.csv --sep ab")
            .expect_err("sep")
            .evalue
            .contains("one ASCII character"));
    }

    #[test]
    fn load_query_and_keep_results() {
        let (registry, dir) = setup();
        let path = dir.path().join("a.csv");
        run(&registry, &format!("%load logs {}", path.display())).expect("load");
        let result = run(&registry, "%sql --out per_model SELECT model, SUM(tokens) AS total FROM logs GROUP BY model ORDER BY total DESC")
            .expect("sql")
            .expect("a result");
        let text = result.get("text/plain").expect("text");
        assert!(text.contains("smol") && text.contains("40"), "{text}");
        let cell = run(&registry, "%%sql --limit 1\nSELECT * FROM per_model")
            .expect("cell sql")
            .expect("result");
        assert!(cell
            .get("text/plain")
            .expect("text")
            .starts_with("shape: (1, 2)"));
        let tables = run(&registry, "%tables").expect("tables").expect("result");
        assert!(tables
            .get("text/plain")
            .expect("text")
            .contains("per_model"));
    }

    #[test]
    fn globs_load_many_files_as_one_table() {
        let (registry, dir) = setup();
        std::fs::remove_file(dir.path().join("bad.csv")).expect("rm");
        run(
            &registry,
            &format!("%load logs {}/*.csv", dir.path().display()),
        )
        .expect("load");
        let result = run(&registry, "%sql SELECT COUNT(*) AS n FROM logs")
            .expect("sql")
            .expect("result");
        assert!(result.get("text/plain").expect("text").contains('4'));
    }

    #[test]
    fn bad_input_names_the_problem_and_keeps_tables() {
        let (registry, dir) = setup();
        run(
            &registry,
            &format!("%load logs {}", dir.path().join("a.csv").display()),
        )
        .expect("load");
        let missing = run(&registry, "%load other /no/such/file.csv").expect_err("missing");
        assert_eq!(missing.ename, "FileNotFound");
        let unknown = run(&registry, "%head nope").expect_err("unknown");
        assert!(
            unknown.evalue.contains("loaded tables: logs"),
            "{}",
            unknown.evalue
        );
        let syntax = run(&registry, "%sql SELEC * FROM logs").expect_err("bad sql");
        assert!(
            syntax.evalue.contains("the query failed"),
            "{}",
            syntax.evalue
        );
        let column = run(&registry, "%sql SELECT nope FROM logs").expect_err("no column");
        assert!(column.evalue.contains("nope"), "{}", column.evalue);
        let mixed = run(
            &registry,
            &format!("%load mixed {}/*.csv", dir.path().display()),
        );
        assert!(mixed.is_err(), "files with different columns are refused");
        let head = run(&registry, "%head logs 2")
            .expect("still usable")
            .expect("result");
        assert!(head
            .get("text/plain")
            .expect("text")
            .starts_with("shape: (2, 2)"));
    }
}
