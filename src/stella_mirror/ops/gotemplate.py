"""A renderer for the subset of Go's ``text/template`` (with Helm's and sprig's functions) that our Helm chart
uses, so ``deploy/tools/validate-profiles.sh`` renders the chart where ``helm`` is not installed.

No maintained Python library implements Go templates, so this is a small interpreter of exactly what
``deploy/helm/stellaops`` needs, with Go's semantics for it — and a :class:`TemplateError` naming the file and
line for anything outside the subset, never a guess. The subset:

* text and actions ``{{ … }}``, with ``{{-`` / ``-}}`` trimming all adjacent white space; comments
  ``{{/* … */}}`` (trim markers allowed around them);
* ``if`` / ``else if`` / ``else``, ``with`` / ``else``, ``range`` (lists in order, maps by sorted key;
  ``$v :=``, ``$k, $v :=``; ``else`` when empty), ``define`` + ``template`` / ``include``, ``end``;
* variables: ``$`` (the data the template was given), ``$x := …``, ``$x = …``, scoped to the enclosing block
  as in Go;
* pipelines ``a | f b`` (the piped value is the last argument), parentheses, field chains on the dot, on a
  variable or on a parenthesised value (``.Values.image.tag``, ``$cfg.env``, ``(index $m "k").x``); a missing
  map key is empty (Helm's ``missingkey=zero`` and its ``<no value>`` → empty string), a field of an empty
  value is an error, as in Helm;
* literals: double-quoted strings (Go escapes), raw strings, integers, ``true``, ``false``, ``nil``;
* truth as in Go: ``false``, ``0``, ``nil`` and empty strings, lists and maps are false;
* functions: Go's ``and or not eq ne lt le gt ge len index print printf`` (``printf`` verbs ``%s %d %v %q
  %%``) and Helm's / sprig's ``include quote squote indent nindent trim trimSuffix lower upper default
  required list dict merge hasKey keys toYaml toJson sha256sum regexMatch replace``.

Printing follows Go's ``%v`` for strings, integers, booleans and whole floats; printing a list or map is
refused (Go would print ``map[…]``, which no manifest wants: use ``toYaml``). ``toYaml`` emits the same data
as Helm's (keys sorted, block style, no trailing newline); quoting style of scalars may differ, which YAML
readers do not see.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml


class TemplateError(Exception):
    """A template outside the subset, or a Go template runtime error; the message names ``file:line``."""


# --- lexing ----------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<number>-?[0-9]+)(?![.0-9A-Za-z_])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    space_before: bool


@dataclass
class _Action:
    tokens: list[Token]
    line: int


def _tokens(body: str, where: str) -> list[Token]:
    out: list[Token] = []
    pos, space = 0, False
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if m is None:
            raise TemplateError(f"{where}: unsupported syntax at {body[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        if kind == "ws":
            space = True
        else:
            out.append(Token(kind, m.group(), space))
            space = False
        pos = m.end()
    return out


def _lex(text: str, name: str) -> list[str | _Action]:
    """Text pieces and actions, with trim markers applied to the text around them."""
    items: list[str | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(" \t\r\n")
        if start < 0:
            items.append(chunk)
            return items
        line = text.count("\n", 0, start) + 1
        where = f"{name}:{line}"
        inner_start = start + 2
        trim_left = text.startswith("- ", inner_start) or text.startswith("-\n", inner_start) or text.startswith(
            "-\t", inner_start
        )
        if trim_left:
            chunk = chunk.rstrip(" \t\r\n")
            inner_start += 1
        items.append(chunk)
        end = _action_end(text, inner_start, where)
        inner_end, trim_next = end, False
        if text[end - 1] == "-" and text[end - 2] in " \t\n":
            inner_end, trim_next = end - 1, True
        body = text[inner_start:inner_end].strip()
        pos = end + 2
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError(f"{where}: a comment must end with */ right before }}}}")
            continue
        items.append(_Action(_tokens(body, where), line))


def _action_end(text: str, pos: int, where: str) -> int:
    """The index of the ``}}`` closing the action that starts at ``pos`` (skipping strings and comments)."""
    i = pos
    while i < len(text):
        if text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                break
            i = close + 2
        elif text[i] in "\"`":
            quote, i = text[i], i + 1
            while i < len(text) and text[i] != quote:
                i += 2 if (quote == '"' and text[i] == "\\") else 1
            i += 1
        elif text.startswith("}}", i):
            return i
        else:
            i += 1
    raise TemplateError(f"{where}: unclosed action")


# --- parsing ---------------------------------------------------------------------------------------------


@dataclass
class _Node:
    line: int


@dataclass
class _Text(_Node):
    text: str


@dataclass
class _Pipeline(_Node):
    declare: list[str]
    assign: bool
    """True for ``$x = …`` (assignment to an existing variable), False for ``:=`` or no variables."""
    commands: list[list[Any]]


@dataclass
class _Output(_Node):
    pipe: _Pipeline


@dataclass
class _Branch(_Node):
    """``if`` / ``with`` / ``range``: a pipeline, a body, an else body."""

    kind: str
    pipe: _Pipeline
    body: list[_Node]
    orelse: list[_Node] = field(default_factory=list)


@dataclass
class _Call(_Node):
    name: str
    pipe: _Pipeline | None


# Operand forms inside a command.
@dataclass(frozen=True)
class _Field:
    base: Any
    """None for the dot, a variable name, or a parenthesised pipeline."""
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Func:
    name: str


@dataclass(frozen=True)
class _Literal:
    value: Any


class _Parser:
    def __init__(self, items: list[str | _Action], name: str) -> None:
        self.items = items
        self.pos = 0
        self.name = name
        self.defines: dict[str, list[_Node]] = {}

    def where(self, line: int) -> str:
        return f"{self.name}:{line}"

    def parse(self) -> list[_Node]:
        body, stop = self.block(top=True)
        if stop is not None:
            raise TemplateError(f"{self.where(stop.line)}: unexpected {stop.tokens[0].text}")
        return body

    def block(self, top: bool = False) -> tuple[list[_Node], _Action | None]:
        """Nodes up to an ``end`` / ``else`` action (returned, not consumed beyond it) or the end of input."""
        out: list[_Node] = []
        while self.pos < len(self.items):
            item = self.items[self.pos]
            self.pos += 1
            if isinstance(item, str):
                if item:
                    out.append(_Text(0, item))
                continue
            first = item.tokens[0] if item.tokens else None
            if first is None:
                raise TemplateError(f"{self.where(item.line)}: empty action")
            word = first.text if first.kind == "ident" else ""
            if word in ("end", "else"):
                if top:
                    raise TemplateError(f"{self.where(item.line)}: unexpected {word}")
                return out, item
            if word in ("if", "with", "range"):
                out.append(self.branch(word, item.tokens[1:], item.line))
            elif word == "define":
                self.define(item)
            elif word == "template":
                out.append(self.call(item))
            elif word in _KEYWORDS:
                raise TemplateError(f"{self.where(item.line)}: {word!r} is outside the supported template subset")
            else:
                out.append(_Output(item.line, self.pipeline(item.tokens, item.line, allow_declare=True)))
        if not top:
            raise TemplateError(f"{self.name}: missing {{{{ end }}}}")
        return out, None

    def branch(self, kind: str, tokens: list[Token], line: int) -> _Branch:
        node = _Branch(line, kind, self.pipeline(tokens, line, allow_declare=True, allow_two=kind == "range"), [])
        node.body, stop = self.block()
        assert stop is not None
        rest = stop.tokens[1:]
        if stop.tokens[0].text == "else":
            if rest and rest[0].text == "if" and kind == "if":
                node.orelse = [self.branch("if", rest[1:], stop.line)]
                return node
            if rest:
                raise TemplateError(f"{self.where(stop.line)}: 'else {rest[0].text}' is outside the supported subset")
            node.orelse, stop = self.block()
            assert stop is not None
            if stop.tokens[0].text != "end" or len(stop.tokens) > 1:
                raise TemplateError(f"{self.where(stop.line)}: expected {{{{ end }}}}")
        elif rest:
            raise TemplateError(f"{self.where(stop.line)}: unexpected tokens after end")
        return node

    def define(self, item: _Action) -> None:
        args = item.tokens[1:]
        if len(args) != 1 or args[0].kind not in ("str", "raw"):
            raise TemplateError(f"{self.where(item.line)}: define takes one template name")
        body, stop = self.block()
        assert stop is not None
        if stop.tokens[0].text != "end" or len(stop.tokens) > 1:
            raise TemplateError(f"{self.where(stop.line)}: define ends with {{{{ end }}}}")
        self.defines[_string(args[0], self.where(item.line))] = body

    def call(self, item: _Action) -> _Call:
        args = item.tokens[1:]
        if not args or args[0].kind not in ("str", "raw"):
            raise TemplateError(f"{self.where(item.line)}: template takes a template name")
        pipe = self.pipeline(args[1:], item.line) if len(args) > 1 else None
        return _Call(item.line, _string(args[0], self.where(item.line)), pipe)

    def pipeline(self, tokens: list[Token], line: int, allow_declare: bool = False,
                 allow_two: bool = False) -> _Pipeline:
        where = self.where(line)
        declare: list[str] = []
        assign = False
        ops = [i for i, t in enumerate(tokens) if t.kind in ("declare", "assign")]
        if ops:
            op = ops[0]
            names = tokens[:op]
            if not allow_declare and tokens[op].kind == "declare":
                raise TemplateError(f"{where}: a declaration is not allowed here")
            if [t.kind for t in names] not in (["var"], ["var", "comma", "var"]):
                raise TemplateError(f"{where}: expected $variable before {tokens[op].text}")
            if len(names) == 3 and not allow_two:
                raise TemplateError(f"{where}: two variables are declared only by range")
            declare = [t.text for t in names if t.kind == "var"]
            assign = tokens[op].kind == "assign"
            tokens = tokens[op + 1:]
        commands: list[list[Any]] = [[]]
        stream = _Stream(tokens, where)
        while not stream.done():
            if stream.peek().kind == "pipe":
                stream.next()
                commands.append([])
                continue
            commands[-1].append(self.operand(stream))
        if any(not c for c in commands):
            raise TemplateError(f"{where}: empty command in pipeline")
        return _Pipeline(line, declare, assign, commands)

    def operand(self, stream: _Stream) -> Any:
        tok = stream.next()
        where = stream.where
        if tok.kind == "dot":
            base: Any = _Field(None, ())
        elif tok.kind == "field":
            base = _Field(None, tuple(tok.text[1:].split(".")))
        elif tok.kind == "var":
            base = _Field(tok.text, ())
        elif tok.kind in ("str", "raw"):
            base = _Literal(_string(tok, where))
        elif tok.kind == "number":
            base = _Literal(int(tok.text))
        elif tok.kind == "ident":
            if tok.text in ("true", "false"):
                base = _Literal(tok.text == "true")
            elif tok.text == "nil":
                base = _Literal(None)
            elif tok.text in _KEYWORDS:
                raise TemplateError(f"{where}: unexpected {tok.text}")
            else:
                base = _Func(tok.text)
        elif tok.kind == "lparen":
            inner: list[Token] = []
            depth = 1
            while True:
                if stream.done():
                    raise TemplateError(f"{where}: unclosed (")
                t = stream.next()
                depth += {"lparen": 1, "rparen": -1}.get(t.kind, 0)
                if depth == 0:
                    break
                inner.append(t)
            base = _Field(self.pipeline(inner, int(where.rsplit(":", 1)[1])), ())
        else:
            raise TemplateError(f"{where}: unexpected {tok.text!r}")
        # A field chain written right after a variable or a parenthesised value applies to it.
        if not stream.done() and stream.peek().kind == "field" and not stream.peek().space_before:
            if not isinstance(base, _Field):
                raise TemplateError(f"{where}: cannot take a field of {tok.text}")
            base = _Field(base.base, base.names + tuple(stream.next().text[1:].split(".")))
        return base


class _Stream:
    def __init__(self, tokens: list[Token], where: str) -> None:
        self.tokens = tokens
        self.i = 0
        self.where = where

    def done(self) -> bool:
        return self.i >= len(self.tokens)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _string(tok: Token, where: str) -> str:
    if tok.kind == "raw":
        return tok.text[1:-1]

    def unescape(m: re.Match[str]) -> str:
        esc = m.group(1)
        if esc in _ESCAPES:
            return _ESCAPES[esc]
        if esc[0] in "xuU":
            return chr(int(esc[1:], 16))
        raise TemplateError(f"{where}: unsupported escape \\{esc}")

    return re.sub(r"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", unescape, tok.text[1:-1])


# --- values ----------------------------------------------------------------------------------------------


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > 0
    return True


def go_print(value: Any, where: str = "") -> str:
    """Go's ``%v`` for the kinds a manifest prints; nil prints empty (as Helm replaces ``<no value>``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, str):
        return value
    raise TemplateError(f"{where}: printing a {type(value).__name__} is outside the supported subset (use toYaml)")


