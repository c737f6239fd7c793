"""How the data pipeline scales: `autopmf search` on synthetic UPMC Food-101 data of growing size.

    python bench/scale.py --images 5000 10000 20000
    python bench/scale.py --repo /tmp/baseline_wt --baseline --images 1000 2000 5000

For each size: generate the data (scale_data.py; reused when present), then run
`autopmf search --space small_minilm_dinov2s` (224 px) on it with short settings, from the
checkout `--repo` (its autopmf is imported: checked before the first run), with AUTOPMF_CACHE a
fresh folder. Measured per run:

* peak RSS: the summed resident memory of the search process and all its children (DataLoader
  workers), sampled every 0.5 s; PSS (shared pages split among the processes that share them)
  beside it, as a sum of RSS counts pages shared by forked workers once per worker; and the
  RSS split in two (/proc/PID/status, summed the same way, each its own peak): anonymous
  (RssAnon: tensors, heaps) and file-backed (RssFile: mapped files, such as libraries and any
  memory-mapped cache shards);
* cache size: the bytes of every file under AUTOPMF_CACHE once the run ends (the encoder
  weights and memory profiles, linked in from the usual cache, are not counted);
* images/s: all images of the dataset over the run's `seconds.feature_cache` (data loading and
  the frozen-feature cache build, from supernet_metrics.json);
* seconds per supernet epoch: the mean of the epochs' `seconds` in supernet_metrics.json.

A run whose summed RSS passes `--rss-cap-gib` (or that passes `--timeout-min`) is killed and
recorded as such. `--baseline` files the results under the baseline keys of the JSON (today's
pipeline, before streaming); otherwise under the top-level lists. Either keeps the other's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_data import count_images, generate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
SPACE = "small_minilm_dinov2s"
SAMPLE_S = 0.5
# Linked into the fresh cache: built once per machine, not part of what the pipeline caches.
SHARED_CACHE_ENTRIES = ("dinov2-small-imgfocus", "memory")
# Short settings: one supernet epoch, no warm-up, a handful of candidates.
SEARCH_ARGS = ("--epochs", "1", "--warmup-epochs", "0", "--trials", "4", "--population", "2",
               "--budget-gb", "0.6", "--device", "cpu", "--quiet")


class TreeSampler(threading.Thread):
    """Peak summed RSS, PSS, anonymous and file-backed RSS of a process and its descendants;
    kills the process group when the RSS sum passes `cap_bytes`."""

    def __init__(self, pid: int, cap_bytes: float):
        super().__init__(daemon=True)
        self.pid, self.cap_bytes = pid, cap_bytes
        self.peak_rss = self.peak_pss = self.peak_processes = 0
        self.peak_anon = self.peak_file = 0
        self.capped = False
        self._done = threading.Event()

    def run(self) -> None:
        root = psutil.Process(self.pid)
        while not self._done.wait(SAMPLE_S):
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = pss = anon = file = 0
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                    split = rss_split(proc.pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                    continue
                rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
                anon, file = anon + split["RssAnon"], file + split["RssFile"]
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_anon, self.peak_file = max(self.peak_anon, anon), max(self.peak_file, file)
            self.peak_processes = max(self.peak_processes, len(procs))
            if rss > self.cap_bytes:
                self.capped = True
                os.killpg(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._done.set()
        self.join()


def rss_split(pid: int) -> dict[str, int]:
    """A process's anonymous and file-backed resident bytes (RssAnon, RssFile; 0 where
    /proc/PID/status lacks them)."""
    split = {"RssAnon": 0, "RssFile": 0}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in split:
                split[name] = int(value.split()[0]) * 1024  # kB
    return split


def child_env(repo: Path, cache: Path, threads: int) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(repo), AUTOPMF_CACHE=str(cache),
                OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")


def check_repo(repo: Path, env: dict, cwd: Path) -> str:
    """The autopmf that runs must be `repo`'s, not an installed one."""
    where = subprocess.run([sys.executable, "-c", "import autopmf; print(autopmf.__file__)"],
                           env=env, cwd=cwd, capture_output=True, text=True, check=True)
    path = Path(where.stdout.strip()).resolve()
    if repo.resolve() not in path.parents:
        raise SystemExit(f"autopmf imports from {path}, not from --repo {repo}")
    return str(path)


