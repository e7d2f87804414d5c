"""Build the Colab notebooks from the cell lists below (outputs cleared; edit here, not in the .ipynb).

    python colab/build_notebooks.py

Every notebook reads ``FLOWJAX_NOTEBOOK_SMOKE=1`` to shrink its sizes; the test suite executes
each one headless with nbclient at that size.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

INSTALL = '''# Install flowjax (the distribution is `flowjax-fm`) unless it is already importable.
import importlib.util, subprocess, sys
if importlib.util.find_spec("flowjax") is None:
    REPO = "https://github.com/flowjax-fm/flowjax"  # the project's repository
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{REPO}"], check=True)'''

SIZE = '''import os
SMOKE = os.environ.get("FLOWJAX_NOTEBOOK_SMOKE") == "1"  # tiny sizes for the test suite
STEPS = 100 if SMOKE else 4000'''


def nb_quickstart():
    return [
        new_markdown_cell("# flowjax quickstart: conditional flow matching in 2D\n\nTrain a velocity field with "
                          "`flowjax.losses.cfm`, sample it with several solvers, draw the trajectories and the exact density. "
                          "Time convention: `t = 0` is noise, `t = 1` is data."),
        new_code_cell(INSTALL),
        new_code_cell(SIZE),
        new_code_cell('''from functools import partial
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from flowjax import losses, samplers, metrics
from flowjax.data import sample_toy2d, make_sampler_batch_fn
from flowjax.nets import MLP, init_params
from flowjax.train import fit
print(jax.devices())'''),
        new_markdown_cell("## Train\nA loss is a pure function of a model callable `v(x, t)`; `fit` runs the optax loop (several steps per dispatch)."),
        new_code_cell('''net = MLP(hidden=64 if SMOKE else 256, depth=3)
params = init_params(net, jax.random.key(0), jnp.zeros((2, 2)))

def loss_fn(params, key, x1):
    return losses.cfm(lambda x, t: net.apply(params, x, t), key, x1)

batches = make_sampler_batch_fn(partial(sample_toy2d, "moons"), 256, seed=0)
state, history = fit(loss_fn, params, batch_fn=batches, steps=STEPS, key=jax.random.key(1))
plt.plot([h["step"] for h in history], [h["loss"] for h in history]); plt.yscale("log"); plt.xlabel("step"); plt.ylabel("CFM loss");'''),
        new_markdown_cell("## Sample with several solvers\nThe solver is data: a name or a `diffrax` solver."),
        new_code_cell('''v = lambda x, t: net.apply(state.ema_params, x, t)
x0 = jax.random.normal(jax.random.key(2), (2000, 2))
data = sample_toy2d("moons", jax.random.key(3), 2000)
runs = {"euler 4": dict(solver="euler", steps=4), "euler 100": dict(solver="euler", steps=100),
        "heun 8": dict(solver="heun", steps=8), "rk4 4": dict(solver="rk4", steps=4), "tsit5": dict(solver="tsit5")}
fig, axes = plt.subplots(1, len(runs), figsize=(3 * len(runs), 3))
for ax, (name, kw) in zip(axes, runs.items()):
    x1 = samplers.ode(v, x0, **kw)
    sw = metrics.sliced_wasserstein(x1, data, key=jax.random.key(4))
    ax.scatter(x1[:, 0], x1[:, 1], s=1); ax.set_title(f"{name}: SW2 {float(sw):.3f}", fontsize=9); ax.set_aspect("equal")'''),
        new_markdown_cell("## Trajectories and the SDE with the same marginals"),
        new_code_cell('''traj = samplers.ode(v, x0[:64], solver="rk4", steps=32, save_at=jnp.linspace(0, 1, 33))
x_sde = samplers.sde(v, jax.random.key(5), x0, diffusion=1.0, steps=100)
fig, axes = plt.subplots(1, 2, figsize=(7, 3.3))
axes[0].plot(traj[:, :, 0], traj[:, :, 1], lw=0.6); axes[0].set_title("ODE paths")
axes[1].scatter(x_sde[:, 0], x_sde[:, 1], s=1); axes[1].set_title("SDE samples")'''),
        new_markdown_cell("## Exact density by the instantaneous change of variables"),
        new_code_cell('''n = 20 if SMOKE else 60
g = jnp.linspace(-3, 3, n)
grid = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
logp = samplers.log_likelihood(v, grid, solver="rk4", steps=8 if SMOKE else 32)
plt.imshow(np.exp(np.asarray(logp)).reshape(n, n), origin="lower", extent=(-3, 3, -3, 3)); plt.title("p_1(x)");
print("mean NLL of held-out data:", float(-samplers.log_likelihood(v, data[:200], solver="rk4", steps=16).mean()))'''),
    ]


def nb_scale_out():
    return [
        new_markdown_cell("# Scale out: the same training step on a mesh of 8 devices\n\nOn a CPU runtime we fake 8 devices; "
                          "on a Colab TPU (v2-8) the 8 real cores are used. The step, the data and the checkpoints do not change."),
        new_code_cell('''import os
# Must run before JAX starts: eight fake CPU devices when no accelerator is present.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")'''),
        new_code_cell(INSTALL),
        new_code_cell(SIZE),
        new_code_cell('''from functools import partial
import tempfile
import jax, jax.numpy as jnp, numpy as np
from flowjax import losses
from flowjax.data import sample_toy2d, make_sampler_batch_fn
from flowjax.nets import MLP, init_params
from flowjax.train import fit, make_mesh, sharding
print(len(jax.devices()), "devices:", jax.devices()[0].device_kind)'''),
        new_markdown_cell("## A mesh with `data` and `fsdp` axes\n`make_mesh` builds a `(data, fsdp, tensor)` mesh; the batch is split over `(data, fsdp)`, "
                          "parameters over `fsdp` (largest divisible axis)."),
        new_code_cell('''n = len(jax.devices())
mesh = make_mesh(data=n // 2 if n % 2 == 0 and n > 1 else n, fsdp=2 if n % 2 == 0 and n > 1 else 1)
print(mesh.shape)
net = MLP(hidden=128, depth=3)
params = init_params(net, jax.random.key(0), jnp.zeros((2, 2)))
print({k: str(s.spec) for k, s in zip(["w0", "b0"], jax.tree.leaves(sharding.state_sharding(params, mesh))[:2])})'''),
        new_markdown_cell("## Train sharded and unsharded: same result"),
        new_code_cell('''def loss_fn(params, key, x1):
    return losses.cfm(lambda x, t: net.apply(params, x, t), key, x1)

batches = make_sampler_batch_fn(partial(sample_toy2d, "8gaussians"), 256, seed=0)
steps = 40 if SMOKE else 1000
single, h1 = fit(loss_fn, params, batch_fn=batches, steps=steps, key=jax.random.key(1))
sharded, h2 = fit(loss_fn, params, batch_fn=batches, steps=steps, key=jax.random.key(1), mesh=mesh)
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)))
print("max parameter difference, 1 device vs mesh:", diff)'''),
        new_markdown_cell("## Checkpoints: atomic, resumable, exact\nWith a `workdir`, `fit` saves Orbax checkpoints; calling it again resumes from the newest complete one "
                          "(parameters, optimizer, EMA, step, RNG key and data position)."),
        new_code_cell('''workdir = tempfile.mkdtemp()
half, _ = fit(loss_fn, params, batch_fn=batches, steps=steps // 2, key=jax.random.key(1), workdir=workdir, checkpoint_every=max(1, steps // 4))
resumed, _ = fit(loss_fn, params, batch_fn=batches, steps=steps, key=jax.random.key(1), workdir=workdir, checkpoint_every=max(1, steps // 4))
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(resumed.params)))
print("resumed step", int(resumed.step), "| difference to the unbroken run:", diff)'''),
        new_markdown_cell("## On a TPU pod\nRun the same script on every host (e.g. `gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...`). "
                          "Call `flowjax.train.sharding.initialize_distributed()` first (it wraps `jax.distributed.initialize()`); "
                          "each host's `batch_fn` returns its local slice of the global batch (the batchers in `flowjax.data` do this with "
                          "`process_index`/`process_count`), and only process 0 writes logs:\n\n"
                          "```bash\npython -m experiments.run cfm --preset tpu --out gs://bucket/run1\n```"),
    ]


NOTEBOOKS = {"01_quickstart.ipynb": nb_quickstart, "05_scale_out.ipynb": nb_scale_out}


def build() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells(), metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                                    "language_info": {"name": "python"}, "accelerator": "GPU"})
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    build()
