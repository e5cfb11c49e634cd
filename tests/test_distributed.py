"""The data-parallel collectives' local arithmetic, without a process group."""

from __future__ import annotations

import torch

from skebflow._distributed import RankGroup


class _AloneGroup(RankGroup):
    """A world of one process: the all-reduce is the identity."""

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def test_averaged_gradients_are_laid_out_as_their_parameters():
    # A transposed (non-contiguous) weight, as a flow's dense layers can hold: the
    # fused Adam step walks the memory of the parameter and of its gradient
    # together, so a contiguous gradient of a transposed weight would update the
    # wrong entries.
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, 4, generator=generator).T)
    bias = torch.nn.Parameter(torch.randn(3, generator=generator))
    assert not weight.is_contiguous()
    x = torch.randn(5, 4, generator=generator)
    (x @ weight + bias).square().mean().backward()
    expected = [weight.grad.clone(), bias.grad.clone()]
    assert weight.grad.stride() == weight.stride()  # autograd's own layout
    loss = _AloneGroup(0, 1).average_gradients([weight, bias], torch.tensor(1.5), 5)
    assert loss == 1.5
    for parameter, gradient in zip([weight, bias], expected, strict=True):
        assert parameter.grad.stride() == parameter.stride()
        torch.testing.assert_close(parameter.grad, gradient)
    # One fused Adam step from these gradients equals the multi-tensor one.
    fused = [p.detach().clone().requires_grad_() for p in (weight, bias)]
    for copy, parameter in zip(fused, [weight, bias], strict=True):
        copy.grad = parameter.grad
    torch.optim.Adam([weight, bias], lr=0.1, foreach=True).step()
    torch.optim.Adam(fused, lr=0.1, fused=True).step()
    for copy, parameter in zip(fused, [weight, bias], strict=True):
        torch.testing.assert_close(copy, parameter)
