"""Offline kits (B4): one tarball carrying an export, the publisher's public keys and a manifest, for
air-gapped consumers. ``sync --source KIT.tar`` imports it with the same verification as any source
(``sync/sources/kit.py``); the keys inside are for the consumer's information, never trusted by the import.

Layout (an uncompressed tar, members in this order)::

    kit.json            schemaVersion, kind, exportId, sequence, createdAt, keyIds, files[{path,sizeBytes,digest}]
    keys/jwks.json      the public keys given to ``offline-kit create`` (RFC 7517), and each as keys/<kid>.pub
    export/mirror/…     the export directory, as served
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import orjson

from stella_mirror.bundle import store
from stella_mirror.bundle.atomic import atomic_file
from stella_mirror.bundle.signing import TrustedKeys, jwks, key_id, public_pem
from stella_mirror.errors import LocalIOError
from stella_mirror.timeutil import rfc3339, utcnow

MANIFEST = "kit.json"
EXPORT = "export/"


def create_kit(root: Path, out: Path, keys: TrustedKeys) -> dict[str, Any]:
    """Write a kit of ``root``'s active export (verified against ``keys`` first) to ``out``, atomically."""
    export_dir = store.resolve_export_dir(root)
    verdict = store.verify_export_dir(export_dir, keys, utcnow())
    members: list[tuple[str, Path]] = []
    for path in sorted(export_dir.rglob("*")):
        rel = path.relative_to(export_dir).as_posix()
        if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in rel.split("/")):
            members.append((EXPORT + rel, path))
    files = []
    for name, path in members:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        files.append({"path": name, "sizeBytes": path.stat().st_size, "digest": "sha256:" + digest.hexdigest()})
    pubs = list(keys)
    extra = {"keys/jwks.json": orjson.dumps(jwks(pubs), option=orjson.OPT_INDENT_2) + b"\n"}
    extra.update({f"keys/{key_id(k)}.pub": public_pem(k) for k in pubs})
    for name, data in extra.items():
        files.append({"path": name, "sizeBytes": len(data), "digest": "sha256:" + hashlib.sha256(data).hexdigest()})
    manifest = {
        "schemaVersion": 1,
        "kind": verdict.product,
        "exportId": verdict.export_id,
        "sequence": verdict.sequence,
        "createdAt": rfc3339(utcnow()),
        "keyIds": sorted(key_id(k) for k in pubs),
        "files": sorted(files, key=lambda f: str(f["path"])),
    }
    try:
        with atomic_file(out) as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            for name, data in extra.items():
                _add_bytes(tar, name, data)
            for name, path in members:
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
    except OSError as exc:
        raise LocalIOError(f"{out}: {exc.strerror or exc}") from exc
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(utcnow().timestamp())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
