"""Named jobs from the configuration file, run the way deploy/systemd runs them: ``mirror-sync.sh`` (now a wrapper
around ``stella-mirror sync --config``) with the runbook's two ``aws s3 sync`` lines as two jobs against a real
S3 endpoint on loopback (moto's server), one failing job failing the run with its own exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s3proc import S3Endpoint
from stella_mirror.bundle.signing import SigningKey
from synctools import assert_serves, history, run_cli
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "systemd" / "mirror-sync.sh"
BUCKET = "mirror-stellaops"


def test_two_jobs_from_the_config_through_the_wrapper(tmp_path: Path, keydir: Path, signing_key: SigningKey,
                                                      s3_endpoint: S3Endpoint) -> None:
    s3_endpoint.aws("s3", "mb", f"s3://{BUCKET}")
    c1 = publish_concelier(tmp_path / "pub-c", signing_key, {"primary": [advisory("CVE-1")]}, "c1")
    x1 = publish_excititor(tmp_path / "pub-x", signing_key, {"primary": {"k1": [{"v": 1}]}}, "x1")
    for product, export in (("concelier", c1), ("excititor", x1)):
        s3_endpoint.aws("s3", "cp", export, f"s3://{BUCKET}/{product}/latest", "--recursive", "--only-show-errors")
    data, state, key = tmp_path / "mirror-data", tmp_path / "state", keydir / "mirror-key.pub"
    config = tmp_path / "mirror-sync.yaml"
    config.write_text(yaml.safe_dump({"sync": {"stateDir": str(state), "jobs": [
        {"name": p, "kind": p, "source": f"s3://{BUCKET}/{p}/latest", "dest": str(data / p), "trustKeys": [str(key)]}
        for p in ("concelier", "excititor")]}}))
    cli = tmp_path / "bin" / "stella-mirror"
    cli.parent.mkdir()
    cli.write_text(f'#!/bin/sh\nexec {sys.executable} -c "from stella_mirror.cli.main import main; main()" "$@"\n')
    cli.chmod(0o755)
    env = {**os.environ, **s3_endpoint.env(), "STELLA_MIRROR": str(cli), "MIRROR_SYNC_CONFIG": str(config)}

    res = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert_serves(data / "concelier", c1, key)
    assert_serves(data / "excititor", x1, key)
    assert sorted(r["job"] for r in history(state)) == ["concelier", "excititor"]

    # One job's source rolls back: that job fails (exit 13), the other still runs, nothing changes.
    c0 = publish_concelier(tmp_path / "old", signing_key, {"primary": [advisory("CVE-0")]}, "c0")
    s3_endpoint.aws("s3", "rm", f"s3://{BUCKET}/concelier/latest", "--recursive", "--only-show-errors")
    s3_endpoint.aws("s3", "cp", c0, f"s3://{BUCKET}/concelier/latest", "--recursive", "--only-show-errors")
    res = subprocess.run([str(SCRIPT), "--full"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 13, res.stderr
    runs = history(state)
    assert {r["job"]: r["outcome"] for r in runs[:2]} == {"concelier": "rollback", "excititor": "unchanged"}
    assert_serves(data / "concelier", c1, key)

    # --job picks one; an unknown job or an invalid file fails at start naming the key path.
    res = run_cli("sync", "--config", config, "--job", "excititor", env=s3_endpoint.env())
    assert res.returncode == 0, res.stderr
    res = run_cli("sync", "--config", config, "--job", "nope")
    assert res.returncode == 3 and "sync.jobs: no job named nope" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sync": {"jobs": [{"name": "x", "kind": "concelier", "source": "ftp://h/p",
                                                      "trustKeys": [str(key)]}]}}))
    res = run_cli("sync", "--config", bad)
    assert res.returncode == 3 and "sync.jobs.0.source" in res.stderr and "unsupported source scheme" in res.stderr
    secret_url = tmp_path / "secret.yaml"
    job = {"name": "x", "kind": "concelier", "source": "https://u:hunter2@mirror.test/", "trustKeys": [str(key)]}
    secret_url.write_text(yaml.safe_dump({"sync": {"jobs": [job]}}))
    res = run_cli("sync", "--config", secret_url)
    assert res.returncode == 3 and "password inside the source URL" in res.stderr and "hunter2" not in res.stderr


@pytest.mark.parametrize("path", ["deploy/systemd/mirror-sync.yaml", "deploy/compose/mirror-sync.yaml"])
def test_shipped_sync_configurations_load(path: str) -> None:
    from stella_mirror.config import load_config

    cfg = load_config(REPO / path, environ={})
    assert [j.name for j in cfg.sync.jobs] == ["concelier", "excititor"]
    assert all(j.source.startswith("s3://mirror-stellaops/") for j in cfg.sync.jobs)


def test_s3_credentials_from_files_under_run_secrets(tmp_path: Path, keydir: Path, signing_key: SigningKey,
                                                      s3_endpoint: S3Endpoint) -> None:
    """accessKeyIdFile / secretAccessKeyFile instead of the AWS credential chain (which is empty here)."""
    s3_endpoint.aws("s3", "mb", f"s3://{BUCKET}")
    c1 = publish_concelier(tmp_path / "pub", signing_key, {"primary": [advisory("CVE-1")]}, "c1")
    s3_endpoint.aws("s3", "cp", c1, f"s3://{BUCKET}/concelier/latest", "--recursive", "--only-show-errors")
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / "aws-access-key-id").write_text("stella-test\n")
    (secrets / "aws-secret-access-key").write_text("stella-test-secret\n")
    key, dest = keydir / "mirror-key.pub", tmp_path / "dest"
    job = {"name": "concelier", "kind": "concelier", "source": f"s3://{BUCKET}/concelier/latest", "dest": str(dest),
           "trustKeys": [str(key)], "endpointUrl": s3_endpoint.url, "region": "us-east-1"}
    no_chain = {k: v for k, v in s3_endpoint.env().items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    # The chain's last resort is the instance metadata address: never asked from a test (loopback only).
    no_chain["AWS_EC2_METADATA_DISABLED"] = "true"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | no_chain
    config = tmp_path / "sync.yaml"
    config.write_text(yaml.safe_dump({"sync": {"stateDir": str(tmp_path / "state"), "jobs": [job]}}))
    res = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-c",
                          "from stella_mirror.cli.main import main; main()", "sync", "--config", str(config)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3 and "no usable AWS credentials" in res.stderr
    job |= {"accessKeyIdFile": str(secrets / "aws-access-key-id"),
            "secretAccessKeyFile": str(secrets / "aws-secret-access-key")}
    config.write_text(yaml.safe_dump({"sync": {"stateDir": str(tmp_path / "state"), "jobs": [job]}}))
    res = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-c",
                          "from stella_mirror.cli.main import main; main()", "sync", "--config", str(config)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert_serves(dest, c1, key)
    assert "stella-test-secret" not in res.stderr
