"""A real OpenSSH sshd on loopback whose only key runs chatai-gate, with a state directory and
real backend processes: shared by the sshd tests and the latency benchmark.

Needs root (it creates the login user and runs sshd) and /usr/sbin/sshd. Everything lives in a
temporary folder and is stopped and removed on close(); the login user is removed again when
this environment created it.
"""

import json
import os
import pathlib
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
USER = "chatai-test"
SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable_reason(gate_binary: pathlib.Path):
    """Why the environment cannot be set up here (the tests then fail with it), or None."""
    if os.geteuid() != 0:
        return "needs root to create the login user and run sshd"
    for tool in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"), shutil.which("useradd")):
        if not tool or not os.path.exists(tool):
            return "OpenSSH server and client are not installed"
    if not gate_binary.exists():
        return f"{gate_binary} is not built"
    return None


class Backend:
    """One gate_backend.py process."""

    def __init__(self, key_file: pathlib.Path, events: int = 5, gap: float = 0.05):
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "gate_backend.py"), "--key-file", str(key_file), "--events", str(events),
             "--gap", str(gap)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log(self):
        """The request lines logged so far (only after kill())."""
        return [json.loads(line) for line in self.proc.stderr.read().splitlines() if line.startswith("{")]


class GateEnvironment:
    def __init__(self, gate_binary: pathlib.Path, breaker_threshold: int = 1, sshd_options=(),
                 log_level: str = "DEBUG", gate_settings=None):
        """sshd_options: extra sshd_config lines ("MaxSessions 64", ...). log_level: sshd's; the
        tests read DEBUG lines from its log, a benchmark runs at INFO as a deployment does.
        gate_settings: fields of the gate's config file that replace the defaults here (a
        scheduler tick, say)."""
        self.sshd_options = list(sshd_options)
        self.log_level = log_level
        self.gate_settings = dict(gate_settings or {})
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="chatai-gate-sshd-"))
        os.chmod(self.tmp, 0o755)
        self.backends = []
        self.sshd = None
        self.created_user = False
        try:
            self._setup(gate_binary, breaker_threshold)
        except BaseException:
            self.close()
            raise

    def _setup(self, gate_binary, breaker_threshold):
        try:
            pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "-m", USER], check=True)
            self.created_user = True
        # Key login only; sshd runs the forced command through the user's shell (`sh -c`), and
        # dash starts in about half the CPU time of bash, which also reads ~/.bashrc under sshd.
        subprocess.run(["usermod", "-p", "*", "-s", "/bin/sh", USER], check=True)
        user = pwd.getpwnam(USER)

        # The gate program, in a folder the login user can reach.
        self.gate = self.tmp / "chatai-gate"
        shutil.copy2(gate_binary, self.gate)
        os.chmod(self.gate, 0o755)

        self.state = self.tmp / "state"
        self.state.mkdir(mode=0o700)
        (self.state / "keys").mkdir(mode=0o700)
        os.chown(self.state, user.pw_uid, user.pw_gid)
        os.chown(self.state / "keys", user.pw_uid, user.pw_gid)
        self.config = self.tmp / "gate.json"
        self.config.write_text(json.dumps({
            "state_dir": str(self.state),
            "backend": {"connect_timeout_ms": 1000, "first_byte_timeout_ms": 10000, "idle_timeout_ms": 5000},
            "breaker": {"failure_threshold": breaker_threshold, "cooldown_ms": 60000},
            **self.gate_settings,
        }))
        os.chmod(self.config, 0o644)

        self.host_key = self.tmp / "host_ed25519"
        self.client_key = self.tmp / "client_ed25519"
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        self.authorized_keys = self.tmp / "authorized_keys"
        # `exec`: the shell that sshd runs the forced command with becomes the gate instead of
        # forking it and waiting, one process fewer per request.
        self.authorized_keys.write_text(
            f'restrict,command="exec {self.gate} --config {self.config}" '
            + (self.tmp / "client_ed25519.pub").read_text())
        os.chmod(self.authorized_keys, 0o644)

        self.port = free_port()
        self.known_hosts = self.tmp / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} " + (self.tmp / "host_ed25519.pub").read_text())
        self.sshd_log = self.tmp / "sshd.log"
        self.sshd_config = self.tmp / "sshd_config"
        # The server itself would allow forwarding, PTYs and sftp: `restrict` on the key has to
        # be what refuses them. UseDNS, PrintMotd and PrintLastLog off: the settings README.md
        # recommends for the gate's host (nothing looked up, read or printed per connection).
        self.sshd_config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.tmp / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {USER}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding yes",
            "AllowAgentForwarding yes",
            "PermitTTY yes",
            "X11Forwarding no",
            "Subsystem sftp internal-sftp",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            f"LogLevel {self.log_level}",
            *self.sshd_options,
            "",
        ]))
        self.start_sshd()
        self.registry = {"version": 1, "generation": 0, "services": [], "backends": []}

    def start_sshd(self):
        os.makedirs("/run/sshd", exist_ok=True)
        self.sshd = subprocess.Popen([SSHD, "-D", "-f", str(self.sshd_config), "-E", str(self.sshd_log)])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.sshd.poll() is not None:
                    raise RuntimeError("sshd exited: " + self.sshd_log.read_text())
                time.sleep(0.05)
        else:
            raise RuntimeError("sshd did not start")

    def sshd_processes(self):
        """The pids of the listening sshd and of every process below it (connections, gates)."""
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        found = {self.sshd.pid}
        grew = True
        while grew:
            below = {pid for pid, parent in parents.items() if parent in found} - found
            found |= below
            grew = bool(below)
        return found

    def add_v1_only_key(self) -> pathlib.Path:
        """Another client key whose forced command is a gate of protocol version 1 only: it
        refuses the session command as a gate from before version 2 did. Returns the key."""
        key = self.tmp / "client_v1_ed25519"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            wrapper = self.tmp / "chatai-gate-v1"
            wrapper.write_text("#!/bin/sh\n"
                               'if [ "$SSH_ORIGINAL_COMMAND" = session ]; then\n'
                               '  echo "chatai-gate: unknown command" >&2\n'
                               "  exit 2\n"
                               "fi\n"
                               f"exec {self.gate} --config {self.config}\n")
            os.chmod(wrapper, 0o755)
            with open(self.authorized_keys, "a") as keys:
                keys.write(f'restrict,command="exec {wrapper}" ' + (self.tmp / "client_v1_ed25519.pub").read_text())
        return key

    def kill_sshd(self):
        """Kills sshd with every connection it serves, as a crash of the login node's sshd would."""
        for pid in self.sshd_processes():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        self.sshd.wait()

    def ssh_args(self, *extra):
        return ["ssh", "-F", "/dev/null", "-i", str(self.client_key), "-p", str(self.port),
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                *extra, f"{USER}@127.0.0.1"]

    def ssh(self, *command, extra=(), input=None, timeout=30):
        return subprocess.run(self.ssh_args(*extra) + list(command), input=input, capture_output=True,
                              timeout=timeout)

    def write_job_key(self, job: str) -> str:
        """Creates the job's key in the state directory as the scheduler does; returns it."""
        user = pwd.getpwnam(USER)
        key = secrets.token_hex(24)
        key_file = self.state / "keys" / f"{job}.key"
        key_file.write_text(key)
        os.chmod(key_file, 0o600)
        os.chown(key_file, user.pw_uid, user.pw_gid)
        return key

    def register(self, job: str, service: str, port: int):
        """Registers whatever listens on `port` as the ready backend `job` of `service`."""
        if not any(s["id"] == service for s in self.registry["services"]):
            self.registry["services"].append({"id": service, "models": ["smol"], "can_scale_from_zero": True})
        self.registry["backends"].append({"job": job, "service": service, "host": "127.0.0.1", "port": port,
                                          "state": "ready", "key_file": f"{job}.key"})
        self.publish()

    def add_backend(self, job: str, service: str = "chat", events: int = 5, gap: float = 0.05) -> Backend:
        """Starts a backend process with its own key and registers it as ready."""
        key = self.write_job_key(job)
        backend = Backend(self.state / "keys" / f"{job}.key", events, gap)
        backend.key = key
        self.backends.append(backend)
        self.register(job, service, backend.port)
        return backend

    def publish(self):
        self.registry["generation"] += 1
        temp = self.state / ".registry.json.tmp"
        temp.write_text(json.dumps(self.registry))
        os.chmod(temp, 0o600)
        user = pwd.getpwnam(USER)
        os.chown(temp, user.pw_uid, user.pw_gid)
        os.replace(temp, self.state / "registry.json")

    def usage(self):
        path = self.state / "usage.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def close(self):
        for backend in self.backends:
            backend.kill()
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            self.sshd.wait(timeout=10)
        if self.created_user:
            subprocess.run(["userdel", "-r", USER], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def request_bytes(body: dict, service: str = "chat", request_id: str = "req-1") -> bytes:
    data = json.dumps(body).encode()
    head = {"v": 1, "id": request_id, "user": "web-user-1", "service": service, "method": "POST",
            "path": "/v1/chat/completions", "headers": {"accept": "text/event-stream"}, "body_length": len(data)}
    return json.dumps(head).encode() + b"\n" + data


def dechunk(data: bytes):
    """Splits an HTTP/1.1 response into (status, headers, body, complete)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") != "chunked":
        return status, headers, rest, True
    body = b""
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return status, headers, body, False
        size = int(size_line, 16)
        if size == 0:
            return status, headers, body, True
        if len(rest) < size + 2:
            return status, headers, body + rest[:size], False
        body += rest[:size]
        rest = rest[size + 2:]
