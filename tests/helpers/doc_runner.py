"""Run a markdown page's examples and compare what they print with what the page shows:
docs/porting.md (tests/test_docs.py) and README.md (tests/test_readme.py), so neither can
drift from ckptkit.

Conventions of a page (fenced blocks of other kinds, python blocks without a `# file:` line
and indented code blocks are prose and not run):

- ```python whose first line is `# file: NAME`: the block is written to NAME in the folder
  when the page reaches it. A `# run` line among its leading comment lines also runs it
  (`python NAME`, exit status 0, output not compared).
- ```console: each line starting with `$ ` is a command (a line ending in a backslash
  continues it on the next line); it runs in bash in the folder, with the running
  interpreter's bin directory (the venv's, with `ckptkit` and `python`) first on PATH, and
  stdout and stderr read together. The lines up to the next command or the end of the block
  are the output it must print:
  - a trailing comment `# exit N` on the command (bash ignores it) expects exit status N;
    without one, 0;
  - a line `...` matches any run of lines (none included);
  - trailing spaces are ignored; all other text, runs of spaces included, must be equal;
  - in a block fenced ```console numbers-vary, each number matches any number written the
    same way (an integer any integer, `0.9750` any number with four decimals): for training
    results, timings and checkpoint steps. Exact blocks carry the rest.
- Blocks are found line by line, so a block inside an HTML comment (`<!-- ... -->`) runs too
  while a reader never sees it: setup a reader does not need.
- Absolute paths in what commands print read as the page shows them: the caller maps each
  folder (the temporary folder, and any it linked in) to the name the page uses.
"""
import functools
import os
import re
import subprocess
import sys

import pytest

FENCE = re.compile(r"^```(\S*)(.*)$")
EXIT = re.compile(r"\s#\s*exit\s+(\d+)\s*$")
NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.(\d+))?(?!\w)")
COMMAND_TIMEOUT = 300


class File:
    def __init__(self, line, name, text, run):
        self.line, self.name, self.text, self.run = line, name, text, run

    def __repr__(self):
        return f"File({self.name!r}, line {self.line})"


class Command:
    def __init__(self, line, text, expected, status, vary):
        self.line, self.text, self.expected = line, text, expected
        self.status, self.vary = status, vary

    def __repr__(self):
        return f"Command({self.text!r}, line {self.line})"


def blocks(markdown):
    """(line number of the opening fence, language, options, body lines) per fenced block."""
    found, lines = [], markdown.splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i].strip())
        if not opened:
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        found.append((start + 1, opened.group(1), opened.group(2).split(), body))
        i += 1
    return found


def steps(markdown, page="page"):
    """The page as a list of File and Command steps, in order (`page` names it in errors)."""
    out = []
    for line, lang, options, body in blocks(markdown):
        if lang == "python" and body and body[0].startswith("# file:"):
            name = body[0][len("# file:"):].strip()
            leading = []
            for text in body[1:]:
                if not text.startswith("#"):
                    break
                leading.append(text.strip())
            out.append(File(line, name, "\n".join(body) + "\n", "# run" in leading))
        elif lang == "console":
            out += _commands(line, body, "numbers-vary" in options, page)
    return out


def _commands(first_line, body, vary, page):
    out, i = [], 0
    while i < len(body):
        if not body[i].startswith("$ "):
            raise ValueError(f"{page}:{first_line + 1 + i}: output before any command")
        line, text = first_line + 1 + i, [body[i][2:]]
        while text[-1].endswith("\\") and i + 1 < len(body):
            i += 1
            text.append(body[i])
        i += 1
        expected = []
        while i < len(body) and not body[i].startswith("$ "):
            expected.append(body[i].rstrip())
            i += 1
        while expected and not expected[-1]:
            expected.pop()
        status = EXIT.search(text[-1])
        out.append(Command(line, "\n".join(text), expected,
                           int(status.group(1)) if status else 0, vary))
    return out


def line_pattern(line, vary):
    """A compiled regex an actual output line must fullmatch."""
    if not vary:
        return re.compile(re.escape(line))
    parts, last = [], 0
    for m in NUMBER.finditer(line):
        parts.append(re.escape(line[last:m.start()]))
        decimals = m.group(1)
        parts.append(r"\d+(?:,\d{3})*" + (rf"\.\d{{{len(decimals)}}}" if decimals else ""))
        last = m.end()
    parts.append(re.escape(line[last:]))
    return re.compile("".join(parts))


def matches(expected, actual, vary=False):
    """Whether the actual lines are the expected ones (`...` matching any run of lines)."""
    patterns = [None if e == "..." else line_pattern(e, vary) for e in expected]

    @functools.lru_cache(maxsize=None)
    def match(i, j):
        if i == len(patterns):
            return j == len(actual)
        if patterns[i] is None:
            return any(match(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and patterns[i].fullmatch(actual[j]) is not None \
            and match(i + 1, j + 1)
    return match(0, 0)


def output_lines(raw, shown):
    """The lines a command printed (bytes or str), each folder of `shown` ({folder: the name
    the page shows for it}) written as the page shows it, trailing spaces and blank lines
    dropped."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    names = {}
    for folder, name in shown.items():
        for path in (os.path.realpath(folder), os.path.abspath(folder)):
            names[path] = name
    for path in sorted(names, key=len, reverse=True):      # a folder inside another first
        text = text.replace(path, names[path])
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def environment(**changes):
    """os.environ for the page's commands: the running interpreter's bin directory first on
    PATH, unbuffered output, no CKPTKIT_DEBUG; `changes` set (a None value unsets)."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"      # stdout and stderr interleave as on a terminal
    env.pop("CKPTKIT_DEBUG", None)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def run(args, folder, env):
    return subprocess.run(args, cwd=folder, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT)


def report(page, step, status, actual):
    expected = "\n".join(step.expected)
    return (f"{page}:{step.line}: $ {step.text}\n"
            f"exit status {status}, expected {step.status}\n"
            f"--- expected{' (numbers vary)' if step.vary else ''}\n{expected}\n"
            f"--- actual\n" + "\n".join(actual))


def run_steps(page, page_steps, folder, env, shown):
    """Run the steps in `folder`, in order; fail the test at the first file that does not run
    or command whose exit status or output is not what the page shows."""
    for step in page_steps:
        if isinstance(step, File):
            (folder / step.name).write_text(step.text, encoding="utf-8")
            if step.run:
                done = run([sys.executable, step.name], folder, env)
                if done.returncode != 0:
                    pytest.fail(f"{page}:{step.line}: python {step.name}: exit status "
                                f"{done.returncode}\n" +
                                "\n".join(output_lines(done.stdout, shown)), pytrace=False)
            continue
        done = run(["bash", "-c", step.text], folder, env)
        actual = output_lines(done.stdout, shown)
        if done.returncode != step.status or not matches(step.expected, actual, step.vary):
            pytest.fail(report(page, step, done.returncode, actual), pytrace=False)
