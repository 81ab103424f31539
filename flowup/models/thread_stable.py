"""Layers whose numbers do not depend on the CPU thread count.

PyTorch's CPU kernels for GroupNorm and for oneDNN's float32 1x1 convolution split their sums
between threads, so the same input gave other bits under 1 and 2 threads, and a 2-process batch
(each process on half the cores) wrote other bytes than one process. These drop-in replacements
(same parameters, same state dict) sum in an order that does not change with the thread count.
Under ONNX export they are the standard layers (ONNX Runtime's kernels are thread-stable already).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PointwiseConv2d", "ThreadStableGroupNorm", "make_pointwise_convs_thread_stable"]


class ThreadStableGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose statistics do not depend on the CPU thread count: the per-group
    mean and variance are summed in float64 and rounded to float32, then applied element-wise:
    the same float32 numbers whatever the thread count. Same parameters as ``nn.GroupNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():  # ONNX Runtime's GroupNorm is thread-stable already
            return super().forward(x)
        n, c = x.shape[:2]
        var, mean = torch.var_mean(x.reshape(n, self.num_groups, -1).double(), dim=2, unbiased=False)
        per_channel = (n, c) + (1,) * (x.dim() - 2)  # (N, G) -> (N, C, 1, 1): x keeps its memory format
        mean = mean.float().repeat_interleave(c // self.num_groups, dim=1).reshape(per_channel)
        scale = torch.rsqrt(var.float() + self.eps).repeat_interleave(c // self.num_groups, dim=1).reshape(per_channel)
        if self.affine:
            scale = scale * self.weight.float().reshape(1, c, *per_channel[2:])
        y = (x.float() - mean) * scale
        if self.affine:
            y = y + self.bias.float().reshape(1, c, *per_channel[2:])
        return y if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda") else y.to(x.dtype)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` computed as a matrix product over the channels of each pixel, on
    aligned copies of its operands (whose sums change neither with the thread count nor with
    where the weights sit in memory): ``(N, C_in, H, W) -> (N, C_out, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():  # ONNX Runtime's 1x1 convolution is thread-stable already
            return super().forward(x)
        # Fresh (aligned) copies: the matrix product's last bits depend on its operands' alignment,
        # and weights loaded from a file may sit anywhere in memory.
        weight = self.weight[:, :, 0, 0].clone()
        bias = None if self.bias is None else self.bias.clone()
        return F.linear(x.permute(0, 2, 3, 1).contiguous(), weight, bias).permute(0, 3, 1, 2)


def make_pointwise_convs_thread_stable(module: nn.Module) -> None:
    """Make every plain 1x1 convolution of ``module`` a :class:`PointwiseConv2d` in place (its
    parameters, and so the random stream of the initialisation, are unchanged)."""
    for child in module.modules():
        if type(child) is nn.Conv2d and child.kernel_size == (1, 1) and child.stride == (1, 1) and child.groups == 1:
            child.__class__ = PointwiseConv2d
