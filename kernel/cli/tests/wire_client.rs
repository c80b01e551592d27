//! Drives the real `ferrolab` binary over real sockets with a Rust Jupyter client
//! (jupyter-zmq-client): the same wire a notebook front end uses.

use jupyter_protocol::{
    ConnectionInfo, ExecuteRequest, JupyterMessage, JupyterMessageContent, KernelInfoRequest,
    ReplyStatus, ShutdownRequest, Transport,
};
use jupyter_zmq_client::{
    create_client_control_connection, create_client_heartbeat_connection,
    create_client_iopub_connection, create_client_shell_connection_with_identity, peek_ports,
    peer_identity_for_session, ClientIoPubConnection, ClientShellConnection,
};
use std::process::{Child, Command};
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

struct Kernel {
    child: Child,
    info: ConnectionInfo,
    _dir: tempfile::TempDir,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_kernel() -> Kernel {
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.0.1".parse().unwrap();
    let ports = peek_ports(ip, 5).await.unwrap();
    let info = ConnectionInfo {
        ip: "127.0.0.1".into(),
        transport: Transport::TCP,
        shell_port: ports[0],
        iopub_port: ports[1],
        stdin_port: ports[2],
        control_port: ports[3],
        hb_port: ports[4],
        key: uuid_like(),
        signature_scheme: "hmac-sha256".into(),
        kernel_name: Some("ferrolab".into()),
    };
    let file = dir.path().join("connection.json");
    std::fs::write(&file, serde_json::to_vec(&info).unwrap()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ferrolab"))
        .args(["kernel", "run", "--connection-file"])
        .arg(&file)
        .env("FERROLAB_HOME", dir.path().join("home"))
        .spawn()
        .unwrap();
    Kernel {
        child,
        info,
        _dir: dir,
    }
}

fn uuid_like() -> String {
    format!(
        "{:x}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Reads iopub until the idle status of `parent`; returns everything for it.
async fn outputs_of(
    iopub: &mut ClientIoPubConnection,
    parent: &JupyterMessage,
) -> Vec<JupyterMessage> {
    let mut out = Vec::new();
    loop {
        let msg = timeout(WAIT, iopub.read())
            .await
            .expect("iopub timed out")
            .unwrap();
        let ours = msg
            .parent_header
            .as_ref()
            .is_some_and(|h| h.msg_id == parent.header.msg_id);
        if !ours {
            continue;
        }
        let idle = matches!(&msg.content, JupyterMessageContent::Status(s)
            if s.execution_state == jupyter_protocol::ExecutionState::Idle);
        out.push(msg);
        if idle {
            return out;
        }
    }
}

async fn execute(
    shell: &mut ClientShellConnection,
    iopub: &mut ClientIoPubConnection,
    code: &str,
) -> (jupyter_protocol::ExecuteReply, Vec<JupyterMessage>) {
    let request: JupyterMessage = ExecuteRequest::new(code.to_string()).into();
    shell.send(request.clone()).await.unwrap();
    let reply = loop {
        let msg = timeout(WAIT, shell.read())
            .await
            .expect("shell timed out")
            .unwrap();
        if let JupyterMessageContent::ExecuteReply(reply) = msg.content {
            break reply;
        }
    };
    (reply, outputs_of(iopub, &request).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_speaks_the_protocol_over_real_sockets() {
    let mut kernel = start_kernel().await;
    let info = kernel.info.clone();
    let session = "rust-client";
    let mut iopub = create_client_iopub_connection(&info, "", session)
        .await
        .unwrap();
    let mut shell = create_client_shell_connection_with_identity(
        &info,
        session,
        peer_identity_for_session(session).unwrap(),
    )
    .await
    .unwrap();

    // kernel_info, answered while evcxr is still warming up.
    shell.send(KernelInfoRequest {}.into()).await.unwrap();
    let reply = timeout(WAIT, shell.read()).await.unwrap().unwrap();
    let JupyterMessageContent::KernelInfoReply(info_reply) = reply.content else {
        panic!("expected kernel_info_reply, got {}", reply.header.msg_type);
    };
    assert_eq!(info_reply.protocol_version, "5.3");
    assert_eq!(info_reply.language_info.name, "rust");
    assert_eq!(info_reply.implementation, "ferrolab");

    let mut heartbeat = create_client_heartbeat_connection(&info).await.unwrap();
    timeout(WAIT, heartbeat.single_heartbeat())
        .await
        .unwrap()
        .unwrap();

    // A cell magic: busy, execute_input, display_data, idle, with count 1.
    let (reply, messages) = execute(&mut shell, &mut iopub, "%%markdown\n# hi").await;
    assert_eq!(reply.status, ReplyStatus::Ok);
    assert_eq!(reply.execution_count.value(), 1);
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m.header.msg_type.as_str())
        .collect();
    assert_eq!(kinds, ["status", "execute_input", "display_data", "status"]);

    // A forged execute_request is dropped, not run.
    let mut forged_info = info.clone();
    forged_info.key = "not-the-key".into();
    let mut forger = create_client_shell_connection_with_identity(
        &forged_info,
        "forger",
        peer_identity_for_session("forger").unwrap(),
    )
    .await
    .unwrap();
    forger
        .send(ExecuteRequest::new("%env FERROLAB_RUST_FORGED=1".into()).into())
        .await
        .unwrap();
    let (reply, _) = execute(&mut shell, &mut iopub, "%env FERROLAB_RUST_FORGED").await;
    assert_eq!(reply.status, ReplyStatus::Error);
    assert_eq!(reply.error.unwrap().ename, "KeyError");

    // A failed cell: exactly one error message, and the reply carries it.
    let (reply, messages) = execute(&mut shell, &mut iopub, "%nope").await;
    let errors: Vec<_> = messages
        .iter()
        .filter(|m| m.header.msg_type == "error")
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(reply.error.unwrap().ename, "UnknownMagic");

    // Shutdown on control: a reply, then the process exits.
    let mut control = create_client_control_connection(&info, session)
        .await
        .unwrap();
    control
        .send(ShutdownRequest { restart: false }.into())
        .await
        .unwrap();
    let reply = timeout(WAIT, control.read()).await.unwrap().unwrap();
    assert!(matches!(
        reply.content,
        JupyterMessageContent::ShutdownReply(_)
    ));
    let status = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = kernel.child.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() > WAIT {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status
        .expect("kernel did not exit after shutdown")
        .success());
}
