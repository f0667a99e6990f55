"""Benchmark of `ckptkit search`'s cheap trials: N head-only trials in one search, on the
feature cache, against N independent `ckptkit finetune --mode head` processes of the same
budget (the same nets, data, epochs, batch size and each trial's own params).

    python tools/bench_search.py [--trials 30] [--epochs 5] [--per-class 30] [--size 28]
                                 [--net lenet] [--checkpoint CKPT] [--repeat 1]
                                 [--work DIR] [--out FILE]

Steps, each timed as whole processes (wall clock, TF start-up included on both sides):
1. data: scikit-learn's digits 5-9 as PNGs (tests/helpers/images.py), train/ and val/ (untimed);
   without --checkpoint a LeNet is pretrained on digits 0-4 first (untimed).
2. search: `ckptkit search --mode head --no-prune --sampler random --trials N` over
   lr (loguniform 1e-3..1e-1), optimizer (sgd, momentum, adam) and dropout (0..0.5), with an
   empty feature cache: one backbone pass, then head-only trials on cached features;
   --repeat times (each from nothing), the median taken.
3. baseline: for each of the search's trials, `ckptkit finetune --mode head` with that trial's
   params in a new train dir (the backbone runs over the images in every epoch of every run).
The figure is baseline seconds / search seconds. FILE (default: WORK/bench_search.json)
gets both times, per-trial means and the settings; a one-line summary is printed.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPTKIT = [sys.executable, "-c", "from ckptkit.cli import main; main()"]


def prepare(work, per_class, size, net, checkpoint):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from helpers.images import digits_folder

    data = os.path.join(work, "target")
    if not os.path.isdir(data):
        digits_folder(os.path.join(data, "train"), range(5, 10), per_class, size=size)
        digits_folder(os.path.join(data, "val"), range(5, 10), 20, offset=per_class,
                      size=size)
    if checkpoint:
        return data, checkpoint
    pre = os.path.join(work, "pre")
    if not os.path.isfile(os.path.join(pre, "checkpoint")):
        source = digits_folder(os.path.join(work, "source"), range(5), 60, size=size)
        run(CKPTKIT + ["finetune", "--net", net, "--data", source, "--train-dir", pre,
                       "--epochs", "3", "--batch-size", "16", "--optimizer", "adam",
                       "--lr", "1e-3", "--dropout", "0", "--no-augment"])
    return data, pre


def run(args):
    started = time.perf_counter()
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=30, help="training images per class")
    parser.add_argument("--size", type=int, default=28, help="image size")
    parser.add_argument("--net", default="lenet")
    parser.add_argument("--checkpoint", help="pretrained checkpoint of --net (default: a "
                        "LeNet pretrained here on digits 0-4)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", default=os.path.join(ROOT, "bench-data", "search"))
    parser.add_argument("--repeat", type=int, default=1,
                        help="searches to run (the figure takes their median; the baseline, "
                             "already a sum over N processes, runs once)")
    parser.add_argument("--out")
    a = parser.parse_args()
    # byte-compile ckptkit once, as an install does: no baseline process pays for it
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "ckptkit")],
                   check=True)
    os.makedirs(a.work, exist_ok=True)
    data, checkpoint = prepare(a.work, a.per_class, a.size, a.net, a.checkpoint)
    common = ["--net", a.net, "--checkpoint", checkpoint, "--data", data, "--exclude",
              "Logits", "--mode", "head", "--epochs", a.epochs, "--batch-size", a.batch_size,
              "--no-augment"]
    study, cache = os.path.join(a.work, "study"), os.path.join(a.work, "cache")
    searches = []
    for _ in range(a.repeat):       # the same seeded study each time, from nothing
        for path in (study, cache, os.path.join(a.work, "runs")):
            shutil.rmtree(path, ignore_errors=True)
        seconds, _ = run(CKPTKIT + ["search"] + common + [
            "--study-dir", study, "--cache-dir", cache, "--trials", a.trials, "--no-prune",
            "--sampler", "random", "--param", "lr=loguniform:1e-3:1e-1",
            "--param", "optimizer=choice:sgd,momentum,adam", "--param",
            "dropout=uniform:0:0.5", "--json"])
        searches.append(seconds)
    search_s = statistics.median(searches)
    _, out = run(CKPTKIT + ["search", "--report", study, "--json"])
    trials = json.loads(out)["trials"]
    baseline_s, accuracies = 0.0, []
    for t in trials:
        p = t["params"]
        train_dir = os.path.join(a.work, "runs", f"{t['number']:04d}")
        seconds, out = run(CKPTKIT + ["finetune"] + common + [
            "--train-dir", train_dir, "--lr", p["lr"], "--optimizer", p["optimizer"],
            "--dropout", p["dropout"], "--json"])
        baseline_s += seconds
        best = (json.loads(out)["best"] or {}).get("val_accuracy")
        accuracies.append((t["value"], best))
    result = {
        "trials": len(trials), "epochs": a.epochs, "net": a.net, "image_size": a.size,
        "train_images": 5 * a.per_class, "val_images": 100, "batch_size": a.batch_size,
        "search_seconds": round(search_s, 2), "baseline_seconds": round(baseline_s, 2),
        "search_runs": [round(x, 2) for x in searches],
        "search_per_trial": round(search_s / len(trials), 2),
        "baseline_per_run": round(baseline_s / len(trials), 2),
        "speedup": round(baseline_s / search_s, 2),
        "accuracy_pairs": accuracies,       # (search trial, finetune --mode head run)
        "cpus": os.cpu_count(),
    }
    out_file = a.out or os.path.join(a.work, "bench_search.json")
    with open(out_file, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{len(trials)} head-only trials of {a.epochs} epochs ({a.net}, "
          f"{5 * a.per_class} + 100 images of {a.size}px): search {search_s:.1f}s, "
          f"{len(trials)} x finetune --mode head {baseline_s:.1f}s, "
          f"speedup {baseline_s / search_s:.1f}x  ({out_file})")


if __name__ == "__main__":
    main()
