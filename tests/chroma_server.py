"""A real shared Chroma server for tests: `chroma run` on a free port, behind nginx that requires a bearer token.

The Rust `chroma run` of chromadb 1.x has no server-side token check, so the tests put it behind a reverse proxy
that refuses any request without `Authorization: Bearer <token>`, as self-hosted teams do.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_request_buffering off;  # stream bodies through: nginx's workers cannot write the test's temp dir
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, ok_codes: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok_codes:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok_codes:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in 60 s: {log.read_text()[-2000:]}")


class ChromaServer:
    """`chroma run --path DIR` plus an nginx token gate; `port` is the gate, `token` the secret it wants."""

    def __init__(self, work: Path, token: str = "team-secret-token") -> None:
        self.work, self.token = Path(work), token
        self.upstream, self.port = free_port(), free_port()
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> ChromaServer:
        self.work.mkdir(parents=True, exist_ok=True)
        chroma_log = self.work / "chroma.log"
        chroma = subprocess.Popen(
            [shutil.which("chroma") or "chroma", "run", "--path", str(self.work / "db"), "--host", "127.0.0.1",
             "--port", str(self.upstream)],
            stdout=chroma_log.open("wb"), stderr=subprocess.STDOUT)
        self._procs.append(chroma)
        _wait_http(f"http://127.0.0.1:{self.upstream}/api/v2/heartbeat", chroma, chroma_log)
        conf = self.work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=self.work, port=self.port, upstream=self.upstream, token=self.token))
        nginx_log = self.work / "nginx-error.log"
        nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(self.work)],
                                 stdout=nginx_log.open("ab"), stderr=subprocess.STDOUT)
        self._procs.append(nginx)
        _wait_http(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", nginx, nginx_log, ok_codes=(401,))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
