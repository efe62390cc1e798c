"""Text GANs on the shared loop (`gan.models.core`): an LSTM generator of token sequences trained by maximum likelihood
(`MLE`), by SeqGAN (Yu et al. 2017) or by ScratchGAN (de Masson d'Autume et al. 2019).

Discrete tokens block the discriminator's gradient, so the adversarial generator steps are REINFORCE: the loss is
-mean_t log G(y_t | y_<t) * A_t for sampled sequences y, with A_t the reward of token t (SeqGAN: Monte Carlo rollouts
scored by D; ScratchGAN: D's per-step outputs, discounted, minus a moving-average baseline).
Where the reference code and a paper's wording differ, the settings in conf/model/<name>.yaml follow the code and cite
the line they come from.

Phases run in stages counted on the one iteration counter: each phase's `start` and `stop` (`gan.models.core.Phase`)
are the iterations it runs in (SeqGAN: MLE pre-training, then D pre-training, then adversarial G and D steps). All training
randomness comes from the module's checkpointed generator (`self.draw`); `sample(n, generator)` draws evaluation
samples from the generator it is given. Batches are {"tokens": int64 [B, T]} (`gan.data.oracle`).
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError, check_betas, non_negative, positive_float, positive_int
from gan.models.core import AdversarialModule, Batch, Phase, Player
from gan.nets.text import LSTMGenerator


class TextGANModule(AdversarialModule):
    """An LSTM generator of token sequences; subclasses add players, phases and stages."""

    kind = "tokens"

    def __init__(self, generator: LSTMGenerator, name: str, grad_clip: float | None, log_every: int, seed: int,
                 **speed):  # compile, channels_last: see AdversarialModule
        super().__init__(seed=seed, log_every=log_every, **speed)
        if generator is None:
            raise UserError(f"model={name} generates token sequences and needs text data: use data=oracle "
                            f"(SeqGAN's synthetic benchmark).")
        self.generator, self.name = generator, name
        self.grad_clip = None if grad_clip is None else positive_float("model.grad_clip", grad_clip)

    @property
    def seq_len(self) -> int:
        return self.generator.seq_len

    # ---- sampling -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool | None = None) -> dict[str, Tensor]:
        """{"tokens": int64 [n, T]} drawn with `generator` (one uniform per token), in evaluation mode."""
        uniforms = torch.rand(n, self.seq_len, generator=generator).to(self.device)
        was_training = self.generator.training
        self.generator.eval()
        tokens = self.generator.sample(uniforms)
        self.generator.train(was_training)
        return {"tokens": tokens}

    @torch.no_grad()
    def fake_tokens(self, n: int, net: LSTMGenerator | None = None) -> Tensor:
        """n sequences of the generator (or `net`), drawn from the module's checkpointed RNG."""
        return (net or self.generator).sample(self.uniforms(n, self.seq_len))

    def uniforms(self, n: int, steps: int) -> Tensor:
        return self.draw(lambda m, rng: torch.rand(m, steps, generator=rng), n)

    # ---- losses ---------------------------------------------------------------------------------------
    def mle_loss(self, batch: Batch) -> Tensor:
        """Teacher forcing: the mean per-token NLL of the real sequences."""
        return -self.generator.log_probs(batch["tokens"]).mean()

    def real_fake_loss(self, batch: Batch) -> Tensor:
        """D's cross-entropy on the real sequences and as many fresh ones of G, averaged over the two (per position
        for a D with one logit per prefix); D's mean probabilities are logged."""
        real = batch["tokens"]
        d_real, d_fake = self.discriminator(real), self.discriminator(self.fake_tokens(len(real)))
        self._last.update(d_real=torch.sigmoid(d_real).mean().detach(), d_fake=torch.sigmoid(d_fake).mean().detach())
        return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))) / 2

    def reinforce_loss(self, tokens: Tensor, advantages: Tensor) -> Tensor:
        """REINFORCE: -mean over sequences and positions of log G(y_t | y_<t) x A_t (A_t without gradient)."""
        return -(self.generator.log_probs(tokens) * advantages.detach()).mean()

    # ---- the loop: stages (Phase.start / stop) and gradient clipping -------------------------------------------
    def _run_phases(self, optimizers: dict, minibatches: list[dict[str, Tensor]]) -> None:
        starts = sorted({phase.start for phase in self.phases if phase.start > 0})
        if starts:  # logged as train/stage: how many stage boundaries the iteration counter has passed
            self._last["stage"] = torch.tensor(float(sum(self.g_iter >= first for first in starts)))
        super()._run_phases(optimizers, minibatches)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Clips each update's gradient norm to `grad_clip` (SeqGAN's code: 5); null: no clipping (ScratchGAN's)."""
        if self.grad_clip is not None:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)

