"""`rules test` and `rules validate`: NFD rules checked against a node or a fixture.

Exit status, as every command: 0 all is well, 2 the command cannot do its job (a file
that cannot be read, a bad --config). In between, 1: `test` found a rule that cannot be
evaluated or a file with problems, `validate` found a problem.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import TYPE_CHECKING, Any

import click

from nodefeatures.cli.options import HostChoice, fail, host_options, report

if TYPE_CHECKING:
    from nodefeatures.discovery.rules.documents import Located, RuleDocument
    from nodefeatures.discovery.rules.engine import Outcome

MAX_FILE_SIZE = 1024 * 1024  # as a custom.d file


@click.group("rules")
def rules() -> None:
    """Test and validate NFD rules (NodeFeatureRule, custom.d files, sources.custom)."""


def read_rule_file(path: str) -> bytes:
    """The bytes of a rule file; exits 2 when it cannot be read as a regular file.

    Opened without blocking and checked before reading: a FIFO or a device must not
    hang the command, and a huge file must not be read whole.
    """
    if not path:
        fail("a rule file's name is empty")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        fail(f"{path}: cannot open: {exc.strerror or exc}")
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            fail(f"{path}: is a directory (name the rule files in it)")
        if not stat.S_ISREG(info.st_mode):
            fail(f"{path}: not a regular file")
        if info.st_size > MAX_FILE_SIZE:
            fail(f"{path}: {info.st_size} bytes, more than a rule file may hold "
                 f"({MAX_FILE_SIZE})")
        chunks, size = [], 0
        while size <= MAX_FILE_SIZE:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_SIZE:
            fail(f"{path}: more than a rule file may hold ({MAX_FILE_SIZE} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            fail(f"{path}: is a directory (name the rule files in it)")
        fail(f"{path}: cannot read: {exc.strerror or exc}")
    finally:
        os.close(fd)
    raise AssertionError("unreachable")  # fail() exits


def load_documents(files: tuple[str, ...]) -> list[tuple[str, RuleDocument]]:
    from nodefeatures.discovery.rules import documents

    return [(path, documents.parse(read_rule_file(path), path)) for path in files]


def where(path: str, located: Located) -> str:
    return f"{path}:{located.line}" if located.line else path


def problem_text(path: str, located: Located) -> str:
    document = f"document {located.document + 1}: " if located.document else ""
    return f"{where(path, located)}: {document}{located.problem}"


def problem_data(path: str, located: Located) -> dict[str, Any]:
    return {"file": path, "line": located.line, "document": located.document + 1,
            "path": located.problem.path, "rule": located.problem.rule,
            "message": located.problem.message}


# -- test ---------------------------------------------------------------------------


@rules.command("test")
@host_options
@click.option("--fixture", default=None, metavar="DIR",
              help="Match against a captured fixture instead of this machine.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--from-cluster", is_flag=True,
              help="Also evaluate the cluster's NodeFeatureRule objects, as the agent does: "
                   "by name, after the node's own rules, rule.matched starting empty.")
@click.option("--kubeconfig", default=None, metavar="PATH",
              help="Kubeconfig for --from-cluster [default: in-cluster, else $KUBECONFIG or "
                   "~/.kube/config].")
@click.option("--node", default=None, metavar="NAME",
              help="With --from-cluster: add the features of this Node's NodeFeature "
                   "objects, as the agent on that Node sees them.")
@click.argument("files", nargs=-1, metavar="[FILE...]")
def test(host: HostChoice, fixture: str | None, fmt: str, from_cluster: bool,
         kubeconfig: str | None, node: str | None, files: tuple[str, ...]) -> None:
    """Evaluate the rules of FILE... (and with --from-cluster the cluster's
    NodeFeatureRules) against this node or a fixture, and say why each matched or not.

    A FILE holds NodeFeatureRule objects, a list of rules (a custom.d file) or an
    nfd-worker config with sources.custom. NFD's built-in rules and the rules of
    --config run first, as on the node; only the rules of FILE... are shown.
    """
    from nodefeatures.discovery.fixture import FixtureError, replay_host
    from nodefeatures.discovery.rules import explain
    from nodefeatures.discovery.run import run_pass
    from nodefeatures.discovery.source import Context
    from nodefeatures.sources.custom import rule_features
    from nodefeatures.sources.custom.builtin import BUILTIN_RULES

    context = click.get_current_context()
    if not files and not from_cluster:
        fail("name the rule files to test, or --from-cluster for the cluster's "
             "NodeFeatureRules")
    if node is not None and not from_cluster:
        fail("--node names the Node whose NodeFeature objects --from-cluster reads")
    if fixture is not None and (
            context.get_parameter_source("root") != click.core.ParameterSource.DEFAULT
            or host.proc is not None):
        fail("--fixture replays a captured host: it cannot be combined with --root or --proc")
    loaded = load_documents(files)
    cluster = cluster_documents(kubeconfig, node) if from_cluster else ([], [])
    sources, cfg = host.prepare()
    if fixture is not None:
        try:
            read = replay_host(fixture)
        except FixtureError as exc:
            fail(str(exc))
        target = f"fixture {fixture}"
    else:
        read = host.live_host()
        target = "this node" if host.root == "/" else f"the host under {host.root}"
    others = {name: source for name, source in sources.items() if name != "custom"}
    discovery = run_pass(read, others, cfg)
    report(discovery)
    options = cfg.options("custom") if "custom" in cfg.sources else {}
    ctx = Context(read, options, "custom")
    ctx.others = tuple(discovery.results)
    features = rule_features(ctx)
    before = [*BUILTIN_RULES, *options.get("rules", ())]
    tested = [rule for _, document in loaded for rule in document.rules]
    outcomes = explain.run([*before, *tested], features)[len(before):]
    cluster_loaded, intakes = cluster
    if from_cluster:
        # As on the node: the pass's features and this Node's NodeFeatures, a fresh
        # rule.matched, the objects by name.
        from nodefeatures.discovery import nodefeature
        from nodefeatures.discovery.rules.features import FeatureSet

        features = FeatureSet.from_results(discovery.results)
        nodefeature.merge_into(features, intakes)
        outcomes += explain.run([r for _, d in cluster_loaded for r in d.rules], features)
        loaded += cluster_loaded
    problems = [(path, p) for path, document in loaded for p in document.problems]
    failed = bool(problems) or any(o.error is not None for o in outcomes)
    if fmt == "json":
        click.echo(json.dumps({
            "target": target,
            "ok": not failed,
            "rules": [outcome_data(o, features) for o in outcomes],
            "problems": [problem_data(path, p) for path, p in problems],
        }, indent=2))
    else:
        click.echo(test_text(target, len(before), outcomes, problems, features))
    if failed:
        raise SystemExit(1)


def cluster_documents(kubeconfig: str | None, node: str | None
                      ) -> tuple[list[tuple[str, RuleDocument]], list[Any]]:
    """The cluster's NodeFeatureRules as rule documents (by name), and the intakes of
    `node`'s NodeFeature objects (none without a node)."""
    import yaml

    from nodefeatures.cluster.kube import KubeError, ObjectApi, connect
    from nodefeatures.cluster.nfdapi import RULES, list_all, node_features_kind
    from nodefeatures.discovery import nodefeature
    from nodefeatures.discovery.rules import documents

    try:
        client = connect(kubeconfig)
        objects = list_all(ObjectApi(client, RULES))
    except KubeError as exc:
        fail(f"cannot read the cluster's NodeFeatureRules: {exc}")
    try:
        features = list_all(ObjectApi(client, node_features_kind(node))) if node else []
    except KubeError as exc:
        fail(f"cannot read the NodeFeature objects of node {node}: {exc}")
    loaded = []
    for obj in sorted(objects, key=lambda o: str((o.get("metadata") or {}).get("name"))):
        name = str((obj.get("metadata") or {}).get("name", "?"))
        shown = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                 "metadata": {"name": name}, "spec": obj.get("spec")}
        origin = f"nodefeaturerule/{name}"
        text = yaml.safe_dump(shown, sort_keys=False).encode()
        loaded.append((origin, documents.parse(text, origin)))
    intakes = nodefeature.ordered([nodefeature.read(o) for o in features],
                                  os.environ.get("POD_NAMESPACE") or "nodefeatures")
    return loaded, intakes


