//! The magics every ferrolab kernel has: `%lsmagic`, `%help`, `%time`, `%env`, and the
//! display cell magics `%%html`, `%%markdown`, `%%svg`, `%%latex`.

use crate::output::{MimeBundle, Stream};
use crate::parse::{Invocation, MagicKind};
use crate::registry::{help_bundle, Magic, MagicContext, MagicError, Registry};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Registry {
    /// A registry holding the built-in magics (`%lsmagic`, `%help`, `%time`, `%env`,
    /// `%%html`, `%%markdown`, `%%svg`, `%%latex`).
    pub fn with_builtins() -> Self {
        let mut registry = Self::empty();
        register(&mut registry);
        registry
    }
}

fn register(registry: &mut Registry) {
    registry.register(Arc::new(LsMagic));
    registry.register(Arc::new(Help));
    registry.register(Arc::new(Time));
    registry.register(Arc::new(Env));
    for display in DisplayMagic::ALL {
        registry.register(Arc::new(display));
    }
}

const LINE: &[MagicKind] = &[MagicKind::Line];
const CELL: &[MagicKind] = &[MagicKind::Cell];
const BOTH: &[MagicKind] = &[MagicKind::Line, MagicKind::Cell];

fn no_args(invocation: &Invocation) -> Result<(), MagicError> {
    if invocation.args.is_empty() {
        Ok(())
    } else {
        Err(MagicError::usage(format!(
            "`{}{}` takes no arguments, got `{}`",
            invocation.kind.prefix(),
            invocation.name,
            invocation.raw_args
        )))
    }
}

struct LsMagic;

impl Magic for LsMagic {
    fn name(&self) -> &str {
        "lsmagic"
    }
    fn summary(&self) -> &str {
        "List every line and cell magic"
    }
    fn usage(&self) -> &str {
        "%lsmagic\n\nLists the magics this kernel knows. `%help NAME` or `%NAME?` shows one in full."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        no_args(invocation)?;
        let line = cx.registry.names(MagicKind::Line);
        let cell = cx.registry.names(MagicKind::Cell);
        let text = format!(
            "Available line magics:\n{}\n\nAvailable cell magics:\n{}\n\n\
             %help NAME or %NAME? shows the help of one magic.",
            line.join("  "),
            cell.join("  ")
        );
        let mut markdown = String::from("| magic | what it does |\n|---|---|\n");
        for magic in cx.registry.iter() {
            let forms: Vec<String> = magic
                .kinds()
                .iter()
                .map(|k| format!("`{}{}`", k.prefix(), magic.name()))
                .collect();
            markdown.push_str(&format!(
                "| {} | {} |\n",
                forms.join(" "),
                markdown_text(magic.summary())
            ));
        }
        Ok(Some(MimeBundle::text(text).with("text/markdown", markdown)))
    }
}

/// `text` as literal Markdown table text (`|` would end the cell). Summaries hold
/// no `$`: JupyterLab typesets `$…$` in Markdown as math even when escaped.
fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '$' | '|' | '\\' | '*' | '_' | '`' | '<') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

struct Help;

impl Magic for Help {
    fn name(&self) -> &str {
        "help"
    }
    fn summary(&self) -> &str {
        "Show the help of one magic"
    }
    fn usage(&self) -> &str {
        "%help NAME\n\nShows what the magic NAME does and how to call it. NAME may be written \
         with or without its % or %% prefix. `%NAME?` does the same."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let [name] = invocation.args.as_slice() else {
            return Err(MagicError::usage(
                "`%help` takes one magic name, as in `%help time`; `%lsmagic` lists them",
            ));
        };
        let bare = name.trim_start_matches('%').trim_end_matches('?');
        match cx.registry.get(bare) {
            Some(magic) => Ok(Some(help_bundle(magic.as_ref()))),
            None => {
                let suggestions = cx.registry.suggestions(bare, MagicKind::Line);
                let hint = if suggestions.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean {}?", suggestions.join(", "))
                };
                Err(MagicError::new(
                    "UnknownMagic",
                    format!("no magic named `{bare}`{hint} (run %lsmagic to list every magic)"),
                ))
            }
        }
    }
}

