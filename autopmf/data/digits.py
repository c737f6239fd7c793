"""Demo task: scikit-learn's 1,797 real 8x8 digits, each paired with generated statements.

label = 1 if the statement is true of the image's digit, else 0. Only fusion can solve it:

* The pool of predicates is closed under negation (p and not-p share a family, so they share a
  sampling weight). Per example: sample a predicate, then the label uniformly, then an image of
  the split whose digit makes the predicate's truth equal the label.
* P(label | text) = 0.5: the label is drawn independently of the predicate and its wording.
* P(label | digit) = 0.5: the mass p puts on digit d with label 0 (d among not-p's true digits)
  equals the mass not-p puts on d with label 1, so summed over the pool the two labels tie.
  Given the digit the image is uniform among that digit's images, so P(label | image) = 0.5 too.

Images are split by image, stratified by digit; everything is deterministic by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autopmf.data.types import Dataset, Split
from autopmf.errors import AutopmfError

FAMILIES = ("identity", "parity", "comparison", "membership")
# The default is the variant PMF learns on a CPU in minutes: identity statements in three
# wordings ("this is a 7", "the digit shown is 7", "the image shows the number seven"), no
# negation. Measured with the PMF reference design (BENCHMARKS.md): identity 0.89 test after
# 16 epochs; all four families 0.67 after 10; with negation words, chance after 4. Name the
# families (and negation=0.5) to get the harder mixes.
DEFAULT_FAMILY_WEIGHTS = {"identity": 1.0}
DEFAULT_NEGATION = 0.0
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LABEL_NAMES = ["false", "true"]
# Options a spec may set, e.g. "digits:examples_per_image=8,identity=1" (see `load`).
OPTIONS = ("examples_per_image", "val_fraction", "test_fraction", "negation", *FAMILIES)
# Families whose positive statements alone already leave every digit at P(true) = 0.5 (a
# uniformly drawn k, or pair, covers each digit equally in the true and the false case), so
# their negated forms ("not a 7", "neither ... nor") are optional. Negation words make the
# truth a three-way interaction (word, number, digit): much harder for shallow fusion.
NEGATION_OPTIONAL = ("identity", "membership")


@dataclass(frozen=True)
class Predicate:
    """A statement's meaning. The positive forms are: identity `digit == args[0]`, parity
    `digit is even`, comparison `digit > args[0]`, membership `digit in args`."""

    family: str
    args: tuple[int, ...]
    negated: bool


def holds(predicate: Predicate, digit: int) -> bool:
    """The truth of `predicate` for `digit`: the oracle's label."""
    if predicate.family == "identity":
        positive = digit == predicate.args[0]
    elif predicate.family == "parity":
        positive = digit % 2 == 0
    elif predicate.family == "comparison":
        positive = digit > predicate.args[0]
    elif predicate.family == "membership":
        positive = digit in predicate.args
    else:
        raise ValueError(f"unknown predicate family {predicate.family!r}")
    return positive != predicate.negated


def predicate_pool(family: str) -> list[Predicate]:
    """All predicates of a family, each with its negation (so either polarity is equally likely)."""
    if family == "identity":
        positives = [(k,) for k in range(10)]
    elif family == "parity":
        positives = [()]
    elif family == "comparison":
        positives = [(t,) for t in range(9)]  # t <= 8 so both "> t" and "<= t" have digits
    elif family == "membership":
        positives = [(a, b) for a in range(10) for b in range(a + 1, 10)]
    else:
        raise ValueError(f"unknown predicate family {family!r}")
    return [Predicate(family, args, negated) for args in positives for negated in (False, True)]