def fresh_cache(work: Path, name: str) -> Path:
    """An empty AUTOPMF_CACHE, with the machine's converted encoder weights and memory
    profiles linked in (when it has them)."""
    usual = Path(os.environ.get("AUTOPMF_CACHE", Path.home() / ".cache" / "autopmf"))
    cache = Path(tempfile.mkdtemp(prefix=f"cache_{name}_", dir=work))
    for entry in SHARED_CACHE_ENTRIES:
        if (usual / entry).is_dir():
            (cache / entry).symlink_to(usual / entry)
    return cache


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path`; linked folders are not followed."""
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.lstat(Path(folder) / f).st_size for f in files)
    return total


def run_one(repo: Path, images: int, work: Path, threads: int, cap_gib: float,
            timeout_min: float, space: str = SPACE) -> dict:
    data = generate(work / f"data_{images}", images)
    total_images = count_images(data)
    cache = fresh_cache(work, str(images))
    out = Path(tempfile.mkdtemp(prefix=f"run_{images}_", dir=work))
    env = child_env(repo, cache, threads)
    command = [sys.executable, "-m", "autopmf", "search", "--space", space,
               "--data", f"food101:{data}", "--out", str(out), "--threads", str(threads),
               *SEARCH_ARGS]
    started = time.perf_counter()
    with open(out / "stderr.log", "w") as log:
        proc = subprocess.Popen(command, env=env, cwd=work, stdout=log, stderr=log,
                                start_new_session=True)
        sampler = TreeSampler(proc.pid, cap_gib * GIB)
        sampler.start()
        try:
            proc.wait(timeout=timeout_min * 60)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        sampler.stop()
    cache_bytes = tree_bytes(cache)
    row = {"images": total_images, "space": space, "returncode": proc.returncode,
           "status": ("rss_cap" if sampler.capped else "timeout" if timed_out
                      else "ok" if proc.returncode == 0 else "failed"),
           "peak_rss_gib": round(sampler.peak_rss / GIB, 3),
           "peak_pss_gib": round(sampler.peak_pss / GIB, 3),
           "peak_rss_anon_gib": round(sampler.peak_anon / GIB, 3),
           "peak_rss_file_gib": round(sampler.peak_file / GIB, 3),
           "processes": sampler.peak_processes,
           "cache_bytes": cache_bytes, "cache_gib": round(cache_bytes / GIB, 3),
           "wall_seconds": round(time.perf_counter() - started, 1),
           "command": " ".join(command), "run_dir": str(out)}
    metrics_path = out / "supernet_metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        epochs = [record["seconds"] for record in metrics["history"]]
        row["images_per_s"] = round(total_images / metrics["seconds"]["feature_cache"], 2)
        row["seconds_per_supernet_epoch"] = round(sum(epochs) / len(epochs), 3)
        row["steps_per_epoch"] = metrics["steps_per_epoch"]
    if row["status"] != "ok":
        row["stderr_tail"] = (out / "stderr.log").read_text()[-2000:]
    return row


LIST_KEYS = ("images", "peak_rss_gib", "peak_rss_anon_gib", "peak_rss_file_gib", "cache_gib",
             "images_per_s", "seconds_per_supernet_epoch")


def record(path: Path, rows: list[dict], baseline: bool, repo: Path, threads: int,
           cap_gib: float) -> dict:
    """Merge `rows` into the JSON at `path`: a size measured again replaces its earlier run;
    the other pipeline's results are kept."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    key = "baseline" if baseline else "new"
    earlier = doc.get(key, {}).get("runs", [])
    runs = sorted({r["images"]: r for r in [*earlier, *rows]}.values(),
                  key=lambda r: r["images"])
    ok = [r for r in runs if r["status"] == "ok"]
    lists = {name: [r.get(name) for r in ok] for name in LIST_KEYS}
    doc[key] = {**lists, "machine": machine(), "date": datetime.date.today().isoformat(),
                "threads": threads, "rss_cap_gib": cap_gib, "repo": str(repo),
                "commit": commit_of(repo),
                "space": SPACE, "search_args": list(SEARCH_ARGS), "runs": runs}
    if baseline:  # the largest size today's pipeline survives
        largest = max(ok, key=lambda r: r["images"], default={})
        doc["baseline_peak_rss_gib"] = largest.get("peak_rss_gib")
        doc["baseline_images"] = largest.get("images")
    else:
        doc.update(lists)
    for name in LIST_KEYS:  # the streaming pipeline's, empty until it is measured
        doc.setdefault(name, [])
    doc["machine"], doc["date"] = doc[key]["machine"], doc[key]["date"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def commit_of(repo: Path) -> str | None:
    """The commit `repo` is checked out at, "+changes" when its files differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (commit + ("+changes" if dirty else "")) or None


def machine() -> str:
    return (f"{platform.machine()}, {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / GIB:.0f} GiB RAM, Python "
            f"{platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose autopmf runs")
    parser.add_argument("--baseline", action="store_true",
                        help="file the results as the baseline (today's pipeline)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scale_work",
                        help="data, caches and run folders (data is reused)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rss-cap-gib", type=float, default=12.0)
    parser.add_argument("--timeout-min", type=float, default=20.0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    imports = check_repo(args.repo, child_env(args.repo, args.work, args.threads), args.work)
    print(f"autopmf from {imports}", flush=True)
    rows = []
    for images in args.images:
        rows.append(run_one(args.repo, images, args.work, args.threads, args.rss_cap_gib,
                            args.timeout_min))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "stderr_tail"}),
              flush=True)
        record(args.out, rows, args.baseline, args.repo, args.threads, args.rss_cap_gib)
        if rows[-1]["status"] != "ok":
            print(rows[-1].get("stderr_tail", ""), flush=True)
            break  # a larger size will not survive either


if __name__ == "__main__":
    main()