def go_quote(value: str) -> str:
    """Go's ``%q`` of a string."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\t\r\a\b\f\v":
            out.append("\\" + {"\n": "n", "\t": "t", "\r": "r", "\a": "a", "\b": "b", "\f": "f", "\v": "v"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def to_yaml(value: Any) -> str:
    """Helm's ``toYaml``: block style, sorted keys, no trailing newline (``{}`` / ``null`` for empty / nil)."""
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, allow_unicode=True, width=1 << 20)
    return text.removesuffix("\n...\n").removesuffix("\n")


def _compare(a: Any, b: Any, where: str) -> tuple[Any, Any]:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if not (isinstance(a, bool) and isinstance(b, bool)):
            raise TemplateError(f"{where}: incompatible types for comparison")
    elif isinstance(a, numbers) and isinstance(b, numbers):
        return a, b
    elif a is not None and b is not None and type(a) is not type(b):
        raise TemplateError(f"{where}: incompatible types for comparison")
    return a, b


def _printf(fmt: str, args: list[Any], where: str) -> str:
    queue = list(args)

    def verb(m: re.Match[str]) -> str:
        v = m.group(1)
        if v == "%":
            return "%"
        if not queue:
            return f"%!{v}(MISSING)"
        arg = queue.pop(0)
        if v == "q":
            return go_quote(go_print(arg, where))
        if v == "d" and (not isinstance(arg, int) or isinstance(arg, bool)):
            return f"%!d({type(arg).__name__}={go_print(arg, where)})"
        return go_print(arg, where)

    out = re.sub(r"%([sdvq%])", verb, fmt)
    if re.search(r"%[^sdvq%]", fmt.replace("%%", "")):
        raise TemplateError(f"{where}: printf verbs other than %s %d %v %q are outside the supported subset")
    return out


