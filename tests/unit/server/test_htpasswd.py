"""htpasswd files made by the real `htpasswd` tool: bcrypt accepted, every other hash refused by line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest

from stella_mirror.errors import ConfigError
from stella_mirror.server.authn.htpasswd import load_htpasswd

pytestmark = pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed")


def htpasswd_line(*flags: str, user: str = "alice", password: str = "s3cret") -> str:
    """One line from `htpasswd -n -b <flags>` (printed, not written)."""
    out = subprocess.run(["htpasswd", "-n", "-b", *flags, user, password], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def test_bcrypt_file_from_htpasswd_loads_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "primary.htpasswd"
    subprocess.run(["htpasswd", "-B", "-c", "-b", str(path), "alice", "pw-alice"], check=True, capture_output=True)
    subprocess.run(["htpasswd", "-B", "-b", str(path), "bob", "pw-bob"], check=True, capture_output=True)
    table = load_htpasswd(path)
    assert set(table.users) == {"alice", "bob"}
    assert table.users["alice"].startswith(b"$2y$")
    assert bcrypt.checkpw(b"pw-alice", table.users["alice"])
    assert not bcrypt.checkpw(b"pw-bob", table.users["alice"])
    # the dummy hash used for unknown users has the file's cost, so misses take as long as hits
    assert table.dummy_hash[4:6] == table.users["alice"][4:6]
    assert "pw-" not in repr(table) and "$2y$" not in repr(table)


def test_comments_and_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "x.htpasswd"
    path.write_text(f"# issued 2024-05 to downstream A\n\n{htpasswd_line('-B')}\n   \n# end\n")
    assert list(load_htpasswd(path).users) == ["alice"]


@pytest.mark.parametrize(
    ("flag", "kind"),
    [("-s", "SHA-1"), ("-m", "APR1-MD5"), ("-p", "plain-text"), ("-d", "DES-crypt")],
)
def test_non_bcrypt_hash_refused_naming_file_and_line_not_hash(tmp_path: Path, flag: str, kind: str) -> None:
    weak = htpasswd_line(flag, user="mallory")
    path = tmp_path / "mixed.htpasswd"
    path.write_text(f"# comment\n{htpasswd_line('-B')}\n{weak}\n")
    with pytest.raises(ConfigError) as info:
        load_htpasswd(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3:"), message
    assert "mallory" in message and kind in message and "htpasswd -B" in message
    secret_part = weak.split(":", 1)[1]
    assert secret_part not in message and "s3cret" not in message


def test_duplicate_user_refused_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.htpasswd"
    path.write_text(f"{htpasswd_line('-B')}\n{htpasswd_line('-B', user='bob')}\n{htpasswd_line('-B')}\n")
    with pytest.raises(ConfigError, match=r":3: user 'alice' already defined on line 1"):
        load_htpasswd(path)


@pytest.mark.parametrize("content", [b"no-colon-here\n", b":$2y$05$abc\n", b"\xff\xfe:x\n"])
def test_malformed_lines_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.htpasswd"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"bad\.htpasswd:1: "):
        load_htpasswd(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read htpasswd file"):
        load_htpasswd(tmp_path / "absent.htpasswd")


def test_reload_sees_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "r.htpasswd"
    subprocess.run(["htpasswd", "-B", "-c", "-b", str(path), "alice", "old"], check=True, capture_output=True)
    before = load_htpasswd(path)
    subprocess.run(["htpasswd", "-B", "-b", str(path), "alice", "new"], check=True, capture_output=True)
    after = load_htpasswd(path)
    assert bcrypt.checkpw(b"old", before.users["alice"])
    assert bcrypt.checkpw(b"new", after.users["alice"]) and not bcrypt.checkpw(b"old", after.users["alice"])