def published(outcome: Outcome) -> tuple[dict[str, str], dict[str, str]]:
    """The labels a matched rule gives as the node would get them, and those dropped."""
    from nodefeatures.discovery.labels import Label, checked
    from nodefeatures.sources.custom import CustomSource
    from nodefeatures.sources.local import denied_namespace

    qualify = CustomSource().qualify
    labels, dropped = {}, {}
    for key, reason in outcome.dropped.items():
        dropped[qualify(key)] = reason
    for key, value in outcome.labels.items():
        full = qualify(key)
        if denied_namespace(full):
            dropped[full] = "the kubernetes.io namespaces are refused"
            continue
        label, problem = checked(Label(full, value, ""))
        if label is None:
            dropped[full] = problem or "invalid"
            continue
        labels[full] = value
    return labels, dropped


def beyond_labels(outcome: Outcome, features: Any) -> tuple[dict[str, dict[str, str]],
                                                             list[str]]:
    """A matched rule's annotations, taints and extended resources as nfd-master checks
    them, and what it would drop; only NodeFeatureRule objects publish them, each kind
    when the label namespaces setting switches it on."""
    from nodefeatures.discovery.namespaces import LabelNamespaces
    from nodefeatures.discovery.rules.cluster import outputs

    dropped: list[str] = []
    found = outputs(outcome.rule, features, LabelNamespaces((), ()), dropped)
    return found, dropped


