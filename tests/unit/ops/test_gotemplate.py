"""The Go-template subset renderer: Go's text/template semantics (expected outputs are what Go and Helm print), and a
loud error naming file and line for anything outside the subset."""

from __future__ import annotations

from typing import Any

import pytest

from stella_mirror.ops.gotemplate import TemplateError, Templates


def render(text: str, data: Any, helpers: str = "") -> str:
    t = Templates()
    if helpers:
        t.add("chart/templates/_helpers.tpl", helpers)
    t.add("chart/templates/x.yaml", text)
    return t.render("chart/templates/x.yaml", data)


@pytest.mark.parametrize(
    ("text", "data", "expected"),
    [
        # Trim markers eat every adjacent white space character, newlines included; comments print nothing.
        ("a  {{- /* note */ -}}  \n b", {}, "ab"),
        ("x:\n  {{- if .on }}\n  y: 1\n  {{- end }}\n", {"on": True}, "x:\n  y: 1\n"),
        ("x:\n  {{- if .on }}\n  y: 1\n  {{- end }}\n", {"on": False}, "x:\n"),
        # Go's truth: empty values are false; a missing map key is empty (Helm prints it as nothing).
        ("{{ if .a }}t{{ else }}f{{ end }}{{ if .b }}t{{ else }}f{{ end }}{{ if .c }}t{{ else }}f{{ end }}|{{ .zz }}|",
         {"a": 0, "b": [], "c": "0"}, "fft||"),
        ("{{ if .a }}1{{ else if .b }}2{{ else }}3{{ end }}", {"b": {"k": 1}}, "2"),
        # range: maps by sorted key, lists in order with their index; else when empty; with rebinds the dot.
        ("{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}", {"m": {"b": 2, "a": 1}}, "a=1;b=2;"),
        ("{{ range $i, $v := .l }}{{ $i }}{{ $v }}{{ end }}", {"l": ["x", "y"]}, "0x1y"),
        ("{{ range .l }}{{ . }}{{ else }}none{{ end }}", {"l": []}, "none"),
        ("{{ with .a.b }}{{ . }}{{ else }}none{{ end }}", {"a": {"b": "v"}}, "v"),
        # Variables: $ is the data; := declares in the enclosing block, = assigns the outer one.
        ("{{ range .l }}{{ $.p }}{{ . }}{{ end }}", {"l": [1, 2], "p": "-"}, "-1-2"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $y := 3 }}{{ end }}{{ $x }}", {}, "2"),
        # Pipelines: the piped value is the last argument; parentheses; fields of a parenthesised value.
        ('{{ .n | printf "%s-%d" "a" }}', {"n": 7}, "a-7"),
        ('{{ (index .m "k").f }}', {"m": {"k": {"f": "deep"}}}, "deep"),
        ("{{ and 1 0 2 }} {{ or 0 \"\" 3 }} {{ not 0 }}", {}, "0 3 true"),
        ('{{ eq .a "x" "y" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ len .l }}', {"a": "y", "l": [1, 2, 3]}, "true true true 3"),
        # and/or stop at the deciding argument, as Go does: the second is never evaluated.
        ("{{ if and .a .a.b }}y{{ else }}n{{ end }}", {}, "n"),
        # Helm/sprig functions.
        ('{{ .s | quote }} {{ 5 | quote }} {{ "a\\"b" | squote }}', {"s": 'say "hi"\n'},
         '"say \\"hi\\"\\n" "5" \'a"b\''),
        ("k: {{ toYaml .m | nindent 2 }}", {"m": {"b": [1, "x"], "a": {}}}, "k: \n  a: {}\n  b:\n  - 1\n  - x"),
        ('{{ include "lbl" . | indent 2 }}', {"n": "z"}, "  name: z\n  x: y"),
        ('{{ template "lbl" . }}', {"n": "z"}, "name: z\nx: y"),
        ('{{ default "d" .missing }} {{ default "d" "set" }} {{ " pad " | trim }}', {}, "d set pad"),
        ('{{ $j := merge (dict "a" 1) .j (dict "a" 9 "c" 3) }}{{ toJson $j }}', {"j": {"b": 2}}, '{"a":1,"b":2,"c":3}'),
        ('{{ regexMatch "^MIRROR__DOMAINS__[0-9]+__ID$" .k }}', {"k": "MIRROR__DOMAINS__12__ID"}, "true"),
        ('{{ "abc" | sha256sum }}', {}, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("{{ .f }} {{ .g }} {{ .t }}", {"f": 1200.0, "g": 0.5, "t": True}, "1200 0.5 true"),
    ],
)
def test_go_template_semantics(text: str, data: Any, expected: str) -> None:
    helpers = '{{- define "lbl" -}}\nname: {{ .n }}\nx: y\n{{- end -}}'
    assert render(text, data, helpers) == expected


@pytest.mark.parametrize(
    ("text", "data", "message"),
    [
        ("a\n{{ lookup \"v1\" \"Secret\" \"\" \"x\" }}", {},
         "x.yaml:2: function 'lookup' is outside the supported subset"),
        ("{{ .a.b }}", {}, "x.yaml:1: nil pointer evaluating interface {}.b"),
        ("{{ .m }}", {"m": {"k": 1}}, "printing a dict is outside the supported subset (use toYaml)"),
        ("{{ block \"b\" . }}{{ end }}", {}, "'block' is outside the supported template subset"),
        ("{{ range .l }}{{ break }}{{ end }}", {"l": [1]}, "'break' is outside the supported template subset"),
        ("{{ if .a }}", {}, "missing {{ end }}"),
        ("{{ end }}", {}, "x.yaml:1: unexpected end"),
        ("{{ 1.5 }}", {}, "x.yaml:1: unsupported syntax"),
        ("{{ printf \"%x\" 1 }}", {}, "printf verbs other than"),
        ("{{ include \"nope\" . }}", {}, "no template 'nope' is defined"),
        ("{{ $u }}", {}, "undefined variable $u"),
        ("{{ eq 1 \"1\" }}", {}, "incompatible types for comparison"),
        ("{{ index .l 3 }}", {"l": [1]}, "index out of range: 3"),
    ],
)
def test_outside_the_subset_fails_naming_file_and_line(text: str, data: Any, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(text, data)
    assert message in str(info.value)
    assert str(info.value).startswith("chart/templates/x.yaml")
