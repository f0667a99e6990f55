"""README.md, run: its examples are executed in order in one temporary folder standing for the
repository root after `tools/demo`, and what each command prints must match what the page
shows, so the README cannot go stale. The page's conventions and the runner are
tests/helpers/doc_runner.py's (as for docs/porting.md); on top of them:

- The folder holds what the README's names refer to: `demo-data`, `demo-runs` and `pretrain`
  are links to the folders of the quick demo (`tools/demo --quick`, run once per session by
  conftest's `quick_demo`), so `pretrained:lenet_mnist_0to4` is the quick demo's checkpoint;
  their absolute paths in what commands print read as those names. The quick demo trains on
  fewer images for fewer epochs than the full one the README shows, so blocks whose output
  holds figures from training or checkpoint steps are numbers-vary.
- Commands that name `corpus` (the real-checkpoint corpus, linked by the README's own
  `ln -s "${CKPTKIT_CORPUS:-../shared/corpus}" corpus`, with CKPTKIT_CORPUS set to the tests'
  corpus) run in a test of their own, which needs neither TensorFlow nor the demo and is
  skipped, with the reason shown, where the corpus is absent.
- `$ tools/demo` is not run again: its block (the demo's final table) is compared with what
  the quick demo printed, numbers varying (the quick demo has no epoch 5, so its `-` there
  stands for a number), and its figures with a full demo's metrics when one is at
  `$CKPTKIT_DEMO_RUNS` or `demo-runs/` (skipped, saying so, where none is). The decimals the
  prose under the table quotes must be the table's figures, rounded.
- Indented code blocks are illustrations with placeholder names (`model.ckpt`, `photos/`):
  their `ckptkit ...` commands must parse (every option and value accepted by click).
"""
import json
import os
import re
import shlex
from pathlib import Path

import click
import pytest

from conftest import CORPUS, CORPUS_MISSING, ROOT
from helpers.commands import parse_command
from helpers.doc_runner import (Command, File, blocks, environment, line_pattern, matches,
                                output_lines, run_steps, steps)

README = ROOT / "README.md"
SHOWN_DIR = "/home/you/ckptkit"
CORPUS_WORD = re.compile(r"\bcorpus\b")


def _page():
    return steps(README.read_text(encoding="utf-8"), README.name)


def _needs_corpus(step):
    return isinstance(step, Command) and CORPUS_WORD.search(step.text) is not None


def _is_demo(step):
    return isinstance(step, Command) and step.text.split()[0] == "tools/demo"


def _environment(folder):
    # the demo's checkpoint in ./pretrain, where a checkout finds it beside the registry;
    # nothing in the real per-user folder
    return environment(CKPTKIT_CORPUS=CORPUS, CKPTKIT_CACHE=folder / ".cache",
                       CKPTKIT_PRETRAIN_DIR="pretrain", CKPTKIT_HOME=folder / ".home")


def _demo_folders(quick_demo):
    """{quick demo folder: the README's name for it}, once the demo is known to have run."""
    done = quick_demo.done
    assert done.returncode == 0, "tools/demo --quick failed:\n" + done.stderr[-3000:]
    return {quick_demo.data: "demo-data", quick_demo.runs: "demo-runs",
            quick_demo.pretrain: "pretrain"}


# ---------------------------------------------------------------- the page

def test_the_page_has_its_examples():
    """Each command is run by one test below (tools/demo's, the corpus's, or the rest's); a
    parser or page change that would quietly run fewer of them fails here."""
    page = _page()
    commands = [s for s in page if isinstance(s, Command)]
    assert len(commands) >= 30, commands
    assert sum(map(_needs_corpus, commands)) >= 5
    assert sum(map(_is_demo, commands)) == 1
    assert sum(isinstance(s, File) for s in page) >= 3


@pytest.mark.tf
def test_readme_runs_as_shown(quick_demo, tmp_path):
    shown = _demo_folders(quick_demo)
    for folder, name in shown.items():
        (tmp_path / name).symlink_to(folder, target_is_directory=True)
    shown[tmp_path] = SHOWN_DIR
    page = [s for s in _page() if not _needs_corpus(s) and not _is_demo(s)]
    run_steps(README.name, page, tmp_path, _environment(tmp_path), shown)


def test_readme_corpus_examples_run_as_shown(tmp_path):
    if not CORPUS.is_dir():
        pytest.skip(CORPUS_MISSING)
    page = [s for s in _page() if _needs_corpus(s)]
    assert page[0].text.startswith("ln -s "), "the README links corpus before using it"
    run_steps(README.name, page, tmp_path, _environment(tmp_path), {tmp_path: SHOWN_DIR})


# ---------------------------------------------------------------- the demo's table

TABLE = {   # the table's rows -> the run folder whose metrics.jsonl they show (tools/demo)
    "pretrained backbone, new head only (features)": "features",
    "pretrained, fine-tuned (all layers, head lr x10)": "finetune",
    "same net from scratch, same budget": "finetune/scratch",
}
NO_EPOCH_5 = re.compile(r"(?<= ) {5}-(?= )")      # the quick demo's epoch 5 column


