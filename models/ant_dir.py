"""Ant direction (MAML's): each task runs forward or backward (d = ±1), as a pyro_gem model file.

The policy, its prior, the surrogate likelihood and every method's settings are those of all
the locomotion tasks, in models/_locomotion.py.

Settings (``pyro-gem train models/ant_dir.py --set rollouts=20``): ``rollouts`` (K per task in
D_tr and D_val; MAML: 20), ``test_rollouts`` (per update at the meta-test; MAML: 40),
``likelihood_scale`` (the surrogate's weight against the prior's KL).
"""

from _locomotion import build

from pyro_gem import settings

opts = settings(rollouts=20, test_rollouts=40, likelihood_scale=1000.0)
prior, model, tasks, config = build("pyro_gem/AntDir-v0", opts)