def outcome_data(outcome: Outcome, features: Any = None) -> dict[str, Any]:
    from nodefeatures.discovery.rules import engine

    rule = outcome.rule
    origin, _, line = rule.origin.rpartition(":")
    data: dict[str, Any] = {
        "name": rule.name,
        "file": origin if line.isdigit() else rule.origin,
        "line": int(line) if line.isdigit() else 0,
        "result": ("error" if outcome.error is not None
                   else "matched" if outcome.matched else "not matched"),
    }
    if outcome.error is not None:
        data["error"] = outcome.error
    elif outcome.matched:
        labels, dropped = published(outcome)
        data["labels"] = labels
        data["vars"] = dict(outcome.vars)
        data["dropped"] = dropped
        if features is not None:
            found, refused = beyond_labels(outcome, features)
            if found or refused:
                data["outputs"] = found
                data["outputsDropped"] = refused
        data["elements"] = [{"feature": f, "element": text, "count": times}
                            for f, text, times in engine.matched_elements(outcome)]
    else:
        data["misses"] = [{"where": m.where, "feature": m.feature, "expression": m.expression,
                           "element": m.element, "value": m.value, "present": m.present,
                           "reason": m.reason} for m in outcome.misses]
    return data


def test_text(target: str, before: int, outcomes: list[Outcome],
              problems: list[tuple[str, Located]], features: Any = None) -> str:
    from nodefeatures.cli.render import printable
    from nodefeatures.discovery.rules import engine
    from nodefeatures.sources.custom.builtin import BUILTIN_RULES

    configured = before - len(BUILTIN_RULES)
    first = f"{len(BUILTIN_RULES)} built-in rules"
    if configured:
        first += f" and {configured} --config rules"
    lines = [f"{count(len(outcomes), 'rule')} against {target} (NFD's {first} ran first)"]
    for outcome in outcomes:
        head = f"{outcome.rule.origin}  {outcome.rule.name!r}"
        if outcome.error is not None:
            lines.append(f"ERROR    {head}: cannot be evaluated: {outcome.error}")
            continue
        if not outcome.matched:
            lines.append(f"NO MATCH {head}")
            for miss in outcome.misses:
                lines.append(f"  {miss.where}: {miss.feature}: {miss.reason}"
                             if miss.where else f"  {miss.reason}")
            if not outcome.misses:
                lines.append("  (nothing failed when explained: the features changed)")
            continue
        lines.append(f"MATCH    {head}")
        labels, dropped = published(outcome)
        for key, value in labels.items():
            lines.append(f"  label {key}={value}")
        for key, value in outcome.vars.items():
            lines.append(f"  var   {key}={value}")
        for key, reason in dropped.items():
            lines.append(f"  dropped {key}: {reason}")
        found, refused = beyond_labels(outcome, features) if features is not None else ({}, [])
        for kind, items in sorted(found.items()):
            noun = {"annotations": "annotation", "taints": "taint",
                    "extendedResources": "resource"}[kind]
            for key, value in items.items():
                shown = (f"{key.rpartition(':')[0]}={value}:{key.rpartition(':')[2]}"
                         if kind == "taints" else f"{key}={value}")
                lines.append(f"  {noun} {shown}  (NodeFeatureRule objects only, when "
                             f"the setting enables {kind})")
        for reason in refused:
            lines.append(f"  {reason}")
        elements = engine.matched_elements(outcome)
        for feature, text, times in elements[:20]:
            lines.append(f"  from  {feature} {text}" + (f" (x{times})" if times > 1 else ""))
        if len(elements) > 20:
            lines.append(f"  from  (+{len(elements) - 20} more)")
        if not elements:
            lines.append("  from  " + ("no match terms (always matches)"
                                       if not (outcome.rule.match_features
                                               or outcome.rule.match_any)
                                       else "features present"))
    for path, located in problems:
        lines.append(f"INVALID  {problem_text(path, located)}")
    matched = sum(o.matched for o in outcomes)
    errors = sum(o.error is not None for o in outcomes)
    lines.append(f"{matched} matched, {len(outcomes) - matched - errors} did not, "
                 f"{errors} cannot be evaluated, {count(len(problems), 'problem')} in the "
                 "files")
    return "\n".join(printable(line) for line in lines)


