"""pix2pixHD's objectives and resize-convolution upsampling (issue 25): multi-scale
discriminators, discriminator feature matching, the VGG19 loss and ``model.upsample: resize``.

Each is checked against its formula written out here, independently of p2p's code, on small
tensors with random weights on the CPU; then through the real command: training, resume,
checkpoints, export, two processes, and the errors a user can meet."""

import contextlib
import copy
import hashlib
import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import skip_or_fail
from p2p_testing import seed_convolutions
from torch import nn
from torchvision.models import vgg19

from p2p.errors import P2PError
from p2p.metrics import backbones
from p2p.metrics.inception import WeightsFile
from p2p.models import (
    DiscriminatorConfig,
    GeneratorConfig,
    MultiscaleDiscriminator,
    PatchDiscriminator,
    build_discriminator,
    build_generator,
    count_parameters,
    init_weights,
)
from p2p.recipe import recipe_from_dict
from p2p.training import footprint, vgg
from p2p.training.loop import build_models, train_step
from p2p.weights import checkpoint, load_checkpoint, load_generator

CPU = torch.device("cpu")


def tiny_recipe(model: dict | None = None, train: dict | None = None):
    """32x32, batch 2; no norm layers and no dropout, so that every forward pass is a plain
    function of the weights and the formulas below can repeat it."""
    return recipe_from_dict({
        "data": {"batch_size": 2, "crop_size": 32, "load_size": 32},
        "model": {"num_downs": 5, "ngf": 4, "ndf": 4, "norm": "none", "d_norm": "none",
                  "dropout": False, **(model or {})},
        "train": {"amp": False, **(train or {})}})


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(2, 6, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return x[:, :3], x[:, 3:]


def pooled(x: torch.Tensor) -> torch.Tensor:
    """3x3 windows at stride 2 with a border of 1: each output is the mean of the window's
    pixels that lie inside the image (the padding is not counted)."""
    n, c, h, w = x.shape
    out = torch.empty(n, c, (h + 1) // 2, (w + 1) // 2)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            window = x[:, :, max(2 * i - 1, 0):2 * i + 2, max(2 * j - 1, 0):2 * j + 2]
            out[:, :, i, j] = window.mean(dim=(2, 3))
    return out


def hidden_features(patchgan: PatchDiscriminator, x: torch.Tensor) -> list[torch.Tensor]:
    """What each LeakyReLU of a PatchGAN outputs, caught with hooks."""
    caught = []
    hooks = [m.register_forward_hook(lambda module, args, out: caught.append(out.clone()))
             for m in patchgan.modules() if isinstance(m, nn.LeakyReLU)]
    try:
        patchgan.model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return caught


def bce(logits: torch.Tensor, label: float) -> torch.Tensor:
    p = torch.sigmoid(logits.double())
    return -(label * torch.log(p) + (1 - label) * torch.log(1 - p)).mean()


# ---- multi-scale discriminators ------------------------------------------------------------

def test_the_kth_discriminator_judges_the_pair_pooled_k_times():
    torch.manual_seed(0)
    config = DiscriminatorConfig(ndf=4, n_layers=1, norm="none", scales=3)
    d = init_weights(build_discriminator(config))
    assert isinstance(d, MultiscaleDiscriminator) and len(d.scales) == 3
    assert all(s.config == config for s in d.scales)  # the same d_layers, ndf and d_norm
    assert not torch.equal(d.scales[0].model[0].weight, d.scales[1].model[0].weight)
    x = torch.randn(2, 6, 22, 22)  # 22 -> 11 -> 6: odd sides, windows cut by every border
    seen = x
    for k, output in enumerate(d(x)):
        torch.testing.assert_close(output, d.scales[k].model(seen), rtol=1e-5, atol=1e-6)
        seen = pooled(seen)
    assert isinstance(build_discriminator(DiscriminatorConfig()), PatchDiscriminator)


@pytest.mark.parametrize("d_layers, scales", [(1, 3), (2, 2)])
def test_gan_losses_average_the_scales_and_feature_matching_weighs_layers_and_scales(
        d_layers, scales):
    recipe = tiny_recipe({"d_layers": d_layers, "d_scales": scales}, {"lambda_feat": 10})
    models = build_models(recipe, CPU)
    before = copy.deepcopy(models)
    source, target = batch()
    losses = train_step(models, source, target, recipe, contextlib.nullcontext())

    with torch.no_grad():
        fake = before.generator(source)
        real_pairs, fake_pairs = [torch.cat([source, target], 1)], [torch.cat([source, fake], 1)]
        for _ in range(scales - 1):
            real_pairs.append(pooled(real_pairs[-1]))
            fake_pairs.append(pooled(fake_pairs[-1]))
        old, new = before.discriminator.scales, models.discriminator.scales  # D before, after
        d_real = sum(bce(old[k].model(real_pairs[k]), 1) for k in range(scales)) / scales
        d_fake = sum(bce(old[k].model(fake_pairs[k]), 0) for k in range(scales)) / scales
        # The generator step sees the updated discriminator.
        g_gan = sum(bce(new[k].model(fake_pairs[k]), 1) for k in range(scales)) / scales
        g_feat = 0.0
        for k in range(scales):
            on_fake = hidden_features(new[k], fake_pairs[k])
            on_real = hidden_features(new[k], real_pairs[k])
            assert len(on_fake) == d_layers + 1
            for f, r in zip(on_fake, on_real, strict=True):
                g_feat += 4 / (d_layers + 1) / scales * (f - r).abs().mean()
        g_l1 = (fake - target).abs().mean()
    expected = {"g_gan": g_gan, "g_l1": g_l1, "g_feat": g_feat, "d_real": d_real,
                "d_fake": d_fake}
    assert list(losses) == ["g_gan", "g_l1", "g_feat", "d_real", "d_fake"]
    for key, value in expected.items():
        torch.testing.assert_close(losses[key].double(), torch.as_tensor(value).double(),
                                   rtol=1e-5, atol=1e-6, msg=key)


def test_feature_matching_is_a_generator_loss_only():
    # lambda_feat changes the generator's update, never the discriminator's.
    source, target = batch(1)
    results = {}
    for weight in (0, 10):
        recipe = tiny_recipe({"d_layers": 2, "d_scales": 2}, {"lambda_feat": weight})
        models = build_models(recipe, CPU)
        train_step(models, source, target, recipe, contextlib.nullcontext())
        results[weight] = models
    for name, tensor in results[0].discriminator.state_dict().items():
        assert torch.equal(tensor, results[10].discriminator.state_dict()[name]), name
    assert not all(torch.equal(a, b) for a, b in zip(
        results[0].generator.parameters(), results[10].generator.parameters(), strict=True))


# ---- the VGG19 loss -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg_layers() -> nn.Sequential:
    """torchvision's VGG19 convolutions up to relu5_1 with seeded random weights (built on the
    meta device first: the classifier's 120M weights are never made)."""
    with torch.device("meta"):
        layers = vgg19().features[:30]
    layers = layers.to_empty(device="cpu")
    seed_convolutions(layers)
    return layers.requires_grad_(False)


def vgg_loss_formula(layers: nn.Sequential, fake: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
    """L1 between the features at the first ReLU of each of VGG19's five blocks, weighted
    1/32, 1/16, 1/8, 1/4, 1, on images mapped from [-1, 1] to ImageNet's normalization."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def features(x):
        x, found, block, first = ((x + 1) / 2 - mean) / std, [], 0, True
        for layer in layers:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                block, first = block + 1, True
            elif isinstance(layer, nn.ReLU) and first:
                found.append(x.clone())
                first = False
        assert block == 4 and len(found) == 5
        return found

    weights = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1]
    return sum(w * (f - t).abs().mean()
               for w, f, t in zip(weights, features(fake), features(target), strict=True))


def test_the_vgg_loss_is_the_weighted_l1_of_five_relu_features(vgg_layers):
    recipe = tiny_recipe(train={"lambda_vgg": 10})
    models = build_models(tiny_recipe(), CPU)  # the same networks, without loading VGG19's file
    models.vgg = vgg.VGGFeatures(vgg_layers).eval()
    before = copy.deepcopy(models.generator)
    source, target = batch(2)
    losses = train_step(models, source, target, recipe, contextlib.nullcontext())
    with torch.no_grad():
        expected = vgg_loss_formula(vgg_layers, before(source), target)
    assert list(losses) == ["g_gan", "g_l1", "g_vgg", "d_real", "d_fake"]
    torch.testing.assert_close(losses["g_vgg"], expected, rtol=1e-5, atol=1e-6)


def test_a_gray_output_is_read_as_three_equal_channels(vgg_layers):
    network = vgg.VGGFeatures(vgg_layers)
    gray = torch.rand(1, 1, 32, 32) * 2 - 1
    for a, b in zip(network(gray), network(gray.expand(-1, 3, -1, -1)), strict=True):
        torch.testing.assert_close(a, b)


# ---- resize-convolution upsampling ----------------------------------------------------------

@pytest.mark.parametrize("architecture", ["unet", "resnet"])
def test_resize_upsampling_is_nearest_doubling_then_a_3x3_convolution(architecture):
    torch.manual_seed(0)
    config = GeneratorConfig(num_downs=5, ngf=4, architecture=architecture, blocks=2,
                             upsample="resize")
    generator = init_weights(build_generator(config))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())
    for block in generator.up:
        conv = block.conv
        assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
        x = torch.randn(1, conv.in_channels, 4, 6)
        doubled = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        torch.testing.assert_close(conv(block.upsample(x)),
                                   F.conv2d(doubled, conv.weight, conv.bias, padding=1))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        y = generator.eval()(x)
    assert y.shape == x.shape and y.abs().max() <= 1


def test_resize_leaves_no_checkerboard_where_a_stride_2_transposed_convolution_does():
    # A constant image through the ResNet's last doubling with every kernel weight 1: a 3x3
    # transposed convolution at stride 2 gives its output pixels 1, 2 or 4 taps in a grid; the
    # resize convolution gives every pixel away from the border the same 9.
    interiors = {}
    for upsample in ("transpose", "resize"):
        block = build_generator(GeneratorConfig(ngf=4, norm="none", architecture="resnet",
                                                blocks=1, upsample=upsample)).up[1]
        nn.init.ones_(block.conv.weight)
        with torch.no_grad():
            interiors[upsample] = block(torch.ones(1, 8, 6, 6))[..., 2:-2, 2:-2].unique()
    assert interiors["resize"].tolist() == [72.0]  # 9 taps x 8 channels
    assert len(interiors["transpose"]) > 1


def test_a_resize_generator_round_trips_through_checkpoints_and_exports(cli, tmp_path):
    torch.manual_seed(0)
    generator = init_weights(build_generator(GeneratorConfig(num_downs=5, ngf=4,
                                                             upsample="resize"))).eval()
    path = tmp_path / "resize.pt"
    checkpoint.save_checkpoint(path, checkpoint.generator_state(generator, "AtoB", 32))
    loaded, state = load_generator(path)
    assert state["generator_config"]["upsample"] == "resize" and loaded.config == generator.config
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), generator(x))
    r = cli("zoo", "export", path, tmp_path / "g.ts", "--format", "torchscript")
    assert r.exit_code == 0 and "checked with torchscript" in r.stderr, r.stderr
    r = cli("zoo", "export", path, tmp_path / "folder", "--format", "hf")
    assert r.exit_code == 0, r.stderr
    exported, folder_state = load_generator(tmp_path / "folder")
    assert folder_state["generator_config"]["upsample"] == "resize"
    with torch.no_grad():
        torch.testing.assert_close(exported.eval()(x), generator(x))
    if importlib.util.find_spec("onnxruntime") is None:
        skip_or_fail("onnxruntime is not installed (the onnx extra)", "CI")
    r = cli("zoo", "export", path, tmp_path / "g.onnx", "--format", "onnx")
    assert r.exit_code == 0 and "checked with onnxruntime" in r.stderr, r.stderr


def test_what_a_checkpoint_records_of_the_upsampling_is_checked(tmp_path):
    transposed = build_generator(GeneratorConfig(num_downs=5, ngf=4))
    state = checkpoint.generator_state(transposed, "AtoB", 32)
    # The published layout records no upsample key, as before, and loads as it always did.
    assert "upsample" not in state["generator_config"]
    checkpoint.save_checkpoint(tmp_path / "old.pt", state)
    loaded, _ = load_generator(tmp_path / "old.pt")
    assert isinstance(loaded.up[0].conv, nn.ConvTranspose2d)
    for value, message in (("resize", "does not load"),
                           ("bilinear", "generator_config.upsample must be one of transpose, "
                                        "resize")):
        state["generator_config"]["upsample"] = value
        checkpoint.save_checkpoint(tmp_path / "edited.pt", state)
        with pytest.raises(P2PError, match=message):
            load_generator(tmp_path / "edited.pt")


# ---- the defaults are the published pix2pix, bit for bit -------------------------------------

def reference_pix2pix_step(models, source: torch.Tensor, target: torch.Tensor) -> dict:
    """The published pix2pix iteration written out: D learns (A, B) -> real and (A, G(A)) ->
    fake with BCE; then G minimises BCE(D(A, G(A)), real) + 100 L1(G(A), B)."""
    g, d = models.generator, models.discriminator
    fake = g(source)
    d.requires_grad_(True)
    models.opt_d.zero_grad(set_to_none=True)
    on_fake, on_real = d(torch.cat([source, fake.detach()], 1)), d(torch.cat([source, target], 1))
    d_real = F.binary_cross_entropy_with_logits(on_real, torch.ones_like(on_real))
    d_fake = F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake))
    (0.5 * (d_real + d_fake)).backward()
    models.opt_d.step()
    d.requires_grad_(False)
    models.opt_g.zero_grad(set_to_none=True)
    on_fake = d(torch.cat([source, fake], 1))
    g_gan = F.binary_cross_entropy_with_logits(on_fake, torch.ones_like(on_fake))
    g_l1 = F.l1_loss(fake, target)
    (g_gan + 100 * g_l1).backward()
    models.opt_g.step()
    models.sched_g.step()
    models.sched_d.step()
    return {"g_gan": g_gan, "g_l1": g_l1, "d_real": d_real, "d_fake": d_fake}


def test_the_defaults_train_the_published_pix2pix_bit_for_bit():
    # Batch norm, dropout, transposed convolutions, one PatchGAN, no extra loss.
    recipe = recipe_from_dict({"data": {"batch_size": 2, "crop_size": 32, "load_size": 32},
                               "model": {"num_downs": 5, "ngf": 4, "ndf": 4},
                               "train": {"amp": False}})
    assert GeneratorConfig().to_dict().keys() == {"in_channels", "out_channels", "num_downs",
                                                  "ngf", "norm", "dropout", "architecture",
                                                  "blocks"}
    ours, reference = build_models(recipe, CPU), build_models(recipe, CPU)
    assert type(ours.discriminator) is PatchDiscriminator
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in ours.generator.modules()) == 5
    for iteration in range(3):
        source, target = batch(iteration)
        torch.manual_seed(10 + iteration)  # the dropout masks
        losses = train_step(ours, source, target, recipe, contextlib.nullcontext())
        torch.manual_seed(10 + iteration)
        expected = reference_pix2pix_step(reference, source, target)
        assert list(losses) == list(expected)
        for key, value in expected.items():
            assert torch.equal(losses[key], value.detach()), key
    for part in ("generator", "discriminator"):
        theirs = getattr(reference, part).state_dict()
        for name, tensor in getattr(ours, part).state_dict().items():
            assert torch.equal(tensor, theirs[name]), f"{part}.{name}"


# ---- through the command: training, resume, two processes ------------------------------------

def write_vgg_weights(path) -> bytes:
    """A VGG19 weights file in torchvision's layout that is small on disk: each weight tensor is
    one number, 1 / fan-in, repeated (stride 0), which keeps the activations O(1)."""
    with torch.device("meta"):
        layers = vgg19().features
    state = {}
    for key, tensor in layers.state_dict().items():
        value = 1 / tensor[0].numel() if key.endswith("weight") else 0.0
        state[f"features.{key}"] = torch.tensor(value).expand(tensor.shape)
    torch.save(state, path)
    return path.read_bytes()


HD = """
name: hd
data: {{path: {data}, load_size: 36, crop_size: 32, batch_size: 2}}
model: {{num_downs: 5, ngf: 4, ndf: 4, d_layers: 2, d_scales: 2, upsample: resize{model}}}
train: {{iters: {iters}, log_every: 1, sample_every: 100, checkpoint_every: 1, amp: false,
         lambda_feat: 10, lambda_vgg: 10, vgg_weights: {vgg}{train}}}
"""


@pytest.fixture
def hd(tmp_path):
    """6 generated 32x32 pairs, a VGG19 file; returns (iters, model=..., train=...) -> recipe."""
    import numpy as np

    from p2p.data.synthetic import make_pair

    rng = np.random.default_rng(0)
    (tmp_path / "data" / "train").mkdir(parents=True)
    for i in range(6):
        make_pair(rng, size=32).save(tmp_path / "data" / "train" / f"{i}.png")
    write_vgg_weights(tmp_path / "vgg19.pth")
    made = []

    def recipe(iters: int, model: str = "", train: str = ""):
        path = tmp_path / f"hd{len(made)}.yaml"
        path.write_text(HD.format(data=tmp_path / "data", iters=iters, vgg=tmp_path / "vgg19.pth",
                                  model=model and f", {model}", train=train and f", {train}"))
        made.append(path)
        return path

    return recipe


def test_training_logs_the_new_losses_records_them_and_resumes_bit_identically(cli, hd,
                                                                                tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    assert cli("train", hd(2), "--out", full).exit_code == 0
    assert cli("train", hd(1), "--out", split).exit_code == 0
    r = cli("train", "--resume", split, "--iters", "2")
    assert r.exit_code == 0, r.stderr
    a, b = load_checkpoint(full), load_checkpoint(split)
    for part in ("generator", "discriminator"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name}"
    assert a["generator_config"]["upsample"] == "resize"
    assert a["discriminator_config"]["scales"] == 2
    assert any(name.startswith("scales.1.") for name in a["discriminator"])
    records = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert all({"g_feat", "g_vgg"} <= set(record) for record in records)
    assert all(record["g_feat"] > 0 and record["g_vgg"] > 0 for record in records)
    r = cli("report", full)
    assert r.exit_code == 0, r.stderr
    page = (full / "report.html").read_text()
    assert "<th>G feat</th>" in page and "<th>G VGG</th>" in page
    # The exports take the generator alone, whatever the discriminators were.
    r = cli("zoo", "export", f"{full}@latest", tmp_path / "g.ts", "--format", "torchscript")
    assert r.exit_code == 0 and "checked with torchscript" in r.stderr, r.stderr


def test_recipe_values_that_cannot_train_are_refused_in_one_line(cli, hd, tmp_path):
    cases = [
        ("--set", "data.out_channels=4", "train.lambda_vgg needs 1- or 3-channel outputs"),
        ("--set", "model.d_scales=0", "model.d_scales must be between 1 and 4"),
        ("--set", "model.d_scales=4", "too small for model.d_layers 2 at model.d_scales 4"),
        ("--set", "train.lambda_feat=-1", "train.lambda_feat must be a finite number >= 0"),
        ("--set", "model.upsample=bilinear", "model.upsample: 'bilinear' is not one of "
         "transpose, resize"),
    ]
    for option, value, message in cases:
        r = cli("train", hd(2), "--out", tmp_path / "run", option, value)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], (value, r.stderr)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_processes_train_multi_scale_discriminators_as_one(cli, hd, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets for its processes anyway
    # Across processes on CPU: no batch norm (SyncBatchNorm needs GPUs), no dropout (each rank
    # draws its own masks).
    # The VGG19 loss is left out: each process runs its frozen network on its own images.
    recipe = hd(2, model="norm: none, d_norm: none, dropout: false", train="lambda_vgg: 0")
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("train", recipe, "--out", one).exit_code == 0
    r = cli("train", recipe, "--out", two, "--nproc", "2")
    assert r.exit_code == 0, r.stderr
    a, b = load_checkpoint(one), load_checkpoint(two)
    for part in ("generator", "discriminator"):
        # The same sums reduced in another order. Adam divides each gradient by its own size,
        # so where one nearly cancels (a last bias at init) the rounding shows at ~1e-6; a
        # missing term or scale moves weights by the learning rate, 2e-4.
        for name, tensor in a[part].items():
            torch.testing.assert_close(tensor, b[part][name], rtol=1e-5, atol=1e-5,
                                       msg=f"{part}.{name}")
    records = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert [record["iteration"] for record in records] == [1, 2]  # rank 0 alone writes
    assert all("g_feat" in record and "g_vgg" not in record for record in records)


# ---- the VGG19 weights ----------------------------------------------------------------------

def test_the_vgg19_weights_are_torchvisions_file_checked_by_the_prefix_in_its_name():
    # torchvision names its files with the first 8 hex digits of their sha256 and checks them.
    spec = backbones.VGG19_WEIGHTS
    assert spec.url == "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
    assert (spec.filename, spec.sha256) == ("vgg19-dcbb9e9d.pth", "dcbb9e9d")


def test_missing_vgg_weights_are_downloaded_verified_and_loaded(http_server, monkeypatch,
                                                               p2p_home, tmp_path):
    body = write_vgg_weights(tmp_path / "served.pth")
    http_server.add("/vgg19.pth", body)
    served = WeightsFile(backbones.VGG19_WEIGHTS.what, backbones.VGG19_WEIGHTS.filename,
                         f"{http_server.url}/vgg19.pth", hashlib.sha256(body).hexdigest()[:8])
    monkeypatch.setattr(vgg, "VGG19_WEIGHTS", served)
    path = vgg.locate(None)
    assert path == p2p_home / "weights" / "vgg19-dcbb9e9d.pth" and path.read_bytes() == body
    features = vgg.vgg_features(path)(torch.zeros(1, 3, 32, 32))
    assert [f.shape[1] for f in features] == [64, 128, 256, 512, 512]
    path.unlink()
    monkeypatch.setattr(vgg, "VGG19_WEIGHTS", WeightsFile(
        served.what, served.filename, served.url, "00000000"))
    with pytest.raises(P2PError, match="checksum mismatch"):
        vgg.locate(None)
    assert not path.exists()


def test_offline_the_error_names_the_url_the_sha256_and_where_to_put_the_file(
        cli, hd, http_server, monkeypatch, p2p_home, tmp_path):
    http_server.add("/gone.pth", status=404)
    url = f"{http_server.url}/gone.pth"
    monkeypatch.setattr(vgg, "VGG19_WEIGHTS", WeightsFile(
        backbones.VGG19_WEIGHTS.what, backbones.VGG19_WEIGHTS.filename, url, "dcbb9e9d"))
    r = cli("train", hd(2, train="vgg_weights: null"), "--out", tmp_path / "run")
    error = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.exit_code == 2 and len(error) == 1 and "Traceback" not in r.stderr, r.stderr
    for part in (url, "sha256 begins with dcbb9e9d",
                 f"save it as {p2p_home / 'weights' / 'vgg19-dcbb9e9d.pth'}",
                 "set train.vgg_weights"):
        assert part in error[0], part
    assert not (tmp_path / "run").exists()
    r = cli("train", hd(2), "--out", tmp_path / "run", "--set",
            f"train.vgg_weights={tmp_path / 'nowhere.pth'}")
    assert r.exit_code == 2 and f"{tmp_path / 'nowhere.pth'}: no such file (VGG19" in r.stderr
    assert url in r.stderr and "dcbb9e9d" in r.stderr


def test_the_memory_estimate_stays_a_lower_bound_with_resize_and_scales():
    recipe = recipe_from_dict({"data": {"load_size": 64, "crop_size": 64},
                               "model": {"num_downs": 6, "ngf": 8, "ndf": 8, "d_scales": 2,
                                         "upsample": "resize"}})
    models = build_models(recipe, CPU)
    weights = count_parameters(models.generator)
    assert 0.98 * weights < footprint.generator_weights(recipe) <= weights
    assert footprint.discriminator_weights(recipe) <= count_parameters(models.discriminator)
    assert footprint.discriminator_weights(recipe) > 0.98 * count_parameters(models.discriminator)
