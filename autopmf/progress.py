"""What a run tells its user while it works; every loop reports through here.

One verbosity for the whole process, set by the CLI from `--quiet` / `--verbose` (as a logging
level would be), the same on every command:

- quiet: no start-up lines, no progress; results, warnings and errors only.
- normal: one start-up line per stage (data, encoders, feature cache, memory), one line per
  epoch, and progress. In a terminal (stderr is a TTY): tqdm bars with an ETA. Otherwise (a
  log file, nohup, a scheduler) bars are off and a plain line takes their place at most every
  `INTERVAL_S` seconds, naming the stage, its position, the rate and the ETA; a search also
  writes one line per candidate there.
- verbose: as normal, plus the per-candidate lines in a terminal too.

Lines go to stdout and are flushed at once, so a log file shows each as it happens; bars go to
stderr. A library caller that never sets the verbosity gets "normal".
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

QUIET, NORMAL, VERBOSE = 0, 1, 2
INTERVAL_S = 30.0  # a plain progress line at most this often (seconds)

_level = NORMAL
_said: set[str] = set()
_lines_to_stderr = False  # --json: stdout holds the result alone


def set_verbosity(level: int) -> None:
    """QUIET, NORMAL or VERBOSE for the rest of the process (the CLI sets it per command)."""
    global _level
    _level = level
    _said.clear()


def verbosity() -> int:
    return _level


def send_lines_to_stderr(on: bool) -> None:
    """With --json, stdout holds the one JSON result: the lines go to stderr instead."""
    global _lines_to_stderr
    _lines_to_stderr = on


def add_verbosity_options(parser) -> None:
    """--quiet / --verbose, alike on every command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", "-q", action="store_true",
                       help="results, warnings and errors only: no start-up lines, no progress")
    group.add_argument("--verbose", "-v", action="store_true",
                       help="also a line per search candidate when the output is a terminal "
                       "(a log file always gets them)")


def verbosity_of(args) -> int:
    return QUIET if getattr(args, "quiet", False) else (
        VERBOSE if getattr(args, "verbose", False) else NORMAL)


def terminal() -> bool:
    """Progress bars need a terminal on stderr."""
    return sys.stderr.isatty()


def say(line: str, once: bool = False) -> None:
    """A line the user follows the run by (not under --quiet). `once`: not again if this
    very line was said before (a stage that two steps of one command both load)."""
    if _level < NORMAL or (once and line in _said):
        return
    _said.add(line)
    _write(line)


def detail(line: str) -> None:
    """A line for --verbose only."""
    if _level >= VERBOSE:
        _write(line)


def _write(line: str) -> None:
    stream = sys.stderr if _lines_to_stderr else sys.stdout
    tqdm.write(line, file=stream)  # above any live bar, not through it
    stream.flush()