def _demo_step():
    (step,) = [s for s in _page() if _is_demo(s)]
    return step


def _table_rows(step):
    """{row title: its four figures as written} of the README's demo table."""
    rows = {}
    for line in step.expected:
        title, _, figures = line.partition("  ")
        if title in TABLE:
            rows[title] = figures.split()
    assert list(rows) == list(TABLE), step.expected
    return rows


@pytest.mark.tf
def test_demo_table_is_what_the_demo_prints(quick_demo):
    shown = _demo_folders(quick_demo)
    step = _demo_step()
    actual = [NO_EPOCH_5.sub("0.0000", line)
              for line in output_lines(quick_demo.done.stdout, shown)]
    assert step.vary and matches(step.expected, actual, vary=True), \
        "\n".join(["--- README (numbers vary)", *step.expected, "--- tools/demo --quick", *actual])


def test_demo_table_figures_are_the_full_demo_s():
    runs = Path(os.environ.get("CKPTKIT_DEMO_RUNS") or ROOT / "demo-runs")
    metrics = {folder: runs / folder / "metrics.jsonl" for folder in TABLE.values()}
    if not all(path.is_file() for path in metrics.values()):
        pytest.skip(f"no demo run at {runs} (run tools/demo, or set CKPTKIT_DEMO_RUNS)")
    accuracies = {folder: [json.loads(line)["val_accuracy"] for line in path.open()]
                  for folder, path in metrics.items()}
    if len(accuracies["features"]) < 5:
        pytest.skip(f"{runs} is a quick demo's run (fewer than 5 epochs); the README shows "
                    "the full demo's")
    for title, figures in _table_rows(_demo_step()).items():
        acc = accuracies[TABLE[title]]
        assert figures == [f"{a:.4f}" for a in (acc[0], acc[4], max(acc), acc[-1])], title


def test_prose_under_the_demo_table_quotes_its_figures():
    text = README.read_text(encoding="utf-8")
    step = _demo_step()
    figures = [float(f) for row in _table_rows(step).values() for f in row]
    lines = text.splitlines()
    end = next(i for i in range(step.line, len(lines)) if lines[i].strip() == "```")
    after = lines[end + 1:]
    prose = "\n".join(after[:next(i for i, line in enumerate(after) if line.startswith("#"))])
    quoted = re.findall(r"(?<![\w.])(\d+\.\d+)(?![\w.])", prose)
    percents = re.findall(r"(\d+)%", prose)
    assert quoted, prose
    for q in quoted:
        decimals = len(q.split(".")[1])
        assert any(f"{f:.{decimals}f}" == q for f in figures), (q, prose)
    for p in percents:
        assert any(round(f * 100) == int(p) for f in figures), (p, prose)


# ---------------------------------------------------------------- the illustrations

def _illustrations(markdown):
    """The `ckptkit ...` commands of indented code blocks (not inside fenced ones)."""
    fenced = set()
    for line, _, _, body in blocks(markdown):
        fenced.update(range(line, line + len(body) + 2))
    commands, lines = [], markdown.splitlines()
    previous_blank, inside = True, False
    for number, line in enumerate(lines, 1):
        code = line.startswith("    ") and number not in fenced and (previous_blank or inside)
        inside = code or (inside and not line.strip())
        previous_blank = not line.strip()
        if code:
            commands.append(line.split("#")[0].strip())
    joined = "\n".join(commands).replace("\\\n", " ")
    return [" ".join(part.split()) for text in joined.splitlines() for part in text.split(";")
            if part.strip().startswith("ckptkit ")]


def test_illustrated_commands_parse():
    commands = _illustrations(README.read_text(encoding="utf-8"))
    assert len(commands) >= 8, commands
    for text in commands:
        try:
            parse_command(shlex.split(text)[1:])
        except click.ClickException as e:
            pytest.fail(f"README: {text}\n{e.format_message()}", pytrace=False)


def test_illustrations_are_found_and_fenced_blocks_left_alone():
    page = ("Intro:\n\n    ckptkit inspect m.ckpt    # a comment\n    ckptkit eval --train-dir a;"
            "  ckptkit predict --train-dir a x.jpg\n    ckptkit plan m \\\n        --net lenet\n"
            "\n```console\n    ckptkit verify not-this\n```\n")
    assert _illustrations(page) == ["ckptkit inspect m.ckpt", "ckptkit eval --train-dir a",
                                    "ckptkit predict --train-dir a x.jpg",
                                    "ckptkit plan m --net lenet"]


def test_quick_demo_s_missing_epoch_5_reads_as_a_number():
    quick = "features)        0.2267        -   0.2300   0.2267"
    assert NO_EPOCH_5.sub("0.0000", quick) == "features)        0.2267   0.0000   0.2300   0.2267"
    assert line_pattern("features)        0.2200   0.5221   0.8502   0.8502", True) \
        .fullmatch(NO_EPOCH_5.sub("0.0000", quick))
