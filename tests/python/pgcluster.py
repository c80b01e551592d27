"""A throwaway PostgreSQL cluster of Debian's packages in a temporary folder, as
`nobody` when run as root (PostgreSQL refuses root): for the cluster-mode suites
and the tracking benchmark. The standard library only."""
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_program(name):
    found = shutil.which(name)
    if found:
        return found
    root = Path("/usr/lib/postgresql")
    for version in sorted((p.name for p in root.iterdir()) if root.is_dir() else [], key=int, reverse=True):
        program = root / version / "bin" / name
        if program.exists():
            return str(program)
    raise RuntimeError(f"PostgreSQL's {name} is missing: install Debian's postgresql (make test does)")


class Postgres:
    """A PostgreSQL cluster in a temporary folder; `url` reaches it."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="ferrolab-pg-"))
        self.port = free_port()
        self.as_root = os.getuid() == 0
        if self.as_root:
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, 65534, 65534)
        self.data = self.dir / "cluster"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "ferrolab", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")
        self.url = f"postgres://ferrolab@127.0.0.1:{self.port}/postgres"

    def _run(self, program, *args):
        argv = [postgres_program(program), *args]
        if self.as_root:
            argv = ["runuser", "-u", "nobody", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, text=True)

    def sql(self, query, database="postgres"):
        return subprocess.run([postgres_program("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "ferrolab",
                               "-d", database, "-tAc", query], check=True, capture_output=True, text=True).stdout.strip()

    def stop(self):
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
