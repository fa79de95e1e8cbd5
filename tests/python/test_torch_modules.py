"""normgen.torch's modules: torch's state (state_dict keys and values both ways),
train()/eval() behaviour against torch's modules, convert_modules on real models trained
side by side with the originals, and the modules torch lacks."""
import copy

import pytest
import torch
from torch import nn

import normgen as ng
import normgen.torch as ngt
from conftest import assert_close

F = nn.functional

# (torch class, normgen class, constructor args, input shape)
PAIRS = [
    (nn.LayerNorm, ngt.LayerNorm, (32,), (4, 6, 32)),
    (nn.RMSNorm, ngt.RMSNorm, (32,), (4, 6, 32)),
    (nn.BatchNorm1d, ngt.BatchNorm1d, (12,), (16, 12)),
    (nn.BatchNorm1d, ngt.BatchNorm1d, (12,), (8, 12, 10)),
    (nn.BatchNorm2d, ngt.BatchNorm2d, (12,), (6, 12, 5, 5)),
    (nn.BatchNorm3d, ngt.BatchNorm3d, (6,), (4, 6, 3, 4, 5)),
    (nn.InstanceNorm1d, ngt.InstanceNorm1d, (12,), (3, 12, 20)),
    (nn.InstanceNorm2d, ngt.InstanceNorm2d, (12,), (3, 12, 6, 6)),
    (nn.InstanceNorm3d, ngt.InstanceNorm3d, (6,), (2, 6, 3, 4, 5)),
    (nn.GroupNorm, ngt.GroupNorm, (4, 12), (3, 12, 6, 6)),
]
IDS = [f"{p[0].__name__}{p[3]}" for p in PAIRS]


def _randomize(m):
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.empty_like(p).uniform_(0.5, 1.5) if "weight" in name else torch.randn_like(p) * 0.3)
        for name, b in m.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) + 5)
            elif name.endswith("running_var"):
                b.copy_(torch.empty_like(b).uniform_(0.5, 2.0))
    return m


def _kwargs(cls):
    if cls in (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d):
        return {"affine": True, "track_running_stats": True}
    return {}


@pytest.mark.parametrize("tcls,ncls,args,shape", PAIRS, ids=IDS)
def test_state_dict_round_trip(tcls, ncls, args, shape):
    t = _randomize(tcls(*args, **_kwargs(tcls)))
    n = ncls(*args, **_kwargs(tcls))
    assert isinstance(n, tcls)
    n.load_state_dict(t.state_dict())
    assert list(n.state_dict()) == list(t.state_dict())
    back = tcls(*args, **_kwargs(tcls))
    back.load_state_dict(n.state_dict())
    for k, v in t.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert repr(n) == repr(t)


@pytest.mark.parametrize("tcls,ncls,args,shape", PAIRS, ids=IDS)
def test_train_and_eval_match_torch(tcls, ncls, args, shape):
    t = _randomize(tcls(*args, **_kwargs(tcls)))
    n = ncls(*args, **_kwargs(tcls))
    n.load_state_dict(t.state_dict())
    for mode in ("train", "train", "eval", "train"):
        getattr(t, mode)()
        getattr(n, mode)()
        x = (torch.randn(shape) + 3).requires_grad_(True)
        g = torch.randn(shape)
        yt = t(x)
        (yt * g).sum().backward()
        gt, x.grad = x.grad, None
        yn = n(x)
        (yn * g).sum().backward()
        red = int(torch.tensor(shape).prod()) // shape[1] if tcls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) else shape[-1] * 4
        assert_close(yn.detach(), yt.detach(), torch.float32, red, f"{tcls.__name__} {mode} y")
        assert_close(x.grad, gt, torch.float32, red, f"{tcls.__name__} {mode} dx", scale=gt.abs().max().item() * 4)
        for (name, pt), (_, pn) in zip(t.named_parameters(), n.named_parameters()):
            assert_close(pn.grad, pt.grad, torch.float32, red * shape[0], f"{tcls.__name__} {mode} d{name}",
                         scale=pt.grad.abs().max().item() * 4)
            pt.grad = pn.grad = None
        for (name, bt), (_, bn) in zip(t.named_buffers(), n.named_buffers()):
            if bt.dtype == torch.long:
                assert torch.equal(bt, bn), name
            else:
                assert_close(bn, bt, torch.float32, red, f"{tcls.__name__} {mode} {name}")


def test_batch_norm_momentum_none_and_no_running_stats():
    for kwargs in ({"momentum": None}, {"track_running_stats": False}):
        t, n = nn.BatchNorm2d(5, **kwargs), ngt.BatchNorm2d(5, **kwargs)
        for step in range(3):
            x = torch.randn(4, 5, 3, 3) * 2 + 1
            assert_close(n(x), t(x), torch.float32, 36, f"{kwargs} step {step}")
        t.eval(), n.eval()
        x = torch.randn(4, 5, 3, 3)
        assert_close(n(x), t(x), torch.float32, 36, f"{kwargs} eval")
        if n.running_mean is not None:
            assert_close(n.running_mean, t.running_mean, torch.float32, 36, "running_mean")
        if n.num_batches_tracked is not None:
            assert int(n.num_batches_tracked) == int(t.num_batches_tracked) == 3


