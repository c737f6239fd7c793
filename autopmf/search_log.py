"""`search_log.jsonl`: one line per candidate a search proposed, in trial order.

`SearchLog` is the one owner of the log: it reads it (dropping a half-written last line), appends
to it, checks its schema and says which entry is best. The search writes it and `autopmf log`
reads it through this class, so the two never disagree on what "best" means. Torch-free.

An entry: `trial` (1, 2, ...), `arch` (the choices), `mem_gb` (predicted peak training memory),
`score`, `status` and `seconds`. Status `scored`: scored on the validation split; `duplicate`:
a repeat of an architecture already in the log, which takes its twin's score; `failed`: the
scorer gave no finite score (NaN or infinite, e.g. a subnet whose outputs diverged), kept in
the log so that a resumed search replays it, but never a best or on the Pareto front.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from autopmf.errors import AutopmfError

STATUSES = ("scored", "duplicate", "failed")
REQUIRED = ("trial", "arch", "mem_gb", "status")


def status_for(score: float) -> str:
    """The status of a newly scored (not duplicate) candidate."""
    return "scored" if isinstance(score, (int, float)) and math.isfinite(score) else "failed"


def is_scored(entry: Mapping) -> bool:
    """Whether `entry` counts for best and the Pareto front: scored, with a finite score. A
    duplicate repeats its twin's score; counting it again would double-list one arch."""
    s = entry.get("score")
    return entry["status"] == "scored" and isinstance(s, (int, float)) and math.isfinite(s)


def ranked(entries: Iterable[Mapping], budget_gb: float | None = None) -> list[dict]:
    """The scored entries (`is_scored`) within `budget_gb` (any, if None), best first: higher
    score, then less memory, then the earlier trial."""
    ok = [e for e in entries if is_scored(e) and (budget_gb is None or e["mem_gb"] <= budget_gb)]
    return sorted(ok, key=lambda e: (-e["score"], e["mem_gb"], e["trial"]))


def best_entry(entries: Iterable[Mapping], budget_gb: float | None = None) -> dict | None:
    """The first of `ranked`, or None."""
    return next(iter(ranked(entries, budget_gb)), None)


def pareto_front(entries: Iterable[Mapping]) -> list[dict]:
    """Scored entries no other entry beats on both memory (lower) and score (higher).

    Sweeping in order of (memory, -score, trial) keeps an entry only if it scores strictly
    more than everything cheaper, so of exact ties only the earliest trial survives.
    """
    front, best = [], -math.inf
    for e in sorted((e for e in entries if is_scored(e)),
                    key=lambda e: (e["mem_gb"], -e["score"], e["trial"])):
        if e["score"] > best:
            front.append(brief(e))
            best = e["score"]
    return front


def brief(e: Mapping) -> dict:
    return {"trial": e["trial"], "arch": e["arch"], "mem_gb": e["mem_gb"], "score": e["score"]}


class SearchLog:
    """A search's log: its path and its entries, in file order."""

    def __init__(self, path: str | Path, entries: Iterable[dict] = ()):
        self.path = Path(path)
        self.entries = list(entries)

    @classmethod
    def read(cls, path: str | Path) -> SearchLog:
        """Parse the log, checking each entry.

        A half-written LAST line is what a killed search leaves behind: it is skipped with a
        warning. Any other bad line means the file was damaged, so it is an error naming the
        line."""
        path = Path(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        entries = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                if i == last:
                    print(f"autopmf: warning: {path}: ignoring the half-written last line "
                          f"{i + 1} (the search was interrupted?)", file=sys.stderr)
                    break
                raise AutopmfError(f"{path} line {i + 1} is not valid JSON ({exc.msg}): the "
                                   "log is damaged; delete that line or rerun the search") from None
            entries.append(_check_entry(entry, f"{path} line {i + 1}"))
        return cls(path, entries)

    @classmethod
    def start(cls, path: str | Path, resume: bool) -> SearchLog:
        """The log a search writes: the existing one when resuming (rewritten without a dropped
        half line, so that appends start on a clean line), else a new, empty one."""
        from autopmf.files import atomic_write_text

        path = Path(path)
        log = cls.read(path) if resume and path.exists() else cls(path)
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in log.entries))
        return log

    def append(self, entry: dict) -> None:
        _check_entry(entry, f"{self.path} trial {entry.get('trial')}")
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
        self.entries.append(entry)

    def scored(self) -> list[dict]:
        return [e for e in self.entries if is_scored(e)]

    def ranked(self, budget_gb: float | None = None) -> list[dict]:
        return ranked(self.entries, budget_gb)

    def best(self, budget_gb: float | None = None) -> dict | None:
        return best_entry(self.entries, budget_gb)

    def pareto(self) -> list[dict]:
        return pareto_front(self.entries)


def read_search_log(path: str | Path) -> list[dict]:
    """The entries of the log at `path` (`SearchLog.read`)."""
    return SearchLog.read(path).entries


def _check_entry(entry: Any, where: str) -> dict:
    if not isinstance(entry, dict):
        raise AutopmfError(f"{where} is not a JSON object: the log is damaged; delete that "
                           "line or rerun the search")
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise AutopmfError(f"{where} has no {missing[0]!r}: is this a log written by "
                           "`autopmf search`?")
    if entry["status"] not in STATUSES:
        raise AutopmfError(f"{where}: unknown status {entry['status']!r} (expected one of "
                           f"{', '.join(STATUSES)})")
    return entry
