"""Our server subclasses uvicorn's private httptools protocol and request cycle (server/protocol.py, cycle.py).

Nothing in uvicorn promises those names, so an upgrade may remove or rename one; pyproject.toml bounds
uvicorn to the minor versions tested, and these tests say which names a version lacks — in CI, not as an
AttributeError in production. The names are not listed by hand: every ``self.X`` our subclasses read
without defining it, every ``super().X`` they call, every ``self.flow.X``/``self.server_state.X``/
``self.cycle.X`` they touch and every name they import from uvicorn is collected from our source, and each
must be something uvicorn's class defines or assigns on ``self``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from pathlib import Path

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.server import ServerState

SERVER = Path(__file__).resolve().parents[3] / "src" / "stella_mirror" / "server"
FILES = ("protocol.py", "cycle.py")
BASES = {
    "HttpToolsProtocol": httptools_impl.HttpToolsProtocol,
    "RequestResponseCycle": httptools_impl.RequestResponseCycle,
}
PARTS = {"flow": FlowControl, "server_state": ServerState, "cycle": httptools_impl.RequestResponseCycle}
"""Attributes of uvicorn's objects that hold other uvicorn objects, whose own attributes we use."""


def _provided(cls: type) -> set[str]:
    """What uvicorn's class offers: its (inherited) class attributes and every ``self.X`` its methods assign."""
    names = set(dir(cls))
    for klass in cls.__mro__:
        if klass.__module__.startswith("uvicorn"):
            for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(klass)))):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
                    names.add(node.attr)
    return names


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _used(path: Path) -> tuple[dict[str, set[str]], dict[str, set[str]], set[tuple[str, str]]]:
    """For one of our files: per uvicorn base, the ``self``/``super()`` names our subclasses need from it; per
    part (flow, cycle, …), the names used on it; and the ``(module, name)`` pairs imported from uvicorn."""
    tree = ast.parse(path.read_text())
    imports = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uvicorn")
        for alias in node.names
    }
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}

    def base_of(cls: ast.ClassDef) -> str | None:
        for base in cls.bases:
            name = base.id if isinstance(base, ast.Name) else None
            if name in BASES:
                return name
            if name in classes:
                return base_of(classes[name])
        return None

    needed: dict[str, set[str]] = {}
    parts: dict[str, set[str]] = {}
    for cls in classes.values():
        base = base_of(cls)
        if base is None:
            continue
        ours = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        ours |= {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        ours |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        stored = {
            n.attr
            for n in ast.walk(cls)
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and _is_self(n.value)
        }
        read = set()
        for fn in ast.walk(cls):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            aliases = {  # local = self.flow / self.cycle / …
                t.id: n.value.attr
                for n in ast.walk(fn)
                if isinstance(n, ast.Assign) and isinstance(n.value, ast.Attribute) and _is_self(n.value.value)
                for t in n.targets
                if isinstance(t, ast.Name) and n.value.attr in PARTS
            }
            for n in ast.walk(fn):
                if not isinstance(n, ast.Attribute):
                    continue
                if _is_self(n.value) and isinstance(n.ctx, ast.Load):
                    read.add(n.attr)
                elif (
                    isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name) and n.value.func.id == "super"
                ):
                    read.add(n.attr)
                    needed.setdefault(base, set()).add(n.attr)  # super().X: uvicorn's own, whatever we define
                elif isinstance(n.value, ast.Attribute) and _is_self(n.value.value) and n.value.attr in PARTS:
                    parts.setdefault(n.value.attr, set()).add(n.attr)
                elif isinstance(n.value, ast.Name) and n.value.id in aliases:
                    parts.setdefault(aliases[n.value.id], set()).add(n.attr)
        # Names we read but neither define nor assign ourselves must come from uvicorn; so must those we
        # assign but uvicorn's code also assigns (we rely on its meaning of them).
        uvicorn_names = _provided(BASES[base])
        needed.setdefault(base, set()).update((read - ours - stored) | ((read & stored) & uvicorn_names))
    return needed, parts, imports


def _version_hint() -> str:
    return (
        f"uvicorn {uvicorn.__version__} is installed; stella-mirror was tested with the versions pyproject.toml allows"
    )


@pytest.mark.parametrize("name", FILES)
def test_the_private_uvicorn_names_we_use_exist(name: str) -> None:
    needed, parts, imports = _used(SERVER / name)
    assert needed, f"no subclass of uvicorn's classes found in {name}: this test no longer looks at the right code"
    problems = []
    for module, attr in sorted(imports):
        if not hasattr(importlib.import_module(module), attr):
            problems.append(f"{module}.{attr}")
    for base, names in needed.items():
        problems += [f"{base}.{n}" for n in sorted(names - _provided(BASES[base]))]
    for part, names in parts.items():
        problems += [f"{PARTS[part].__name__}.{n} (as self.{part})" for n in sorted(names - _provided(PARTS[part]))]
    assert not problems, (
        f"{_version_hint()}, but it lacks what server/{name} uses from it: {', '.join(problems)}. "
        "Adapt the subclass to this uvicorn (or keep uvicorn below this version) before upgrading."
    )


def test_the_collected_names_cover_what_the_immediate_path_relies_on() -> None:
    """A guard on the collector itself: names the protocol is known to need are among those it checks."""
    needed, parts, imports = _used(SERVER / "protocol.py")
    assert {"pipeline", "expect_100_continue", "limit_concurrency", "url", "scope", "root_path"} <= needed[
        "HttpToolsProtocol"
    ]
    assert {"on_headers_complete", "connection_lost", "send_400_response"} <= needed["HttpToolsProtocol"]
    assert {"write_paused", "resume_reading"} <= parts["flow"] and "default_headers" in parts["server_state"]
    assert ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol") in imports


def test_our_header_checks_and_status_lines_are_uvicorns() -> None:
    """cycle.py formats responses with its own copies of these; uvicorn's ordinary path uses its own."""
    from stella_mirror.server import cycle

    assert getattr(httptools_impl, "STATUS_LINE", None) == cycle.STATUS_LINE, _version_hint()
    for name in ("HEADER_RE", "HEADER_VALUE_RE"):
        theirs = getattr(httptools_impl, name, None)
        assert theirs is not None and getattr(cycle, name).pattern == theirs.pattern, f"{_version_hint()}: {name}"
