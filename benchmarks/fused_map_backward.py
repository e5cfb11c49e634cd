"""A hand-written backward for the mixture coupling's map: is autograd the cost?

The default flow's training step is bound by its couplings' elementwise work
(``docs/benchmarks.md``, "Components first"). This prototype asks whether
autograd's bookkeeping is a large part of it: a ``torch.autograd.Function`` does
the coupling's work after the conditioner's last matrix product (the squash of the
parameters, the log-softmax of the weights and the map
:meth:`LogisticMixtureCoupling._map`) in one forward with a hand-written backward
of about 30 kernels, against the library's autograd graph of the same arithmetic.
It checks that both give the same values and gradients (float64), then times
forward and backward of each (float32, one thread, the default flow's sizes:
8 components, batch 256, 10 transformed features), alternating rounds and taking
medians. Not used by the library: the answer was no (about 1.0x).

``--compiled`` adds a third contender, the same reference compiled by
``torch.compile`` (inductor's fused C++ kernels for the CPU, shapes fixed): its
compile time, its largest float32 differences from the reference (values and
gradients), and its time in the same alternating rounds. Its compile time in a
second run is the one with inductor's on-disk cache warm.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fused_map_backward.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fused_map_backward.py --compiled
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _machine import machine_line

from skebflow.flows._mixture_coupling import LogisticMixtureCoupling

K, BATCH, N = 8, 256, 10
ROUNDS = 15


def make_reference(coupling: LogisticMixtureCoupling):
    """The library's own arithmetic, by autograd, from the last product's output."""

    def reference(out: torch.Tensor, x: torch.Tensor):
        parameters = coupling._parameters_from_outputs(out.transpose(0, 1).contiguous())
        return coupling._map(x, parameters)

    return reference


def make_fused(lower, width):
    """The same arithmetic with a hand-written backward."""

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, out, x):  # noqa: ANN001, ANN205
            o = out.transpose(0, 1).contiguous()
            sig = torch.sigmoid(o[:-1])
            squashed = torch.addcmul(lower, width, sig)
            logit, mean, log_scale = (
                squashed[:K],
                squashed[K : 2 * K],
                squashed[2 * K : 3 * K],
            )
            outer = squashed[3 * K]
            log_weight = logit - logit.exp().sum(dim=0, keepdim=True).log()
            inverse_scale = torch.exp(-log_scale)
            z = (x - mean) * inverse_scale
            below = F.logsigmoid(z)
            above = below - z
            first = log_weight + below
            terms = torch.stack(
                [first, log_weight + above, first + above - log_scale], dim=1
            )
            peak = terms.amax(dim=0)
            peak = torch.where(peak.isinf(), 0.0, peak)
            weights = (terms - peak).exp_()
            total = weights.sum(dim=0)
            logs = total.log() + peak
            weights.div_(total)  # each log-sum's responsibilities
            log_cdf, log_survival, log_density = logs.unbind(0)
            exp_outer = outer.exp()
            difference = log_cdf - log_survival
            y = exp_outer * difference + o[-1]
            log_slope = outer + log_density - log_cdf - log_survival
            ctx.save_for_backward(
                sig, log_weight, inverse_scale, z, above, weights, exp_outer, difference
            )
            return y, log_slope

        @staticmethod
        def backward(ctx, grad_y, grad_log_slope):  # noqa: ANN001, ANN205
            sig, log_weight, inverse_scale, z, above, weights, exp_outer, difference = (
                ctx.saved_tensors
            )
            scaled = grad_y * exp_outer
            grad_logs = torch.stack(
                [scaled - grad_log_slope, -scaled - grad_log_slope, grad_log_slope]
            )
            grad_terms = weights * grad_logs
            _, grad_second, grad_third = grad_terms.unbind(1)
            grad_log_weight = grad_terms.sum(dim=1)
            grad_z = (grad_log_weight + grad_third) * above.exp() - (
                grad_second + grad_third
            )
            grad_out = torch.empty((3 * K + 2, *grad_y.shape), dtype=grad_y.dtype)
            grad_mean = grad_z * inverse_scale
            torch.neg(grad_mean, out=grad_out[K : 2 * K])
            torch.addcmul(grad_third, grad_z, z, out=grad_out[2 * K : 3 * K]).neg_()
            grad_out[:K] = grad_log_weight - log_weight.exp() * grad_log_weight.sum(
                dim=0, keepdim=True
            )
            torch.addcmul(
                grad_log_slope, grad_y, exp_outer * difference, out=grad_out[3 * K]
            )
            grad_out[-1] = grad_y
            grad_out[:-1].mul_(width * sig * (1 - sig))
            return grad_out.transpose(0, 1), grad_mean.sum(dim=0)

    return Fused.apply


def largest_difference(left, right) -> float:
    return max(
        float((a - b).detach().abs().max()) for a, b in zip(left, right, strict=True)
    )


def differences(first, second, out: torch.Tensor, x: torch.Tensor, grads):
    """The largest differences between two maps' values and between their
    gradients (for the output gradients ``grads``)."""
    mine, theirs = first(out, x), second(out, x)
    return largest_difference(mine, theirs), largest_difference(
        torch.autograd.grad(mine, (out, x), grads),
        torch.autograd.grad(theirs, (out, x), grads),
    )


def backward_step(function, out: torch.Tensor, x: torch.Tensor, grads):
    def step() -> None:
        torch.autograd.grad(function(out, x), (out, x), grads)

    return step


def median_ms(step, rounds: int = 300) -> float:
    for _ in range(30):
        step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--compiled", action="store_true", help="also time torch.compile's kernels"
    )
    compiled = parser.parse_args().compiled
    torch.set_num_threads(1)
    print(machine_line(), flush=True)
    generator = torch.Generator().manual_seed(0)
    coupling = LogisticMixtureCoupling(
        2 * N, n_components=K, hidden_layer_sizes=(32, 32), generator=generator
    )
    for dtype in (torch.float64, torch.float32):
        lower, width = coupling._squash_bounds(torch.zeros(1, dtype=dtype))
        reference = make_reference(coupling)
        fused = make_fused(lower, width)
        out = 2 * torch.randn(BATCH, 3 * K + 2, N, generator=generator, dtype=dtype)
        out.requires_grad_()
        x = (
            2 * torch.randn(BATCH, N, generator=generator, dtype=dtype)
        ).requires_grad_()
        grads = [torch.randn(BATCH, N, generator=generator, dtype=dtype) for _ in "ab"]
        if dtype == torch.float64:
            values, gradients = differences(fused, reference, out, x, grads)
            print(
                f"float64: values differ by {values:.1e}, gradients by {gradients:.1e}"
            )
            continue
        contenders = {"autograd": reference, "hand-written": fused}
        if compiled:
            start = time.perf_counter()
            contenders["torch.compile"] = torch.compile(reference, dynamic=False)
            backward_step(contenders["torch.compile"], out, x, grads)()
            seconds = time.perf_counter() - start
            values, gradients = differences(
                contenders["torch.compile"], reference, out, x, grads
            )
            print(
                f"torch.compile: {seconds:.1f} s to compile forward and backward;"
                f" float32 values differ from autograd's by {values:.1e},"
                f" gradients by {gradients:.1e}",
                flush=True,
            )
        timings = {name: [] for name in contenders}
        for _ in range(ROUNDS):  # alternating: the machine's load hits all alike
            for name, function in contenders.items():
                timings[name].append(median_ms(backward_step(function, out, x, grads)))
        for name, values in timings.items():
            rounds = ", ".join(f"{value:.3f}" for value in values)
            print(
                f"float32 forward + backward, {name}: median of rounds"
                f" {statistics.median(values):.3f} ms ({rounds})"
            )
        for name in list(contenders)[1:]:
            ratio = statistics.median(timings["autograd"]) / statistics.median(
                timings[name]
            )
            print(f"{name} speed-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
