"""docs/porting.md, run: its blocks are executed in order in one temporary folder, and what
each command prints must match what the page shows, so the guide cannot drift from ckptkit.

Conventions of the page (fenced blocks of other kinds, and python blocks without a
`# file:` line, are prose and not run):

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
- The folder's absolute path in what commands print reads as /home/you/port.
"""
import functools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "porting.md"
SHOWN_DIR = "/home/you/port"
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


def steps(markdown):
    """The page as a list of File and Command steps, in order."""
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
            out += _commands(line, body, "numbers-vary" in options)
    return out


def _commands(first_line, body, vary):
    out, i = [], 0
    while i < len(body):
        if not body[i].startswith("$ "):
            raise ValueError(f"{DOC.name}:{first_line + 1 + i}: output before any command")
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


def output_lines(raw, folder):
    text = raw.decode("utf-8", "replace")
    for path in {os.path.realpath(folder), os.path.abspath(folder)}:
        text = text.replace(path, SHOWN_DIR)
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _environment():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"      # stdout and stderr interleave as on a terminal
    env.pop("CKPTKIT_DEBUG", None)
    return env


def _run(args, folder, env):
    return subprocess.run(args, cwd=folder, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT)


def _report(step, status, actual):
    expected = "\n".join(step.expected)
    return (f"{DOC.name}:{step.line}: $ {step.text}\n"
            f"exit status {status}, expected {step.status}\n"
            f"--- expected{' (numbers vary)' if step.vary else ''}\n{expected}\n"
            f"--- actual\n" + "\n".join(actual))


# ---------------------------------------------------------------- the page

@pytest.mark.tf
def test_porting_guide_runs_as_shown(tmp_path):
    for module in ("sklearn", "PIL"):      # the page's make_digits.py needs them (.[dev])
        pytest.importorskip(module)
    env = _environment()
    page = steps(DOC.read_text(encoding="utf-8"))
    assert sum(isinstance(s, Command) for s in page) >= 10, page
    for step in page:
        if isinstance(step, File):
            (tmp_path / step.name).write_text(step.text, encoding="utf-8")
            if step.run:
                done = _run([sys.executable, step.name], tmp_path, env)
                if done.returncode != 0:
                    pytest.fail(f"{DOC.name}:{step.line}: python {step.name}: exit status "
                                f"{done.returncode}\n" +
                                "\n".join(output_lines(done.stdout, tmp_path)), pytrace=False)
            continue
        done = _run(["bash", "-c", step.text], tmp_path, env)
        actual = output_lines(done.stdout, tmp_path)
        if done.returncode != step.status or not matches(step.expected, actual, step.vary):
            pytest.fail(_report(step, done.returncode, actual), pytrace=False)


# ---------------------------------------------------------------- the conventions

PAGE = textwrap.dedent("""\
    Prose.

    ```python
    # file: hello.py
    # run
    print("hi")
    ```

    ```python
    print("not run")
    ```

    ```console
    $ ckptkit verify x   # exit 2
    ckptkit: error: x: no such file
    $ echo a \\
        b
    a b
    ```

    ```console numbers-vary
    $ train
    epoch 1/3  loss 1.9734  0.919  198 img/s
    ...
    done
    ```
    """)


def test_page_parses_into_files_and_commands():
    parsed = steps(PAGE)
    assert [type(s).__name__ for s in parsed] == ["File", "Command", "Command", "Command"]
    hello, verify, echo, train = parsed
    assert (hello.name, hello.run, hello.text) == \
        ("hello.py", True, '# file: hello.py\n# run\nprint("hi")\n')
    assert (verify.text, verify.status, verify.expected, verify.vary) == \
        ("ckptkit verify x   # exit 2", 2, ["ckptkit: error: x: no such file"], False)
    assert (echo.text, echo.status, echo.expected) == ("echo a \\\n    b", 0, ["a b"])
    assert train.vary and train.expected[1] == "..."


def test_exact_lines_and_ellipsis():
    assert matches(["a", "...", "z"], ["a", "z"])
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert matches(["..."], [])
    assert not matches(["a", "z"], ["a", "b", "z"])
    assert not matches(["a  b"], ["a b"])            # runs of spaces count
    assert not matches(["a"], ["a", "extra"])
    assert not matches(["0.9750"], ["0.9800"])        # exact blocks: numbers too


def test_numbers_vary_keeps_the_format():
    line = "epoch 1/3  loss 1.9734  accuracy 0.4667  3,264,384  198 img/s  conv1"
    assert matches([line], ["epoch 2/3  loss 10.0001  accuracy 1.0000  1,024  1203 img/s  conv1"],
                   vary=True)
    assert not matches([line], ["epoch 2/3  loss 1.97  accuracy 1.0000  1,024  1203 img/s  conv1"],
                       vary=True)                        # two decimals, not four
    assert not matches([line], ["epoch 2/3 loss 1.9734  accuracy 0.4667  1,024  12 img/s  conv1"],
                       vary=True)                        # spacing changed
    assert not matches([line], ["epoch 2/3  loss 1.9734  accuracy 0.4667  1,024  12 img/s  conv2"],
                       vary=True)                        # digits inside names stay exact
    assert matches(["ft/best/model.ckpt-4 on digits"], ["ft/best/model.ckpt-12 on digits"],
                   vary=True)


def test_folder_path_reads_as_shown(tmp_path):
    raw = f"exported {tmp_path}/ft/best/model.ckpt-4 to {tmp_path}/exported  \n\n".encode()
    assert output_lines(raw, tmp_path) == \
        [f"exported {SHOWN_DIR}/ft/best/model.ckpt-4 to {SHOWN_DIR}/exported"]
