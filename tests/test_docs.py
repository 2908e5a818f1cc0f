"""The documentation stays true to the code: flags it names exist, relative links and anchors resolve."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "documentation").glob("*.md"))]
COMMANDS = ("plan_and_preprocess", "make_demo_dataset", "plot_corruptions", "train", "demo", "predict", "baseline",
            "evaluate", "plot_overlays")
OTHER_TOOLS = {"--nproc_per_node"}  # torchrun's, in the multi-GPU example
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
