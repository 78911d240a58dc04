"""`neucrab select`: confirm the recommendation cheaply, within a budget of fine-tuning steps.

The `shortlist` checkpoints the recommended score ranks highest are fine-tuned at one learning rate, by one of
two schedules:
- "equal" (the default): each gets an equal share of the budget, budget // shortlist steps, and the best test
  accuracy wins;
- "halving": successive halving (Jamieson and Talwalkar, 2016): each is fine-tuned for s steps, the better half
  goes on to 2s steps, and so on until one is left, s being the largest count that keeps the whole schedule
  within `budget` steps (the sum over rounds of checkpoints x steps, counted as if nothing were cached).

The default schedule and learning rate are the ones the replay of both schedules on Mini-NeuCRaB v2's own runs
chose (`python -m neucrab.bench.budget results/mini`, results/mini/budget.md): an equal share was chosen in 16
of the 18 leave-one-task-out folds (halving in one), and lr 0.003 in 12 of the 17 one-rate choices.
That replay also says what the confirmation is worth: at 10% of a full sweep's cost or less it did not pick the
true best more often than the recommendation alone.

Every run goes through the ground truth's run cache (`neucrab.groundtruth`), so a rerun or a later full sweep
reuses them; steps served from the cache are not counted as spent. Ties keep the recommendation's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._validate import check_count, check_learning_rate
from .errors import InputError

DEFAULT_LR = 0.003
SCHEDULES = ("equal", "halving")
DEFAULT_SCHEDULE = "equal"


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


def schedule(shortlist: int, budget: int, how: str = "halving") -> list[tuple[int, int]]:
    """(checkpoints, steps) per round within `budget` steps: "halving" halves the checkpoints and doubles the
    steps each round; "equal" is one round of budget // shortlist steps each."""
    if how not in SCHEDULES:
        raise InputError(f"--schedule {how}: expected one of {', '.join(SCHEDULES)}")
    rounds = max(1, math.ceil(math.log2(shortlist))) if shortlist > 1 else 0
    if rounds == 0:
        return []
    if how == "equal":
        rounds = 1
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


def select(checkpoints, task, *, budget: int, shortlist: int = 4, lr: float = DEFAULT_LR,
           how: str = DEFAULT_SCHEDULE, names=None,
           batch_size: int = 32, image_size: int | None = None, seed: int = 0, cache_dir=None, device=None,
           trust_pickle: bool = False, progress: bool = True, ranking=None,
           trust_remote_code: bool = False) -> Selection:
    """Rank `checkpoints` with the recommended score (or take `ranking`), then fine-tune the shortlist by the
    schedule `how` within `budget` fine-tuning steps (see the module docstring)."""
    from .groundtruth import groundtruth
    from .pool_manifest import split_entries
    from .ranking import rank
    from .recommend import RECOMMENDED
    from .tasks import load as load_task

    budget, shortlist = check_count(budget, "--budget"), check_count(shortlist, "--shortlist")
    lr = check_learning_rate(lr, "--lr")
    if how not in SCHEDULES:  # before any work
        raise InputError(f"--schedule {how}: expected one of {', '.join(SCHEDULES)}")
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
    for count, steps in schedule(len(alive), budget, how):
        accuracies = {}
        for name in alive[:count]:
            truth = groundtruth(spec_of[name], task, lrs=(lr,), steps=(steps,), batch_size=batch_size,
                                image_size=image_size, seed=seed, cache_dir=cache_dir, device=device,
                                trust_pickle=trust_pickle, trust_remote_code=trust_remote_code, name=name)
            accuracies[name] = truth.best_accuracy if truth.best_accuracy is not None else -1.0
            result.spent_steps += sum(run["steps"] for run in truth.runs if not run["cached"])
        survivors = sorted(alive[:count], key=lambda n: (-accuracies[n], alive.index(n)))
        alive = survivors[: 1 if how == "equal" else max(1, math.ceil(count / 2))]
        result.rounds.append({"steps": steps, "accuracies": accuracies, "kept": list(alive)})
    result.pick = alive[0]
    return result
