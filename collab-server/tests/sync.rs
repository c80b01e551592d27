//! Several samod clients over real WebSockets edit one cell at once and converge;
//! random concurrent cell operations always end in identical documents.

use automerge::AutomergeError;
use ferrolab_collab::auth::{Role, TokenStore};
use ferrolab_collab::client::WsDialer;
use ferrolab_collab::notebook;
use ferrolab_collab::server::{self, ServeOptions};
use samod::{BackoffConfig, DocHandle, DocumentId, Repo};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

struct TestServer {
    address: std::net::SocketAddr,
    app: Arc<server::App>,
    _data: tempfile::TempDir,
    data_path: std::path::PathBuf,
}

async fn start_server() -> TestServer {
    let data = tempfile::tempdir().expect("tempdir");
    let data_path = data.path().to_path_buf();
    let options = ServeOptions {
        data: data_path.clone(),
        bind: "127.0.0.1:0".parse().expect("addr"),
        max_message_bytes: 8 << 20,
        watch: None,
        web: None,
        database: None,
        artifacts: None,
        artifact_cache_bytes: None,
        kernels: server::KernelSettings {
            sandboxed: false,
            ..Default::default()
        },
    };
    let app = server::start(&options).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    tokio::spawn(server::run(
        app.clone(),
        listener,
        futures::future::pending(),
    ));
    TestServer {
        address,
        app,
        _data: data,
        data_path,
    }
}

impl TestServer {
    async fn token(&self, role: Role) -> String {
        TokenStore::new(&self.data_path)
            .create("test", role)
            .await
            .expect("token")
    }

    async fn client(&self, token: &str) -> Repo {
        let repo = Repo::build_tokio().load().await;
        let dialer =
            WsDialer::new(&format!("ws://{}/sync?token={token}", self.address)).expect("url");
        let handle = repo
            .dial(BackoffConfig::default(), Arc::new(dialer))
            .expect("dial");
        tokio::time::timeout(Duration::from_secs(10), handle.established())
            .await
            .expect("handshake in time")
            .expect("handshake");
        repo
    }
}

async fn find(repo: &Repo, id: &str) -> DocHandle {
    let id = DocumentId::from_str(id).expect("doc id");
    tokio::time::timeout(Duration::from_secs(10), repo.find(id))
        .await
        .expect("found in time")
        .expect("repo running")
        .expect("document exists")
}

/// A small deterministic generator, so a failing run can be replayed by seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One character per edit, so concurrent inserts can't split a marker: peers 0
/// and 1 type CJK characters (one UTF-16 unit), peer 2 emoji (two units).
fn marker(peer: usize, edit: usize) -> char {
    let code = match peer {
        0 => 0x4E00 + edit,
        1 => 0x5E00 + edit,
        _ => 0x1F600 + edit,
    };
    char::from_u32(code as u32).unwrap_or('?')
}

