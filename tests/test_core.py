"""The shared loop (gan.models.core): each phase kind against a hand-computed update on tiny linear networks,
and a four-player model that trains and resumes exactly through the real training entry point."""
from __future__ import annotations

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict
from torch import nn

from conftest import assert_same, compose_config, final_state
from gan.errors import UserError
from gan.models.core import AdversarialModule, Phase, Player
from gan.train import train

SGD = partial(torch.optim.SGD)


class Scalars(AdversarialModule):
    """Players whose networks are single weights w (initialised to 0) and whose phase losses are linear in w, so
    that with SGD every update is w -= lr * d(loss)/dw and can be written down by hand."""

    def __init__(self, players: dict[str, tuple], phases: list[dict], ema: dict[str, float] | None = None):
        super().__init__(seed=0, log_every=1, compile=False, compile_mode="default", channels_last=False)
        ema = ema or {}
        for name in players:
            setattr(self, name, nn.Linear(1, 1, bias=False))
            nn.init.zeros_(getattr(self, name).weight)
            if name in ema:
                setattr(self, f"ema_{name}", self.make_ema(getattr(self, name), ema[name]))
        self.fired: dict[str, list[int]] = {p["name"]: [] for p in phases}
        self.schedule([Player(name, (name,), optimizer, lr, betas, ema=(name,) if name in ema else ())
                       for name, (optimizer, lr, betas) in players.items()],
                      [Phase(loss=partial(self.linear_loss, p["name"], p.pop("grad")), **p) for p in phases])

    def linear_loss(self, phase: str, grad, batch) -> torch.Tensor:
        """A loss whose gradient with respect to the player's weight is grad(batch), recording when it ran."""
        self.fired[phase].append(self.g_iter)
        player = next(p for p in self.phases if p.name == phase).player
        return getattr(self, player).weight.sum() * grad(batch)

    def weight(self, name: str) -> float:
        return getattr(self, name).weight.item()


def fit(module: AdversarialModule, batches: list[torch.Tensor]) -> AdversarialModule:
    loader = torch.utils.data.DataLoader([{"x": x} for x in batches], batch_size=None)
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu").fit(module, train_dataloaders=loader)
    return module


def x_sum(batch) -> float:
    return float(batch["x"].sum())


def test_a_phase_with_repeats_steps_once_per_minibatch_and_others_see_the_first():
    module = Scalars({"p": (SGD, 1.0, None), "q": (SGD, 0.5, None)},
                     [dict(name="p_main", player="p", repeats=2, grad=x_sum), dict(name="q_main", player="q", grad=x_sum)])
    assert module.batches_per_iteration == 2
    fit(module, [torch.tensor([[1.0], [2.0], [3.0], [4.0]])])  # one iteration: minibatches [1, 2] and [3, 4]
    assert module.weight("p") == pytest.approx(0 - 1.0 * 3 - 1.0 * 7)  # two SGD steps, grads 1+2 then 3+4
    assert module.weight("q") == pytest.approx(0 - 0.5 * 3)  # one step on the first minibatch
    assert module.fired == {"p_main": [0, 0], "q_main": [0]} and module.g_iter == 1 and module.images_seen == 4


def test_an_interval_phase_fires_on_every_kth_iteration_from_the_first():
    module = Scalars({"p": (SGD, 1.0, None)},
                     [dict(name="main", player="p", grad=x_sum), dict(name="sparse", player="p", every=3, grad=x_sum)])
    fit(module, [torch.ones(1, 1)] * 7)
    assert module.fired["sparse"] == [0, 3, 6] and module.fired["main"] == list(range(7))
    assert module.weight("p") == pytest.approx(-(7 + 3))


def test_staged_phases_run_only_from_their_start_to_before_their_stop():
    module = Scalars({"p": (SGD, 1.0, None), "q": (SGD, 1.0, None)},
                     [dict(name="pretrain", player="p", stop=2, grad=x_sum),
                      dict(name="adversarial", player="q", start=2, every=2, grad=x_sum)])
    fit(module, [torch.ones(1, 1)] * 6)
    assert module.fired == {"pretrain": [0, 1], "adversarial": [2, 4]}
    assert module.weight("p") == pytest.approx(-2) and module.weight("q") == pytest.approx(-2)
    assert "pretrain_loss" not in module._last and "adversarial_loss" in module._last  # no stale loss of a past stage


