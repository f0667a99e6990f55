"""docs/porting.md, run: its blocks are executed in order in one temporary folder, and what
each command prints must match what the page shows, so the guide cannot drift from ckptkit.
The page's conventions (`# file:` blocks, ```console blocks with `$ `, `...`, `# exit N`,
```console numbers-vary) and the runner are tests/helpers/doc_runner.py's, shared with
tests/test_readme.py; the folder's absolute path in what commands print reads as
/home/you/port.
"""
import textwrap
from pathlib import Path

import pytest

from helpers.doc_runner import (Command, environment, matches, output_lines, run_steps,
                                steps)

DOC = Path(__file__).resolve().parent.parent / "docs" / "porting.md"
SHOWN_DIR = "/home/you/port"


# ---------------------------------------------------------------- the page

@pytest.mark.tf
def test_porting_guide_runs_as_shown(tmp_path):
    for module in ("sklearn", "PIL"):      # the page's make_digits.py needs them (.[dev])
        pytest.importorskip(module)
    page = steps(DOC.read_text(encoding="utf-8"), DOC.name)
    assert sum(isinstance(s, Command) for s in page) >= 10, page
    run_steps(DOC.name, page, tmp_path, environment(), {tmp_path: SHOWN_DIR})


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
    assert output_lines(raw, {tmp_path: SHOWN_DIR}) == \
        [f"exported {SHOWN_DIR}/ft/best/model.ckpt-4 to {SHOWN_DIR}/exported"]


def test_linked_folders_read_as_their_names(tmp_path):
    runs = tmp_path / "elsewhere" / "runs"
    raw = f"{runs}/finetune/model.ckpt-4 and {tmp_path}/x".encode()
    assert output_lines(raw, {tmp_path: SHOWN_DIR, runs: "demo-runs"}) == \
        [f"demo-runs/finetune/model.ckpt-4 and {SHOWN_DIR}/x"]