def adam_player(name: str, networks: Sequence[str], optimizer: Callable, lr: float, betas, key: str) -> Player:
    return Player(name, tuple(networks), optimizer, positive_float(key, lr), check_betas("model.betas", betas))


class MLE(TextGANModule):
    """The baseline: the generator trained by maximum likelihood only (SeqGAN's Adam, lr 0.01, clip 5)."""

    def __init__(self, generator: LSTMGenerator, optimizer: Callable, name: str, lr: float, betas: Sequence[float],
                 grad_clip: float | None, log_every: int, seed: int, **speed):
        super().__init__(generator, name, grad_clip, log_every, seed, **speed)
        self.schedule([adam_player("generator", ["generator"], optimizer, lr, betas, "model.lr")],
                      [Phase("mle", "generator", self.mle_loss)])


class SeqGAN(TextGANModule):
    """SeqGAN: MLE pre-training for `pretrain_iters` iterations, D pre-training for `d_pretrain_iters`, then each
    iteration one REINFORCE generator step whose per-token rewards are Monte Carlo rollouts scored by D, and
    `d_steps` discriminator steps on real minibatches against fresh negatives (the reference code's 5 x 3 epochs over
    10,000 real + 10,000 sampled sequences are given as its number of minibatch steps, see conf/model/seqgan.yaml).

    The reward of token t < T is the mean over `rollouts` completions of y_1..y_t, sampled by the rollout policy, of
    D's probability that the completed sequence is real; the last token's is D's probability of y itself. The rollout
    policy with `rollout_update_rate` 0 is the live generator itself, as in the reference code (its ROLLOUT holds
    tf.identity reads of G's variables, so 0.8 * G + 0.2 * G is G); with a rate in (0, 1) it is a delayed copy of G,
    copied from G when adversarial training starts, then after each generator step
    rollout <- rate * rollout + (1 - rate) * G (what update_rate reads as meant to do). D is scored in evaluation
    mode (no dropout) for rewards; its loss is binary cross-entropy plus `l2_reg` x (sum of squares / 2) of its
    output layer (the code's 0.2).
    Pre-training and adversarial generator steps have Adam optimisers of their own, as in the reference code.
    """

    def __init__(self, generator: LSTMGenerator, discriminator: nn.Module, g_optimizer: Callable,
                 d_optimizer: Callable, name: str, pretrain_iters: int, d_pretrain_iters: int, rollouts: int,
                 rollout_update_rate: float, d_steps: int, mle_lr: float, g_lr: float, d_lr: float,
                 betas: Sequence[float], l2_reg: float, grad_clip: float | None, log_every: int, seed: int, **speed):
        super().__init__(generator, name, grad_clip, log_every, seed, **speed)
        self.discriminator = discriminator
        self.pretrain_iters = non_negative_int("model.pretrain_iters", pretrain_iters)
        self.d_pretrain_iters = non_negative_int("model.d_pretrain_iters", d_pretrain_iters)
        self.rollouts = positive_int("model.rollouts", rollouts)
        if not 0 <= rollout_update_rate < 1:
            raise UserError(f"model.rollout_update_rate must lie in [0, 1) (0: the rollout policy is G itself, as in "
                            f"the reference code; in (0, 1): a delayed copy of G), got {rollout_update_rate}.")
        self.rollout_update_rate, self.l2_reg = float(rollout_update_rate), non_negative("model.l2_reg", l2_reg)
        self.rollout = _frozen_copy(generator) if self.rollout_update_rate > 0 else None
        self.adversarial_start = self.pretrain_iters + self.d_pretrain_iters
        self.schedule(
            [adam_player("mle", ["generator"], g_optimizer, mle_lr, betas, "model.mle_lr"),
             adam_player("generator", ["generator"], g_optimizer, g_lr, betas, "model.g_lr"),
             adam_player("discriminator", ["discriminator"], d_optimizer, d_lr, betas, "model.d_lr")],
            [Phase("mle", "mle", self.mle_loss, stop=self.pretrain_iters),
             Phase("g", "generator", self.generator_loss, start=self.adversarial_start),
             Phase("d", "discriminator", self.discriminator_loss, repeats=positive_int("model.d_steps", d_steps),
                   start=self.pretrain_iters)])

    def discriminator_loss(self, batch: Batch) -> Tensor:
        output = self.discriminator.output
        return self.real_fake_loss(batch) + self.l2_reg * 0.5 * (output.weight.square().sum() + output.bias.square().sum())

    def generator_loss(self, batch: Batch) -> Tensor:
        if self.rollout is not None and self.g_iter == self.adversarial_start:  # the delayed copy starts as G
            self.rollout.load_state_dict(self.generator.state_dict())
        tokens = self.fake_tokens(len(batch["tokens"]))
        rewards = self.rewards(tokens)
        self._last["reward"] = rewards.mean()
        return self.reinforce_loss(tokens, rewards)

    @torch.no_grad()
    def rewards(self, tokens: Tensor) -> Tensor:
        """[B, T]: token t < T gets the mean of D(real) over `rollouts` completions of tokens[:, :t] by the rollout
        policy; the last token gets D(real) of the whole sequence."""
        return mc_rewards(tokens, self.rollout_policy, self.judge, self.rollouts, self.uniforms)

    @property
    def rollout_policy(self) -> LSTMGenerator:
        """The network that completes prefixes: the live generator, or its delayed copy."""
        return self.generator if self.rollout is None else self.rollout

    def judge(self, tokens: Tensor) -> Tensor:
        """D's probability that each sequence is real, without dropout."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        probability = torch.sigmoid(self.discriminator(tokens))
        self.discriminator.train(was_training)
        return probability

    @torch.no_grad()
    def after_step(self, phase: Phase) -> None:
        if phase.name == "g" and self.rollout is not None:  # the delayed copy follows G
            for delayed, live in zip(self.rollout.parameters(), self.generator.parameters()):
                delayed.mul_(self.rollout_update_rate).add_(live, alpha=1 - self.rollout_update_rate)


def mc_rewards(tokens: Tensor, policy: LSTMGenerator, judge: Callable[[Tensor], Tensor], rollouts: int,
               uniforms: Callable[[int, int], Tensor]) -> Tensor:
    """SeqGAN's Monte Carlo rewards [B, T] of sequences `tokens` [B, T]: for t < T, the mean of `judge` over `rollouts`
    completions of tokens[:, :t] sampled by `policy` with `uniforms(n, steps)`; for t = T, `judge(tokens)`."""
    batch, length = tokens.shape
    rewards = torch.empty(batch, length, device=tokens.device)
    for t in range(1, length):
        logits, (h, c) = policy.prefix_state(tokens, t)
        rest = policy.continue_from(logits.repeat(rollouts, 1), (h.repeat(1, rollouts, 1), c.repeat(1, rollouts, 1)),
                                    uniforms(rollouts * batch, length - t))
        completed = torch.cat([tokens[:, :t].repeat(rollouts, 1), rest], dim=1)
        rewards[:, t - 1] = judge(completed).view(rollouts, batch).mean(0)
    rewards[:, -1] = judge(tokens)
    return rewards


class ScratchGAN(TextGANModule):
    """ScratchGAN-style training from scratch (no MLE pre-training): D is an LSTM giving a logit per prefix, each
    token's reward is r_t = 2 sigmoid(D_t) - 1 (in (-1, 1)), its return the discounted sum R_t = sum_{s >= t}
    discount^(s - t) r_s, and the generator's REINFORCE advantage is R_t minus a moving-average baseline b
    (b <- decay * b + (1 - decay) * mean of R). As ScratchGAN's losses.py: one scalar b (the mean over the batch and
    every position) and the advantage reads b after this batch's update (`baseline_per_position`: one b per position;
    `baseline_after_update` false: the advantage uses b before the update). D is regularised by dropout (in the
    network) and an L2 penalty `d_l2` x (sum of squares / 2), TensorFlow's l2_loss, of all its variables (as the
    reference; `d_l2_biases` false: of its weights only); its loss is binary cross-entropy at every position. Large
    batches (ScratchGAN: 512) reduce REINFORCE's variance.
    """

    def __init__(self, generator: LSTMGenerator, discriminator: nn.Module, g_optimizer: Callable,
                 d_optimizer: Callable, name: str, g_lr: float, d_lr: float, betas: Sequence[float], discount: float,
                 baseline_decay: float, baseline_per_position: bool, baseline_after_update: bool, d_l2: float,
                 d_l2_biases: bool, d_steps: int, grad_clip: float | None, log_every: int, seed: int, **speed):
        super().__init__(generator, name, grad_clip, log_every, seed, **speed)
        self.discriminator = discriminator
        for key, value in (("model.discount", discount), ("model.baseline_decay", baseline_decay)):
            if not 0 <= value < 1:
                raise UserError(f"{key} must lie in [0, 1), got {value}.")
        self.discount, self.baseline_decay = float(discount), float(baseline_decay)
        self.d_l2, self.d_l2_biases = non_negative("model.d_l2", d_l2), bool(d_l2_biases)
        self.baseline_after_update = bool(baseline_after_update)
        shape = (generator.seq_len,) if baseline_per_position else ()  # the reference's EWMA starts at 0.0
        self.register_buffer("baseline", torch.zeros(shape))  # checkpointed with the weights
        self.schedule(
            [adam_player("generator", ["generator"], g_optimizer, g_lr, betas, "model.g_lr"),
             adam_player("discriminator", ["discriminator"], d_optimizer, d_lr, betas, "model.d_lr")],
            [Phase("d", "discriminator", self.discriminator_loss, repeats=positive_int("model.d_steps", d_steps)),
             Phase("g", "generator", self.generator_loss)])

    def discriminator_loss(self, batch: Batch) -> Tensor:
        penalised = [p for name, p in self.discriminator.named_parameters() if self.d_l2_biases or "bias" not in name]
        return self.real_fake_loss(batch) + self.d_l2 * sum(p.square().sum() for p in penalised) / 2

    def generator_loss(self, batch: Batch) -> Tensor:
        tokens = self.fake_tokens(len(batch["tokens"]))
        with torch.no_grad():
            was_training = self.discriminator.training
            self.discriminator.eval()
            rewards = 2 * torch.sigmoid(self.discriminator(tokens)) - 1
            self.discriminator.train(was_training)
            returns = discounted_returns(rewards, self.discount)
            before = self.baseline.clone()
            self.baseline.copy_(updated_baseline(self.baseline, returns, self.baseline_decay))
            advantages = returns - (self.baseline if self.baseline_after_update else before)
        self._last.update(reward=rewards.mean(), baseline=self.baseline.mean().clone())
        return self.reinforce_loss(tokens, advantages)


def discounted_returns(rewards: Tensor, discount: float) -> Tensor:
    """R_t = sum_{s >= t} discount^(s - t) r_s of rewards [B, T]."""
    returns, running = torch.empty_like(rewards), torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + discount * running
        returns[:, t] = running
    return returns


def updated_baseline(baseline: Tensor, returns: Tensor, decay: float) -> Tensor:
    """The moving-average baseline after one batch of returns [B, T]: decay * b + (1 - decay) * their mean, over the
    batch and every position for a scalar b (ScratchGAN's losses.py), over the batch for a per-position b [T]."""
    mean = returns.mean() if baseline.dim() == 0 else returns.mean(0)
    return decay * baseline + (1 - decay) * mean


def non_negative_int(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{key} must be an integer >= 0, got {value!r}.")
    return value


def _frozen_copy(network: nn.Module) -> nn.Module:
    return copy.deepcopy(network).requires_grad_(False)

