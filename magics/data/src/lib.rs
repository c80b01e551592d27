//! Data exploration magics on polars: `%load`, `%tables`, `%schema`, `%head`,
//! `%drop` and `%sql` / `%%sql`.
//!
//! Tables are lazy: `%load` registers a scan (nothing is read until a query
//! needs it), `%sql --out` registers the query itself. A loaded table is also
//! decoded once into memory when it fits the cache's budget ([`cache`]), and
//! queries use that copy while its files are unchanged. All data magics of one
//! kernel share one [`Catalog`].

pub mod cache;
pub mod cells;
pub mod chart;
pub mod describe;
pub mod engine;
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
    /// The table's in-memory copy, for tables loaded from files.
    pub cache: Option<Arc<cache::Slot>>,
}

impl Table {
    /// The in-memory copy, while its files are unchanged.
    fn copy(&self) -> Option<Arc<cache::Copy>> {
        self.cache.as_ref().and_then(cache::Slot::current)
    }

    /// The table as users see it: the in-memory copy (text as text) when
    /// there is one, else the scan.
    fn view(&self) -> LazyFrame {
        self.view_of(self.copy().as_deref())
    }

    /// [`Table::view`] with the copy already looked up.
    fn view_of(&self, copy: Option<&cache::Copy>) -> LazyFrame {
        match copy {
            Some(copy) => copy.as_text(),
            None => self.frame.clone(),
        }
    }
}

/// The tables of one kernel, by name.
pub struct Catalog {
    tables: Mutex<BTreeMap<String, Table>>,
    budget: Arc<cache::Budget>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::with_budget(cache::Budget::from_env())
    }
}

impl Catalog {
    /// A catalog whose in-memory copies share `budget`.
    pub fn with_budget(budget: Arc<cache::Budget>) -> Self {
        Catalog {
            tables: Mutex::default(),
            budget,
        }
    }

    /// The table as users see it (see [`Table::view`]).
    fn get(&self, name: &str) -> Result<Table, MagicError> {
        let mut table = self.find(name)?;
        table.frame = table.view();
        Ok(table)
    }

