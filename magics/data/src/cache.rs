//! The in-memory copy of a loaded table.
//!
//! `%load` registers a scan; the table is also decoded once into memory (in
//! the background for large files), so later queries skip reading and
//! decoding the files. The copy is used only while every file it came from is
//! unchanged (length and modification time, checked before each query);
//! otherwise queries scan the files again and a fresh copy is made.
//!
//! Text columns with few distinct values (model names, statuses, teams) are
//! held as polars categoricals in the copy: grouping, joining and comparing
//! them then works on small integer codes instead of strings. Users never see
//! that: results are cast back to text, and a query that polars cannot run on
//! a categorical (string functions such as `LIKE` or `UPPER`, a join with a
//! text column) runs again on the plain text (docs/data.md).
//!
//! All copies of one kernel share one memory budget
//! (`FERROLAB_DATA_CACHE_MB`, default a quarter of the machine's memory); a
//! table that would not fit stays a scan.

use crate::run;
use polars::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Files up to this size (together) are decoded inside `%load` itself; larger
/// ones in the background, so `%load` stays instant.
const SYNC_FILL_BYTES: u64 = 16 << 20;

/// At most this many distinct values (in the first rows) make a text column
/// categorical in the copy, and at most one per two rows.
const MAX_CATEGORIES: usize = 4096;
const CATEGORY_SAMPLE_ROWS: usize = 200_000;

/// The memory all in-memory copies of one kernel may hold.
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Tables whose files are larger than this are copied in the background.
    sync_bytes: u64,
    /// Why copies are off, when they are.
    off: Option<String>,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Budget::with_sync_bytes(limit, SYNC_FILL_BYTES)
    }

    /// A budget that copies tables larger than `sync_bytes` in the background.
    pub fn with_sync_bytes(limit: usize, sync_bytes: u64) -> Arc<Self> {
        let off = (limit == 0).then(|| "off (FERROLAB_DATA_CACHE_MB=0)".to_string());
        Budget::build(limit, sync_bytes, off)
    }

    fn build(limit: usize, sync_bytes: u64, off: Option<String>) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            sync_bytes,
            off,
        })
    }

    /// `FERROLAB_DATA_CACHE_MB`, else a quarter of the machine's memory.
    pub fn from_env() -> Arc<Self> {
        Budget::from_setting(std::env::var("FERROLAB_DATA_CACHE_MB").ok().as_deref())
    }

    /// The budget a `FERROLAB_DATA_CACHE_MB` value gives. A value that is not
    /// a number turns copies off, and `%tables` says why on every table.
    pub fn from_setting(setting: Option<&str>) -> Arc<Self> {
        let Some(setting) = setting.map(str::trim).filter(|s| !s.is_empty()) else {
            return Budget::new(total_memory() / 4);
        };
        match setting.parse::<usize>() {
            Ok(mb) => Budget::new(mb.saturating_mul(1 << 20)),
            Err(_) => Budget::build(
                0,
                SYNC_FILL_BYTES,
                Some(format!(
                    "off: FERROLAB_DATA_CACHE_MB={setting:?} is not a whole number of megabytes (0 turns copies off)"
                )),
            ),
        }
    }

    /// Takes `bytes` from the budget, or says how much is left.
    fn reserve(&self, bytes: usize) -> Result<(), usize> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used.saturating_add(bytes) > self.limit {
                return Err(self.limit.saturating_sub(used));
            }
            match self.used.compare_exchange(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

fn total_memory() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
        })
        .map_or(8 << 30, |kb| kb << 10)
}

/// One decoded table, its bytes held against the budget until dropped.
pub struct Copy {
    pub frame: DataFrame,
    /// The text columns held as categoricals.
    pub categorical: Vec<PlSmallStr>,
    pub bytes: usize,
    stamps: Vec<Stamp>,
    budget: Arc<Budget>,
}