# -- validate -----------------------------------------------------------------------


@rules.command("validate")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def validate(fmt: str, files: tuple[str, ...]) -> None:
    """Check the rules of FILE... without evaluating them: fields, operators, values,
    regexps (as Go reads them), label names, templates."""
    from nodefeatures.cli.render import printable

    loaded = load_documents(files)
    template_check = template_parser()
    found: list[tuple[str, Located]] = []
    summary = []
    for path, document in loaded:
        extra = semantic_problems(document, template_check)
        problems = [*document.problems, *extra]
        found += [(path, p) for p in problems]
        summary.append({"file": path, "kinds": document.kinds, "rules": len(document.rules),
                        "problems": len(problems), "templates": document.templates,
                        "templates_checked": template_check is not None})
    if fmt == "json":
        click.echo(json.dumps({"ok": not found, "files": summary,
                               "problems": [problem_data(path, p) for path, p in found]},
                              indent=2))
    else:
        for path, located in found:
            click.echo(printable(problem_text(path, located)))
        for entry in summary:
            state = "valid" if not entry["problems"] else count(entry["problems"], "problem")
            notes = []
            if entry["templates"] and not entry["templates_checked"]:
                notes.append(f"{entry['templates']} with templates: templates not checked")
            note = f"; {', '.join(notes)}" if notes else ""
            click.echo(printable(f"{entry['file']}: {state} ({count(entry['rules'], 'rule')}"
                                 f"{note})"))
    if found:
        raise SystemExit(1)


def count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def template_parser() -> Any:
    """The Go-template parser's `parse(text)`, or None while there is none to check with."""
    import importlib

    try:
        module = importlib.import_module("nodefeatures.discovery.rules.gotemplate")
    except ModuleNotFoundError:
        return None
    return getattr(module, "parse", None)


def semantic_problems(document: RuleDocument, parse_template: Any) -> list[Located]:
    """What parses but cannot work on a node: label names and values, feature names,
    templates (when there is a parser to check them with)."""
    from nodefeatures.discovery.labels import key_error, value_error
    from nodefeatures.sources.custom import CustomSource
    from nodefeatures.sources.local import denied_namespace

    qualify = CustomSource().qualify
    problems = []
    for rule, (index, place) in zip(document.rules, document.places, strict=True):
        def add(path: str, message: str, rule_name: str = rule.name, at: int = index) -> None:
            problems.append(document.locate(at, path, message, rule_name))

        for key, value in rule.labels.items():
            path = f"{place}.labels.{key}"
            full = qualify(key)
            error = key_error(full)
            if error:
                add(path, f"not a valid label name ({error})")
            elif denied_namespace(full):
                add(path, "the kubernetes.io namespaces are refused (as nfd-master does)")
            if value.startswith("@"):
                if len(value[1:].split(".", 2)) != 3:
                    add(path, f"{value!r} is not of the form @domain.feature.element")
            else:
                error = value_error(value)
                if error:
                    add(path, f"{value!r} is not a valid label value ({error})")
        groups = [("matchFeatures", rule.match_features)] + [
            (f"matchAny[{i}].matchFeatures", group) for i, group in enumerate(rule.match_any)]
        for field_name, terms in groups:
            for position, term in enumerate(terms):
                if "." not in term.feature.strip("."):
                    add(f"{place}.{field_name}[{position}].feature",
                        f"{term.feature!r} is not of the form <source>.<feature> (such as "
                        "pci.device): the term can never match")
        if parse_template is not None:
            for name, text in (("labelsTemplate", rule.labels_template),
                               ("varsTemplate", rule.vars_template)):
                if not text:
                    continue
                try:
                    parse_template(text)
                except Exception as exc:  # any parser failure is the template's problem
                    add(f"{place}.{name}", f"does not parse: {exc}")
    return problems
