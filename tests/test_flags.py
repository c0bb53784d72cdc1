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

from common.flags import FLAGS, SCRIPTS, Given, add_flags, flag_options

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "data", "model", "priors", "engine", "apps")
# Library and script code (tests and benchmarks have parsers of their own)
SOURCES = sorted([p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")] + list(REPO.glob("*.py")))
PARSER_FILES = {"engine/args.py", "priors/cam_job.py", "priors/report.py", "predict.py", "apps/demo.py",
                "apps/pretrain.py", "data/priors.py", "data/prepare.py", "data/synthetic.py", "compare.py"}


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _parsers() -> dict[str, list[argparse.ArgumentParser]]:
    """Every script's parser(s), keyed as in :data:`common.flags.SCRIPTS`."""
    import compare
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
            "prepare": [prepare.build_parser()], "synthetic": [synthetic.build_parser()]}


@pytest.fixture(scope="module")
def parsers() -> dict[str, list[argparse.ArgumentParser]]:
    return _parsers()


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's flags by their first option string (``--help`` left out)."""
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.dest != "help"}


def test_every_parser_of_the_repository_is_built_here(parsers):
    assert set(parsers) == set(SCRIPTS)
    files = {str(p.relative_to(REPO)) for p in SOURCES if re.search(r"\bArgumentParser\(", p.read_text())}
    assert files - {"common/cli.py"} == PARSER_FILES, "a new parser: add it to _parsers() and common.flags.SCRIPTS"


def _expected(action: argparse.Action, script: str) -> argparse.Action:
    """The action the declaration of ``action``'s flag gives in ``script``, its :class:`Given` values (which the
    caller passes) taken from ``action`` after checking that a templated text has the template's form."""
    declared = FLAGS[action.option_strings[0]].scripts[script]
    attribute = {"choices": "choices", "default": "default", "help": "help"}
    given = {}
    for key, value in declared.items():
        if isinstance(value, Given):
            actual = getattr(action, attribute[key])
            assert actual is not None, (action.option_strings, script, key)
            if value.template != "{}":
                match = re.fullmatch(re.escape(value.template).replace(r"\{\}", "(.+)"), actual, re.S)
                assert match, (action.option_strings, script, actual, value.template)
                actual = match.group(1)
            given[value.name] = actual
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


def test_what_several_scripts_share_is_the_same_everywhere(parsers):
    """A flag's type and choices differ between scripts only where its declaration writes them per script; the
    few that do (a path flag's type, a narrower list of choices) are listed here on purpose."""
    differs = {}
    for name, flag in FLAGS.items():
        for key in ("type", "choices", "action", "dest"):
            values = {repr(options.get(key)) for options in flag.scripts.values()}
            if len(values) > 1:
                differs[(name, key)] = len(values)
    assert set(differs) == {
        ("--datapath", "type"), ("--splitpath", "type"), ("--out", "type"),  # python -m data.prepare, demo.py: Path
        ("--benchmark", "choices"),  # pretraining: the benchmarks with folds
        ("--fold", "choices"), ("--fold", "dest"),  # evaluate_priors.py: any fold; test.py: several (args.folds)
        ("--split", "choices"),  # evaluate_priors.py: one of trn val test; the import: several, checked later
        ("--seed", "dest"),  # test.py: several (args.seeds)
        ("--amp", "choices"), ("--amp", "action"),  # the CAM job's: a switch of gradcam-rn50
    }, differs


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
