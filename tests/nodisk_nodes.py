"""Ray nodes on this machine that share no disk: a head started with `ray start --head`, and worker
nodes each started in its own mount namespace (`unshare -m`, as root) with private tmpfs file systems
over the home directory (caches: ~/.cache/tkre, the Hugging Face cache), over /tmp (Ray's session
and run folders, downloads, the test's own folders) and over /dev/shm (the object store's files).
A worker node sees none of the head's files there; only what it must read to run at all is put back,
read-only, at the same paths: the Python installation (`sys.prefix`), the repository (`tkre` itself)
and the folders named in `shared` (the test's tiny models).

Network is shared (127.0.0.1): the nodes talk to each other and to the S3 server like the nodes of
a cluster do. Every port is chosen free, so this cluster never meets another Ray on the machine, and
`--temp-dir` keeps the head's address file out of /tmp/ray, where a plain `ray.init()` elsewhere on
this machine would find it.

Processes are stopped by their ids: a worker node is every process in its mount namespace (killed
together with SIGKILL: a lost node); the head is every process whose command line names its
temp dir.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (all held open while choosing, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ports(head: bool = False) -> list[str]:
    names = ["node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port", *(["port"] if head else [])]
    return [f"--{n}={p}" for n, p in zip(names, free_ports(len(names)))]


def _pids_where(pred) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if pred(d):
                    out.append(int(d.name))
            except OSError:  # gone meanwhile
                pass
    return out


class Head:
    def __init__(self, env: dict[str, str], *, num_cpus: int, resources: dict[str, float]):
        self.temp_dir = tempfile.mkdtemp(prefix="tkre-nd-", dir="/tmp")  # short: Ray's socket paths
        ports = _ports(head=True)
        self.address = f"127.0.0.1:{ports[-1].split('=')[1]}"
        cmd = [RAY, "start", "--head", "--block", f"--num-cpus={num_cpus}",
               f"--resources={json.dumps(resources)}", "--include-dashboard=false", "--disable-usage-stats",
               f"--temp-dir={self.temp_dir}", "--object-store-memory=100000000", *ports]
        self.log = open(Path(self.temp_dir) / "head.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while "Ray runtime started" not in (Path(self.temp_dir) / "head.log").read_text():
            if self.proc.poll() is not None or time.time() > deadline:
                log = (Path(self.temp_dir) / "head.log").read_text()[-3000:]
                self.stop()
                raise RuntimeError("the Ray head did not start:\n" + log)
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        mine = _pids_where(lambda d: self.temp_dir.encode() in (d / "cmdline").read_bytes())
        for pid in mine + ([self.proc.pid] if self.proc.poll() is None else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class WorkerNode:
    """A Ray worker node in its own mount namespace (see the module docstring)."""

    def __init__(self, head: Head, env: dict[str, str], *, num_cpus: int, resources: dict[str, float],
                 shared: list[str], log: Path):
        homes = {os.path.expanduser("~"), pwd.getpwuid(os.getuid()).pw_dir}  # HOME may point elsewhere
        tops = ["/tmp", "/dev/shm", *sorted(homes)]
        covered = [c for c in tops if not any(c.startswith(t + "/") for t in tops)]  # a home under /tmp: once
        keep = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, str(REPO), *shared)]
        keep = sorted({p for p in keep if any(p == c or p.startswith(c + "/") for c in covered)})
        lines = ["set -e", "mount -t tmpfs tkre-stage /mnt"]  # staging: the kept folders, before covering
        for i, p in enumerate(keep):
            lines += [f"mkdir -p /mnt/{i}", f"mount --bind {shlex.quote(p)} /mnt/{i}"]
        lines += [f"mount -t tmpfs tkre-node {shlex.quote(c)}" for c in covered]
        for i, p in enumerate(keep):
            lines += [f"mkdir -p {shlex.quote(p)}", f"mount --bind /mnt/{i} {shlex.quote(p)}",
                      f"mount -o remount,bind,ro {shlex.quote(p)}"]
        cmd = [RAY, "start", "--block", f"--address={head.address}",
               f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}", "--disable-usage-stats",
               "--object-store-memory=100000000", *_ports()]
        # a failed start shows the raylet's logs (they live in this node's /tmp, gone with it)
        lines.append(" ".join(shlex.quote(c) for c in cmd) + " || { for f in /tmp/*/session_latest/logs/raylet.*; do "
                     "echo == $f; tail -30 $f; done; exit 1; }")
        self.log = open(log, "w")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "bash", "-c", "\n".join(lines)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 10
        self.namespace = None
        while time.time() < deadline and self.proc.poll() is None:  # unshare execs bash in the new namespace
            ns = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")
            if ns != os.readlink("/proc/self/ns/mnt"):
                self.namespace = ns
                break
            time.sleep(0.05)
        if self.namespace is None:
            raise RuntimeError(f"worker node did not start in its own mount namespace (see {log})")

    def kill(self) -> int:
        """SIGKILL every process in the node's mount namespace (a lost node); how many there were."""
        pids = _pids_where(lambda d: os.readlink(d / "ns" / "mnt") == self.namespace)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pids:
            self.proc.wait(timeout=30)
        return len(pids)


def start_head(env: dict[str, str], *, attempts: int = 3, **kwargs) -> Head:
    """A running head (a start that missed `ray start`'s 30 s for its raylet to register is tried again)."""
    for attempt in range(attempts):
        try:
            return Head(env, **kwargs)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def start_worker_node(head: Head, env: dict[str, str], *, attempts: int = 3, timeout_s: float = 240,
                      **kwargs) -> "WorkerNode":
    """A worker node that joined the cluster (a new live node): `ray start` gives a raylet 30 s to
    register, which a loaded machine can miss, so a start that failed is tried again."""
    import ray

    before = {n["NodeID"] for n in ray.nodes()}
    for attempt in range(attempts):
        node = WorkerNode(head, env, **kwargs)
        deadline = time.time() + timeout_s
        while time.time() < deadline and node.proc.poll() is None:
            if any(n["Alive"] and n["NodeID"] not in before for n in ray.nodes()):
                return node
            time.sleep(0.5)
        node.kill()
        before = {n["NodeID"] for n in ray.nodes()}
    raise RuntimeError(f"no worker node joined after {attempts} attempts (see {kwargs.get('log')})")
