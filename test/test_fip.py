"""FIP modes: what trains, what stays bit-identical, which BatchNorm statistics move, and the counts."""

import pytest
import torch
from torch import nn

from i2p_ros.fip import FIP_MODES, apply_fip, optimizer_groups
from i2p_ros.models.build import build_model, load_model_config
from i2p_ros.models.segmentation import SegmentationNet, UNetDecoder
from i2p_ros.models.sparse_blocks import ConvBNAct
from i2p_ros.sparse import SparseTensor


class TinyEncoder(nn.Module):
    """stem (new) + ds (new) + one inflated-style stage, small enough to count by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(4, 8, 3)              # 27*4*8 + 2*8   = 880
        self.ds = ConvBNAct(8, 8, 2, stride=2)      # 8*8*8 + 2*8    = 528
        self.layer1 = ConvBNAct(8, 16, 3)           # 27*8*16 + 2*16 = 3488 (3456 conv, 32 BN)
        self.feature_channels = [8, 16]
        self.feature_strides = [1, 2]

    def forward(self, x):
        s = self.stem(x)
        return [s, self.layer1(self.ds(s))]


def tiny_model() -> SegmentationNet:
    torch.manual_seed(0)
    # decoder: up ConvT(16->8, k2) 8*16*8 + BN 16 = 1040; fuse Conv(16->8, k3) 27*16*8 + 16 = 3472; classifier 8*3+3
    return SegmentationNet(TinyEncoder(), UNetDecoder([8, 16], [8], blocks=1), num_classes=3)


HAND_TOTAL = {"input": 880 + 528, "inflated_conv": 3456, "inflated_bn": 32, "output": 1040 + 3472 + 27}


def tiny_batch():
    g = torch.Generator().manual_seed(1)
    coords = torch.unique(torch.randint(0, 12, (400, 3), generator=g), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int64), coords], 1).int()
    feats = torch.randn(len(coords), 4, generator=g)
    labels = torch.randint(0, 3, (len(coords),), generator=g)
    return SparseTensor(feats, coords), labels


@pytest.mark.parametrize("mode, trainable", [
    ("scratch", HAND_TOTAL),
    ("all", HAND_TOTAL),
    ("io", {"input": 1408, "inflated_conv": 0, "inflated_bn": 0, "output": 4539}),
    ("io_bn", {"input": 1408, "inflated_conv": 0, "inflated_bn": 32, "output": 4539}),
])
def test_counts_match_hand_computation(mode, trainable):
    plan = apply_fip(tiny_model(), mode)
    assert plan.total == HAND_TOTAL
    assert plan.trainable == trainable
    assert plan.total_count == sum(HAND_TOTAL.values())
    assert f"{plan.trainable_count:,} / {plan.total_count:,}" in plan.summary()


@pytest.mark.parametrize("mode", FIP_MODES)
def test_optimizer_step_moves_exactly_the_trainable_parameters(mode):
    model = tiny_model()
    apply_fip(model, mode)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats_before = {n: b.clone() for n, b in model.named_buffers()}
    opt = torch.optim.SGD(optimizer_groups(model, 1e-4), lr=0.1, momentum=0.9)
    model.train()
    x, y = tiny_batch()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == p.requires_grad, f"{mode}: {n} changed={changed} trainable={p.requires_grad}"
    enc_bn_mean = "encoder.layer1.1.running_mean"
    moved = not torch.equal(dict(model.named_buffers())[enc_bn_mean], stats_before[enc_bn_mean])
    assert moved == (mode != "io"), f"{mode}: inflated BN statistics moved={moved}"
    # the new stem's BN statistics always move
    assert not torch.equal(dict(model.named_buffers())["encoder.stem.1.running_mean"],
                           stats_before["encoder.stem.1.running_mean"])


def test_io_keeps_inflated_bn_in_eval_mode_through_train_calls():
    model = tiny_model()
    apply_fip(model, "io")
    model.train()
    assert not model.encoder.layer1[1].training
    assert model.encoder.stem[1].training and model.decoder.training
    apply_fip(model, "all")
    model.train()
    assert model.encoder.layer1[1].training


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown FIP mode 'bn'"):
        apply_fip(tiny_model(), "bn")


def test_lite0_summary_names_groups_and_the_replaced_stem():
    model, report = build_model(load_model_config("lite0"))
    plan = apply_fip(model, "io_bn")
    # the ImageNet prior filled every inflated encoder tensor and nothing of the new stem
    enc = {k for k in model.encoder.state_dict() if not k.endswith("num_batches_tracked")}
    inflated = set(report.inflated)
    assert inflated and all(not k.startswith(("stem.", "ds.")) for k in inflated)
    assert {k for k in enc if not k.startswith(("stem.", "ds."))} <= inflated
    assert "RGB stem" in report.summary()
    assert plan.trainable["inflated_conv"] == 0 and plan.trainable["inflated_bn"] == plan.total["inflated_bn"] > 0