struct Time;

impl Magic for Time {
    fn name(&self) -> &str {
        "time"
    }
    fn summary(&self) -> &str {
        "Run code once and print how long it took"
    }
    fn usage(&self) -> &str {
        "%time CODE\n%%time\nCODE...\n\nRuns CODE (Rust or another magic) and prints the wall-clock \
         time it took, including compilation for Rust code. The code's own value is still shown."
    }
    fn kinds(&self) -> &[MagicKind] {
        BOTH
    }
    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let code = match invocation.kind {
            MagicKind::Line => invocation.raw_args.as_str(),
            MagicKind::Cell => invocation.body.as_str(),
        };
        if code.trim().is_empty() {
            return Err(MagicError::usage(
                "`%time` needs code to run, as in `%time 1 + 1` or a `%%time` cell",
            ));
        }
        let start = Instant::now();
        let result = cx.host.run_source(code, cx.out);
        let elapsed = start.elapsed();
        cx.out.stream(
            Stream::Stdout,
            &format!("Wall time: {}\n", format_duration(elapsed)),
        );
        result
    }
}

/// Formats a duration the way IPython's `%time` does: three significant digits.
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let (value, unit) = if secs >= 1.0 {
        (secs, "s")
    } else if secs >= 1e-3 {
        (secs * 1e3, "ms")
    } else if secs >= 1e-6 {
        (secs * 1e6, "µs")
    } else {
        (secs * 1e9, "ns")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}

struct Env;

/// Names whose values `%env` hides when listing, as IPython does.
const SECRET_MARKERS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASS", "CREDENTIAL"];

impl Magic for Env {
    fn name(&self) -> &str {
        "env"
    }
    fn summary(&self) -> &str {
        "Show or set environment variables"
    }
    fn usage(&self) -> &str {
        "%env                 list every variable (values of secrets are hidden)\n\
         %env NAME            show one variable\n\
         %env NAME=VALUE      set a variable (also `%env NAME VALUE`)\n\n\
         Variables set here are seen by magics and by processes the kernel starts \
         afterwards (cargo builds, servers). Rust cells already running in the evaluation \
         process see them after `:restart`."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        match invocation.args.as_slice() {
            [] => {
                let mut vars: Vec<(String, String)> = std::env::vars_os()
                    .map(|(k, v)| {
                        (
                            k.to_string_lossy().into_owned(),
                            v.to_string_lossy().into_owned(),
                        )
                    })
                    .collect();
                vars.sort();
                let text: String = vars
                    .iter()
                    .map(|(k, v)| {
                        let upper = k.to_uppercase();
                        if SECRET_MARKERS.iter().any(|m| upper.contains(m)) {
                            format!("{k}=<hidden>\n")
                        } else {
                            format!("{k}={v}\n")
                        }
                    })
                    .collect();
                Ok(Some(MimeBundle::text(text)))
            }
            [one] if !one.contains('=') => match std::env::var_os(one) {
                Some(value) => Ok(Some(MimeBundle::text(value.to_string_lossy().into_owned()))),
                None => Err(MagicError::new(
                    "KeyError",
                    format!(
                        "environment variable `{one}` is not set (set it with %env {one}=VALUE)"
                    ),
                )),
            },
            [assignment] => {
                let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
                set(name, value, cx)
            }
            [name, value] if !name.contains('=') => set(name, value, cx),
            _ => Err(MagicError::usage(format!(
                "`%env {}` is not understood; use `%env`, `%env NAME` or `%env NAME=VALUE`",
                invocation.raw_args
            ))),
        }
    }
}

fn set(
    name: &str,
    value: &str,
    cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    if name.is_empty() || name.contains('\0') || value.contains('\0') {
        return Err(MagicError::usage(
            "an environment variable needs a non-empty name, and neither name nor value may \
             contain a NUL byte",
        ));
    }
    std::env::set_var(name, value);
    cx.out
        .stream(Stream::Stdout, &format!("env: {name}={value}\n"));
    Ok(None)
}

