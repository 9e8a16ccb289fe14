"""The paper's experiment: train a segmentation bundle on N annotated images, ISL pretraining versus a baseline.

``python -m monai_isl sweep --task nucleus --dataset DIR --sizes 1,10,50 --inits isl,imagenet --seeds 0,1,2 --out DIR``

For every (N, init, seed) the real bundles run through ``monai.bundle`` with overrides, each run in its own process
with its own log: the ``train`` workflow on a seeded, nested subset of N training images, then ``evaluate`` on the
fixed test set. ``init isl`` starts from the pretext model (``dapi_isl`` for nuclei, ``cellmask_isl`` for cells),
trained once unless ``--isl_checkpoint`` is given. The sweep is resumable: a finished run is never retrained, an
interrupted one continues from its last checkpoint. Outputs: ``results.csv``, ``summary.md`` and ``figures/`` in the
output folder (see :func:`sweep`).

Modules: :mod:`.plan` (task table, schedules, subsets, runs), :mod:`.worker` (one run in its own process),
:mod:`.report` (results.csv, summary.md), :mod:`.figures`, :mod:`.runner` (:class:`Sweep`, :func:`sweep`).
"""

from __future__ import annotations

from .figures import example_panel, make_figures
from .plan import (
    INITS,
    TASKS,
    Datalist,
    Schedule,
    SweepPlan,
    Task,
    nested_subsets,
    read_datalist,
    run_id,
    schedule,
)
from .report import (
    RESULT_COLUMNS,
    aggregate,
    collect_results,
    read_scores,
    relative_improvement,
    write_results_csv,
    write_summary,
)
from .runner import Sweep, sweep
from .worker import SweepError, bundle_command

__all__ = [
    "INITS",
    "RESULT_COLUMNS",
    "TASKS",
    "Datalist",
    "Schedule",
    "Sweep",
    "SweepError",
    "SweepPlan",
    "Task",
    "aggregate",
    "bundle_command",
    "collect_results",
    "example_panel",
    "make_figures",
    "nested_subsets",
    "read_datalist",
    "read_scores",
    "relative_improvement",
    "run_id",
    "schedule",
    "sweep",
    "write_results_csv",
    "write_summary",
]
