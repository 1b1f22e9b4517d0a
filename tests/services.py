"""Real servers for the tests: Redis, a 3-node Redis Cluster and PostgreSQL, each on loopback.

Every server runs from a temporary directory on a free port and is stopped when the test session
ends. The binaries come from Debian's packages, installed by `scripts/test`.
"""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so at most 55535."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is not installed: run scripts/test, which installs it")
    return path


@dataclass
class RedisServer:
    """One redis-server process; `stop()` and `start()` again keep the same port (for outage tests)."""

    port: int
    directory: str
    cluster: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            _require("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
            "--protected-mode",
            "no",
        ]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="gw-redis-") as directory:
        server = RedisServer(port=free_port(), directory=directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of `nodes` masters and no replicas."""
    with tempfile.TemporaryDirectory(prefix="gw-cluster-") as directory:
        servers = [RedisServer(port=free_cluster_port(), directory=directory, cluster=True) for _ in range(nodes)]
        try:
            for server in servers:
                server.start()
            addresses = [f"127.0.0.1:{s.port}" for s in servers]
            subprocess.run(
                [_require("redis-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )
            _wait_cluster_ok(servers[0].port)
            yield servers
        finally:
            for server in servers:
                server.stop()


def _wait_cluster_ok(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=5
        ).stdout
        if "cluster_state:ok" in out:
            return
        time.sleep(0.1)
    raise RuntimeError("Redis Cluster did not reach cluster_state:ok")


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run scripts/test, which installs it")
    return found[-1]


@dataclass
class PostgresServer:
    """One PostgreSQL cluster; `pause()`/`resume()` stall it (SIGSTOP/SIGCONT on every one of its processes),
    `stop()`/`start()` shut it down and start it again on the same data and port (for fault tests)."""

    port: int
    directory: str
    user: str
    run_as: list[str] = field(default_factory=list, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        data = os.path.join(self.directory, "data")
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
        )
        self.process = subprocess.Popen(
            [*self.run_as, _postgres_bin("postgres"), "-D", data, *options.split()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=60)
        _wait_postgres_ready(self.port, self.user)

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()
        os.killpg(self.process.pid, signal.SIGINT)  # fast shutdown
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        # Every process of the cluster: PostgreSQL's backends leave the process group (setsid), so killpg
        # would stop only the postmaster and leave running connections answering.
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        if self.process is None:
            return []
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        found, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            frontier = [pid for pid, parent in parents.items() if parent in frontier]
            found += frontier
        return found


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster. PostgreSQL refuses to run as root, so root runs it as `postgres`."""
    directory = tempfile.mkdtemp(prefix="gw-postgres-")
    run_as: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        run_as = ["runuser", "-u", user, "--"]
    data = os.path.join(directory, "data")
    subprocess.run(
        [*run_as, _postgres_bin("initdb"), "-D", data, "-A", "trust", "-U", user, "--no-sync", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    server = PostgresServer(port=free_port(), directory=directory, user=user, run_as=run_as)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_postgres_ready(port: int, user: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", user],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("PostgreSQL did not become ready")
