"""The collaboration server's cluster mode for the Python suites: a throwaway
PostgreSQL cluster (pgcluster.Postgres), replicas of `ferrolab collab serve --database` on it with
artifacts in moto's S3 server, and an HTTP front that hands each request to the
next replica in turn, so one client's calls go through every replica."""
import http.client
import http.server
import subprocess
import threading
from pathlib import Path

from conftest import BIN
from pgcluster import Postgres
from test_collab_ipynb import _free_port, _wait_for_port

# Hop-by-hop headers, which a proxy does not pass on.
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class RoundRobin:
    """An HTTP front on `port` that sends each request to the next of `ports`,
    counting how many each served."""

    def __init__(self, ports):
        self.ports = list(ports)
        self.served = [0] * len(self.ports)
        self._next = 0
        self._lock = threading.Lock()
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with front._lock:
                    i = front._next
                    front._next = (i + 1) % len(front.ports)
                    front.served[i] += 1
                upstream = http.client.HTTPConnection("127.0.0.1", front.ports[i], timeout=300)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
                self.send_response(reply.status, reply.reason)
                for k, v in reply.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Cluster:
    """`replicas` servers on one PostgreSQL with artifacts in `s3` (see
    test_artifacts_s3.S3), behind a RoundRobin front: what a test reaches at `port`
    with `token`, like a single server."""

    def __init__(self, root, s3, bucket, replicas=3, pg=None):
        self.data = Path(root)
        # A database given is the caller's to stop.
        self.own_pg = pg is None
        self.pg = pg or Postgres()
        self.s3 = s3
        self.bucket = bucket
        self.token_store = ["--database", self.pg.url]
        self.replicas = []
        self.logs = []
        try:
            for i in range(replicas):
                data = self.data / f"replica{i}"
                port = _free_port()
                log_path = self.data / f"replica{i}.log"
                with open(log_path, "wb") as log:
                    proc = subprocess.Popen(
                        [BIN, "collab", "serve", "--data", str(data), "--bind", f"127.0.0.1:{port}",
                         "--database", self.pg.url, "--artifacts", f"s3://{bucket}/cluster"],
                        stdout=log, stderr=subprocess.STDOUT, env=s3.env)
                self.replicas.append((proc, port))
                self.logs.append(log_path)
                _wait_for_port(port, proc, 60,
                               lambda: f"replica {i} did not start: {log_path.read_text(errors='replace')}")
            self.token = subprocess.run(
                [BIN, "collab", "token", "create", *self.token_store, "--name", "pytest", "--role", "owner"],
                check=True, capture_output=True, text=True).stdout.strip()
            self.front = RoundRobin(port for _, port in self.replicas)
            self.port = self.front.port
        except BaseException:
            self.stop()
            raise

    def blobs(self):
        """The artifact contents stored (their hashes)."""
        return {key.rsplit("/", 1)[-1] for key in self.s3.keys("cluster/")}

    def stop(self):
        if getattr(self, "front", None):
            self.front.stop()
        for proc, _ in self.replicas:
            proc.terminate()
        for proc, _ in self.replicas:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.own_pg:
            self.pg.stop()
