"""Start `demo/app.py` the way a person does (`python demo/app.py --port P`), with a guard that refuses and logs
every network connection that does not stay on this machine, and wait until it serves."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


APP = Path(__file__).resolve().parent.parent / "demo" / "app.py"

# Runs first in the app's process: argv is [-c, LOG, APP, app arguments...].
NETWORK_GUARD = """
import ipaddress, runpy, socket, sys

log_path, app_path = sys.argv[1], sys.argv[2]
sys.argv = [app_path] + sys.argv[3:]

def _local(host):
    if not isinstance(host, str) or host in ("", "localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified

def _refuse(host):
    with open(log_path, "a") as log:
        log.write(f"{host}\\n")
    raise OSError(f"network access refused in this test: {host}")

_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo

def connect(self, address):
    if isinstance(address, tuple) and not _local(address[0]):
        _refuse(address[0])
    return _connect(self, address)

def getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if not _local(host):
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
runpy.run_path(app_path, run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DemoServer:
    """`python demo/app.py --host 127.0.0.1 --port P ARGS` in a subprocess, network refused; use as a context."""

    def __init__(self, workdir: Path, args=(), env=None, prelude: str = ""):
        self.workdir, self.port = Path(workdir), free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.network_log = self.workdir / "network.log"
        self.output = self.workdir / "server.log"
        self.command = [sys.executable, "-c", prelude + NETWORK_GUARD, str(self.network_log), str(APP),
                        "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", *map(str, args)]
        self.env = env if env is not None else {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
        self.process = None

    def __enter__(self):
        self.network_log.write_text("")
        with open(self.output, "w") as output:
            self.process = subprocess.Popen(self.command, cwd=self.workdir, env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the demo exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"the demo did not start within 180 s:\n{self.log_tail()}")

    def __exit__(self, *exc_info):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, characters: int = 4000) -> str:
        return self.output.read_text(errors="replace")[-characters:] if self.output.exists() else ""

    def refused_connections(self) -> list[str]:
        return [line for line in self.network_log.read_text().splitlines() if line.strip()]
