"""``stella-mirror export excititor`` end to end: the CLI publishes the sample VEX data, and software we
did not write (openssl, Node's jose, jwcrypto) verifies every signature of the tree."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
import yaml
from jwcrypto import jwk, jws

from clitools import cli

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "src" / "stella_mirror" / "samples" / "excititor"
INTEROP = REPO / "tests" / "interop"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("excititor")
    keys = base / "keys"
    assert cli("keys", "generate", "--out", keys).returncode == 0
    proc = cli(
        "export", "excititor",
        "--config", SAMPLES / "config.yaml",
        "--key", keys / "mirror-key.pem",
        "--out", base / "root",
        "--export-id", "x1",
        "--generated-at", "2030-01-01T00:00:00Z",
        "--expires-in", "30d",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "published Excititor export x1 sequence 1" in proc.stdout
    assert "primary/consensus: json consensus, 8 records from acme, northwind, vexhub" in proc.stdout
    return base / "root", keys


def signed_files(root: Path) -> list[Path]:
    """Every signed file of the active export: the domain indexes and each artifact they list."""
    mirror = root / "latest" / "mirror"
    files = []
    for domain in sorted(p for p in mirror.iterdir() if p.is_dir()):
        files.append(domain / "index.json")
        index = orjson.loads((domain / "index.json").read_bytes())
        files += [domain / e["path"] for e in index["exports"]]
    return files


def test_tree_shape_and_own_verifier(published: tuple[Path, Path]) -> None:
    root, keys = published
    files = signed_files(root)
    assert len(files) == 7  # 2 indexes + 3 primary + 2 community artifacts
    proc = cli("verify", root, "--key", keys / "mirror-key.pub", "--json")
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout)
    assert (verdict["product"], verdict["exportId"], verdict["sequence"]) == ("excititor", "x1", 1)
    assert verdict["domains"] == ["community", "primary"]
    assert verdict["expiresAt"] == "2030-01-31T00:00:00Z"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_sig_files_verify_with_openssl(published: tuple[Path, Path], tmp_path: Path) -> None:
    root, keys = published
    for path in signed_files(root):
        der = tmp_path / "sig.der"
        der.write_bytes(base64.b64decode(path.with_name(path.name + ".sig").read_bytes()))
        proc = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", str(keys / "mirror-key.pub"), "-signature", str(der), str(path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert proc.returncode == 0 and "Verified OK" in proc.stdout, (path, proc.stdout, proc.stderr)
    # And openssl notices a changed byte.
    victim = signed_files(root)[1]
    changed = tmp_path / "changed"
    changed.write_bytes(victim.read_bytes().replace(b'"', b"'", 1))
    der = tmp_path / "sig.der"
    der.write_bytes(base64.b64decode(victim.with_name(victim.name + ".sig").read_bytes()))
    proc = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(keys / "mirror-key.pub"), "-signature", str(der), str(changed)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode != 0


def test_jws_files_verify_with_node_jose(published: tuple[Path, Path], tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (INTEROP / "node_modules" / "jose").is_dir():
        pytest.skip("tests/interop/node_modules/jose missing (run: cd tests/interop && npm install)")
    root, keys = published
    script = INTEROP / "verify-jws.mjs"
    for path in signed_files(root):
        proc = subprocess.run(
            ["node", str(script), str(path), str(path.with_name(path.name + ".jws")), str(keys / "jwks.json")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, (path, proc.stderr)
        header = json.loads(proc.stdout)
        assert header["alg"] == "ES256" and header["b64"] is False and header["crit"] == ["b64"]
    victim = signed_files(root)[2]
    changed = tmp_path / "changed"
    changed.write_bytes(victim.read_bytes() + b" ")
    proc = subprocess.run(
        ["node", str(script), str(changed), str(victim.with_name(victim.name + ".jws")), str(keys / "jwks.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1


def test_jws_files_verify_with_jwcrypto(published: tuple[Path, Path]) -> None:
    root, keys = published
    key = jwk.JWK.from_pem((keys / "mirror-key.pub").read_bytes())
    for path in signed_files(root):
        header_b64, empty, sig_b64 = path.with_name(path.name + ".jws").read_text().strip().split(".")
        assert empty == ""
        token = jws.JWS()
        token.deserialize(
            json.dumps({"protected": header_b64, "signature": sig_b64, "payload": path.read_bytes().decode()})
        )
        token.verify(key, alg="ES256")  # raises on failure
        assert token.jose_header["kid"] == key.thumbprint()


def _bad_config(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLES / "vex", tmp_path / "vex")
    broken = tmp_path / "vex" / "hub" / "broken.cdx.json"
    broken.write_text(
        '{"bomFormat": "CycloneDX", "specVersion": "1.5", "vulnerabilities": '
        '[{"id": "CVE-2024-990009", "analysis": {"state": "exploited"}, "affects": [{"ref": "pkg:npm/x@1"}]}]}'
    )
    shutil.copyfile(SAMPLES / "config.yaml", tmp_path / "config.yaml")
    return tmp_path / "config.yaml"


def test_malformed_document_is_named_and_skipped(tmp_path: Path, published: tuple[Path, Path]) -> None:
    _, keys = published
    config = _bad_config(tmp_path)
    proc = cli("export", "excititor", "--config", config, "--key", keys / "mirror-key.pem", "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    assert "vex/hub/broken.cdx.json#/vulnerabilities/0/analysis/state" in proc.stderr
    assert "1 rejected" in proc.stdout
    assert (tmp_path / "r" / "latest").is_symlink()


def test_strict_refuses_and_publishes_nothing(tmp_path: Path, published: tuple[Path, Path]) -> None:
    _, keys = published
    config = _bad_config(tmp_path)
    out = tmp_path / "r"
    proc = cli(
        "export", "excititor", "--config", config, "--key", keys / "mirror-key.pem", "--out", out, "--strict"
    )  # fmt: skip
    assert proc.returncode == 5, (proc.stdout, proc.stderr)
    assert "vex/hub/broken.cdx.json#/vulnerabilities/0/analysis/state" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], [".lock"])


def test_bad_config_is_a_clear_error(tmp_path: Path, published: tuple[Path, Path]) -> None:
    _, keys = published
    config = yaml.safe_load((SAMPLES / "config.yaml").read_text())
    config["domains"][0]["exports"][0]["format"] = "xml"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    proc = cli("export", "excititor", "--config", tmp_path / "c.yaml", "--key", keys / "mirror-key.pem", "--out",
               tmp_path / "r")  # fmt: skip
    assert proc.returncode == 3
    assert "domains.0.exports.0.format" in proc.stderr and "Traceback" not in proc.stderr


def test_json_summary_names_skipped_files_with_their_reason(tmp_path: Path, published: tuple[Path, Path]) -> None:
    """A JSON file that is no VEX document and a dot file are skipped, counted and named with the reason."""
    _, keys = published
    config = _bad_config(tmp_path)
    (tmp_path / "vex" / "hub" / "feed.json").write_text('{"feed": {"entry": []}}')
    (tmp_path / "vex" / "hub" / ".draft.json").write_text("{not even json")
    proc = cli(
        "export", "excititor", "--config", config, "--key", keys / "mirror-key.pem", "--out", tmp_path / "r", "--json"
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"vex/hub/feed.json", "vex/hub/.draft.json"}
    assert reasons["vex/hub/feed.json"].startswith("JSON but no VEX document")
    assert reasons["vex/hub/.draft.json"].startswith("dot name")
    assert summary["documentsSkipped"] == 2 and summary["documentsRejected"] == 1
    (rejected,) = summary["rejected"]
    assert (rejected["path"], rejected["pointer"]) == ("vex/hub/broken.cdx.json", "/vulnerabilities/0/analysis/state")
    assert summary["claims"] == sum(p["claims"] for p in summary["providers"].values())
    assert {a["exportKey"] for a in summary["artifacts"]} >= {"consensus", "claims", "openvex"}


def test_artifacts_are_content_addressed(tmp_path: Path, published: tuple[Path, Path]) -> None:
    """Issue 20: an unchanged input gives byte-identical artifacts in a later export with another id and
    time; the export id and times stay in the signed index, and both exports verify."""
    root, keys = published
    later = tmp_path / "root"
    shutil.copytree(root, later, symlinks=True)
    proc = cli(
        "export", "excititor", "--config", SAMPLES / "config.yaml", "--key", keys / "mirror-key.pem", "--out", later,
        "--export-id", "x2", "--generated-at", "2030-01-02T06:30:00Z", "--expires-in", "30d",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first, second = signed_files(root), signed_files(later)
    assert [p.relative_to(root / "latest") for p in first] == [p.relative_to(later / "latest") for p in second]
    for a, b in zip(first, second, strict=True):
        if a.name == "index.json":
            ia, ib = orjson.loads(a.read_bytes()), orjson.loads(b.read_bytes())
            assert (ia["exportId"], ib["exportId"], ib["sequence"]) == ("x1", "x2", 2)
            assert [e["digest"] for e in ia["exports"]] == [e["digest"] for e in ib["exports"]]
        else:
            assert a.read_bytes() == b.read_bytes(), a
            assert b"x1" not in a.read_bytes() and b"2030-01-01" not in a.read_bytes()
    proc = cli("verify", later, "--key", keys / "mirror-key.pub", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["exportId"] == "x2"
