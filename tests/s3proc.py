"""A real S3 API endpoint on loopback: moto's server mode, driven with the real AWS CLI.

No S3-compatible server ships in Debian or PyPI besides moto's server mode (DESIGN §6); the tests
talk to it over HTTP exactly as a mirror host talks to the canonical bucket.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class S3Endpoint:
    url: str

    def env(self) -> dict[str, str]:
        """Environment for the AWS CLI (and anything using botocore) to use this endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "stella-test",
            "AWS_SECRET_ACCESS_KEY": "stella-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def aws(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        """Run the real ``aws`` CLI against this endpoint; fail the test on a non-zero exit."""
        aws = shutil.which("aws")
        assert aws is not None
        proc = subprocess.run(
            [aws, *map(str, args)], env={**os.environ, **self.env()}, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"aws {' '.join(map(str, args))}: {proc.stderr}"
        return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[S3Endpoint]:
    """Start ``moto.server`` on a free loopback port; stop it afterwards."""
    if shutil.which("aws") is None:
        pytest.fail("the AWS CLI is not installed (pip install awscli; .ci/run does)")
    port = _free_port()
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {(tmp_path / 'moto.log').read_text()}") from None
                time.sleep(0.1)
        yield S3Endpoint(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