def test_half_model_keeps_its_buffer_dtype():
    t, n = nn.BatchNorm2d(4).half(), ngt.BatchNorm2d(4).half()
    x = torch.randn(8, 4, 5, 5).half()
    n.load_state_dict(t.state_dict())
    yt, yn = t(x.float().half()), n(x)
    assert n.running_mean.dtype == torch.float16
    assert_close(n.running_mean, t.running_mean, torch.float16, 200, "half running_mean")
    assert_close(yn, yt, torch.float16, 200, "half y")


def test_float64_input_runs_torch():
    n = ngt.LayerNorm(8).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    assert torch.allclose(n(x), F.layer_norm(x, (8,), n.weight, n.bias))


# ---- modules torch lacks ---------------------------------------------------------------

@pytest.mark.parametrize("cls", [ngt.BatchInstanceNorm2d, ngt.SwitchableNorm2d])
def test_mixed_norm_modules(cls):
    m = cls(6)
    keys = set(m.state_dict())
    assert {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"} <= keys
    x = torch.randn(4, 6, 5, 5) * 2 + 3
    y = m(x)
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert int(m.num_batches_tracked) == 1
    # Running statistics moved towards the batch's (momentum 0.1).
    assert_close(m.running_mean, 0.9 * torch.zeros(6) + 0.1 * x.mean((0, 2, 3)), torch.float32, 100, "running_mean")
    # state_dict round trip into a fresh module gives the same eval output.
    m2 = cls(6)
    m2.load_state_dict(m.state_dict())
    m.eval(), m2.eval()
    assert torch.equal(m(x), m2(x))


def test_fused_modules():
    x, r = torch.randn(4, 8, 5, 5) + 2, torch.randn(4, 8, 5, 5)
    bn = ngt.BatchNormAct2d(8, activation="silu")
    ref = nn.BatchNorm2d(8)
    ref.load_state_dict(bn.state_dict())
    assert_close(bn(x, r), F.silu(ref(x) + r), torch.float32, 100, "BatchNormAct2d")
    gn = ngt.GroupNormAct(2, 8, activation="relu")
    assert_close(gn(x, r), F.relu(F.group_norm(x, 2, gn.weight, gn.bias) + r), torch.float32, 100, "GroupNormAct")
    with pytest.raises(ValueError, match="activation"):
        ngt.BatchNormAct2d(8, activation="tanh")
    ln = ngt.AddLayerNorm(16)
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    y, s = ln(a, b)
    assert_close(s, a + b, torch.float32, 1, "AddLayerNorm s")
    assert_close(y, F.layer_norm(a + b, (16,), ln.weight, ln.bias), torch.float32, 16, "AddLayerNorm y")


# ---- convert_modules: the same training run ------------------------------------------

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.InstanceNorm2d(16, affine=True), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


def small_mlp():
    mlp = nn.Sequential(nn.Linear(64, 48), nn.BatchNorm1d(48), nn.ReLU(), nn.Linear(48, 32), nn.RMSNorm(32),
                        nn.ReLU(), nn.Linear(32, 10))
    torch.nn.utils.parametrizations.weight_norm(mlp[6])
    return mlp


def _train(model, data, steps):
    # SGD: a step proportional to the gradient, so rounding-level gradient differences
    # stay rounding-level (Adam would turn the noise of a zero gradient into lr steps).
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for i in range(steps):
        x, t = data[i % len(data)]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("make,shape", [(SmallCNN, (16, 1, 8, 8)), (small_mlp, (32, 64))], ids=["cnn", "mlp"])
def test_converted_model_trains_like_the_original(make, shape):
    torch.manual_seed(0)
    original = make()
    converted = ngt.convert_modules(copy.deepcopy(original))
    kinds = {type(m) for m in converted.modules()}
    assert not kinds & set(ngt.MODULE_MAP), "every torch norm module was converted"
    data = [(torch.randn(shape) * 2 + 1, torch.randint(0, 10, (shape[0],))) for _ in range(4)]
    steps = 8
    ref_losses = _train(original, data, steps)
    losses = _train(converted, data, steps)
    assert ng.last_kernel(), "the converted model ran normgen kernels"
    for i, (a, b) in enumerate(zip(losses, ref_losses)):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), f"step {i}: loss {a} vs torch {b}"
    for (name, p), (_, q) in zip(converted.state_dict().items(), original.state_dict().items()):
        if p.dtype == torch.long:
            assert torch.equal(p, q), name
        else:
            scale = max(q.abs().max().item(), 1.0)
            assert (p - q).abs().max().item() <= 1e-5 * scale, f"{name}: {(p - q).abs().max().item():.3g}"

    converted.eval(), original.eval()
    x = data[0][0]
    assert_close(converted(x).detach(), original(x).detach(), torch.float32, 64, "eval logits",
                 scale=original(x).abs().max().item() * 10)


def test_convert_keeps_module_identity_and_optimizer():
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
    ln = model[1]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ngt.convert_modules(model)
    assert model[1] is ln and type(ln) is ngt.LayerNorm
    before = ln.weight.detach().clone()
    model(torch.randn(4, 8)).square().sum().backward()
    opt.step()
    assert not torch.equal(ln.weight, before)
