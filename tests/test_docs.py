"""The documentation stays true to the code: flags it names exist, relative links and anchors resolve, Python
examples run, every command answers ``--version`` and reports errors and Ctrl-C in one line."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import uadnet

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "documentation").glob("*.md"))]
COMMANDS = ("plan_and_preprocess", "make_demo_dataset", "plot_corruptions", "train", "demo", "predict", "baseline",
            "evaluate", "plot_overlays", "ensemble", "export_model_to_zip", "install_pretrained_model_from_zip",
            "find_best_configuration")
OTHER_TOOLS = {"--nproc_per_node", "--index-url"}  # torchrun's (multi-GPU example), pip's (CUDA build of torch)
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9_-]*)")
COMMAND = re.compile(r"\buadnet_(" + "|".join(COMMANDS) + r")\b")


def _flags() -> dict[str, set[str]]:
    out = {}
    for name in COMMANDS:
        parser = importlib.import_module(f"uadnet.cli.{name}").build_parser()
        out[name] = {o for a in parser._actions for o in a.option_strings}
    return out


def test_console_scripts_are_the_documented_commands():
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert sorted(re.findall(r'"uadnet_(\w+)=uadnet\.cli\.\w+:main"', setup)) == sorted(COMMANDS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_flag_named_in_the_docs_exists(doc):
    """In a command line (``uadnet_X …`` up to the end of its code span or line, or a ``#`` comment) every flag is
    one of that command's; anywhere else a flag must be one of some command's. Lines about the benchmark scripts
    (which have their own flags) are skipped."""
    flags = _flags()
    everything = set().union(*flags.values()) | OTHER_TOOLS
    wrong = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if "benchmarks/" in line:
            continue
        for m in COMMAND.finditer(line):
            invocation = re.split(r"[`#|]", line[m.end():], maxsplit=1)[0]
            wrong += [f"{doc.name}:{number}: uadnet_{m.group(1)} has no {f}" for f in FLAG.findall(invocation)
                      if f not in flags[m.group(1)] | OTHER_TOOLS]
        wrong += [f"{doc.name}:{number}: no command has {f}" for f in FLAG.findall(line) if f not in everything]
    assert not wrong, "flags the commands do not have:\n" + "\n".join(wrong)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to -."""
    out = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.lower())))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path = (doc.parent / target) if target else doc
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text(encoding="utf-8")):
            broken.append(f"{target}#{anchor} (no such heading)")
    assert not broken, f"{doc.name}: " + ", ".join(broken)


# --------------------------------------------------------------------------------------------- benchmark provenance
CPU_NAMED = re.compile(r"AMD EPYC|Intel|Xeon|Apple M\d|CPU model not recorded")
REPRODUCED = re.compile(r"python benchmarks/\w+\.py")


def test_every_benchmark_figure_names_its_cpu_and_its_command():
    """Every ``## `` section of benchmarks.md that holds a table names the CPU it was measured on (a model, or says
    that the model was not recorded) and a ``python benchmarks/<script>.py`` command that reproduces it."""
    text = (ROOT / "documentation" / "benchmarks.md").read_text(encoding="utf-8")
    sections = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    wrong = []
    for section in sections:
        if not section.startswith("## ") or not re.search(r"^\|", section, flags=re.MULTILINE):
            continue
        title = section.splitlines()[0]
        if not CPU_NAMED.search(section):
            wrong.append(f"{title}: no CPU named")
        if not REPRODUCED.search(section):
            wrong.append(f"{title}: no python benchmarks/<script>.py command")
    assert not wrong, "benchmark sections without provenance:\n" + "\n".join(wrong)


# --------------------------------------------------------------------------------------------- Python examples
# python_api.md has its own test (tests/test_python_api.py), which runs its examples against a trained model
PYTHON_TESTED_ELSEWHERE = {"python_api.md"}
# A block that cannot run in a test (it needs a dataset or a trained model) says so right before its fence:
# <!-- not-run: why -->
PYTHON_BLOCK = re.compile(r"(<!--\s*not-run:[^>]*-->[ \t]*\n)?```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _python_examples() -> list:
    out = []
    for doc in DOCS:
        if doc.name in PYTHON_TESTED_ELSEWHERE:
            continue
        text = doc.read_text(encoding="utf-8")
        for m in PYTHON_BLOCK.finditer(text):
            if m.group(1) is None:
                line = text.count("\n", 0, m.start(2)) + 1
                out.append(pytest.param(m.group(2), id=f"{doc.name}:{line}"))
    return out


@pytest.mark.parametrize("code", _python_examples())
def test_every_python_example_runs(code, tmp_path):
    """Each fenced ``python`` block runs as written in a fresh interpreter, in an empty working folder, with the
    three uadnet folders set to empty temporary ones (blocks marked ``<!-- not-run: … -->`` are skipped)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    for var in ("UADNET_RAW", "UADNET_PREPROCESSED", "UADNET_RESULTS"):
        env[var] = str(tmp_path / var.lower())
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, f"the example failed:\n{code}\n{done.stderr[-3000:]}"


def test_not_run_markers_are_rare():
    """Examples are meant to run: at most a few blocks may opt out."""
    marked = sum(len(re.findall(r"<!--\s*not-run:", d.read_text(encoding="utf-8"))) for d in DOCS)
    assert marked <= 3, f"{marked} Python examples are marked not-run; make them runnable instead"


# --------------------------------------------------------------------------------------------- console scripts
def _console_scripts() -> list[tuple[str, str]]:
    """``(script, module)`` for every console script of setup.py."""
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    return re.findall(r'"(uadnet_\w+)=([\w.]+):main"', setup)


@pytest.mark.parametrize(("script", "module"), _console_scripts(), ids=[s for s, _ in _console_scripts()])
def test_every_command_prints_its_version(script, module, capsys):
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"{script} {uadnet.__version__}"


@pytest.mark.parametrize(("script", "module"), _console_scripts(), ids=[s for s, _ in _console_scripts()])
def test_every_command_reports_errors_and_ctrl_c_in_one_line(script, module):
    """Every main hands expected errors to ``report_error`` and Ctrl-C to ``report_interrupt`` (one line each;
    ``UADNET_DEBUG=1`` adds the traceback) instead of letting a traceback through."""
    source = Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")
    assert "report_error(" in source and "report_interrupt(" in source, \
        f"{module}.main should call uadnet.cli.common.report_error and report_interrupt"


def test_error_and_interrupt_lines(tmp_path, capsys, monkeypatch):
    from uadnet.cli import evaluate

    monkeypatch.delenv("UADNET_DEBUG", raising=False)
    missing = ["-p", str(tmp_path / "no_such_folder"), "-g", str(tmp_path)]
    assert evaluate.main(missing) == 1
    err = capsys.readouterr().err
    assert err.startswith("uadnet_evaluate: error: ") and len(err.strip().splitlines()) == 1, err
    assert "UADNET_DEBUG=1" in err
    monkeypatch.setenv("UADNET_DEBUG", "1")
    assert evaluate.main(missing) == 1
    assert "Traceback" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.delenv("UADNET_DEBUG")
    monkeypatch.setattr("uadnet.evaluation.evaluator.evaluate_folder", interrupted)
    assert evaluate.main(missing) == 130
    assert capsys.readouterr().err.strip() == "uadnet_evaluate: interrupted (Ctrl-C)"
