"""RayRunner on a local Ray runtime with 2 CPUs: the in-process prior bit for bit, a killed
worker, a worker that keeps failing, tasks whose data never reach the driver, meta-RL rollouts
on the workers, a killed driver resuming. No Ray process is left behind."""

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import ray
import torch
from runners.test_local import gem_learner, owned_family, trained

from pyro_gem import Sinusoid, TaskBatch
from pyro_gem.cli import main
from pyro_gem.config import build_learner, load_seeded, resolve_config
from pyro_gem.methods.registry import attach_runner
from pyro_gem.runners import LocalRunner, RayRunner, ShardFailed
from pyro_gem.training import load_checkpoint

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def ray_processes() -> list[int]:
    """Running Ray head and worker processes."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(k in cmd for k in ("raylet", "gcs_server", "ray::")):
            found.append(int(pid))
    return found


@pytest.fixture(scope="module")
def runtime():
    # The test modules are not importable on the workers: their functions travel by value.
    for name in ("runners.test_local", "sinusoid_fixtures", __name__):
        ray.cloudpickle.register_pickle_by_value(sys.modules[name])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    session = ray.get_runtime_context().gcs_address
    yield
    ray.shutdown()
    deadline = time.time() + 20
    while ray_processes() and time.time() < deadline:
        time.sleep(0.5)
    assert not ray_processes(), f"Ray processes left behind ({session})"


def marked(model, folder: Path, driver: int):
    """``model`` that, on a worker, leaves its pid in ``folder``; the first worker to run it
    waits there until it is killed, and with ``folder/poison`` every worker kills itself."""

    def wrapped(*args):
        pid = os.getpid()
        if pid != driver:
            if (folder / "poison").exists():
                os.kill(pid, signal.SIGKILL)
            (folder / str(pid)).touch()
            while (folder / "hold").exists() and not (folder / "killed").exists():
                time.sleep(0.05)
        return model(*args)

    return wrapped


def kill_the_first_marked(folder: Path, killed: list) -> threading.Thread:
    """A thread that kills the first worker to leave its pid in ``folder``."""

    def kill():
        while not killed:
            pids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
            if pids:
                (folder / "killed").touch()
                os.kill(pids[0], signal.SIGKILL)  # in the middle of its shard
                killed.append(pids[0])
            time.sleep(0.01)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_any_number_of_workers_gives_the_in_process_prior_bit_for_bit(runtime):
    reference = trained(gem_learner(LocalRunner(shards=3)))
    for workers in (1, 2):
        with RayRunner(workers, shards=3) as runner:
            got = trained(gem_learner(runner))
        assert torch.equal(got[0], reference[0]) and torch.equal(got[1], reference[1])


def test_reptile_on_workers_gives_the_in_process_prior_bit_for_bit(runtime):
    from sinusoid_fixtures import small_sinusoid

    from pyro_gem.config import DEFAULTS
    from pyro_gem.methods.registry import build

    priors = []
    for runner in (LocalRunner(shards=2), RayRunner(2, shards=2)):
        torch.manual_seed(0)
        model, prior = small_sinusoid()
        config = {**DEFAULTS, "inner_optim": "sgd", "inner_lr": 1e-3, "inner_steps": 2}
        learner = build("reptile", model, prior, config)
        attach_runner("reptile", learner, runner)
        priors.append(trained(learner, iterations=2))
    assert torch.equal(priors[0][0], priors[1][0])


def test_a_killed_worker_loses_nothing(runtime, tmp_path):
    reference = trained(gem_learner(LocalRunner(shards=4)), iterations=2)
    (tmp_path / "hold").touch()
    killed = []
    learner = gem_learner(RayRunner(shards=4))
    learner.model = marked(learner.model, tmp_path, os.getpid())
    thread = kill_the_first_marked(tmp_path, killed)
    got = trained(learner, iterations=2)
    thread.join(timeout=5)
    assert killed and torch.equal(got[0], reference[0]) and torch.equal(got[1], reference[1])


def test_a_killed_task_owning_worker_is_restarted_and_loses_nothing(runtime, tmp_path):
    factories = [functools.partial(owned_family, "default")] * 2
    local = LocalRunner(families=factories)
    reference = trained(gem_learner(local), local.tasks, iterations=2)
    (tmp_path / "hold").touch()
    killed = []
    with RayRunner(families=factories) as runner:
        learner = gem_learner(runner)
        learner.model = marked(learner.model, tmp_path, os.getpid())
        thread = kill_the_first_marked(tmp_path, killed)
        got = trained(learner, runner.tasks, iterations=2)
        thread.join(timeout=5)
        pids = runner.worker_pids()
    # Ray restarted the actor (its family rebuilt from the factory) and ran its call again.
    assert killed and killed[0] not in pids and len(set(pids)) == 2
    assert torch.equal(got[0], reference[0]) and torch.equal(got[1], reference[1])


def test_a_worker_that_keeps_failing_ends_the_run_and_keeps_the_checkpoint(runtime, tmp_path):
    learner = gem_learner(RayRunner(shards=2, max_retries=1))
    learner.model = marked(learner.model, tmp_path, os.getpid())
    out = tmp_path / "run"
    trained(learner, iterations=1, out_dir=out, checkpoint_every=1)
    saved = load_checkpoint(out)[0]
    (tmp_path / "poison").touch()
    with pytest.raises(ShardFailed, match="max_retries=1"):
        trained(learner, iterations=3, out_dir=out, resume=True, checkpoint_every=1)
    state = load_checkpoint(out)[0]
    assert state["iteration"] == 1
    assert torch.equal(state["learner"]["prior"]["loc"], saved["learner"]["prior"]["loc"])


def test_worker_owned_tasks_never_reach_the_driver(runtime, monkeypatch):
    factories = [functools.partial(owned_family, "default")] * 2
    local = LocalRunner(families=factories)
    reference = trained(gem_learner(local), local.tasks)

    def refuse(*args, **kwargs):
        raise AssertionError("a task's data were built in the driver")

    monkeypatch.setattr(TaskBatch, "__init__", refuse)
    monkeypatch.setattr(Sinusoid, "sample", refuse)
    with RayRunner(families=factories) as runner:
        pids = runner.worker_pids()
        got = trained(gem_learner(runner), runner.tasks)
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert torch.equal(got[0], reference[0]) and torch.equal(got[1], reference[1])


def test_meta_rl_rollouts_run_on_the_workers(runtime):
    priors = []
    for runner in (LocalRunner(shards=2), RayRunner(2, shards=2)):
        mf = load_seeded(ROOT / "models" / "navigation.py", settings={"rollouts": 2})
        config = resolve_config(mf.config, {"meta_batch": 2})
        learner = build_learner(mf, config)
        attach_runner(config["method"], learner, runner)
        stats = learner.step(mf.tasks.sample(2, torch.Generator().manual_seed(0)))
        assert "return_support" in stats and stats["nan_tasks"] == []
        priors.append(learner.prior.loc.detach().clone())
    assert torch.equal(priors[0], priors[1])


# Long enough that the driver is killed mid-run, not after its last iteration.
ITERATIONS = 40
DRIVER = """
import sys, torch
sys.path[:0] = [{tests!r}]
from runners.test_local import gem_learner, trained
from pyro_gem.runners import RayRunner
with RayRunner(2, shards=2) as runner:
    loc, _ = trained(gem_learner(runner), iterations={iterations}, out_dir={out!r}, checkpoint_every=1,
                     resume=True)
