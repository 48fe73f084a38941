"""Every model builds from the data's sizes and gives logits of the right shape."""

from __future__ import annotations

import pytest
import torch

from lab.models.cnn import CNN
from lab.models.resnet import ResNet
from lab.models.resnet_cifar import CifarResNet
from lab.models.small_residual import BaseCNN, ResidualNet
from lab.models.torchvision_models import TorchvisionClassifier, weights_cache_dir
from lab.tasks.classification import make_loss


def n_convs(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) for m in model.modules())


@pytest.mark.parametrize("widths,depth", [((64, 128, 256, 512), 8), ((64, 128, 256, 512, 1024), 10),
                                          ((64, 128, 256, 512, 1024, 2048), 12)])
def test_cnn_depth_follows_widths(widths, depth):
    model = CNN(3, 200, (64, 64), widths=[w // 16 for w in widths], stem_width=8, hidden=16,
                dropout_conv=0.2, dropout_fc=0.2)
    assert model.depth == depth and n_convs(model) == depth + 1  # + the stem
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 200)


@pytest.mark.parametrize("n_widths,depth", [(4, 11), (6, 15), (8, 19)])
def test_resnet_depth_and_plain_variant(n_widths, depth):
    widths = [8, 16] + [16] * (n_widths - 2)
    res = ResNet(3, 10, (64, 64), widths=widths, stem_width=8, hidden=16)
    plain = ResNet(3, 10, (64, 64), widths=widths, stem_width=8, hidden=16, residual=False)
    assert res.depth == plain.depth == depth
    assert n_convs(res) == depth - 2  # 3x3/5x5 convs; + hidden fc + output fc
    x = torch.randn(2, 3, 64, 64)
    assert res(x).shape == plain(x).shape == (2, 10)

    def projections(model):
        return sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())

    assert projections(res) == 1 and projections(plain) == 0  # only where the width changes (8 -> 16)


def test_resnet_norm_none_has_no_batchnorm():
    model = ResNet(3, 10, (32, 32), widths=[8, 16], stem_width=8, hidden=8, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnets_have_6n_plus_2_layers(depth):
    model = CifarResNet(3, 10, depth=depth)
    assert n_convs(model) + 1 == depth  # 3x3 convs + the linear layer
    if depth == 20:
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert 0.26e6 < sum(p.numel() for p in model.parameters()) < 0.29e6  # the paper's 0.27M
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(3, 10, depth=21)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_small_residual_nets(block):
    model = ResidualNet(3, 35, (112, 112), block=block, widths=[8, 16, 16, 32])
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 35)
    assert BaseCNN(3, 35, widths=[8, 16])(torch.zeros(2, 3, 112, 112)).shape == (2, 35)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_grey_stem_small_stem_and_frozen_backbone(arch):
    model = TorchvisionClassifier(1, 10, (32, 32), arch=arch, small_input_stem=True, freeze_backbone=True)
    assert model.net.conv1.in_channels == 1 and model.net.conv1.kernel_size == (3, 3)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("net.fc.") for n in trainable)
    assert model.features(torch.zeros(2, 1, 32, 32)).shape == (2, model.feature_dim)


def test_pretrained_offline_names_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torch.hub.load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network is unreachable")))
    with pytest.raises(Exception) as info:
        TorchvisionClassifier(3, 10, arch="resnet18", pretrained=True)
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(weights_cache_dir()) in message
    assert "model.weights_path" in message


def test_pretrained_loads_from_the_cache_and_from_a_path(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    weights_cache_dir().mkdir(parents=True)
    torch.save(reference.state_dict(), weights_cache_dir() / "resnet18-f37072fd.pth")
    model = TorchvisionClassifier(1, 7, arch="resnet18", pretrained=True)
    assert torch.allclose(model.net.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert torch.allclose(model.net.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    torch.save(reference.state_dict(), tmp_path / "mine.pth")
    local = TorchvisionClassifier(3, 7, arch="resnet18", weights_path=str(tmp_path / "mine.pth"))
    assert torch.allclose(local.net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(Exception, match="keys do not match"):
        TorchvisionClassifier(3, 7, arch="resnet18", weights_path=str(tmp_path / "other.pth"))


def test_squared_error_losses_match_their_definition():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 2])
    probs = logits.softmax(1)
    onehot = torch.eye(3)[target]
    sse = ((probs - onehot) ** 2).sum(1).mean()
    assert torch.allclose(make_loss("sse")(logits, target), sse)
    assert torch.allclose(make_loss("mse")(logits, target), sse / 3)