def test_a_lazy_phase_scales_its_loss_by_k_and_the_players_lr_by_k_over_k_plus_1():
    k = 3
    module = Scalars({"p": (SGD, 1.0, None)},
                     [dict(name="main", player="p", grad=x_sum), dict(name="reg", player="p", every=k, lazy=True,
                                                                     grad=lambda batch: 1.0)])
    fit(module, [torch.ones(1, 1)] * 4)
    c = k / (k + 1)
    assert module.fired["reg"] == [0, 3]
    # every main step: -c * 1; each lazy step: -c * k * 1 (the loss is multiplied by k)
    assert module.weight("p") == pytest.approx(-(4 * c + 2 * c * k))


def test_a_players_ema_is_updated_once_per_iteration_whatever_its_number_of_steps():
    # stylegan2-ada-pytorch `training/training_loop.py`: all phases run, then one G_ema update per iteration
    module = Scalars({"p": (SGD, 1.0, None), "q": (SGD, 1.0, None)},
                     [dict(name="main", player="p", grad=lambda batch: 1.0),
                      dict(name="reg", player="p", every=2, lazy=True, grad=lambda batch: 1.0),
                      dict(name="q", player="q", repeats=2, grad=lambda batch: 1.0)], ema={"p": 0.5})
    fit(module, [torch.ones(2, 1)] * 3)
    # lr 2/3 (c = 2/3): a main step moves w by -2/3, a lazy step (loss x 2) by -4/3. Live w after each iteration:
    # -2 (main, reg), -8/3 (main), -14/3 (main, reg); the EMA copies the first and then averages with weight 1/2.
    assert int(module.ema_p.n_averaged) == 3
    assert module.ema_p.module.weight.item() == pytest.approx(0.5 * (0.5 * -2 + 0.5 * -8 / 3) + 0.5 * -14 / 3)
    assert module.weight("p") == pytest.approx(-14 / 3)


def test_a_lazy_phase_rescales_adam_betas_as_stylegan2():
    module = Scalars({"d": (partial(torch.optim.Adam), 2e-3, (0.0, 0.99)), "g": (partial(torch.optim.Adam), 2e-3, (0.0, 0.99))},
                     [dict(name="d", player="d", grad=x_sum), dict(name="d_reg", player="d", every=16, lazy=True, grad=x_sum),
                      dict(name="g", player="g", grad=x_sum)])
    d_opt, g_opt = module.configure_optimizers()
    c = 16 / 17
    assert d_opt.param_groups[0]["lr"] == pytest.approx(2e-3 * c)
    assert d_opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99**c))
    assert g_opt.param_groups[0]["lr"] == 2e-3 and g_opt.param_groups[0]["betas"] == (0.0, 0.99)


def test_a_lazy_phase_needs_an_interval_of_at_least_two():
    with pytest.raises(UserError, match="at least 2"):
        Scalars({"p": (SGD, 1.0, None)}, [dict(name="reg", player="p", lazy=True, grad=x_sum)])


def test_more_than_two_players_each_step_only_their_own_weights():
    players = {name: (SGD, 1.0, None) for name in "abcd"}
    phases = [dict(name="a", player="a", repeats=2, grad=x_sum), dict(name="b", player="b", every=2, grad=x_sum),
              dict(name="c", player="c", grad=lambda batch: 2.0), dict(name="d", player="d", every=3, lazy=True,
                                                                       grad=lambda batch: 1.0)]
    module = fit(Scalars(players, phases), [torch.tensor([[1.0], [2.0]])] * 4)  # minibatches [1] and [2]
    assert module.weight("a") == pytest.approx(-4 * (1 + 2))
    assert module.weight("b") == pytest.approx(-2 * 1)  # iterations 0 and 2
    assert module.weight("c") == pytest.approx(-4 * 2)
    assert module.weight("d") == pytest.approx(-2 * 3 * 0.75)  # iterations 0 and 3, loss x3, lr x 3/4