torch.save(loc, {result!r})
"""


def test_a_driver_killed_with_sigkill_resumes_exactly(tmp_path):
    # Its own Ray runtime, as a user's run has: the runtime fixture is not used.
    out, result = tmp_path / "run", tmp_path / "loc.pt"
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(DRIVER).format(
            tests=str(ROOT / "tests"), out=str(out), result=str(result), iterations=ITERATIONS
        )
    )
    # Each driver starts its own session, so that the Ray processes it leaves can be found.
    first = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        deadline, reached = time.time() + 120, 0
        while time.time() < deadline and reached < 2:
            if (out / "checkpoint.pt").exists():
                reached = load_checkpoint(out)[0]["iteration"]
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)  # kill -9 the driver alone
        first.wait()
        # Killed mid-run: the second driver resumes, it does not start over or find it done.
        assert 2 <= load_checkpoint(out)[0]["iteration"] < ITERATIONS and not result.exists()
        subprocess.run([sys.executable, str(script)], check=True, timeout=300)
    finally:
        # The killed driver's Ray head processes outlive it: stop its session's group.
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reference = trained(gem_learner(LocalRunner(shards=2)), iterations=ITERATIONS)
    assert torch.equal(torch.load(result), reference[0])


def test_a_task_that_diverges_on_a_worker_is_left_out_and_reported(runtime):
    learner = gem_learner(RayRunner(2, shards=2), guide="delta")
    batch = Sinusoid().sample(4, torch.Generator().manual_seed(0))
    y = batch.support[1].clone()
    y[3] = 3e38  # its gradient overflows on the second shard's worker: task 3 turns NaN
    with pytest.warns(UserWarning, match=r"tasks \[3\]"):
        stats = learner.step(TaskBatch((batch.support[0], y), batch.query))
    assert stats["nan_tasks"] == [3] and torch.isfinite(learner.prior.loc).all()


def test_the_cli_trains_a_few_shot_model_file_on_workers(runtime, tmp_path, capsys):
    # The model file travels to the workers by value; 2 workers give the prior of the same 2
    # shards fitted in this process (--shards 2 alone).
    tiny = ROOT / "tests" / "models" / "tiny_fewshot.py"
    common = ["train", str(tiny), "--meta-iterations", "2", "--no-progress", "--seed", "3"]
    assert main(common + ["--out", str(tmp_path / "ray"), "--workers", "2"]) == 0
    assert main(common + ["--out", str(tmp_path / "local"), "--shards", "2"]) == 0
    assert "accuracy" in capsys.readouterr().out
    ray_prior, local_prior = (
        load_checkpoint(tmp_path / name)[0]["learner"]["prior"] for name in ("ray", "local")
    )
    assert torch.equal(ray_prior["loc"], local_prior["loc"])
    assert torch.equal(ray_prior["log_scale"], local_prior["log_scale"])
    config = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert config["shards"] == 2
    assert main(common + ["--out", str(tmp_path / "m"), "--workers", "2", "--method", "maml"]) == 2
    assert "maml cannot run its inner loops on workers" in capsys.readouterr().err