async fn wait_converged(handles: &[DocHandle]) -> Vec<automerge::ChangeHash> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut heads: Vec<_> = handles
            .iter()
            .map(|h| h.with_document(|d| d.get_heads()))
            .collect();
        for h in &mut heads {
            h.sort();
        }
        if heads.windows(2).all(|w| w[0] == w[1]) {
            return heads.remove(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence within 30 s: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_typing_in_one_cell_converge() {
    let server = start_server().await;
    let entry = server
        .app
        .workspace()
        .create(Some("pair".into()), None)
        .await
        .map_err(|_| "create")
        .expect("create");
    let id = entry["id"].as_str().expect("id").to_string();
    let editor = server.token(Role::Editor).await;
    let server_doc = find(server.app.repo(), &id).await;
    let cell = server_doc.with_document(|doc| {
        doc.transact::<_, _, AutomergeError>(|tx| notebook::insert_cell(tx, None, "code", ""))
            .expect("insert")
            .result
    });

    let mut clients = Vec::new();
    let mut handles = vec![server_doc.clone()];
    for _ in 0..3 {
        let repo = server.client(&editor).await;
        handles.push(find(&repo, &id).await);
        clients.push(repo);
    }
    let mut tasks = Vec::new();
    for (n, handle) in handles[1..].iter().cloned().enumerate() {
        let cell = cell.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9 + n as u64);
            for i in 0..40 {
                handle.with_document(|doc| {
                    let encoding = doc.text_encoding();
                    let len = notebook::source(doc, &cell).map_or(0, |s| s.encode_utf16().count());
                    let at = rng.below(len + 1);
                    let text = marker(n, i).to_string();
                    doc.transact::<_, _, AutomergeError>(|tx| {
                        notebook::splice_source(tx, encoding, &cell, at, 0, &text)
                    })
                    .expect("splice");
                });
                tokio::time::sleep(Duration::from_millis(rng.below(15) as u64)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("editor task");
    }
    wait_converged(&handles).await;
    let texts: Vec<String> = handles
        .iter()
        .map(|h| h.with_document(|d| notebook::source(d, &cell).expect("cell")))
        .collect();
    assert!(
        texts.windows(2).all(|w| w[0] == w[1]),
        "all peers show the same text"
    );
    for n in 0..3 {
        for i in 0..40 {
            let count = texts[0].chars().filter(|c| *c == marker(n, i)).count();
            assert_eq!(count, 1, "edit {n}:{i} is kept, once");
        }
    }
    assert_eq!(texts[0].chars().count(), 120, "nothing else appeared");
    let cells = handles[0].with_document(|d| notebook::cell_ids(d));
    assert_eq!(cells, vec![cell], "exactly one cell");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_can_read_but_its_changes_go_nowhere() {
    let server = start_server().await;
    let entry = server
        .app
        .workspace()
        .create(Some("read only".into()), None)
        .await
        .map_err(|_| "create")
        .expect("create");
    let id = entry["id"].as_str().expect("id").to_string();
    let server_doc = find(server.app.repo(), &id).await;
    let cell = server_doc.with_document(|doc| {
        doc.transact::<_, _, AutomergeError>(|tx| {
            notebook::insert_cell(tx, None, "code", "let x = 1;")
        })
        .expect("insert")
        .result
    });
    let viewer_repo = server.client(&server.token(Role::Viewer).await).await;
    let editor_repo = server.client(&server.token(Role::Editor).await).await;
    let viewer = find(&viewer_repo, &id).await;
    let editor = find(&editor_repo, &id).await;
    wait_converged(&[server_doc.clone(), viewer.clone(), editor.clone()]).await;
    assert_eq!(
        viewer
            .with_document(|d| notebook::source(d, &cell))
            .as_deref(),
        Some("let x = 1;")
    );

    viewer.with_document(|doc| {
        let encoding = doc.text_encoding();
        doc.transact::<_, _, AutomergeError>(|tx| {
            notebook::splice_source(tx, encoding, &cell, 0, 0, "VIEWER")
        })
        .expect("local edit");
    });
    // The editor's later change does reach everyone, so the viewer's had every chance to.
    editor.with_document(|doc| {
        let encoding = doc.text_encoding();
        doc.transact::<_, _, AutomergeError>(|tx| {
            notebook::splice_source(tx, encoding, &cell, 0, 0, "// ok\n")
        })
        .expect("edit");
    });
    wait_converged(&[server_doc.clone(), editor.clone()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_server = server_doc
        .with_document(|d| notebook::source(d, &cell))
        .expect("cell");
    assert_eq!(on_server, "// ok\nlet x = 1;");
    let at_editor = editor
        .with_document(|d| notebook::source(d, &cell))
        .expect("cell");
    assert!(!at_editor.contains("VIEWER"));
    let viewer_sees = viewer
        .with_document(|d| notebook::source(d, &cell))
        .expect("cell");
    assert!(
        viewer_sees.contains("// ok"),
        "the viewer still receives changes: {viewer_sees:?}"
    );
}

/// Random concurrent inserts, moves, deletes and splices on several forks; after
/// merging everything, every fork holds the same cells in the same order, each once.
#[test]
fn random_concurrent_cell_operations_converge() {
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let mut base = ferrolab_collab::schema::notebook_skeleton();
        base.transact::<_, _, AutomergeError>(|tx| {
            let first = notebook::insert_cell(tx, None, "code", "a")?;
            notebook::insert_cell(tx, Some(&first), "markdown", "b")?;
            Ok(())
        })
        .expect("seed cells");
        let mut forks: Vec<automerge::Automerge> = (0..3).map(|_| base.fork()).collect();
        for _round in 0..4 {
            for fork in forks.iter_mut() {
                let encoding = fork.text_encoding();
                for _ in 0..rng.below(5) {
                    let ids = notebook::cell_ids(fork);
                    let pick = |rng: &mut Rng| {
                        (!ids.is_empty()).then(|| ids[rng.below(ids.len())].clone())
                    };
                    let op = rng.below(4);
                    let target = pick(&mut rng);
                    let other = pick(&mut rng);
                    let at = rng.below(4);
                    fork.transact::<_, _, AutomergeError>(|tx| match (op, &target) {
                        (0, _) => {
                            notebook::insert_cell(tx, target.as_deref(), "code", "new").map(|_| ())
                        }
                        (1, Some(id)) => notebook::move_cell(tx, id, other.as_deref()),
                        (2, Some(id)) => notebook::delete_cell(tx, id),
                        (3, Some(id)) => notebook::splice_source(tx, encoding, id, at, 1, "z"),
                        _ => Ok(()),
                    })
                    .expect("operation");
                }
            }
            // Partial exchange between two random forks.
            let (a, b) = (rng.below(3), rng.below(3));
            if a != b {
                let mut other = forks[b].clone();
                forks[a].merge(&mut other).expect("merge");
            }
        }
        let mut all = forks[0].clone();
        for fork in forks.iter_mut().skip(1) {
            all.merge(fork).expect("merge");
        }
        for fork in forks.iter_mut() {
            let mut copy = all.clone();
            fork.merge(&mut copy).expect("merge");
        }
        let reference = notebook::cell_ids(&forks[0]);
        let mut unique = reference.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            reference.len(),
            "seed {seed}: a cell appears twice"
        );
        for fork in &forks {
            assert_eq!(
                notebook::cell_ids(fork),
                reference,
                "seed {seed}: order differs"
            );
            for id in &reference {
                assert_eq!(
                    notebook::source(fork, id),
                    notebook::source(&forks[0], id),
                    "seed {seed}"
                );
            }
        }
    }
}

/// Thousands of small changes do not leave thousands of files: samod folds them
/// into snapshots and our storage deletes what they replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_is_compacted() {
    let server = start_server().await;
    let entry = server
        .app
        .workspace()
        .create(Some("busy".into()), None)
        .await
        .map_err(|_| "create")
        .expect("create");
    let id = entry["id"].as_str().expect("id").to_string();
    let doc = find(server.app.repo(), &id).await;
    let cell = doc.with_document(|d| {
        d.transact::<_, _, AutomergeError>(|tx| notebook::insert_cell(tx, None, "code", ""))
            .expect("insert")
            .result
    });
    for i in 0..2000 {
        doc.with_document(|d| {
            let encoding = d.text_encoding();
            d.transact::<_, _, AutomergeError>(|tx| {
                notebook::splice_source(tx, encoding, &cell, i, 0, "x")
            })
            .expect("splice");
        });
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let heads = doc.with_document(|d| d.get_heads());
    server.app.storage().wait_durable(&id, &heads).await;
    // samod compacts in the background; on a busy machine that can take a while.
    let count_files = || {
        let mut files = 0;
        let mut stack = vec![server.app.storage().root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).expect("list").flatten() {
                if entry.path().is_dir() {
                    stack.push(entry.path());
                } else {
                    files += 1;
                }
            }
        }
        files
    };
    let mut files = count_files();
    for _ in 0..200 {
        if files < 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        files = count_files();
    }
    assert!(
        files < 60,
        "{files} chunk files for 2000 changes: storage is not compacted"
    );
}
