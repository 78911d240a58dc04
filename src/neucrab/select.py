"""`neucrab select`: confirm the recommendation cheaply, within a budget of fine-tuning steps.

Successive halving (Jamieson and Talwalkar, 2016) over a shortlist: the `shortlist` checkpoints the
recommended score ranks highest are each fine-tuned for s steps at one learning rate; the better half (by test
accuracy) goes on to 2s steps, and so on until one is left. s is the largest step count that keeps the whole
schedule within `budget` steps (the sum over rounds of checkpoints x steps, counted as if nothing were cached).
Every run goes through the ground truth's run cache (`neucrab.groundtruth`), so a rerun or a later full sweep
reuses them;
steps served from the cache are not counted as spent. Ties keep the recommendation's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._validate import check_count, check_learning_rate
from .errors import InputError

DEFAULT_LR = 0.01


@dataclass
class Selection:
    pick: str
    recommended: str | None
    shortlist: list[str]
    rounds: list[dict] = field(default_factory=list)  # {"steps", "accuracies": {name: accuracy}, "kept"}
    spent_steps: int = 0  # steps trained in this call (cache hits cost nothing)
    budget_steps: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def schedule(shortlist: int, budget: int) -> list[tuple[int, int]]:
    """(checkpoints, steps) per round: halving the checkpoints, doubling the steps, within `budget` steps."""
    rounds = max(1, math.ceil(math.log2(shortlist))) if shortlist > 1 else 0
    if rounds == 0:
        return []
    counts, alive = [], shortlist
    for _ in range(rounds):
        counts.append(alive)
        alive = max(1, math.ceil(alive / 2))
    units = sum(count * 2 ** index for index, count in enumerate(counts))  # the cost of one first-round step
    first = budget // units
    if first < 1:
        raise InputError(f"--budget {budget}: too small for {shortlist} checkpoints in {rounds} round(s); expected "
                         f"at least {units} steps, or a shorter --shortlist")
    return [(count, first * 2 ** index) for index, count in enumerate(counts)]


def select(checkpoints, task, *, budget: int, shortlist: int = 4, lr: float = DEFAULT_LR, names=None,
           batch_size: int = 32, image_size: int | None = None, seed: int = 0, cache_dir=None, device=None,
           trust_pickle: bool = False, progress: bool = True, ranking=None,
           trust_remote_code: bool = False) -> Selection:
    """Rank `checkpoints` with the recommended score (or take `ranking`), then successive halving within
    `budget` fine-tuning steps (see the module docstring)."""
    from .groundtruth import groundtruth
    from .pool_manifest import split_entries
    from .ranking import rank
    from .recommend import RECOMMENDED
    from .tasks import load as load_task

    budget, shortlist = check_count(budget, "--budget"), check_count(shortlist, "--shortlist")
    lr = check_learning_rate(lr, "--lr")
    task = load_task(task)
    checkpoints, names, _ = split_entries(checkpoints, names)  # pool manifest rows give their names
    if ranking is None:
        ranking = rank(checkpoints, task, [RECOMMENDED], names=names, cache_dir=cache_dir, progress=progress,
                       image_size=image_size, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    order = [row.checkpoint for row in ranking.rows if not row.error]
    if not order:
        raise InputError("select: no checkpoint could be scored; expected at least one that loads")
    spec_of = dict(zip(names, checkpoints))
    alive = order[:shortlist]
    result = Selection(pick=alive[0], recommended=ranking.recommendation()["checkpoint"], shortlist=list(alive),
                       budget_steps=budget)
    for count, steps in schedule(len(alive), budget):
        accuracies = {}
        for name in alive[:count]:
            truth = groundtruth(spec_of[name], task, lrs=(lr,), steps=(steps,), batch_size=batch_size,
                                image_size=image_size, seed=seed, cache_dir=cache_dir, device=device,
                                trust_pickle=trust_pickle, trust_remote_code=trust_remote_code, name=name)
            accuracies[name] = truth.best_accuracy if truth.best_accuracy is not None else -1.0
            result.spent_steps += sum(run["steps"] for run in truth.runs if not run["cached"])
        survivors = sorted(alive[:count], key=lambda n: (-accuracies[n], alive.index(n)))
        alive = survivors[: max(1, math.ceil(count / 2))]
        result.rounds.append({"steps": steps, "accuracies": accuracies, "kept": list(alive)})
    result.pick = alive[0]
    return result
