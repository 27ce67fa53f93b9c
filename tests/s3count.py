"""A real nginx reverse proxy in front of the moto S3 endpoint that logs every request with its length and its
``x-amz-copy-source`` header: the bytes a client sent, counted at the endpoint (moto's own log cannot tell an
upload from a server-side copy — both are a PUT of the key)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from s3proc import S3Endpoint
from serverproc import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass
class CountedS3:
    endpoint: S3Endpoint
    """The proxy's URL, to give the client under test."""
    log: Path

    def requests(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines]

    def uploads(self, since: int = 0) -> list[tuple[str, int]]:
        """(key, body bytes) of every PUT that carried a body (not a server-side copy), from request ``since`` on."""
        return [
            (unquote(r["uri"]), int(r["body"] or 0))
            for r in self.requests()[since:]
            if r["method"] == "PUT" and not r["copy"] and int(r["body"] or 0) > 0
        ]

    def copies(self, since: int = 0) -> list[str]:
        return [unquote(r["uri"]) for r in self.requests()[since:] if r["method"] == "PUT" and r["copy"]]


@contextmanager
def counted(s3: S3Endpoint, workdir: Path) -> Iterator[CountedS3]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    upstream = urlsplit(s3.url).netloc
    log = workdir / "access.log"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(f"""{user}worker_processes 1;
pid {workdir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  log_format s3 escape=json '{{"method":"$request_method","uri":"$uri","body":"$content_length","args":"$args",'
                            '"copy":"$http_x_amz_copy_source","status":"$status"}}';
  access_log {log} s3;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{upstream};
      proxy_set_header Host $http_host;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_buffering off;
    }}
  }}
}}
""")
    cmd = [NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    proc = subprocess.Popen([*cmd, "-g", "daemon off;"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (workdir / "error.log").read_text()
                time.sleep(0.05)
        yield CountedS3(S3Endpoint(url), log)
    finally:
        proc.terminate()
        proc.wait(10)
