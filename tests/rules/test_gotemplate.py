"""The Go template evaluator against Go's documented semantics (text/template, fmt, Sprig),
one case per place where a Python reading would differ from Go's."""

from __future__ import annotations

import time
from typing import Any

import pytest

from nodefeatures.discovery.rules import gotemplate
from nodefeatures.discovery.rules.gofuncs import GoMap, TemplateError

DATA = {
    "s": "text", "n": 3, "empty": "", "zero": 0, "list": ["b", "a"], "none": [],
    "m": {"b": "2", "a": "1"}, "nested": {"x": {"y": "deep"}},
    "els": [GoMap({"Name": "AVX", "Value": "1"}, "nodefeaturerule.MatchedElement", str)],
}


def render(template: str, data: Any = None) -> str:
    return gotemplate.parse(template).execute(DATA if data is None else data)


@pytest.mark.parametrize(("template", "expected"), [
    # text, trim markers, comments
    ("plain text", "plain text"),
    ("a  {{- 1 -}}  \n b", "a1b"),
    ("a {{-3}} b", "a -3 b"),  # `{{-3` is the number -3, not a trim marker
    ("{{/* a comment */}}x", "x"),
    ("a {{- /* c */ -}} b", "ab"),
    ("{{ `raw\nstring` }}", "raw\nstring"),
    # fields, variables, dot
    ("{{ .s }} {{ .nested.x.y }} {{ $.s }}", "text deep text"),
    ("{{ range .els }}{{ .Name }}={{ .Value }}{{ end }}", "AVX=1"),
    ("{{ with .nested }}{{ .x.y }}{{ end }}", "deep"),
    ("{{ (index .els 0).Name }}", "AVX"),
    ("{{ $x := .nested.x }}{{ $x.y }}", "deep"),
    ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
    ("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}", "21"),
    # printing values as fmt does
    ("{{ .list }} {{ .m }} {{ .none }} {{ true }}", "[b a] map[a:1 b:2] [] true"),
    ("{{ 1.5 }} {{ 1e6 }} {{ 100000.0 }} {{ 0.00001 }}", "1.5 1e+06 100000 1e-05"),
    ("{{ 010 }} {{ 0x1F }} {{ 1_000 }} {{ 'a' }} {{ -7 }}", "8 31 1000 97 -7"),
    ("{{ \"\\u00e9\\x41\\t\" }}", "\u00e9A\t"),
    ("{{ first .none }}", "<no value>"),
    ("{{ index .els 0 \"zz\" }}|", "|"),  # a MatchedElement's zero value is ""
    ("{{ index (dict) \"zz\" }}|", "<no value>|"),  # an interface map's is nil
    # if / else if / with / else with
    ("{{ if 0 }}a{{ else if \"\" }}b{{ else if .none }}c{{ else }}d{{ end }}", "d"),
    ("{{ if .list }}yes{{ end }}{{ if .m }}map{{ end }}", "yesmap"),
    ("{{ with .empty }}a{{ else with .s }}{{ . }}{{ end }}", "text"),
    ("{{ with $v := .s }}{{ $v }}{{ . }}{{ end }}", "texttext"),
    # range
    ("{{ range $i, $e := .list }}{{ $i }}{{ $e }}{{ end }}", "0b1a"),
    ("{{ range $e := .list }}{{ $e }}{{ end }}", "ba"),  # one variable: the element
    ("{{ range $k, $v := .m }}{{ $k }}{{ $v }}{{ end }}", "a1b2"),  # sorted keys
    ("{{ range .m }}{{ . }}{{ end }}", "12"),
    ("{{ range .none }}x{{ else }}empty{{ end }}", "empty"),
    ("{{ range 3 }}{{ . }}{{ end }}", "012"),
    ("{{ range list 1 2 3 4 }}{{ if eq . 2 }}{{ continue }}{{ end }}"
     "{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}", "13"),
    ("{{ range $i, $e := .list }}{{ end }}{{ range .list }}{{ $.s }}{{ end }}", "texttext"),
    # pipelines: the piped value is the last argument
    ("{{ \"a\" | printf \"%s-%s\" \"b\" }}", "b-a"),
    ("{{ .list | len | printf \"%d items\" }}", "2 items"),
    # comparisons
    ("{{ eq .s \"x\" \"text\" }} {{ ne 1 2 }} {{ lt \"a\" \"b\" }} {{ ge 2 2 }}",
     "true true true true"),
    ("{{ eq .n (len .list | add 1) }}", "true"),  # int and Sprig's int64 compare
    ("{{ le 1.5 2.0 }} {{ gt 3 2 }}", "true true"),
    # and / or short-circuit and return an operand
    ("{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 \"\" \"x\" }} {{ or 0 \"\" }}", "0 2 x "),
    ("{{ or .s .missing.field }}", "text"),  # the second operand is never evaluated
    ("{{ not 0 }} {{ .s | not }}", "true false"),
    # built-in functions
    ("{{ len \"h\u00e9\" }} {{ len .m }}", "3 2"),  # bytes, as Go counts
    ("{{ index \"abc\" 1 }} {{ index .list 1 }} {{ index .nested \"x\" \"y\" }}", "98 a deep"),
    ("{{ slice \"abcdef\" 1 3 }} {{ slice .list 1 }}", "bc [a]"),
    ("{{ print \"a\" \"b\" 1 2 }}|{{ println \"a\" 1 }}|", "ab1 2|a 1\n|"),
    ("{{ print nil }} {{ printf \"%v\" .list }}", "<nil> [b a]"),
    ("{{ printf \"%5s|%-4d|%05d|%x|%X|%x\" \"ab\" 7 -42 255 255 \"hi\" }}",
     "   ab|7   |-0042|ff|FF|6869"),
    ("{{ printf \"%q %t %%\" \"a\\\"b\\n\" true }}", "\"a\\\"b\\n\" true %"),
    # Sprig
    ("{{ (.els | first).Name | lower | trim | substr 0 2 }}", "av"),
    ("{{ trunc 3 \"abcdef\" }} {{ trunc -2 \"abcdef\" }} {{ substr 2 99 \"abc\" }}",
     "abc ef c"),
    ("{{ upper \"abc\" }} {{ title \"hello world-x\" }} {{ replace \"a\" \"o\" \"banana\" }}",
     "ABC Hello World-X bonono"),
    ("{{ trimPrefix \"v\" \"v1.2\" }} {{ trimSuffix \".0\" \"5.0\" }} {{ trimAll \"-\" \"--x-\" }}",
     "1.2 5 x"),
    ("{{ contains \"b\" \"abc\" }} {{ hasPrefix \"a\" \"abc\" }} {{ hasSuffix \"x\" \"abc\" }}",
     "true true false"),
    ("{{ quote \"a\" 1 nil }} {{ squote \"a\" }} {{ cat \"a\" nil 1 }} {{ repeat 3 \"ab\" }}",
     "\"a\" \"1\" 'a' a 1 ababab"),
    ("{{ nospace \" a b\\t\" }} {{ toString 5 }} {{ atoi \"42\" }} {{ atoi \"x\" }}",
     "ab 5 42 0"),
    ("{{ splitList \",\" \"a,b,,c\" | len }} {{ join \"-\" (list \"a\" 1 nil) }}", "4 a-1"),
    ("{{ default \"d\" \"\" }} {{ \"\" | default \"d\" }} {{ \"x\" | default \"d\" }}",
     "d d x"),
    ("{{ empty .none }} {{ coalesce 0 \"\" \"c\" }} {{ ternary \"y\" \"n\" false }}",
     "true c n"),
    ("{{ add 1 2 \"3\" }} {{ add \"0x10\" 1 }} {{ add \"010\" 0 }} {{ add \"x\" 1 }}",
     "6 17 8 1"),  # strings as spf13/cast reads them: base prefixes, leading 0 is octal
    ("{{ sub 1 3 }} {{ mul 2 3 4 }} {{ div 7 -2 }} {{ mod -7 2 }} {{ add1 9 }}",
     "-2 24 -3 -1 10"),  # integer division truncates toward zero, as Go's
    ("{{ max 1 5 3 }} {{ min 4 2 8 }} {{ add 9223372036854775807 1 }}",
     "5 2 -9223372036854775808"),
    ("{{ regexMatch \"^[0-9]+$\" \"123\" }} {{ regexFind \"[0-9]+\" \"ab12cd34\" }}",
     "true 12"),
    ("{{ regexFindAll \"[0-9]\" \"a1b2c3\" 2 }} {{ regexFindAll \"[0-9]\" \"a1b2c3\" -1 }}",
     "[1 2] [1 2 3]"),
    ("{{ regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"${1}W\" }}", "-W-xxW-"),
    ("{{ regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"$1W\" }}", "---"),  # $1W names group 1W
    ("{{ regexReplaceAllLiteral \"a(x*)b\" \"-ab-\" \"$1\" }}", "-$1-"),
    # Go skips an empty match right after a match; Python's finditer and sub do not.
    ("{{ regexFindAll \"a*\" \"baaa\" -1 | len }} {{ regexReplaceAll \"a*\" \"baaa\" \"X\" }}",
     "2 XbX"),
    ("{{ regexReplaceAll \"(?P<x>a+)\" \"baa\" \"<${x}>\" }}", "b<aa>"),
    ("{{ regexReplaceAll \"(a)\" \"ba\" \"<$\u0661>\" }}", "b<>"),  # not ASCII: a name
    ("{{ first .list }} {{ last .list }} {{ rest .list }} {{ initial .list }}", "b a [a] [b]"),
    ("{{ uniq (list 1 1 \"1\" 2) }} {{ has 2 (list 1 2) }} {{ has \"2\" (list 1 2) }}",
     "[1 1 2] true false"),
    ("{{ sortAlpha .list }} {{ compact (list \"a\" \"\" 0 \"b\") }} {{ append .list \"c\" }}",
     "[a b] [a b] [b a c]"),
    ("{{ $d := dict \"b\" 1 \"a\" 2 }}{{ keys $d }} {{ get $d \"a\" }} {{ get $d \"z\" }}"
     "|{{ hasKey $d \"b\" }}", "[a b] 2 |true"),
    ("{{ get nil \"a\" }}|{{ hasKey nil \"a\" }}", "|false"),  # a nil map reads as empty
    ("{{ eq (dict) nil }} {{ eq nil nil }}", "false true"),
])
def test_renders_as_go(template: str, expected: str) -> None:
    assert render(template) == expected