def duration(seconds: float) -> str:
    """2.1 s, 4 min 05 s, 1 h 02 min."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """Progress of one stage of `total` units: a bar in a terminal, plain lines elsewhere.

        with Progress("supernet 2/10", steps, unit="step") as p:
            for ...: p.update(loss="0.69")
    """

    def __init__(self, stage: str, total: int, unit: str = "step", enabled: bool = True):
        self.stage, self.total, self.unit = stage, total, unit
        self.enabled = enabled and _level >= NORMAL
        self.plain = self.enabled and not terminal()
        self.bar = tqdm(total=total, desc=stage, unit=unit, leave=False, dynamic_ncols=True,
                        mininterval=0.5, disable=not self.enabled or self.plain)
        self.done = 0
        self.postfix: dict[str, str] = {}
        self.started = self.last_line = time.monotonic()

    def update(self, n: int = 1, **postfix: str) -> None:
        self.done += n
        if postfix:
            self.postfix.update(postfix)
            self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(n)
        if self.plain and time.monotonic() - self.last_line >= INTERVAL_S:
            self._line(self.status())

    def item(self, text: str) -> None:
        """A line about one finished unit (a search candidate): always in a log file, in a
        terminal only under --verbose."""
        if self.enabled and (self.plain or _level >= VERBOSE):
            self._line(f"{self.stage} {self.done}/{self.total}: {text} | {self.rate()}")

    def status(self) -> str:
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return f"{self.stage}: {self.done}/{self.total} {self.unit}s{extra} | {self.rate()}"

    def rate(self) -> str:
        elapsed = time.monotonic() - self.started
        if self.done == 0 or elapsed <= 0:
            return "ETA ?"
        per_unit = elapsed / self.done
        speed = (f"{1 / per_unit:.1f} {self.unit}s/s" if per_unit < 1
                 else f"{per_unit:.1f} s/{self.unit}")
        return f"{speed}, ETA {duration(per_unit * (self.total - self.done))}"

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        _write(text)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----- start-up: one line per stage, before any training step ------------------------------
def announce_data(dataset) -> None:
    """data: name, examples and images per split, labels, metric, skipped examples."""
    splits = ", ".join(f"{name} {len(split):,} examples ({len(split.images):,} images)"
                       for name, split in dataset.splits().items())
    say(f"data: {dataset.name}: {splits}; {len(dataset.label_names)} labels, metric "
        f"{dataset.metric}; {getattr(dataset, 'skipped', 0):,} examples skipped", once=True)


def announce_encoders(space, backbone) -> None:
    params = sum(p.numel() for p in backbone.parameters())
    say(f"encoders (frozen, {params / 1e6:.1f}M params): text {space.text_encoder} "
        f"({backbone.text.depth} layers, width {backbone.text.hidden_size}), image "
        f"{space.image_encoder} ({backbone.image.depth} layers, width "
        f"{backbone.image.hidden_size}, {space.image_size} px); {backbone.num_slots} slots, "
        f"fusable {list(space.fusable_slots)}", once=True)


def announce_cache_start(slot: int, examples: int, detail: str = "") -> None:
    """`detail`: what the cache will take, and where (said before it is built)."""
    say(f"feature cache: computing the frozen streams entering slot {slot} for "
        f"{examples:,} examples (once)" + (f"; {detail}" if detail else ""), once=True)


def announce_cache(built: bool, slot: int, caches: dict, seconds: float, where: str) -> None:
    """feature cache: built or reused, its size, where it is kept."""
    nbytes = sum(c.nbytes for c in caches.values())
    examples = sum(len(c) for c in caches.values())
    say(f"feature cache: {'built' if built else 'reused'} the streams entering slot {slot} "
        f"for {examples:,} examples, {nbytes / 2**20:,.1f} MiB, in {duration(seconds)}; "
        f"{where}", once=True)


def announce_slot_shares(shares: dict[str, dict[int, int]]) -> None:
    """sampling: the sampled steps per lowest and per highest fused slot (after the warm-up),
    so a slot whose subnets will hardly train shows before the hours are spent."""
    if _level < NORMAL:
        return
    parts = [f"{edge} {' '.join(f'{slot}:{n}' for slot, n in counts.items())}"
             for edge, counts in (("lowest", shares["bottom"]), ("highest", shares["top"]))]
    say(f"sampling: steps per fused slot, {'; '.join(parts)}")


def announce_budget(budget, budget_gb: float) -> None:
    """memory: the budget (`budget_gb`, as the user gave it), how many designs fit it, the
    PMF reference within it."""
    if _level < NORMAL or not budget.limited:
        return
    from autopmf.units import GIB, gib

    space = budget.space
    fitting, total, exact = budget.designs_within()
    reference = budget.pmf_reference()
    ref = ("no PMF reference design fits" if reference is None else
           f"PMF reference within it: top {reference[0]} slot(s) at prompt length "
           f"{reference[1]} ({gib(budget.estimate(reference[2]) / GIB)} GiB predicted)")
    say(f"memory: budget {gib(budget_gb, exact=True)} GiB "
        f"({budget.profile.key['device']}, batch {space.batch_size}, {space.precision}): "
        f"{fitting:,} of {total:,} designs fit{'' if exact else ' (estimated)'}; {ref}",
        once=True)
