"""The claims' vocabulary, owned here and read by collect (which computes), claims (which decides),
plots (which draws) and the entry point: each claim's id and statement, the paper's words, why its
region is what it is, how the claims are grouped, and every paired comparison a claim reads."""
from __future__ import annotations

from dataclasses import dataclass

CLAIMS = {
    "1": "Per generated image, PRI inverts up to 10x faster than DMI and 2x faster than SMI (DeiT family)",
    "2a": "FLOPs per generated image: PRI <= SMI <= DMI",
    "2b": "Peak GPU memory: PRI <= SMI <= DMI",
    "3a": "Accuracy at matched sparsity: PRI consistently outperforms SMI (every setting)",
    "3b": "PRI matches DMI's accuracy",
    "3c": "DMI ahead of PRI at 86% sparsity (v = 7)",
    "4a": "CIFAR-100 distillation: PRI - SMI between +6 and +19 points",
    "4b": "ImageNet quantisation: PRI - SMI between +0.07 and +0.87 points",
    "5": "Re-Birth: random patch selection gives accuracy close to attention selection",
    "6": "One-class distillation: a student from one class's PRI images generalises better than from SMI or DMI",
    "7": "Teacher confidence on PRI images is distributed closer to real data than on DMI or SMI images",
    "8": "Theorem 1 holds when measured (MLP: PRI < SMI*; attention: PRI <= SMI* when N/D <= 6v/(2v-1)): "
         "PRI's measured time per image below SMI*'s where the closed form predicts it",
    "9": "(the suite's, not the paper's) At equal inversion compute PRI's student is at least DMI's and SMI's",
}
PAPER = {"1": "up to 10x vs DMI, 2x vs SMI", "2a": "PRI <= SMI <= DMI", "2b": "PRI <= SMI <= DMI",
         "3a": "PRI > SMI in every setting", "3b": "PRI ~ DMI", "3c": "DMI > PRI at v=7 (DeiT-Tiny distillation)",
         "4a": "+6 to +19 points", "4b": "+0.07 to +0.87 points", "5": "random ~ attention selection",
         "6": "PRI > SMI, DMI", "7": "PRI closer to real", "8": "holds", "9": "-"}

# why each region is what it is (the report and README say the same)
REGION_WHY = {
    "1": "'up to' is a best case: the best timed model's speed-up at least the paper's factor (with the "
         "config's slack); not supported only when every timed model falls short",
    "3a": "'consistently outperforms': superiority, PRI - SMI > 0 at every v (a tie or a small loss is not support)",
    "3b": "'matches': equivalence, PRI - DMI within +-delta at every v (far better counts as not matching, as "
          "far worse does)",
    "3c": "the paper reports DMI ahead at the largest v: DMI - PRI > 0",
    "4a": "the paper's range of gains", "4b": "the paper's range of gains, judged only where the assay passes "
                                               "its positive control (real-data calibration above noise)",
    "5": "'close to': equivalence within +-delta", "6": "'better than': superiority over both",
    "7": "'closer to real': superiority of the distance gap over 0",
    "8": "the side of 1 the closed form predicts for PRI/SMI* (measured time); fvcore's MACs against the "
         "closed form are kept as a check",
    "9": "the suite's own: non-inferiority at equal compute",
}

# the claims by track: the accuracy track's (differences of students, quantised teachers and
# confidences), of which the controls are drawn on their own forest; the efficiency track's
ACCURACY = ("3a", "3b", "3c", "4a", "4b", "5", "6", "7", "9")
CONTROLS = ("6", "7", "9")
EFFICIENCY = ("1", "2a", "2b", "8")
# the plots of intervals: forest plot -> the claims it draws
FOREST_GROUPS = {"forest": tuple(c for c in ACCURACY if c not in CONTROLS), "forest_controls": CONTROLS,
                 "forest_efficiency": ("1", "8")}
# the claims whose comparison gets a power analysis (the seeds a target half-width needs)
POWER = {"3a": "pri-smi", "3b": "pri-dmi", "5": "random-attention"}


@dataclass(frozen=True)
class Comparison:
    """A difference ``a - b`` between two methods, paired by seed: ``a``/``b`` are registry names;
    ``v``: "same" (a and b at the same v), "a" (only a has one) or "b"; ``kind``: the sweep kind;
    ``metric``: top1 (students), quant (quantised top-1) or w1 (confidence distance)."""
    name: str
    a: str
    b: str
    v: str
    kind: str = "main"
    metric: str = "top1"


# every paired difference a claim (or a control of the report) reads; collect.py computes them
COMPARISONS = [
    Comparison("pri-smi", "pri", "smi", "same"),
    Comparison("pri-dmi", "pri", "dmi", "a"),
    Comparison("dmi-pri", "dmi", "pri", "b"),
    Comparison("random-attention", "pri_random", "pri", "same"),
    Comparison("pri-dmi_updates", "pri", "dmi_updates", "same"),
    Comparison("smi_rerank-smi", "smi_rerank", "smi", "same"),
    Comparison("oneclass pri-smi", "pri", "smi", "same", kind="oneclass"),
    Comparison("oneclass pri-dmi", "pri", "dmi", "a", kind="oneclass"),
    Comparison("iso pri-dmi", "pri", "dmi", "a", kind="iso"),
    Comparison("iso pri-smi", "pri", "smi", "same", kind="iso"),
    Comparison("quant pri-smi", "pri", "smi", "same", metric="quant"),
    Comparison("w1 smi-pri", "smi", "pri", "same", metric="w1"),
    Comparison("w1 dmi-pri", "dmi", "pri", "b", metric="w1"),
]
