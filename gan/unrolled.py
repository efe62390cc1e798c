"""Unrolled GAN (Metz et al. 2017): G's loss is taken against D after k more of D's optimiser steps,
f_K(theta_G, theta_D) = f(theta_G, theta_D^K(theta_G, theta_D)) (eq. 6), with the gradient through the unrolled steps
(eq. 7's second term: how D would answer G's change), as the paper's code builds it (`graph_replace` of D's variables
by their Adam updates). D itself is not changed: the unrolled parameters are a functional copy
(`torch.func.functional_call`), its buffers (batch-norm statistics, spectral norm's vectors) are cloned, and its
optimiser's state is read, not stepped.

The steps are D's own optimiser's, written out differentiably: Adam (with its current moments and step count, L2
weight decay) or plain SGD. Each unrolled step takes D's loss on the same real minibatch and the same fakes, as the
paper's code does (one loss tensor, replaced k times).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gan.errors import UserError

Params = dict[str, Tensor]


def unrolled_parameters(network: nn.Module, loss: Callable[[Callable[..., Tensor]], Tensor],
                        optimizer: torch.optim.Optimizer, steps: int) -> tuple[Callable[..., Tensor], Params]:
    """(judge, parameters): `judge(*inputs)` runs `network` with its parameters after `steps` differentiable steps of
    `optimizer` on `loss(judge_t)` (a function of the network as it is at step t). The starting parameters are detached
    copies of the network's: gradients reach what the loss's inputs depend on (G), never D's own parameters."""
    live = dict(network.named_parameters())
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    groups = {name: groups[id(p)] for name, p in live.items()}
    moments = {name: optimizer.state.get(p, {}) for name, p in live.items()}
    buffers = {name: buffer.clone() for name, buffer in network.named_buffers()}
    params = {name: p.detach().requires_grad_(True) for name, p in live.items()}
    step = adam_step if isinstance(optimizer, torch.optim.Adam) else sgd_step
    for _ in range(steps):
        grads = torch.autograd.grad(loss(judge_with(network, params, buffers)), list(params.values()),
                                    create_graph=True)
        updated = {name: step(params[name], grad, moments[name], groups[name]) for name, grad in zip(params, grads)}
        params = {name: p for name, (p, _) in updated.items()}
        moments = {name: state for name, (_, state) in updated.items()}
    return judge_with(network, params, buffers), params


def judge_with(network: nn.Module, params: Params, buffers: Params) -> Callable[..., Tensor]:
    return lambda *inputs: functional_call(network, {**params, **buffers}, inputs)


def adam_step(p: Tensor, grad: Tensor, state: dict, group: dict) -> tuple[Tensor, dict]:
    """torch.optim.Adam's update (amsgrad off), differentiable: the state's moments enter as constants."""
    beta1, beta2 = group["betas"]
    if group["weight_decay"]:
        grad = grad + group["weight_decay"] * p
    m = beta1 * state.get("exp_avg", torch.zeros_like(p)) + (1 - beta1) * grad
    v = beta2 * state.get("exp_avg_sq", torch.zeros_like(p)) + (1 - beta2) * grad * grad
    count = state.get("step", torch.zeros((), dtype=torch.float32)) + 1  # a tensor: no read of the device
    m_hat, v_hat = m / (1 - beta1 ** count.to(p)), v / (1 - beta2 ** count.to(p))
    # sqrt's derivative is infinite at 0 (a parameter with no gradient): 1e-30 under it changes no float32 value that
    # matters beside eps (1e-8) and keeps the second-order term finite
    return p - group["lr"] * m_hat / (torch.sqrt(v_hat + 1e-30) + group["eps"]), {
        "exp_avg": m, "exp_avg_sq": v, "step": count}


def sgd_step(p: Tensor, grad: Tensor, state: dict, group: dict) -> tuple[Tensor, dict]:
    if group["weight_decay"]:
        grad = grad + group["weight_decay"] * p
    return p - group["lr"] * grad, state


def check_unrollable(optimizer: Callable, steps: int) -> None:
    """D's optimiser factory (a class, or a partial of one as Hydra builds it) must be Adam or plain SGD."""
    cls, settings = getattr(optimizer, "func", optimizer), getattr(optimizer, "keywords", {})
    plain = (isinstance(cls, type) and issubclass(cls, (torch.optim.Adam, torch.optim.SGD))
             and not settings.get("momentum") and not settings.get("amsgrad"))
    if steps and not plain:
        raise UserError(f"model.unroll_steps={steps} unrolls D's optimiser differentiably, which is written out for "
                        f"Adam (without amsgrad) and SGD without momentum; this D trains with "
                        f"{getattr(cls, '__name__', cls)}{settings or ''}. Use Adam (the paper's) for D, or "
                        f"model.unroll_steps=0.")
