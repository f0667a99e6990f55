"""Broken checkpoints on demand: mutators that damage a valid checkpoint in place (always
inside a test's tmp_path), and run_isolated, which gives each broken input to ckptkit in a
process of its own, with a memory limit and a timeout.

The checkpoints themselves, valid or lying, come from tests/helpers/bundle_writer.py.
"""
import os
from pathlib import Path

# ---------------------------------------------------------------- mutators

def truncate(path, size):
    """Keep the first `size` bytes (a negative size drops that many from the end)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:size])


def flip(path, offset, bits=0xFF):
    """XOR the byte at `offset` (negative: from the end) with `bits`."""
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= bits
    Path(path).write_bytes(bytes(data))


def overwrite(path, offset, new):
    """Replace bytes at `offset` (negative: from the end) with `new`."""
    data = bytearray(Path(path).read_bytes())
    start = offset % len(data)
    data[start:start + len(new)] = new
    Path(path).write_bytes(bytes(data))


def delete(path):
    os.remove(path)


def snapshot(root):
    """sha256 of every file under `root`, by relative path: proof that nothing was touched."""
    import hashlib

    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- running ckptkit on them

def run_isolated(jobs, memory, width, code=None):
    """Run `ckptkit ARGS` for each job (args, cwd, timeout), every one in a process of its
    own with an address-space limit of `memory` bytes, killed after `timeout` seconds;
    `width` at once. `code` (Python source) replaces ckptkit in the children: it proves the
    limits themselves.
    Returns per job (exit code, stdout, stderr); the code is None for a process that hung,
    negative for one ended by a signal.

    Starting Python and importing ckptkit, numpy and h5py costs ~0.15 s of CPU a process; a
    table of hostile cases would spend seconds on it. So one helper process (this file run as
    a script) imports them once and forks a child per job; the child sets its limit, points
    fds 1 and 2 at files and calls ckptkit.cli.main(). Inputs and outputs stay on disk.
    """
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        plan = [{"args": list(args), "cwd": str(cwd), "timeout": timeout,
                 "out": os.path.join(scratch, f"{i}.out"),
                 "err": os.path.join(scratch, f"{i}.err")}
                for i, (args, cwd, timeout) in enumerate(jobs)]
        env = {k: v for k, v in os.environ.items() if k != "CKPTKIT_DEBUG"}
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
        budget = sum(job["timeout"] for job in plan) + 60
        helper = subprocess.run(
            [sys.executable, __file__], input=json.dumps(
                {"jobs": plan, "memory": memory, "width": width, "code": code}),
            capture_output=True, text=True, env=env, timeout=budget)
        if helper.returncode != 0:
            raise RuntimeError(f"the fork helper failed:\n{helper.stderr}")
        codes = json.loads(helper.stdout)
        return [(code, Path(job["out"]).read_text("utf-8", "replace"),
                 Path(job["err"]).read_text("utf-8", "replace"))
                for code, job in zip(codes, plan)]


def _serve():
    """The fork helper of run_isolated: jobs as JSON on stdin, exit codes as JSON on stdout."""
    import importlib
    import json
    import resource
    import signal
    import sys
    import time

    request = json.load(sys.stdin)
    for module in ("ckptkit.cli", "ckptkit.checks", "ckptkit.formats.tf_v2",
                   "ckptkit.formats.tf_v1", "ckptkit.formats.npz", "ckptkit.formats.keras_h5",
                   "ckptkit.formats.safetensors", "ml_dtypes", "rich"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass   # the child meets the same error the way the CLI would
    from ckptkit.cli import main

    def child(job):
        resource.setrlimit(resource.RLIMIT_AS, (request["memory"], request["memory"]))
        os.chdir(job["cwd"])
        for fd, path in ((1, job["out"]), (2, job["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.argv = ["ckptkit", *job["args"]]
        code = 0
        try:
            exec(request["code"], {}) if request["code"] else main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (e.code is not None)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    codes, pending, running = [None] * len(request["jobs"]), list(enumerate(request["jobs"])), {}
    while pending or running:
        while pending and len(running) < request["width"]:
            i, job = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                child(job)
            running[pid] = (i, time.monotonic() + job["timeout"])
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            i, _ = running.pop(pid)
            codes[i] = os.waitstatus_to_exitcode(status)
            continue
        for pid, (i, deadline) in list(running.items()):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                del running[pid]   # codes[i] stays None: it hung
        time.sleep(0.001)
    json.dump(codes, sys.stdout)


if __name__ == "__main__":
    _serve()