@pytest.mark.parametrize(("template", "reason"), [
    # refused when parsed
    ("{{ define \"x\" }}{{ end }}", "{{define}} is not supported"),
    ("{{ template \"x\" }}", "{{template}} is not supported"),
    ("{{ block \"x\" . }}{{ end }}", "{{block}} is not supported"),
    ("{{ env \"HOME\" }}", 'function "env" not defined'),
    ("{{ getHostByName \"x\" }}", 'function "getHostByName" not defined'),
    ("{{ uuidv4 }}", 'function "uuidv4" not defined or not supported'),
    ("{{ break }}", "{{break}} outside {{range}}"),
    ("{{ range .list }}{{ else }}{{ continue }}{{ end }}", "{{continue}} outside {{range}}"),
    ("{{ if 1 }}x", "unexpected EOF"),
    ("{{ end }}", "unexpected {{end}}"),
    ("{{ $x }}", "undefined variable '$x'"),
    ("{{ $x = 1 }}", "undefined variable '$x'"),
    ("{{ 1 | 2 }}", "non executable command in pipeline stage 2"),
    ("{{ .s | }}", "missing command after |"),
    ("{{ \"open }}", "unterminated quoted string"),
    ("{{ .s", "unclosed action"),
    ("{{/* x }}", "unclosed comment"),
    ("{{ }}", "missing value for command"),
    ("{{ if }}{{ end }}", "missing value for if"),
    ("{{ .a..b }}", "bad field"),
    ("{{ \u0663 }}", "unexpected"),  # an Arabic-Indic 3 is no number
    ("{{ 1\u0663 }}", "bad number syntax"),
    ("{{ (1 }}", "unclosed left paren"),
    ("{{ \"\\q\" }}", "unknown escape"),
    ("{{ " + "(" * 60 + "1" + ")" * 60 + " }}", "nested deeper than 50 levels"),
    # errors when executed
    ("{{ .missing }}", 'map has no entry for key "missing"'),
    ("{{ range .els }}{{ .Other }}{{ end }}", 'map has no entry for key "Other"'),
    ("{{ .s.x }}", "can't evaluate field x in type string"),
    ("{{ (first .none).x }}", "nil data; no entry for key \"x\""),
    ("{{ nil }}", "nil is not a command"),
    ("{{ \"a\" \"b\" }}", "can't give argument to non-function"),
    ("{{ .s 1 }}", "is not a method but has arguments"),
    ("{{ len 3 }}", "len of type int"),
    ("{{ index .list 5 }}", "index out of range: 5"),
    ("{{ range .s }}{{ end }}", "range can't iterate over text"),
    ("{{ range $i, $e := 3 }}{{ end }}", "can't use two variables when ranging over int"),
    ("{{ eq 1 \"1\" }}", "incompatible types for comparison"),
    ("{{ lt 1 2.0 }}", "incompatible types for comparison"),
    ("{{ lt true false }}", "invalid type for comparison"),
    ("{{ eq .list .list }}", "non-comparable type"),
    ("{{ eq 1 }}", "missing argument for comparison"),
    ("{{ and }}", "wrong number of args for and"),
    ("{{ not 1 2 }}", "wrong number of args for not"),
    ("{{ upper 1 }}", "expected string; found 1"),
    ("{{ upper .n }}", "wrong type for value; expected string; got int"),
    ("{{ substr 0 (add 1 1) .s }}", "expected int; got int64"),  # Go's int64 is not int
    ("{{ substr 5 2 \"abc\" }}", "slice bounds out of range"),
    ("{{ substr 0 2 \"\u00e9\u00e9\" | substr 0 1 }}", "splits a multi-byte character"),
    ("{{ div 1 0 }}", "integer divide by zero"),
    ("{{ repeat -1 \"a\" }}", "negative Repeat count"),
    ("{{ first .s }}", "Cannot find first on type string"),
    ("{{ hasKey (index .els 0) \"Name\" }}",
     "expected map[string]interface {}; got nodefeaturerule.MatchedElement"),
    ("{{ regexFind \"(?<=a)b\" \"ab\" }}", "lookaround"),
    ("{{ regexMatch \"(a+)+$\" \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!\" }}",
     "a repeated group that repeats or alternates"),
    ("{{ regexFind \"a\" (repeat 5000 \"b\") }}", "regexp over more than 4096 characters"),
    ("{{ printf \"%d\" \"x\" }}", "%d cannot format a string"),
    ("{{ printf \"%s %s\" \"x\" }}", "missing argument for %s"),
    ("{{ printf \"%s\" \"x\" \"y\" }}", "1 extra argument(s)"),
    ("{{ printf \"%e\" 1.0 }}", "verb %e is not supported"),
])
def test_refuses_with_a_clear_reason(template: str, reason: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(template)
    assert reason in str(caught.value)


@pytest.mark.parametrize(("template", "reason"), [
    ("{{ range 100000000 }}{{ end }}", "steps"),
    ("{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}", "steps"),
    ("{{ range 200 }}{{ repeat 2000 \"x\" }}{{ end }}", "output exceeds"),
    ("{{ repeat 100000000 \"abc\" }}", "value longer than"),
    ("{{ $s := \"xxxxxxxxxxxxxxxx\" }}{{ range 30 }}{{ $s = replace \"x\" \"xx\" $s }}"
     "{{ end }}", "value longer than"),
    ("{{ $l := list }}{{ range 20000 }}{{ $l = append $l . }}{{ end }}", "makes more than"),
    ("{{ $s := \"x\" }}{{ range 100 }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}",
     "makes more than"),
    ("{{ $s := \"x\" }}{{ range 100 }}{{ $s = list $s $s $s $s }}{{ end }}{{ $s }}",
     "value longer than 262145 characters"),
    ("{{ $l := list }}{{ range 5000 }}{{ $l = list $l }}{{ end }}{{ $l }}", "nested too"),
])
def test_hostile_templates_are_stopped_quickly(template: str, reason: str) -> None:
    started = time.process_time()
    with pytest.raises(TemplateError) as caught:
        render(template)
    assert reason in str(caught.value)
    assert time.process_time() - started < 5


def test_a_template_over_nfds_size_limit_is_refused() -> None:
    with pytest.raises(TemplateError, match="exceeds 65536 bytes"):
        gotemplate.parse("x" * (64 * 1024 + 1))


@pytest.mark.parametrize(("rendered", "expected"), [
    ("a=1\n\n  b=2 \n", {"a": "1", "b": "2"}),
    ("\u00a0a=1\u00a0\n", {"a": "1"}),  # Go's TrimSpace trims Unicode spaces
    ("a=1\x1f\n", {"a": "1\x1f"}),  # ... but not what only Python calls whitespace
])
def test_expand_map_reads_lines_as_nfd(rendered: str, expected: dict[str, str]) -> None:
    assert gotemplate.expand_map("{{ .t }}", {"t": rendered}) == expected


def test_a_template_of_nfds_largest_size_parses_quickly() -> None:
    started = time.process_time()
    template = gotemplate.Template("{{ .s }}\n" * 7000)
    assert time.process_time() - started < 2
    with pytest.raises(TemplateError, match="line 7001: unclosed action"):
        gotemplate.Template("{{ .s }}\n" * 7000 + "{{ .s")
    assert len(template.execute(DATA)) == 5 * 7000
