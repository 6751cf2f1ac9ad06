"""Speed measures: freed memory kept in the process on CPU, compiled modules in training."""

import contextlib
import subprocess
import sys

import pytest
import torch

from p2p import memory
from p2p.recipe import recipe_from_dict
from p2p.training import loop as core

FAULTS = """
import resource, torch
from p2p.memory import reuse_freed_memory


def churn():
    # Allocate, touch and free 40 MB blocks, as each training iteration does its gradients and
    # oneDNN scratch buffers (above 32 MB, glibc maps each block afresh by default).
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        torch.ones(10 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


churn()
by_default = churn()
with reuse_freed_memory(torch.device("cpu")):
    with reuse_freed_memory(torch.device("cpu")):  # nested: the outer one's settings hold
        pass
    # Steady state: the first rounds may still grow the heap around small allocations.
    print(by_default, min(churn() for _ in range(4)))
"""


@pytest.mark.skipif(memory._glibc() is None, reason="glibc malloc only")
def test_freed_memory_is_reused_without_page_faults_on_cpu():
    # A fresh process: what the heap holds after other tests would change the default's count.
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True,
                         check=True).stdout
    by_default, reusing = map(int, out.split())
    assert by_default > 8 * 8000  # 10,240 page faults per block
    assert reusing < 500


def test_train_step_accepts_compiled_modules():
    recipe = recipe_from_dict({"data": {"load_size": 32, "crop_size": 32},
                               "model": {"num_downs": 5, "ngf": 8, "ndf": 8}})
    models = core.build_models(recipe, torch.device("cpu"))
    source, target = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    # "eager" traces with dynamo but skips inductor's compiler: the same wrapper, in seconds.
    compiled_g = torch.compile(models.generator, backend="eager")
    compiled_d = torch.compile(models.discriminator, backend="eager")
    losses = core.train_step(models, source, target, recipe, contextlib.nullcontext(),
                             compiled_g, compiled_d)
    assert set(losses) == {"g_gan", "g_l1", "d_real", "d_fake"}
    assert all(torch.isfinite(v) for v in losses.values())
