"""Live gunicorn servers started by fixtures: free port, /ping polled with a deadline, log on failure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import build_tiny_gpt2

REPO = Path(__file__).resolve().parents[2]
README_EXAMPLE = {"input": "This is an input text"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """A `serve` process (gunicorn) on a free loopback port, with its log file."""

    env: dict
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    ping_statuses: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline_s: float = 180.0) -> LiveServer:
        env = {**os.environ, **self.env, "SAGEMAKER_BIND_TO_PORT": str(self.port)}
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "textgen.serve"], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode} before /ping was 200\n{self.log()}")
            try:
                status = requests.get(self.url + "/ping", timeout=2).status_code
                self.ping_statuses.append(status)
                if status == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"/ping was not 200 within {deadline_s:.0f}s\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def post(self, payload, timeout: float = 120.0, **kwargs) -> requests.Response:
        return requests.post(self.url + "/invocations", json=payload, timeout=timeout, **kwargs)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return self.process.returncode if self.process else None


@pytest.fixture(scope="session")
def long_model_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 with a 1024-token window, so one request can run long."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-long"), n_positions=1024)


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory, long_model_dir):
    """One server on the tiny GPT-2 for the whole run (its /ping history starts at boot)."""
    tmp = tmp_path_factory.mktemp("server")
    live = LiveServer(
        env={"TEXTGEN_MODEL": str(long_model_dir), "TEXTGEN_CACHE_DIR": str(tmp / "cache")},
        log_path=tmp / "server.log",
    ).start()
    yield live
    live.stop()


@pytest.fixture
def start_server(tmp_path, request):
    """Factory: start a server with extra env; every server it started is stopped at teardown."""
    servers: list[LiveServer] = []

    def start(env: dict, **kwargs) -> LiveServer:
        env = {"TEXTGEN_CACHE_DIR": str(tmp_path / "cache"), **env}
        server = LiveServer(env=env, log_path=tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server.start(**kwargs)

    yield start
    for server in servers:
        server.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(f"--- server log ({server.log_path}) ---\n{server.log()}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