def _merge(dst: dict[str, Any], *sources: Any) -> dict[str, Any]:
    """sprig ``merge``: keys missing from ``dst`` are filled from each source in turn, deeply; ``dst`` wins."""
    for src in sources:
        for key, value in (src or {}).items():
            if key not in dst:
                dst[key] = value
            elif isinstance(dst[key], dict) and isinstance(value, dict):
                _merge(dst[key], value)
    return dst


def _index(where: str, item: Any, *keys: Any) -> Any:
    for key in keys:
        if item is None:
            raise TemplateError(f"{where}: index of untyped nil")
        if isinstance(item, dict):
            item = item.get(key)
        elif isinstance(item, (list, tuple, str)) and isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(item):
                raise TemplateError(f"{where}: index out of range: {key}")
            item = item[key]
        else:
            raise TemplateError(f"{where}: cannot index {type(item).__name__} with {key!r}")
    return item


# --- execution -------------------------------------------------------------------------------------------


class _Scope:
    def __init__(self, root: Any) -> None:
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def push(self) -> None:
        self.frames.append({})

    def pop(self) -> None:
        self.frames.pop()

    def declare(self, name: str, value: Any) -> None:
        self.frames[-1][name] = value

    def assign(self, name: str, value: Any, where: str) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"{where}: undefined variable {name}")

    def get(self, name: str, where: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f"{where}: undefined variable {name}")