# ---------------------------------------------------------------- a four-player model through gan.train


class FourPlayers(AdversarialModule):
    """CycleGAN-shaped toy on 2-D points: maps a->b and b->a, each judged by a critic, with a cycle term.
    Critic `d_a` takes two steps per iteration, `d_b` one every other iteration, `g_ba` is regularised lazily."""

    kind = "image"  # its samples (G_ab of noise) are scored and shown as any generator's

    def __init__(self, name: str = "four_players", seed: int = 0, log_every: int = 1):
        super().__init__(seed=seed, log_every=log_every, compile=False, compile_mode="default", channels_last=False)
        self.name = name
        torch.manual_seed(seed)
        self.g_ab, self.g_ba = nn.Linear(2, 2), nn.Linear(2, 2)
        self.d_a, self.d_b = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)), nn.Linear(2, 1)
        self.ema_g_ab = self.make_ema(self.g_ab, 0.9)
        adam = partial(torch.optim.Adam)
        self.schedule(
            [Player("g_ab", ("g_ab",), adam, 1e-2, (0.5, 0.99), ema=("g_ab",)), Player("g_ba", ("g_ba",), adam, 1e-2, (0.5, 0.99)),
             Player("d_a", ("d_a",), adam, 1e-2, (0.5, 0.99)), Player("d_b", ("d_b",), partial(torch.optim.SGD), 1e-2)],
            [Phase("d_a", "d_a", self.critic_loss_a, repeats=2), Phase("d_b", "d_b", self.critic_loss_b, every=2),
             Phase("g_ab", "g_ab", self.map_loss), Phase("g_ba", "g_ba", self.map_loss_back),
             Phase("g_ba_reg", "g_ba", self.weight_penalty, every=3, lazy=True)])

    def noisy(self, x):
        return x + 0.1 * self.draw(lambda n, rng: torch.randn(n, 2, generator=rng), len(x))

    def critic_loss_a(self, batch):
        fake = self.g_ba(self.noisy(batch["x"])).detach()
        return F.softplus(-self.d_a(batch["x"])).mean() + F.softplus(self.d_a(fake)).mean()

    def critic_loss_b(self, batch):
        fake = self.g_ab(self.noisy(batch["x"])).detach()
        return F.relu(1 - self.d_b(batch["x"].flip(1))).mean() + F.relu(1 + self.d_b(fake)).mean()

    def map_loss(self, batch):
        mapped = self.g_ab(self.noisy(batch["x"]))
        return -self.d_b(mapped).mean() + (self.g_ba(mapped) - batch["x"]).abs().mean()

    def map_loss_back(self, batch):
        return F.softplus(-self.d_a(self.g_ba(self.noisy(batch["x"])))).mean()

    def weight_penalty(self, batch):
        return self.g_ba.weight.square().sum()

    @torch.no_grad()
    def sample(self, n=None, generator=None, ema=None, **inputs):
        return {"x": self.ema_g_ab(torch.randn(n, 2, generator=generator))}


def four_player_config(run, *overrides):
    cfg = compose_config(run, "data=ring", "data.batch_size=8", "callbacks.checkpoint.every_g_iters=3", *overrides)
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": "test_core.FourPlayers", "name": "four_players", "seed": 0})
    return cfg


def test_a_four_player_model_trains_and_resumes_exactly(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(four_player_config(whole, "g_iters=7"))
    train(four_player_config(parts, "g_iters=4"))
    train(OmegaConf.merge(four_player_config(parts, "g_iters=7"), {"resume": str(parts / "checkpoints" / "last.ckpt")}),
          ["g_iters=7"])
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 7
    assert state["data"] == {"ToyDataModule": {"minibatches_consumed": 14}}  # d_a's two minibatches per iteration
    assert len(state["optimizers"]) == 4
    assert_same(state, final_state(parts))
    before = torch.load(parts / "checkpoints" / "g000003.ckpt", weights_only=False)["state_dict"]
    after = state["state_dict"]
    assert all(not torch.equal(before[f"{net}.weight"], after[f"{net}.weight"]) for net in ("g_ab", "g_ba", "d_b"))