/// `%%html`, `%%markdown`, `%%svg` and `%%latex`: show the cell body as that type.
#[derive(Clone, Copy)]
struct DisplayMagic {
    name: &'static str,
    mime: &'static str,
    summary: &'static str,
}

impl DisplayMagic {
    const ALL: [DisplayMagic; 4] = [
        DisplayMagic {
            name: "html",
            mime: "text/html",
            summary: "Render the cell as HTML",
        },
        DisplayMagic {
            name: "markdown",
            mime: "text/markdown",
            summary: "Render the cell as Markdown",
        },
        DisplayMagic {
            name: "svg",
            mime: "image/svg+xml",
            summary: "Render the cell as an SVG image",
        },
        DisplayMagic {
            name: "latex",
            mime: "text/latex",
            summary: "Render the cell as LaTeX (math in single or double dollar signs)",
        },
    ];
}

impl Magic for DisplayMagic {
    fn name(&self) -> &str {
        self.name
    }
    fn summary(&self) -> &str {
        self.summary
    }
    fn usage(&self) -> &str {
        "%%NAME\nBODY...\n\nShows BODY as rich output of the magic's type, with a plain-text copy \
         for consoles and exports. Takes no arguments."
    }
    fn kinds(&self) -> &[MagicKind] {
        CELL
    }
    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        no_args(invocation)?;
        let body = invocation.body.as_str();
        let plain = match self.name {
            "html" => html_to_text(body),
            "svg" => {
                if !body.contains("<svg") {
                    return Err(MagicError::usage(
                        "`%%svg` needs an <svg …> element in the cell body",
                    ));
                }
                "[SVG image]".to_string()
            }
            _ => body.to_string(),
        };
        cx.out
            .display(MimeBundle::text(plain).with(self.mime, body), None);
        Ok(None)
    }
}

