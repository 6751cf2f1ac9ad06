"""The translation core: test-time modes, padding, planning."""

import copy
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p import device as device_module
from p2p.device import autocast_dtype
from p2p.errors import P2PError
from p2p.images.raster import pad_to_multiple
from p2p.inference.generator import run_generator
from p2p.inference.translate import plan_jobs
from p2p.models import GeneratorConfig, UnetGenerator, init_weights


def tiny_generator(dropout: bool = False) -> UnetGenerator:
    torch.manual_seed(0)
    generator = init_weights(UnetGenerator(GeneratorConfig(num_downs=5, ngf=8, dropout=dropout)))
    with torch.no_grad():  # running statistics unlike any batch's, so eval mode differs
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return generator


@pytest.mark.parametrize("was_training", [True, False])
def test_paper_mode_is_batch_size_one_training_mode_for_every_image(was_training):
    generator = tiny_generator().train(was_training)
    before = copy.deepcopy(generator.state_dict())
    batch = torch.rand(3, 3, 32, 32) * 2 - 1
    out = run_generator(generator, batch, paper_mode=True, precision="fp32")
    reference = copy.deepcopy(generator).train()
    with torch.no_grad():
        expected = torch.cat([reference(image[None]) for image in batch])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    # The module comes back as it was: same mode, same running statistics, its own forward.
    assert generator.training is was_training
    for key, value in generator.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all("forward" not in vars(m) for m in generator.modules())


def test_eval_mode_uses_running_statistics():
    generator = tiny_generator(dropout=True)
    batch = torch.rand(2, 3, 32, 32) * 2 - 1
    out = run_generator(generator, batch, paper_mode=False, precision="fp32")
    with torch.no_grad():
        expected = copy.deepcopy(generator).eval()(batch)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, run_generator(generator, batch, paper_mode=True), atol=1e-3)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 32, 32)


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 80), width=st.integers(1, 80), multiple=st.sampled_from([8, 32]))
def test_pad_to_multiple_keeps_the_image_top_left(height, width, multiple):
    x = torch.rand(3, height, width)
    padded = pad_to_multiple(x, multiple)
    assert padded.shape[1] % multiple == 0 and padded.shape[2] % multiple == 0
    assert padded.shape[1] - height < multiple and padded.shape[2] - width < multiple
    assert torch.equal(padded[:, :height, :width], x)


def test_plan_refuses_two_inputs_for_one_output(tmp_path: Path):
    (tmp_path / "in").mkdir()
    for name in ("a.png", "a.jpg"):
        (tmp_path / "in" / name).write_bytes(b"x")
    with pytest.raises(P2PError, match="both be written"):
        plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"))


def test_plan_skips_an_output_folder_inside_the_input(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "out" / "old.png").write_bytes(b"x")
    plan = plan_jobs(str(tmp_path), str(tmp_path / "out"))
    assert [job.name for job in plan.jobs] == [str(tmp_path / "a.png")]


# ---- precision -------------------------------------------------------------------------------

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_precision_resolves_by_the_cpus_native_bf16(native, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    assert autocast_dtype("fp32", CPU) is None
    assert autocast_dtype("auto", CPU) == (torch.bfloat16 if native else None)
    if native:
        assert autocast_dtype("bf16", CPU) == torch.bfloat16
    else:  # emulated bf16 is slower than fp32: refused, naming the way out
        with pytest.raises(P2PError, match="no native bf16.*") as error:
            autocast_dtype("bf16", CPU)
        assert "--precision fp32 or auto" in str(error.value)
    with pytest.raises(P2PError, match="'fp16' is not a precision"):
        autocast_dtype("fp16", CPU)


def test_bf16_runs_the_generator_in_bf16_and_returns_float32(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    generator = tiny_generator()
    batch = torch.rand(2, 3, 32, 32) * 2 - 1
    seen = []
    generator.down[1].conv.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    fp32 = run_generator(generator, batch, paper_mode=False, precision="fp32")
    bf16 = run_generator(generator, batch, paper_mode=False, precision="bf16")
    assert seen == [torch.float32, torch.bfloat16]
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert 0 < (bf16 - fp32).abs().max() < 0.1  # bf16 rounding, not another computation
