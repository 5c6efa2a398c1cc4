"""Two gloo processes reproduce one process for every joint method, end to end.

The objectives have their own gloo tests (tests/test_objectives_gloo.py); this runs the
methods through the loop, so extra rows (impostors, false pairs), phases, task labels and
BatchNorm over the global batch (``train.sync_batchnorm``) are all in the comparison.
Settings as in tests/test_engine_distributed.py: SGD, no dropout, no augmentation.
"""

from __future__ import annotations

import pytest

from test_engine_distributed import GLOO_SETTINGS, gloo_matches_one_process
from test_methods import METHOD_RUNS, _overrides, synth  # noqa: F401  (synth is a fixture)


CASES = {name: (name, {}) for name in METHOD_RUNS}
CASES["chauhan_joint_phase"] = ("chauhan_ranking", {"method.ranking_epochs": 0})  # Eq. (3) on labelled pairs
CASES["chauhan_batch_impostors"] = ("chauhan_ranking", {"method.impostors": "batch", "method.avoid_same_study": True})


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_gloo_processes_match_one_process(synth, tmp_path, case):
    name, more = CASES[case]
    extra = {"method.name": name, **METHOD_RUNS[name], **more, **GLOO_SETTINGS}
    if name == "chauhan_ranking":
        extra["method.labelled_fraction"] = None  # labelled and unlabelled rows in every batch
    gloo_matches_one_process(lambda out: _overrides(synth, out, **extra), tmp_path, case, later_steps=False,
                             first_loss_rel=1e-5)
