"""Shared fixtures: the real-checkpoint corpus and its oracle, and a CLI runner."""
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("CKPTKIT_CORPUS", ROOT.parent / "shared" / "corpus"))
CORPUS_MISSING = f"real-checkpoint corpus not found at {CORPUS} (set CKPTKIT_CORPUS)"


def corpus_cases():
    """Case names of the corpus, or [] when it is absent (tests then skip with a reason)."""
    if not (CORPUS / "oracle.json").is_file():
        return []
    return sorted(json.loads((CORPUS / "oracle.json").read_text()))


@pytest.fixture(scope="session")
def oracle():
    if not (CORPUS / "oracle.json").is_file():
        pytest.skip(CORPUS_MISSING)
    return json.loads((CORPUS / "oracle.json").read_text())


@pytest.fixture(scope="session")
def corpus():
    if not CORPUS.is_dir():
        pytest.skip(CORPUS_MISSING)
    return CORPUS


@pytest.fixture(scope="session")
def tf():
    """tf.compat.v1 in graph mode, through ckptkit's one TensorFlow import (tests using it
    are marked tf)."""
    from ckptkit.tfcompat import tf

    return tf


@pytest.fixture
def runner():
    """Invoke the click CLI in-process: runner.invoke(cli, [...])."""
    return CliRunner()


@pytest.fixture
def ckptkit(runner):
    """ckptkit(*args) -> (exit code, stdout, stderr); paths may be Path objects."""
    from ckptkit.cli import cli

    def invoke(*args):
        result = runner.invoke(cli, [str(a) for a in args], prog_name="ckptkit")
        assert "Traceback" not in result.output
        return result.exit_code, result.stdout, result.stderr
    return invoke