class Templates:
    """A set of parsed template files sharing their ``define``\\ s (like Helm's chart templates)."""

    def __init__(self) -> None:
        self.files: dict[str, list[_Node]] = {}
        self.defines: dict[str, tuple[str, list[_Node]]] = {}

    def add(self, name: str, text: str) -> None:
        """Parse one file; :class:`TemplateError` naming ``name:line`` outside the subset."""
        parser = _Parser(_lex(text, name), name)
        self.files[name] = parser.parse()
        for define, body in parser.defines.items():
            self.defines[define] = (name, body)

    def render(self, name: str, data: Any) -> str:
        """Execute file ``name`` with ``data`` as the dot and ``$``."""
        return self._run(name, self.files[name], data)

    def _run(self, name: str, nodes: list[_Node], data: Any) -> str:
        out: list[str] = []
        _Exec(self, name, _Scope(data)).nodes(nodes, data, out)
        return "".join(out)

    def include(self, define: str, data: Any, where: str) -> str:
        if define not in self.defines:
            raise TemplateError(f"{where}: no template {define!r} is defined")
        file, body = self.defines[define]
        return self._run(file, body, data)


class _Exec:
    def __init__(self, templates: Templates, name: str, scope: _Scope) -> None:
        self.t = templates
        self.name = name
        self.scope = scope
        self.funcs: dict[str, Callable[..., Any]] = self._functions()

    def where(self, line: int) -> str:
        return f"{self.name}:{line}"

    def nodes(self, nodes: list[_Node], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Output):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.declare:
                    out.append(go_print(value, self.where(node.line)))
            elif isinstance(node, _Branch):
                self.branch(node, dot, out)
            elif isinstance(node, _Call):
                arg = self.pipeline(node.pipe, dot) if node.pipe is not None else None
                out.append(self.t.include(node.name, arg, self.where(node.line)))

    def branch(self, node: _Branch, dot: Any, out: list[str]) -> None:
        self.scope.push()
        try:
            if node.kind == "range":
                self.range(node, dot, out)
                return
            value = self.pipeline(node.pipe, dot)
            if truth(value):
                self.nodes(node.body, value if node.kind == "with" else dot, out)
            else:
                self.nodes(node.orelse, dot, out)
        finally:
            self.scope.pop()

    def range(self, node: _Branch, dot: Any, out: list[str]) -> None:
        pipe = node.pipe
        value = self.pipeline(_Pipeline(pipe.line, [], False, pipe.commands), dot)
        if isinstance(value, dict):
            pairs: list[tuple[Any, Any]] = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, (list, tuple)):
            pairs = list(enumerate(value))
        elif value is None:
            pairs = []
        else:
            raise TemplateError(f"{self.where(node.line)}: range over {type(value).__name__} is outside the subset")
        if not pairs:
            self.nodes(node.orelse, dot, out)
            return
        for key, item in pairs:
            self.scope.push()
            if len(pipe.declare) == 2:
                self.scope.declare(pipe.declare[0], key)
                self.scope.declare(pipe.declare[1], item)
            elif pipe.declare:
                self.scope.declare(pipe.declare[0], item)
            self.nodes(node.body, item, out)
            self.scope.pop()

    def pipeline(self, pipe: _Pipeline, dot: Any) -> Any:
        where = self.where(pipe.line)
        value: Any = None
        for i, command in enumerate(pipe.commands):
            value = self.command(command, dot, where, value if i > 0 else _NOTHING)
        if pipe.declare:
            if pipe.assign:
                self.scope.assign(pipe.declare[0], value, where)
            else:
                self.scope.declare(pipe.declare[0], value)
        return value

    def command(self, command: list[Any], dot: Any, where: str, piped: Any) -> Any:
        head, args = command[0], command[1:]
        if isinstance(head, _Func) and head.name in ("and", "or") and args:
            # Go evaluates and/or lazily: the first falsy (and) / truthy (or) argument ends it.
            want = head.name == "or"
            value: Any = None
            for arg in args:
                value = self.operand(arg, dot, where)
                if truth(value) is want:
                    return value
            if piped is not _NOTHING:
                value = piped
            return value
        if isinstance(head, _Func):
            fn = self.funcs.get(head.name)
            if fn is None:
                raise TemplateError(f"{where}: function {head.name!r} is outside the supported subset")
            values = [self.operand(a, dot, where) for a in args]
            if piped is not _NOTHING:
                values.append(piped)
            try:
                return fn(where, *values)
            except TypeError as exc:
                raise TemplateError(f"{where}: wrong arguments for {head.name}: {exc}") from None
        if args or piped is not _NOTHING:
            raise TemplateError(f"{where}: can't give arguments to a non-function")
        return self.operand(head, dot, where)

    def operand(self, op: Any, dot: Any, where: str) -> Any:
        if isinstance(op, _Literal):
            return op.value
        if isinstance(op, _Func):
            return self.command([op], dot, where, _NOTHING)
        assert isinstance(op, _Field)
        if op.base is None:
            value = dot
        elif isinstance(op.base, str):
            value = self.scope.get(op.base, where)
        else:
            value = self.pipeline(op.base, dot)
        for name in op.names:
            if isinstance(value, dict):
                value = value.get(name)
            elif value is None:
                raise TemplateError(f"{where}: nil pointer evaluating interface {{}}.{name}")
            else:
                raise TemplateError(f"{where}: can't evaluate field {name} in type {type(value).__name__}")
        return value

    def _functions(self) -> dict[str, Callable[..., Any]]:
        def eq(where: str, a: Any, *others: Any) -> bool:
            return any(x == y for x, y in (_compare(a, b, where) for b in others))

        def ordered(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
            def cmp(where: str, a: Any, b: Any) -> bool:
                x, y = _compare(a, b, where)
                if x is None or isinstance(x, bool):
                    raise TemplateError(f"{where}: invalid type for comparison")
                return op(x, y)

            return cmp

        def required(where: str, message: str, value: Any) -> Any:
            if value is None or value == "":
                raise TemplateError(f"{where}: {message}")
            return value

        def regex_match(where: str, pattern: str, text: str) -> bool:
            try:
                return re.search(pattern, text) is not None
            except re.error as exc:
                raise TemplateError(f"{where}: regexMatch: {exc}") from None

        def length(where: str, value: Any) -> int:
            if not isinstance(value, (str, list, tuple, dict)):
                raise TemplateError(f"{where}: len of {type(value).__name__}")
            return len(value)

        def indent(_where: str, n: int, text: str) -> str:
            pad = " " * n
            return pad + text.replace("\n", "\n" + pad)

        def strval(where: str, v: Any) -> str:
            return go_print(v, where)

        return {
            "not": lambda _w, a: not truth(a),
            "eq": eq,
            "ne": lambda w, a, b: not eq(w, a, b),
            "lt": ordered(lambda a, b: a < b),
            "le": ordered(lambda a, b: a <= b),
            "gt": ordered(lambda a, b: a > b),
            "ge": ordered(lambda a, b: a >= b),
            "len": length,
            "index": _index,
            "print": lambda w, *a: "".join(strval(w, x) for x in a),
            "printf": lambda w, fmt, *a: _printf(fmt, list(a), w),
            "include": lambda w, name, data: self.t.include(name, data, w),
            "quote": lambda w, *a: " ".join(go_quote(strval(w, x)) for x in a if x is not None),
            "squote": lambda w, *a: " ".join(f"'{strval(w, x)}'" for x in a if x is not None),
            "indent": indent,
            "nindent": lambda w, n, text: "\n" + indent(w, n, text),
            "trim": lambda w, s: strval(w, s).strip(" \t\r\n\v\f"),
            "trimSuffix": lambda w, suffix, s: strval(w, s).removesuffix(suffix),
            "lower": lambda w, s: strval(w, s).lower(),
            "upper": lambda w, s: strval(w, s).upper(),
            "replace": lambda w, old, new, s: strval(w, s).replace(old, new),
            "default": lambda _w, d, *v: v[0] if v and truth(v[0]) else d,
            "required": required,
            "list": lambda _w, *a: list(a),
            "dict": lambda w, *a: {strval(w, a[i]): a[i + 1] if i + 1 < len(a) else "" for i in range(0, len(a), 2)},
            "merge": lambda _w, dst, *src: _merge(dst, *src),
            "hasKey": lambda _w, m, k: isinstance(m, dict) and k in m,
            "keys": lambda _w, *maps: [k for m in maps for k in m],
            "toYaml": lambda _w, v: to_yaml(v),
            "toJson": lambda _w, v: json.dumps(v, separators=(",", ":"), ensure_ascii=False),
            "sha256sum": lambda w, s: hashlib.sha256(strval(w, s).encode()).hexdigest(),
            "regexMatch": regex_match,
        }


_NOTHING = object()
"""No piped value (distinct from a piped nil)."""


def render_files(files: Mapping[str, str], data: Any, partial: Callable[[str], bool]) -> Iterator[tuple[str, str]]:
    """Parse every file, then render those that are not ``partial`` (their defines are shared): (name, text)."""
    templates = Templates()
    for name, text in files.items():
        templates.add(name, text)
    for name in files:
        if not partial(name):
            yield name, templates.render(name, data)