impl Drop for Copy {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl Copy {
    /// The copy as the user's table: categoricals back to text.
    pub fn as_text(&self) -> LazyFrame {
        text_again(self.frame.clone().lazy(), &self.categorical)
    }
}

/// `columns` cast back to text.
pub fn text_again(frame: LazyFrame, columns: &[PlSmallStr]) -> LazyFrame {
    if columns.is_empty() {
        return frame;
    }
    frame.with_columns(
        columns
            .iter()
            .map(|name| col(name.clone()).cast(DataType::String))
            .collect::<Vec<_>>(),
    )
}

#[derive(Clone, PartialEq, Debug)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamps(files: &[PathBuf]) -> Option<Vec<Stamp>> {
    files
        .iter()
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            Some(Stamp {
                len: meta.len(),
                modified: meta.modified().ok(),
            })
        })
        .collect()
}

/// A file changed less than this long ago is still being written (a live
/// log): its table is scanned, and copied only once its files settle, so a
/// file appended to every second is not decoded again after every append.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether no file changed in the last [`SETTLE`].
fn settled(stamps: &[Stamp]) -> bool {
    let now = SystemTime::now();
    stamps.iter().all(|stamp| {
        stamp
            .modified
            .is_none_or(|modified| now.duration_since(modified).is_ok_and(|age| age >= SETTLE))
    })
}

/// The files' total length.
fn total_len(stamps: &[Stamp]) -> u64 {
    stamps.iter().map(|stamp| stamp.len).sum()
}

enum State {
    Filling,
    Ready(Arc<Copy>),
    /// Not held in memory, and why (queries scan the files).
    Skipped(String),
    /// The files changed since the copy was made; a query after they settle
    /// makes a new one.
    Stale,
}

/// The in-memory state of one loaded table.
pub struct Slot {
    scan: LazyFrame,
    files: Vec<PathBuf>,
    /// How the decoded size is guessed before decoding: from a sample of rows
    /// (Parquet, IPC: the row count is in the files) or from the files' size.
    counted: bool,
    budget: Arc<Budget>,
    state: Mutex<State>,
}

impl Slot {
    /// Makes the table's copy: now for small files, else in the background.
    pub fn start(
        scan: LazyFrame,
        files: Vec<PathBuf>,
        counted: bool,
        budget: Arc<Budget>,
    ) -> Arc<Self> {
        let slot = Arc::new(Slot {
            scan,
            files,
            counted,
            budget,
            state: Mutex::new(State::Filling),
        });
        if let Some(why) = &slot.budget.off {
            slot.set(State::Skipped(why.clone()));
            return slot;
        }
        let size = stamps(&slot.files).map_or(0, |now| total_len(&now));
        if size <= slot.budget.sync_bytes {
            slot.fill();
        } else {
            slot.fill_in_background();
        }
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, state: State) {
        *self.lock() = state;
    }

    /// The copy, if there is one and its files are unchanged. A copy whose
    /// files changed is dropped and made again in the background.
    pub fn current(self: &Arc<Self>) -> Option<Arc<Copy>> {
        let ready = match &*self.lock() {
            State::Ready(copy) => Some(copy.clone()),
            State::Stale => None,
            State::Filling | State::Skipped(_) => return None,
        };
        let now = stamps(&self.files);
        match ready {
            Some(copy) if now.as_ref() == Some(&copy.stamps) => Some(copy),
            Some(copy) => {
                {
                    let mut state = self.lock();
                    if matches!(&*state, State::Ready(now) if Arc::ptr_eq(now, &copy)) {
                        *state = State::Stale;
                    }
                }
                self.refill(now.as_deref());
                None
            }
            None => {
                self.refill(now.as_deref());
                None
            }
        }
    }

    /// Starts making the copy again (once the files changed and settled);
    /// `now` is the files' state as just read.
    fn refill(self: &Arc<Self>, now: Option<&[Stamp]>) {
        if !now.is_some_and(settled) {
            return;
        }
        {
            let mut state = self.lock();
            if !matches!(*state, State::Stale) {
                return;
            }
            *state = State::Filling;
        }
        self.fill_in_background();
    }

    fn fill_in_background(self: &Arc<Self>) {
        let background = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrolab-table-cache".into())
            .spawn(move || background.fill());
        if let Err(e) = spawned {
            // The table is scanned instead, as without a cache.
            self.set(State::Skipped(format!("could not start loading: {e}")));
        }
    }