# Wordings per (family, negated); {a_k} is the digit with its article ("a 7", "an 8").
TEMPLATES: dict[tuple[str, bool], tuple[str, ...]] = {
    ("identity", False): (
        "this is {a_k}.", "the digit shown is {k}.", "the image shows the number {k_word}."),
    ("identity", True): (
        "this is not {a_k}.", "the digit shown is not {k}.",
        "the image does not show the number {k_word}."),
    ("parity", False): (
        "the digit is even.", "this is an even number.", "the number shown is divisible by two."),
    ("parity", True): (
        "the digit is odd.", "this is an odd number.", "the number shown is not divisible by two."),
    ("comparison", False): (
        "the digit is greater than {t}.", "the number shown is at least {t_plus_1}.",
        "this digit is larger than {t_word}."),
    ("comparison", True): (
        "the digit is at most {t}.", "the number shown is less than {t_plus_1}.",
        "this digit is {t_word} or smaller."),
    ("membership", False): (
        "this is {a_a} or {a_b}.", "the digit is either {a} or {b}.",
        "the number shown is {a_word} or {b_word}."),
    ("membership", True): (
        "this is neither {a_a} nor {a_b}.", "the digit is neither {a} nor {b}.",
        "the number shown is not {a_word} and not {b_word}."),
}


def _with_article(digit: int) -> str:
    return f"an {digit}" if digit == 8 else f"a {digit}"


def render(predicate: Predicate, template_id: int) -> str:
    """The English statement of `predicate` in wording number `template_id`."""
    fields: dict[str, object] = {}
    if predicate.family in ("identity", "comparison"):
        n = predicate.args[0]
        fields = {"k": n, "a_k": _with_article(n), "k_word": NUMBER_WORDS[n],
                  "t": n, "t_plus_1": n + 1, "t_word": NUMBER_WORDS[n]}
    elif predicate.family == "membership":
        a, b = predicate.args
        fields = {"a": a, "b": b, "a_a": _with_article(a), "a_b": _with_article(b),
                  "a_word": NUMBER_WORDS[a], "b_word": NUMBER_WORDS[b]}
    text = TEMPLATES[predicate.family, predicate.negated][template_id].format(**fields)
    return text[0].upper() + text[1:]


def all_statements() -> dict[str, Predicate]:
    """Every statement the generator can produce, mapped to its meaning (the oracle's parser)."""
    table: dict[str, Predicate] = {}
    for family in FAMILIES:
        for predicate in predicate_pool(family):
            for template_id in range(len(TEMPLATES[family, predicate.negated])):
                text = render(predicate, template_id)
                if table.setdefault(text, predicate) != predicate:
                    raise ValueError(f"statement {text!r} is ambiguous")
    return table


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (bundled, no download) as uint8 RGB [1797, 8, 8, 3] and int64 digits.

    Values 0..16 map to dark ink on a white background, like handwriting on paper, which is
    closer to what pretrained image encoders saw than white-on-black.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.round(255 - digits.images * (255 / 16)).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=3), digits.target.astype(np.int64)


@dataclass(frozen=True)
class DigitsTask:
    dataset: Dataset
    image_digits: dict[str, np.ndarray]  # split name -> digit of each row of that split's images
    predicates: dict[str, list[Predicate]]  # split name -> meaning of each example's statement


