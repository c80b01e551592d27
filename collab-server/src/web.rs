//! The browser workspace's files (`collab-server/web`, built by Vite into
//! `dist/`), served at `/`. Any path that is not a file gets `index.html`, so the
//! app's own routes (`/notebooks/ID`) survive a reload.

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use std::path::{Component, Path, PathBuf};

/// Where the built workspace lives: `--web DIR`, else `FERROLAB_WEB_DIR`, else
/// `collab-server/web/dist` under the working folder when it is there.
pub fn locate(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("FERROLAB_WEB_DIR").map(PathBuf::from))
        .or_else(|| {
            let default = PathBuf::from("collab-server/web/dist");
            default.join("index.html").is_file().then_some(default)
        })
}

/// The workspace page's Content-Security-Policy: scripts only from the server's
/// own files (no inline script, no `eval` — charts use vega's expression
/// interpreter; WebAssembly for automerge), nothing loaded from anywhere else
/// (images from outputs are `data:` URLs), no framing, no plugins. Inline styles
/// stay allowed for the editor; a notebook's own `<style>` never reaches the page
/// (the sanitiser drops it) and could load nothing if it did.
pub const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; \
    connect-src 'self'; worker-src 'self' blob:; manifest-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The file under `root` that `request` names, refusing anything that would
/// leave `root` (`..`, absolute parts).
fn resolve(root: &Path, request: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    for component in Path::new(request.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(path)
}

/// Answers a GET for the workspace (no token needed: the files are public, the
/// data behind them is not).
pub async fn serve(root: Option<&Path>, uri: &Uri) -> Response {
    let Some(root) = root else {
        return (
            StatusCode::NOT_FOUND,
            Html(
                "<!doctype html><title>ferrolab</title><h1>The browser workspace is not built</h1>\
                 <p>Build it with <code>make up</code> (or <code>npm install &amp;&amp; npm run build</code> \
                 in <code>collab-server/web</code>) and start the server with \
                 <code>--web collab-server/web/dist</code>. The API is at <code>/api/notebooks</code>.</p>",
            ),
        )
            .into_response();
    };
    let requested = resolve(root, uri.path()).filter(|p| p.is_file());
    let (path, immutable) = match requested {
        Some(path) => {
            let hashed = path.starts_with(root.join("assets"));
            (path, hashed)
        }
        None => (root.join("index.html"), false),
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&path)),
            );
            // Vite names built assets by content hash; index.html must be fresh.
            let cache = if immutable {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            response
        }
        Err(error) => (
            StatusCode::NOT_FOUND,
            format!(
                "cannot read {} ({error}); rebuild the workspace with `make up`",
                path.display()
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_leave_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(
            resolve(root, "/assets/app.js"),
            Some(PathBuf::from("/srv/web/assets/app.js"))
        );
        assert_eq!(resolve(root, "/../secret"), None);
        assert_eq!(resolve(root, "/assets/../../x"), None);
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/web")));
    }
}