/// A readable plain-text copy of an HTML fragment: tags dropped, common entities
/// decoded, whitespace collapsed.
fn html_to_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let decoded = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::RecordingOutput;
    use crate::parse::parse;
    use crate::registry::{Host, NoHost};
    use crate::Output;

    fn run(source: &str) -> (Result<Option<MimeBundle>, MagicError>, RecordingOutput) {
        let registry = Registry::with_builtins();
        let invocation = parse(source).unwrap().unwrap();
        let mut out = RecordingOutput::default();
        let result = registry.run(&invocation, &mut out, &mut NoHost);
        (result, out)
    }

    #[test]
    fn display_magics_emit_their_mime_type_and_plain_text() {
        for (source, mime, plain) in [
            ("%%html\n<b>bold</b> &amp; more", "text/html", "bold & more"),
            ("%%markdown\n# Title", "text/markdown", "# Title"),
            (
                "%%svg\n<svg xmlns='http://www.w3.org/2000/svg'/>",
                "image/svg+xml",
                "[SVG image]",
            ),
            ("%%latex\n$x^2$", "text/latex", "$x^2$"),
        ] {
            let (result, out) = run(source);
            assert_eq!(result, Ok(None), "{source}");
            let bundle = &out.displays[0].bundle;
            let body = source.split_once('\n').unwrap().1;
            assert_eq!(bundle.get(mime), Some(body), "{source}");
            assert_eq!(bundle.get("text/plain"), Some(plain), "{source}");
        }
    }

    #[test]
    fn svg_without_svg_element_is_an_error() {
        let (result, _) = run("%%svg\n<div/>");
        assert!(result.unwrap_err().evalue.contains("<svg"));
    }

    #[test]
    fn unknown_magic_names_the_closest() {
        let (result, _) = run("%tiem 1");
        let err = result.unwrap_err();
        assert_eq!(err.ename, "UnknownMagic");
        assert!(err.evalue.contains("did you mean %time"), "{}", err.evalue);

        let (result, _) = run("%%htlm\nx");
        assert!(result.unwrap_err().evalue.contains("%%html"));

        let (result, _) = run("%zzzzzzzz");
        let err = result.unwrap_err();
        assert!(!err.evalue.contains("did you mean"), "{}", err.evalue);
        assert!(err.evalue.contains("%lsmagic"));
    }

    #[test]
    fn wrong_prefix_is_explained() {
        let (result, _) = run("%html <b>x</b>");
        let err = result.unwrap_err();
        assert!(err.evalue.contains("%%html"), "{}", err.evalue);
    }

    #[test]
    fn lsmagic_lists_builtins() {
        let (result, _) = run("%lsmagic");
        let bundle = result.unwrap().unwrap();
        let text = bundle.get("text/plain").unwrap();
        for name in ["%lsmagic", "%time", "%%time", "%env", "%%html", "%%latex"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        // No dollar signs in the Markdown table: JupyterLab typesets `$…$` as math
        // (escaped or not), and `%%latex`'s row once had two.
        let markdown = bundle.get("text/markdown").unwrap();
        assert!(
            markdown.contains("`%%latex`") && !markdown.contains('$'),
            "{markdown}"
        );
    }

    #[test]
    fn help_and_question_mark_agree() {
        let (a, _) = run("%help time");
        let (b, paged) = run("%time?");
        let (c, _) = run("%help %%time");
        assert_eq!(b, Ok(None));
        assert_eq!(a.as_ref().unwrap().as_ref(), paged.pages.first());
        assert_eq!(a, c);
        assert!(a
            .unwrap()
            .unwrap()
            .get("text/plain")
            .unwrap()
            .contains("wall-clock"));
        let (d, _) = run("%help tme");
        assert!(d.unwrap_err().evalue.contains("%time"));
    }

    #[test]
    fn env_sets_shows_and_reports_missing() {
        let (result, out) = run("%env FERROLAB_TEST_ENV_A='a b'");
        assert_eq!(result, Ok(None));
        assert_eq!(out.stdout, "env: FERROLAB_TEST_ENV_A=a b\n");
        let (result, _) = run("%env FERROLAB_TEST_ENV_A");
        assert_eq!(result.unwrap().unwrap().get("text/plain"), Some("a b"));
        let (result, _) = run("%env FERROLAB_TEST_ENV_B value");
        assert_eq!(result, Ok(None));
        assert_eq!(std::env::var("FERROLAB_TEST_ENV_B").unwrap(), "value");
        let (result, _) = run("%env FERROLAB_TEST_ENV_MISSING");
        assert!(result
            .unwrap_err()
            .evalue
            .contains("%env FERROLAB_TEST_ENV_MISSING=VALUE"));
        std::env::set_var("FERROLAB_TEST_API_KEY", "sk-secret");
        let (result, _) = run("%env");
        let listing = result.unwrap().unwrap();
        let listing = listing.get("text/plain").unwrap();
        assert!(listing.contains("FERROLAB_TEST_API_KEY=<hidden>"));
        assert!(!listing.contains("sk-secret"));
    }

    struct EchoHost;

    impl Host for EchoHost {
        fn run_source(
            &mut self,
            source: &str,
            out: &mut dyn Output,
        ) -> Result<Option<MimeBundle>, MagicError> {
            out.stream(Stream::Stdout, "ran\n");
            Ok(Some(MimeBundle::text(source.trim().to_string())))
        }
        fn interrupted(&self) -> bool {
            false
        }
    }

    #[test]
    fn time_runs_code_through_the_host_and_keeps_its_value() {
        let registry = Registry::with_builtins();
        for source in ["%time 1 + 1", "%%time\n1 + 1"] {
            let invocation = parse(source).unwrap().unwrap();
            let mut out = RecordingOutput::default();
            let result = registry.run(&invocation, &mut out, &mut EchoHost).unwrap();
            assert_eq!(result.unwrap().get("text/plain"), Some("1 + 1"));
            assert!(out.stdout.starts_with("ran\nWall time: "), "{}", out.stdout);
        }
        let (result, _) = run("%time");
        assert!(result.unwrap_err().evalue.contains("needs code"));
    }

    #[test]
    fn durations_read_like_ipython() {
        assert_eq!(format_duration(Duration::from_micros(1500)), "1.50 ms");
        assert_eq!(format_duration(Duration::from_millis(123)), "123 ms");
        assert_eq!(format_duration(Duration::from_secs(12)), "12.0 s");
        assert_eq!(format_duration(Duration::from_nanos(42)), "42.0 ns");
    }
}