def build(
    seed: int = 0,
    examples_per_image: int = 4,
    negation: float = DEFAULT_NEGATION,
    family_weights: dict[str, float] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> DigitsTask:
    """Build the digits task; see the module docstring for why it needs both modalities.

    family_weights: relative sampling weight of each predicate family (missing ones get 0;
    default identity only). negation: probability of the negated wording in the families
    where it is optional. examples_per_image: examples per split image, on average.
    """
    weights = _family_weights(family_weights)
    if not isinstance(examples_per_image, int) or examples_per_image < 1:
        raise AutopmfError(
            f"digits: examples_per_image must be an integer >= 1, got {examples_per_image}"
        )
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise AutopmfError(
            f"digits: val_fraction={val_fraction} and test_fraction={test_fraction} must be > 0 "
            "and sum to < 1"
        )
    if not 0 <= negation <= 1:
        raise AutopmfError(f"digits: negation must be a probability in [0, 1], got {negation}")
    rng = np.random.default_rng(seed)
    images, digits = digit_images()

    # Split by image, stratified by digit, so every split has every digit.
    rows: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for digit in range(10):
        of_digit = rng.permutation(np.flatnonzero(digits == digit))
        n_test = round(test_fraction * len(of_digit))
        n_val = round(val_fraction * len(of_digit))
        rows["test"].append(of_digit[:n_test])
        rows["val"].append(of_digit[n_test : n_test + n_val])
        rows["train"].append(of_digit[n_test + n_val :])

    families = [family for family in FAMILIES if weights[family] > 0]
    family_p = np.array([weights[family] for family in families])
    family_p /= family_p.sum()
    pools = {family: predicate_pool(family) for family in families}

    splits, image_digits, predicates = {}, {}, {}
    for name, parts in rows.items():
        split_rows = np.sort(np.concatenate(parts))
        split_digits = digits[split_rows]
        n = examples_per_image * len(split_rows)
        labels = rng.permutation(np.arange(n) % 2)  # exactly balanced, independent of the text
        family_ids = rng.choice(len(families), size=n, p=family_p)
        chosen_rows = np.empty(n, dtype=np.int64)
        texts: list[str] = []
        split_predicates: list[Predicate] = []
        eligible: dict[tuple[Predicate, bool], np.ndarray] = {}
        for i in range(n):
            pool = pools[families[family_ids[i]]]
            predicate = _draw_predicate(rng, pool, negation)
            templates = TEMPLATES[predicate.family, predicate.negated]
            texts.append(render(predicate, int(rng.integers(len(templates)))))
            split_predicates.append(predicate)
            key = (predicate, bool(labels[i]))
            if key not in eligible:
                truth = np.array([holds(predicate, int(d)) for d in split_digits])
                eligible[key] = np.flatnonzero(truth == key[1])
            chosen_rows[i] = eligible[key][rng.integers(len(eligible[key]))]
        # Keep only the images some example uses (with ~4 per image a few go unused).
        used, image_index = np.unique(chosen_rows, return_inverse=True)
        splits[name] = Split(
            images=images[split_rows[used]],
            image_index=image_index.astype(np.int64),
            texts=texts,
            labels=labels.astype(np.int64),
        )
        image_digits[name] = split_digits[used]
        predicates[name] = split_predicates

    dataset = Dataset(name="digits", label_names=list(LABEL_NAMES), **splits)
    return DigitsTask(dataset=dataset, image_digits=image_digits, predicates=predicates)


def load(seed: int = 0, **options) -> Dataset:
    """The digits Dataset. options: examples_per_image, val_fraction, test_fraction, and a
    weight per family by name (e.g. identity=1, parity=0); naming any family zeroes the rest."""
    named = {family: float(options.pop(family)) for family in FAMILIES if family in options}
    return build(seed=seed, family_weights=named or None, **options).dataset


def _draw_predicate(rng: np.random.Generator, pool: list[Predicate], negation: float
                    ) -> Predicate:
    """A positive predicate uniformly, then its negation with probability 1/2 — or with
    probability `negation` in the families where negation is optional."""
    positives = [p for p in pool if not p.negated]
    base = positives[rng.integers(len(positives))]
    p_negated = negation if base.family in NEGATION_OPTIONAL else 0.5
    return Predicate(base.family, base.args, bool(rng.random() < p_negated))


def _family_weights(family_weights: dict[str, float] | None) -> dict[str, float]:
    if family_weights is None:
        family_weights = DEFAULT_FAMILY_WEIGHTS
    unknown = sorted(set(family_weights) - set(FAMILIES))
    if unknown:
        raise AutopmfError(f"digits: unknown predicate families {unknown}; known: {list(FAMILIES)}")
    weights = {family: float(family_weights.get(family, 0.0)) for family in FAMILIES}
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise AutopmfError(
            f"digits: family weights must be >= 0 with at least one > 0, got {family_weights}"
        )
    return weights
