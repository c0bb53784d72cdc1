"""One home for the flags (issue 33 item 4): every parser of the repository is built, and each flag that
several scripts take is what its one declaration in ``common/flags.py`` says for that script (type, choices,
default, help ...); no flag is declared twice in the library and script code."""
from __future__ import annotations

import argparse
import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from common.flags import EXCEPTIONS, FLAGS, REQUIRED, SCRIPTS, Given, add_flags, declared_options, flag_options

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "data", "model", "priors", "engine", "apps")
# Library and script code (tests and benchmarks have parsers of their own)
SOURCES = sorted([p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")] + list(REPO.glob("*.py")))
PARSER_FILES = {"engine/args.py", "priors/cam_job.py", "priors/report.py", "predict.py", "apps/demo.py",
                "apps/pretrain.py", "data/priors.py", "data/prepare.py", "data/synthetic.py", "compare.py",
                "launch.py"}


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _parsers() -> dict[str, list[argparse.ArgumentParser]]:
    """Every script's parser(s), keyed as in :data:`common.flags.SCRIPTS`."""
    import compare
    import launch
    import predict
    from apps import demo, pretrain
    from data import prepare, synthetic
    from data import priors as data_priors
    from data.benchmarks import BENCHMARKS
    from engine.args import build_parser
    from priors import cam_job, report

    return {"train": [build_parser("train")], "test": [build_parser("test")],
            "cam": [cam_job.build_parser(benchmark) for benchmark in BENCHMARKS],
            "evaluate_priors": [report.build_parser()], "predict": [predict.build_parser()],
            "demo": [demo.build_parser()], "compare": [compare.build_parser()],
            "pretrain": [pretrain.build_parser()], "import": [_subparser(data_priors.build_parser(), "import")],
            "prepare": [prepare.build_parser()], "synthetic": [synthetic.build_parser()],
            "launch": [_subparser(launch.build_parser(), "grid")]}


@pytest.fixture(scope="module")
def parsers() -> dict[str, list[argparse.ArgumentParser]]:
    return _parsers()


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's flags by their first option string (``--help`` left out)."""
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != "help"}


def test_every_parser_of_the_repository_is_built_here(parsers):
    assert set(parsers) == set(SCRIPTS)
    files = {str(p.relative_to(REPO)) for p in SOURCES if re.search(r"\bArgumentParser\(", p.read_text())}
    assert files - {"common/cli.py"} == PARSER_FILES, \
        "a new parser: add it to _parsers() and common.flags.SCRIPTS"


def _expected(action: argparse.Action, script: str) -> argparse.Action:
    """The action the declaration of ``action``'s flag gives in ``script``, its :class:`Given` values (which the
    caller passes) taken from ``action``."""
    attribute = {"choices": "choices", "default": "default", "help": "help"}
    given = {value.name: getattr(action, attribute[key])
             for key, value in declared_options(action.option_strings[0], script).items() if isinstance(value, Given)}
    assert None not in given.values(), (action.option_strings, script, given)
    scratch = argparse.ArgumentParser()
    add_flags(scratch, script, action.option_strings[0], **given)
    return scratch._actions[-1]


FIELDS = ("option_strings", "dest", "nargs", "const", "default", "type", "choices", "required", "help", "metavar")


def test_each_shared_flag_is_what_its_declaration_says_in_each_script(parsers):
    checked = 0
    for script, built in parsers.items():
        for parser in built:
            for name, action in _flags(parser).items():
                if name not in FLAGS:
                    continue
                expected = _expected(action, script)
                assert type(action) is type(expected), (script, name)
                for field in FIELDS:
                    want, got = getattr(expected, field), getattr(action, field)
                    if field == "choices" and want is not None:
                        want, got = list(want), list(got)
                    assert got == want, f"{script} {name}: {field} is {got!r}, its declaration says {want!r}"
                checked += 1
    assert checked >= 80  # 34 shared flags, each in 2 to 6 scripts (the CAM job counted once per benchmark)


def test_a_flag_of_several_scripts_is_declared_in_common_flags_for_exactly_those(parsers):
    """Where a flag of the same name is, it comes from one declaration; that declaration names every script that
    takes it, and no other."""
    taken_by = defaultdict(set)
    for script, built in parsers.items():
        for parser in built:
            for name in _flags(parser):
                taken_by[name].add(script)
    several = {name for name, scripts in taken_by.items() if len(scripts) > 1}
    assert several <= set(FLAGS), f"declare these in common/flags.py: {sorted(several - set(FLAGS))}"
    for name, flag in FLAGS.items():
        assert set(flag.scripts) == taken_by[name], f"{name}: declared for {sorted(flag.scripts)}, taken by " \
                                                    f"{sorted(taken_by[name])}"


def test_a_shared_flag_has_the_same_type_help_and_default_everywhere(parsers):
    """Across the scripts that take a flag, its parsed actions agree in every field (choices given by the caller
    aside), the default only where the declaration has no per-script default table, a script's fields in
    :data:`common.flags.EXCEPTIONS` only where its reason is written there."""
    fields = tuple(f for f in FIELDS if f != "choices") + ("kind",)
    for name, flag in FLAGS.items():
        seen = {}
        for script, built in parsers.items():
            for parser in built:
                action = _flags(parser).get(name)
                if action is None:
                    continue
                excepted = set(EXCEPTIONS.get((name, script), ("", {}))[1])
                excepted |= {"option_strings"} if "aliases" in excepted else set(fields) if "action" in excepted \
                    else set()  # another action: a flag of another kind in that script
                if flag.defaults:
                    excepted |= {"default", "required"} if flag.defaults[script] is REQUIRED else {"default"}
                for field in set(fields) - excepted:
                    value = type(action) if field == "kind" else getattr(action, field)
                    first = seen.setdefault(field, (script, value))
                    assert value == first[1], f"{name}: {field} is {value!r} in {script}, {first[1]!r} in {first[0]}"


def test_each_exception_and_default_table_is_needed():
    """An exception says why and names a declared flag and script; a default table has two defaults at least."""
    for (name, script), (reason, options) in EXCEPTIONS.items():
        assert reason and options and script in FLAGS[name].scripts, (name, script)
    for name, flag in FLAGS.items():
        if flag.defaults:
            assert set(flag.defaults) == set(flag.scripts), name
            assert len({repr(value) for value in flag.defaults.values()}) > 1, f"{name}: one default, no table"
        if isinstance(flag.minimum, dict):
            assert set(flag.minimum) <= set(flag.scripts) and len(set(flag.minimum.values())) > 1, name




def _declared_names() -> dict[str, list[str]]:
    """``--name`` -> where it is declared: ``add_argument`` and ``RecipeFlag`` calls with literal option
    strings (a ``RecipeFlag`` whose keywords come from :func:`common.flags.flag_options` uses the shared
    declaration) and ``flag("--name", ...)`` in common/flags.py."""
    places = defaultdict(list)
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if func == "add_argument" or (func == "flag" and path.name == "flags.py"):
                names = node.args
            elif func == "RecipeFlag" and node.args and isinstance(node.args[0], ast.Tuple):
                uses_shared = len(node.args) > 1 and isinstance(node.args[1], ast.Call) and \
                    getattr(node.args[1].func, "id", None) == "flag_options"
                names = [] if uses_shared else node.args[0].elts
            else:
                continue
            for arg in names:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
                    places[arg.value].append(f"{path.relative_to(REPO)}:{node.lineno}")
    return places


def test_no_flag_is_declared_twice():
    places = _declared_names()
    twice = {name: where for name, where in places.items() if len(where) > 1}
    assert not twice, f"flags declared more than once: {twice}"
    assert all(places[name] == [places[name][0]] and places[name][0].startswith("common/flags.py")
               for name in FLAGS), {name: places[name] for name in FLAGS}


def test_the_per_script_values_are_recorded_where_they_differ():
    assert [flag_options("--bsz", script)["default"] for script in ("train", "test", "cam")] == [40, 10, 32]
    assert flag_options("--nworker", "train")["default"] == 8 and flag_options("--nworker", "cam")["default"] == 2
    with pytest.raises(KeyError, match="not declared for 'compare'"):
        flag_options("--bsz", "compare")
    with pytest.raises(TypeError, match="pass benchmarks="):
        flag_options("--benchmark", "train")