    fn find(&self, name: &str) -> Result<Table, MagicError> {
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
    ///
    /// In-memory copies are used as they are held, with categorical text
    /// columns, and the result's categoricals are cast back to text. A query
    /// polars cannot plan on categoricals (string functions, a join with a
    /// text column) is planned again on the tables as text.
    pub fn query(&self, query: &str) -> Result<LazyFrame, MagicError> {
        let tables = self.with_copies()?;
        let mut context = SQLContext::new();
        let mut categorical = false;
        for (name, table, copy) in &tables {
            match copy {
                Some(copy) => {
                    categorical |= !copy.categorical.is_empty();
                    context.register(name, copy.frame.clone().lazy());
                }
                None => context.register(name, table.frame.clone()),
            }
        }
        if !categorical {
            return context.execute(query).map_err(|e| sql_error(query, e));
        }
        match context.execute(query).and_then(as_text) {
            Ok(frame) => Ok(frame),
            Err(_) => text_query(&tables, query),
        }
    }

    /// The query over the tables as users see them (no categoricals).
    pub fn query_as_text(&self, query: &str) -> Result<LazyFrame, MagicError> {
        text_query(&self.with_copies()?, query)
    }

    /// Every table with its in-memory copy, each looked up once.
    fn with_copies(&self) -> Result<Vec<TableWithCopy>, MagicError> {
        Ok(self
            .snapshot()?
            .into_iter()
            .map(|(name, table)| {
                let copy = table.copy();
                (name, table, copy)
            })
            .collect())
    }

    /// Whether any table is still being loaded into memory.
    pub fn loading(&self) -> bool {
        self.snapshot().is_ok_and(|tables| {
            tables
                .values()
                .filter_map(|table| table.cache.as_ref())
                .any(|slot| slot.filling())
        })
    }

    /// Whether a query may run on categorical copies (and so may need
    /// [`Catalog::query_as_text`] when it fails).
    pub fn has_categorical_copies(&self) -> bool {
        self.snapshot().is_ok_and(|tables| {
            tables
                .values()
                .filter_map(Table::copy)
                .any(|copy| !copy.categorical.is_empty())
        })
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

/// The hot-table size of polars' streaming group-by (keys per pipeline held
/// before they spill to its slower cold table). polars' default, 4,096, made a
/// group-by over 100,000 user ids spend a third of its time evicting keys;
/// 131,072 took the benchmark's top-users query from ~175 ms to ~125 ms with no
/// change on small group-bys (the table's pages are only touched as keys
/// arrive; docs/benchmarks.md).
pub const HOT_TABLE_SIZE: usize = 131_072;

/// Sets the polars engine options the data magics are tuned for, unless the
/// user set them: `POLARS_HOT_TABLE_SIZE` ([`HOT_TABLE_SIZE`]).
///
/// Call at the start of `main`, before any thread exists: it writes the
/// process environment, which polars reads when it plans each group-by.
pub fn tune_engine() {
    if std::env::var_os("POLARS_HOT_TABLE_SIZE").is_none() {
        std::env::set_var("POLARS_HOT_TABLE_SIZE", HOT_TABLE_SIZE.to_string());
    }
}

/// Registers the data magics, sharing one catalog.
pub fn register(registry: &mut Registry) -> Arc<Catalog> {
    let catalog = Arc::new(Catalog::default());
    registry.register(Arc::new(Load(catalog.clone())));
    registry.register(Arc::new(Tables(catalog.clone())));
    registry.register(Arc::new(SchemaMagic(catalog.clone())));
    registry.register(Arc::new(Head(catalog.clone())));
    registry.register(Arc::new(DropTable(catalog.clone())));
    registry.register(Arc::new(Sql(catalog.clone())));
    registry.register(Arc::new(describe::Describe(catalog.clone())));
    registry.register(Arc::new(profile::Profile(catalog.clone())));
    registry.register(Arc::new(chart::Plot(catalog.clone())));
    cells::register(registry, catalog.clone());
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

/// Runs a query on the polars engine [`engine::choose`] picks for its plan:
/// the streaming engine (works through a table in batches, so memory stays
/// bounded for tables larger than RAM) unless the plan is a chain of joins
/// with no large aggregation, which the in-memory engine runs faster
/// (docs/benchmarks.md).
///
/// The streaming engine does not cover every plan yet (some joins reach an
/// `unreachable!` inside it); a panic in one engine is caught and the query
/// runs again on the other. A panic in polars never takes the kernel down.
pub fn run(frame: LazyFrame) -> PolarsResult<DataFrame> {
    let attempt = |engine: Engine, frame: LazyFrame| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            frame
                .collect_with_engine(engine)
                .map(|result| result.unwrap_single())
        }))
    };
    let first = engine::choose(&frame.logical_plan);
    let other = match first {
        Engine::InMemory => Engine::Streaming,
        _ => Engine::InMemory,
    };
    match attempt(first, frame.clone()) {
        Ok(result) => result,
        Err(_) => match attempt(other, frame) {
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

/// A table by name, with its in-memory copy as looked up for one query.
type TableWithCopy = (String, Table, Option<Arc<cache::Copy>>);

/// A query over the tables as users see them (see [`Table::view`]).
fn text_query(tables: &[TableWithCopy], query: &str) -> Result<LazyFrame, MagicError> {
    let mut context = SQLContext::new();
    for (name, table, copy) in tables {
        context.register(name, table.view_of(copy.as_deref()));
    }
    context.execute(query).map_err(|e| sql_error(query, e))
}

/// The frame with its categorical columns cast back to text.
fn as_text(mut frame: LazyFrame) -> PolarsResult<LazyFrame> {
    let schema = frame.collect_schema()?;
    let categorical: Vec<PlSmallStr> = schema
        .iter()
        .filter(|(_, dtype)| matches!(dtype, DataType::Categorical(..)))
        .map(|(name, _)| name.clone())
        .collect();
    Ok(cache::text_again(frame, &categorical))
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

const LOAD_USAGE: &str =
    "usage: %load NAME PATH [--format csv|tsv|parquet|json|ndjson|ipc] [--sep C] [--no-header]";

#[derive(clap::Parser)]
#[command(name = "%load", no_binary_name = true, disable_help_flag = true)]
struct LoadLine {
    name: String,
    path: String,
    #[arg(long, ignore_case = true, value_parser = ["csv", "tsv", "parquet", "json", "ndjson", "ipc"])]
    format: Option<String>,
    /// One ASCII character; `\t` for a tab.
    #[arg(long, value_parser = separator)]
    sep: Option<u8>,
    #[arg(long)]
    no_header: bool,
}

fn separator(value: &str) -> Result<u8, String> {
    let value = if value == "\\t" { "\t" } else { value };
    match value.as_bytes() {
        [byte] if byte.is_ascii() => Ok(*byte),
        _ => Err(format!("takes one ASCII character, got `{value}`")),
    }
}

fn parse_load(args: &[String]) -> Result<LoadArgs, MagicError> {
    let LoadLine {
        name,
        path,
        format,
        sep: separator,
        no_header,
    } = ferrolab_magics::parse_args(args, LOAD_USAGE)?;
    let (name, path, header) = (&name, &path, !no_header);
    valid_name(name)?;
    let format = match format {
        Some(f) => f.to_lowercase(),
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
    let pattern = glob::Pattern::new(pattern)
        .map_err(|e| MagicError::usage(format!("`{pattern}` is not a file name pattern: {e}")))?;
    let mut found: Vec<String> = std::fs::read_dir(if dir.is_empty() { "/" } else { dir })
        .map_err(|e| {
            MagicError::new(
                "FileNotFound",
                format!("cannot list {dir}: {e} (relative paths start at {})", cwd()),
            )
        })?
        .flatten()
        .filter(|entry| pattern.matches(&entry.file_name().to_string_lossy()))
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

/// The table's scan, whether its row count is cheap, and its files.
fn scan(args: &LoadArgs) -> Result<(LazyFrame, bool, Vec<String>), MagicError> {
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
        let (frame, cheap) = frames
            .pop()
            .ok_or_else(|| MagicError::new("FileNotFound", "no file"))?;
        return Ok((frame, cheap, files));
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
    Ok((all, cheap, files))
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
         Registers PATH as table NAME, then decodes it into memory once when it fits the\n\
         memory budget (FERROLAB_DATA_CACHE_MB; large files in the background): queries use\n\
         that copy while the files are unchanged, and scan the files otherwise.\n\
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
        let (mut frame, cheap_count, files) = scan(&args)?;
        // Reading the schema checks the files (readable, one schema) before the
        // table is registered; a failure leaves the catalog as it was.
        let mut schema = frame
            .collect_schema()
            .map_err(|e| polars_error(&format!("cannot read {}", args.path), e))?;
        // Decimal columns are read as 64-bit floats (docs/data.md, "Numbers").
        let decimals: Vec<Expr> = schema
            .iter()
            .filter(|(_, dtype)| matches!(dtype, DataType::Decimal(..)))
            .map(|(name, _)| col(name.clone()).cast(DataType::Float64))
            .collect();
        if !decimals.is_empty() {
            frame = frame.with_columns(decimals);
            schema = frame
                .collect_schema()
                .map_err(|e| polars_error(&format!("cannot read {}", args.path), e))?;
        }
        // A JSON array is read into memory by the scan itself.
        let cache = (args.format != "json").then(|| {
            cache::Slot::start(
                frame.clone(),
                files.into_iter().map(Into::into).collect(),
                cheap_count,
                self.0.budget.clone(),
            )
        });
        self.0.insert(
            &args.name,
            Table {
                frame,
                source: format!("{} ({})", args.path, args.format),
                cheap_count,
                cache,
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
        "%tables\n\nLists every table: where it comes from, its row count when that is cheap (Parquet, IPC, in memory), its columns, and whether it is held in memory."
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
        let mut memory = Vec::new();
        for (name, table) in tables {
            let copy = table.copy();
            let mut frame = table.view_of(copy.as_deref());
            let schema = frame
                .collect_schema()
                .map(|s| schema_text(&s))
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            let count = match &copy {
                Some(copy) => Some(copy.frame.height() as i64),
                None if table.cheap_count => row_count(&table.frame).ok().map(|n| n as i64),
                None => None,
            };
            names.push(name);
            rows.push(count);
            sources.push(table.source);
            schemas.push(schema);
            memory.push(match &table.cache {
                Some(slot) => slot.describe(),
                None => "computed when queried".to_string(),
            });
        }
        let df = df!("table" => names, "rows" => rows, "source" => sources, "columns" => schemas, "memory" => memory)
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

struct DropTable(Arc<Catalog>);

impl Magic for DropTable {
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
                    cache: None,
                },
            )?;
        }
        let df = match run(frame) {
            Ok(df) => df,
            // A failure that only categorical copies cause goes away on text.
            Err(_) if self.0.has_categorical_copies() => {
                let mut frame = self.0.query_as_text(&args.query)?;
                if let Some(limit) = args.limit {
                    frame = frame.limit(limit);
                }
                run(frame).map_err(|e| polars_error("the query failed", e))?
            }
            Err(e) => return Err(polars_error("the query failed", e)),
        };
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

    fn text(bundle: Option<MimeBundle>) -> String {
        bundle
            .expect("a result")
            .get("text/plain")
            .expect("text")
            .to_string()
    }

    fn with_catalog(budget_mb: usize) -> (Registry, Arc<Catalog>) {
        with_budget(cache::Budget::new(budget_mb << 20))
    }

    fn with_budget(budget: Arc<cache::Budget>) -> (Registry, Arc<Catalog>) {
        let mut registry = Registry::empty();
        let catalog = Arc::new(Catalog::with_budget(budget));
        registry.register(Arc::new(Load(catalog.clone())));
        registry.register(Arc::new(Tables(catalog.clone())));
        registry.register(Arc::new(Sql(catalog.clone())));
        registry.register(Arc::new(Head(catalog.clone())));
        (registry, catalog)
    }

    #[test]
    fn loaded_tables_are_held_in_memory_with_text_kept_as_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.csv");
        std::fs::write(
            &path,
            "model,tokens\nsmol,10\nsmol,30\nllama,5\nsmol,1\nllama,2\n",
        )
        .expect("write");
        let (registry, catalog) = with_catalog(64);
        run(&registry, &format!("%load logs {}", path.display())).expect("load");
        let copy = catalog
            .find("logs")
            .expect("logs")
            .copy()
            .expect("in memory");
        assert_eq!(copy.categorical, ["model"]);
        let tables = text(run(&registry, "%tables").expect("tables"));
        assert!(tables.contains("in memory"), "{tables}");
        // `model` (2 values in 3 rows) is held as a categorical, but results,
        // schemas and rows show text, and string functions work on it.
        let grouped = text(
            run(
                &registry,
                "%sql SELECT model, SUM(tokens) AS t FROM logs GROUP BY model ORDER BY model",
            )
            .expect("sql"),
        );
        assert!(
            grouped.contains("str") && !grouped.contains("cat"),
            "{grouped}"
        );
        assert!(grouped.find("llama") < grouped.find("smol"), "{grouped}");
        let like = text(
            run(
                &registry,
                "%sql SELECT UPPER(model) AS m FROM logs WHERE model LIKE 'sm%'",
            )
            .expect("LIKE runs on the text"),
        );
        assert!(
            like.contains("SMOL") && like.contains("shape: (3, 1)"),
            "{like}"
        );
        let joined = text(
            run(&registry, "%sql SELECT l.tokens FROM logs l JOIN (SELECT 'llama' AS model) m ON l.model = m.model")
                .expect("join with a text column"),
        );
        assert!(
            joined.contains("shape: (2, 1)") && joined.contains('5'),
            "{joined}"
        );
        let head = text(run(&registry, "%head logs").expect("head"));
        assert!(head.contains("str") && !head.contains("cat"), "{head}");
        let kept = run(&registry, "%sql --out m SELECT model FROM logs").expect("out");
        assert!(text(kept).contains("str"));
        let derived = text(run(&registry, "%tables").expect("tables"));
        assert!(derived.contains("model: str"), "{derived}");
        assert!(!derived.contains("cat"), "{derived}");
    }

    #[test]
    fn like_tests_a_categorical_column_without_the_query_going_to_text() {
        let categorical = DataType::from_categories(Categories::global());
        let frame = df!("model" => ["smol", "smol", "llama"], "tokens" => [1i64, 2, 3])
            .expect("frame")
            .lazy()
            .with_column(col("model").cast(categorical));
        let mut context = SQLContext::new();
        context.register("logs", frame);
        for (query, rows) in [
            ("SELECT model, tokens FROM logs WHERE model LIKE 'sm%'", 2),
            ("SELECT model, tokens FROM logs WHERE model LIKE 's_ol'", 2),
            (
                "SELECT model, tokens FROM logs WHERE model NOT LIKE '%ama'",
                2,
            ),
        ] {
            let mut planned = context.execute(query).expect(query);
            // The query plans on the categorical (the data magics would
            // otherwise run it again with every categorical column as text).
            let schema = planned.collect_schema().expect(query);
            assert!(
                schema.get("model").is_some_and(DataType::is_categorical),
                "{query}: {schema:?}"
            );
            let found = planned.collect().expect(query);
            assert_eq!(found.height(), rows, "{query}: {found}");
        }
        // LIKE on a number is still an error, as in DuckDB.
        let number = context
            .execute("SELECT tokens FROM logs WHERE tokens LIKE '1%'")
            .and_then(|mut q| q.collect_schema().map(|_| ()));
        assert!(number.is_err(), "{number:?}");
    }

    #[test]
    fn an_in_subquery_on_one_table_of_a_comma_join_filters_that_table_first() {
        let mut context = SQLContext::new();
        let a = df!("k" => [1i64, 2, 3, 4], "x" => ["p", "q", "p", "r"]).expect("a");
        let b = df!("k" => [1i64, 2, 3, 4], "y" => [10i64, 20, 30, 40]).expect("b");
        let c = df!("x" => ["p", "r", "r"]).expect("c");
        context.register("a", a.lazy());
        context.register("b", b.lazy());
        context.register("c", c.lazy());
        for query in [
            // The IN is all the WHERE has besides the join condition.
            "SELECT a.k, y FROM a, b WHERE a.k = b.k AND x IN (SELECT x FROM c) ORDER BY a.k",
            "SELECT a.k, y FROM b, a WHERE a.k = b.k AND a.x IN (SELECT x FROM c) AND y > 0 ORDER BY a.k",
        ] {
            let planned = context.execute(query).expect(query);
            // The semi join sits below the inner join, on `a` alone.
            let outermost = planned.logical_plan.into_iter().find_map(|node| match node {
                DslPlan::Join { options, .. } => Some(options.args.how.clone()),
                _ => None,
            });
            assert!(
                matches!(outermost, Some(JoinType::Inner)),
                "{query}: {outermost:?}"
            );
            let found = planned.collect().expect(query);
            let expected = df!("k" => [1i64, 3, 4], "y" => [10i64, 30, 40]).expect("expected");
            assert!(found.equals(&expected), "{query}: {found}");
        }
    }

    #[test]
    fn a_comma_join_keeps_its_join_keys_and_pushes_in_lists_below_the_join() {
        let mut context = SQLContext::new();
        let a = df!("ak" => [1i64, 2, 3, 4], "x" => ["p", "q", "p", "r"]).expect("a");
        let b = df!("bk" => [1i64, 2, 3, 4], "y" => [10i64, 20, 30, 40]).expect("b");
        context.register("a", a.lazy());
        context.register("b", b.lazy());
        // `ak = n.bk`: one side unqualified, the other qualified by an alias; with
        // an IN list on the aliased table this was a cross join, then a filter.
        let query = "SELECT ak, y FROM a, b n WHERE ak = n.bk AND n.y IN (10, 30, 40) \
                     AND a.x IN ('p', 'r') ORDER BY ak";
        let planned = context.execute(query).expect(query);
        let joins: Vec<JoinType> = planned
            .logical_plan
            .into_iter()
            .filter_map(|node| match node {
                DslPlan::Join { options, .. } => Some(options.args.how.clone()),
                _ => None,
            })
            .collect();
        assert!(matches!(joins[..], [JoinType::Inner]), "{joins:?}");
        // Both IN lists filter their table below the join (an imploded list
        // kept the whole WHERE above it).
        let plan = planned.describe_optimized_plan().expect("plan");
        let join = plan.find("INNER JOIN").expect("a join");
        assert!(plan[..join].find("FILTER").is_none(), "{plan}");
        assert_eq!(plan.matches("is_in").count(), 2, "{plan}");
        let found = planned.collect().expect(query);
        let expected = df!("ak" => [1i64, 3, 4], "y" => [10i64, 30, 40]).expect("expected");
        assert!(found.equals(&expected), "{found}");
    }

    #[test]
    fn an_or_across_tables_filters_each_table_it_constrains_and_filtered_tables_join_first() {
        let mut context = SQLContext::new();
        let s = df!("sk" => [1i64, 2, 3], "snk" => [0i64, 1, 2]).expect("s");
        let l = df!("lsk" => [1i64, 1, 2, 2, 3, 3], "v" => [5i64, -5, 7, -1, -7, 0]).expect("l");
        let n = df!("nk" => [0i64, 1, 2], "name" => ["A", "B", "C"]).expect("n");
        context.register("s", s.lazy());
        context.register("l", l.lazy());
        context.register("n", n.lazy());
        let query = "SELECT sk, v, n1.name AS name FROM s, l, n n1 \
                     WHERE sk = lsk AND snk = n1.nk \
                     AND ((n1.name = 'A' AND v > 0) OR (n1.name = 'B' AND v < 0)) ORDER BY sk, v";
        let planned = context.execute(query).expect(query);
        let plan = planned.describe_optimized_plan().expect("plan");
        // The OR stays above the joins; what it implies for `n1` (name A or B)
        // and for `l` (v above or below 0) filters each below them.
        let join = plan.find("INNER JOIN").expect("a join");
        assert_eq!(plan[..join].matches("FILTER").count(), 1, "{plan}");
        assert_eq!(plan[join..].matches("FILTER").count(), 2, "{plan}");
        // Both `l` and `n1` are filtered; `n1`, the smaller, joins `s` first.
        // (the inner join, listed first, is `s` with `n1`; `l` joins the result).
        let n_scan = plan.find("DF [\"nk\"").expect("n's scan");
        let l_scan = plan.find("DF [\"lsk\"").expect("l's scan");
        assert!(n_scan < l_scan, "{plan}");
        let found = planned.collect().expect(query);
        let expected =
            df!("sk" => [1i64, 2], "v" => [5i64, -1], "name" => ["A", "B"]).expect("expected");
        assert!(found.equals(&expected), "{found}");
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let (registry, dir) = setup();
        let path = dir.path().join("a.csv");
        run(&registry, &format!("%load logs {}", path.display())).expect("load");
        let before = text(run(&registry, "%sql SELECT SUM(tokens) AS t FROM logs").expect("sql"));
        assert!(before.contains("45"), "{before}");
        std::fs::write(&path, "model,tokens\nsmol,1000\n").expect("rewrite");
        let after = text(run(&registry, "%sql SELECT SUM(tokens) AS t FROM logs").expect("sql"));
        assert!(after.contains("1000") && !after.contains("45"), "{after}");
    }

    #[test]
    fn large_tables_are_copied_in_the_background_and_queried_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        let mut csv = String::from("model,tokens\n");
        for i in 0..200_000 {
            csv.push_str(&format!("m{},{i}\n", i % 3));
        }
        std::fs::write(&path, csv).expect("write");
        // Everything is "large": %load returns before the copy is made.
        let (registry, catalog) = with_budget(cache::Budget::with_sync_bytes(64 << 20, 0));
        run(&registry, &format!("%load log {}", path.display())).expect("load");
        let sum = "%sql SELECT model, SUM(tokens) AS t FROM log GROUP BY model ORDER BY model";
        let first = text(run(&registry, sum).expect("a query while copying"));
        while catalog.loading() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let copy = catalog.find("log").expect("log").copy().expect("in memory");
        assert_eq!(copy.categorical, ["model"]);
        assert_eq!(text(run(&registry, sum).expect("on the copy")), first);
        // A change after the copy: queries read the file at once; a new copy is
        // made by the first query once the file has not changed for 2 s (a
        // file still being written is not decoded again and again).
        std::fs::write(&path, "model,tokens\nm9,7\n").expect("rewrite");
        let changed = text(run(&registry, sum).expect("after the change"));
        assert!(
            changed.contains("m9") && changed.contains("shape: (1, 2)"),
            "{changed}"
        );
        assert!(!catalog.loading());
        let tables = text(run(&registry, "%tables").expect("tables"));
        assert!(tables.contains("files changed"), "{tables}");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let settled = text(run(&registry, sum).expect("once settled"));
        assert_eq!(settled, changed);
        while catalog.loading() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let copy = catalog
            .find("log")
            .expect("log")
            .copy()
            .expect("copied again");
        assert_eq!(copy.frame.height(), 1);
    }

    /// The streaming engine's joins on integer keys in a dense range go
    /// through the direct index of magics/data/polars-expr (PATCHES.md); the
    /// in-memory engine's joins do not. Both must give the same rows, with
    /// gaps, repeated build keys, keys outside the range, nulls and every
    /// join type.
    #[test]
    fn joins_on_dense_integer_keys_match_the_in_memory_engine() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        // 1,200 build rows over keys -100..1400 (gaps, some repeated), 30,000
        // probe rows over -150..1500 with one in 50 null.
        let build_keys: Vec<Option<i64>> =
            (0..1200).map(|_| Some(next(1500) as i64 - 100)).collect();
        let probe_keys: Vec<Option<i64>> = (0..30_000)
            .map(|_| (next(50) != 0).then(|| next(1650) as i64 - 150))
            .collect();
        let build_payload: Vec<i64> = (0..1200).collect();
        let probe_payload: Vec<i64> = (0..30_000).collect();
        for dtype in [DataType::Int64, DataType::Int32, DataType::UInt32] {
            let unsigned = dtype == DataType::UInt32;
            let keep = |keys: &[Option<i64>]| -> Vec<Option<i64>> {
                keys.iter()
                    .map(|k| k.map(|k| if unsigned { k + 150 } else { k }))
                    .collect()
            };
            let build = df!("k" => keep(&build_keys), "b" => &build_payload)
                .expect("build")
                .lazy()
                .with_column(col("k").cast(dtype.clone()));
            let probe = df!("k" => keep(&probe_keys), "p" => &probe_payload)
                .expect("probe")
                .lazy()
                .with_column(col("k").cast(dtype.clone()));
            for how in [
                JoinType::Inner,
                JoinType::Left,
                JoinType::Right,
                JoinType::Full,
            ] {
                let query = probe.clone().join(
                    build.clone(),
                    [col("k")],
                    [col("k")],
                    JoinArgs::new(how.clone()),
                );
                let sorted = |engine: Engine| {
                    let df = query
                        .clone()
                        .collect_with_engine(engine)
                        .expect("join")
                        .unwrap_single();
                    let names: Vec<PlSmallStr> =
                        df.get_column_names().into_iter().cloned().collect();
                    df.sort(names, SortMultipleOptions::default().with_nulls_last(true))
                        .expect("sort")
                };
                let (streaming, in_memory) = (sorted(Engine::Streaming), sorted(Engine::InMemory));
                assert!(
                    streaming.height() > 1000,
                    "{how:?} {dtype}: {}",
                    streaming.height()
                );
                assert!(
                    streaming.equals_missing(&in_memory),
                    "{how:?} on {dtype}:\n{streaming}\n{in_memory}"
                );
            }
        }
    }

    #[test]
    fn the_memory_budget_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.csv");
        let mut csv = String::from("id,name\n");
        for i in 0..100_000 {
            csv.push_str(&format!("{i},name-{i}\n"));
        }
        std::fs::write(&path, csv).expect("write");
        // A setting that is not a number: off, and every table says why.
        let (broken, _) = with_budget(cache::Budget::from_setting(Some("2GB")));
        run(&broken, &format!("%load t {}", path.display())).expect("load");
        let tables = text(run(&broken, "%tables").expect("tables"));
        assert!(tables.contains("FERROLAB_DATA_CACHE_MB"), "{tables}");
        // Off: scanned, and still queried correctly.
        let (off, _) = with_catalog(0);
        run(&off, &format!("%load t {}", path.display())).expect("load");
        assert!(text(run(&off, "%tables").expect("tables")).contains("scanned: off"));
        // Too small for the table: scanned, with the reason.
        let (small, catalog) = with_catalog(1);
        run(&small, &format!("%load t {}", path.display())).expect("load");
        while catalog.loading() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let tables = text(run(&small, "%tables").expect("tables"));
        assert!(
            tables.contains("scanned") && tables.contains("1 MB"),
            "{tables}"
        );
        let count = text(run(&small, "%sql SELECT COUNT(*) AS n FROM t").expect("sql"));
        assert!(count.contains("100000"), "{count}");
        // High-cardinality text stays text in the copy.
        let (big, catalog) = with_catalog(64);
        run(&big, &format!("%load t {}", path.display())).expect("load");
        while catalog.loading() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let copy = catalog.find("t").expect("t").copy().expect("in memory");
        assert!(copy.categorical.is_empty());
        assert_eq!(copy.frame.height(), 100_000);
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