    /// Whether the copy is being made.
    pub fn filling(&self) -> bool {
        matches!(*self.lock(), State::Filling)
    }

    /// What `%tables` says about the copy, as of the last
    /// [`Slot::current`].
    pub fn describe(&self) -> String {
        match &*self.lock() {
            State::Ready(copy) => format!("in memory, {}", megabytes(copy.bytes)),
            State::Filling => "loading into memory".to_string(),
            State::Stale => format!(
                "scanned: its files changed; copied again {} s after the last change",
                SETTLE.as_secs()
            ),
            State::Skipped(why) => format!("scanned: {why}"),
        }
    }

    fn fill(&self) {
        // A panic inside polars must not leave the table "loading" for ever;
        // the table is scanned instead.
        let state = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode()))
            .unwrap_or_else(|panic| {
                State::Skipped(format!(
                    "polars failed while loading it ({})",
                    ferrolab_magics::panic_message(panic.as_ref())
                ))
            });
        self.set(state);
    }

    fn decode(&self) -> State {
        let Some(before) = stamps(&self.files) else {
            return State::Skipped("a file could not be read".to_string());
        };
        match self.guess_bytes(&before) {
            Ok(guess) if guess > self.budget.limit => {
                return State::Skipped(format!(
                    "about {} decoded, more than the cache's {}",
                    megabytes(guess),
                    megabytes(self.budget.limit)
                ))
            }
            Ok(_) => {}
            Err(e) => return State::Skipped(format!("could not be sized: {e}")),
        }
        let frame = match run(self.scan.clone()) {
            Ok(frame) => frame,
            Err(e) => return State::Skipped(format!("could not be decoded: {e}")),
        };
        let (frame, categorical) = with_categories(frame);
        let bytes = frame.estimated_size();
        if let Err(left) = self.budget.reserve(bytes) {
            return State::Skipped(format!(
                "{} decoded, the cache has {} left of {}",
                megabytes(bytes),
                megabytes(left),
                megabytes(self.budget.limit)
            ));
        }
        let copy = Copy {
            frame,
            categorical,
            bytes,
            stamps: before.clone(),
            budget: self.budget.clone(),
        };
        // A file that changed while it was decoded may have been read half
        // old, half new: such a copy is not kept.
        if stamps(&self.files) != Some(before) {
            return State::Stale;
        }
        State::Ready(Arc::new(copy))
    }

    /// A guess at the decoded size, before decoding: rows times the size of a
    /// sample row where the row count is cheap, else the files' size (text
    /// formats decode to about their size or less).
    fn guess_bytes(&self, stamps: &[Stamp]) -> PolarsResult<usize> {
        if !self.counted {
            return Ok(total_len(stamps) as usize);
        }
        let rows = crate::row_count(&self.scan)? as usize;
        let sample = run(self.scan.clone().limit(1000))?;
        if sample.height() == 0 {
            return Ok(0);
        }
        Ok(sample.estimated_size() / sample.height() * rows)
    }
}

fn megabytes(bytes: usize) -> String {
    format!("{:.0} MB", bytes as f64 / (1 << 20) as f64)
}

/// The frame with each text column of few distinct values as a categorical.
fn with_categories(frame: DataFrame) -> (DataFrame, Vec<PlSmallStr>) {
    let chosen: Vec<PlSmallStr> = frame
        .columns()
        .iter()
        .filter(|column| column.dtype() == &DataType::String)
        .filter(|column| {
            let sample = column
                .as_materialized_series()
                .head(Some(CATEGORY_SAMPLE_ROWS));
            sample
                .n_unique()
                .is_ok_and(|n| n <= MAX_CATEGORIES && 2 * n <= sample.len())
        })
        .map(|column| column.name().clone())
        .collect();
    if chosen.is_empty() {
        return (frame, chosen);
    }
    let categorical = DataType::from_categories(Categories::global());
    let cast = frame.clone().lazy().with_columns(
        chosen
            .iter()
            .map(|name| col(name.clone()).cast(categorical.clone()))
            .collect::<Vec<_>>(),
    );
    match run(cast) {
        Ok(cast) => (cast, chosen),
        // Keeping the text is always correct, only slower.
        Err(_) => (frame, Vec::new()),
    }
}
