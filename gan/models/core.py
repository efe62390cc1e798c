"""The training loop every model shares: players, phases and one iteration counter.

A model declares its *players* (a name, the networks the player updates, an optimiser factory, its
learning rate and betas, the networks it keeps an EMA copy of) and its *phases* (which player steps on
which loss, how often). One Lightning `training_step` is one iteration, the unit users count in (a
generator iteration for a GAN); in it every phase that is due runs in declaration order:

- `repeats`: how many optimiser steps the phase takes per iteration, each on its own real minibatch
  (the critic's `n_critic`);
- `every`: the phase runs on iterations i with i % every == 0 (i counts from 0);
- `lazy`: a regulariser evaluated every `every` iterations instead of every one (StyleGAN2, Karras et al.
  2020, appendix B): its loss is multiplied by `every`, and the player's learning rate and Adam betas are
  rescaled by c = every / (every + 1), since the player now takes every + 1 steps where it took every.
- `start`, `stop`: the phase runs on iterations start <= i < stop only: training in stages on the one counter
  (SeqGAN: maximum likelihood, then the discriminator alone, then adversarial steps).

Lightning's batch is the iteration's real data: `batches_per_iteration` minibatches stacked, served by
the datamodule as named fields (`x`, `y`, ...). The module counts iterations (`g_iter`) and real images
seen; nothing outside it knows how many optimiser steps an iteration takes. All randomness of the loop
comes from one seeded generator whose state is checkpointed, so a resumed run continues bit for bit.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable, ClassVar, Mapping, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gan.errors import DivergenceError, UserError, positive_int

Batch = Mapping[str, Tensor]


@dataclass(frozen=True)
class Player:
    name: str
    networks: tuple[str, ...]  # attribute names of the module's networks whose parameters this player updates
    optimizer: Callable[..., torch.optim.Optimizer]  # (params, lr=..., [betas=...]) -> optimiser
    lr: float
    betas: tuple[float, float] | None = None  # None: the optimiser has none (RMSprop)
    ema: tuple[str, ...] = ()  # networks with an EMA copy `ema_<name>`, updated once per iteration, after the player's
    # last step in it
    lr_factor: Callable[[int], float] | None = None  # iteration -> multiplier of lr (a schedule; stateless, so resumable)


@dataclass(frozen=True)
class Phase:
    name: str  # logged as train/<name>_loss
    player: str
    loss: Callable[[Batch], Tensor]  # one real minibatch (named fields) -> scalar loss
    repeats: int = 1
    every: int = 1
    lazy: bool = False
    start: int = 0  # stages: the phase runs on iterations start <= i < stop only (SeqGAN: MLE pre-training, then
    stop: int | None = None  # adversarial steps); None: to the end

    def in_stage(self, i: int) -> bool:
        return self.start <= i and (self.stop is None or i < self.stop)


class AdversarialModule(pl.LightningModule):
    """Runs a model's phases; subclasses build networks, call `schedule(players, phases)`, declare their `kind` and
    provide what that kind calls (its protocol in gan.kinds: `sample`, `translate`, ...)."""

    kind: ClassVar[str]  # the task kind (gan.kinds): how the framework evaluates and shows the model
    sampling_options: ClassVar[frozenset[str]] = frozenset()  # "truncation", "path_length" (gan.kinds.image)

    def __init__(self, seed: int, log_every: int, compile: bool | str, compile_mode: str,
                 channels_last: bool):
        super().__init__()
        self.automatic_optimization = False
        self.log_every = positive_int("model.log_every", log_every)
        # Speed options, applied in `configure_model`; neither changes the weights or the checkpoint's keys.
        self.compile_what, self.compile_mode = compile_setting(compile, compile_mode)  # nn.Module.compile is a method
        self.channels_last = flag("model.channels_last", channels_last)
        self._configured = False
        self.seed = int(seed)
        self.rng = torch.Generator().manual_seed(self.seed)
        self.players: dict[str, Player] = {}
        self.phases: tuple[Phase, ...] = ()
        self.g_iter = self.images_seen = 0
        self.train_seconds = 0.0  # wall time spent training, summed over resumed segments
        self._last: dict[str, Tensor] = {}
        self.shown_losses: dict[str, float] = {}  # the last logged losses, for the progress bar
        # The first update whose loss was not finite, kept on the device (iteration * phases + phase, and the loss):
        # read back only by check_finite, at log steps, before checkpoints and at the end.
        self._nonfinite = (torch.tensor(-1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))

    # ---- what a model declares ---------------------------------------------------------------------
    def schedule(self, players: Sequence[Player], phases: Sequence[Phase]) -> None:
        self.players = {p.name: p for p in players}
        for phase in phases:
            if phase.player not in self.players:
                raise ValueError(f"phase {phase.name!r} names player {phase.player!r}, not one of {list(self.players)}")
            positive_int(f"the {phase.name} phase's repeats", phase.repeats)
            positive_int(f"the {phase.name} phase's interval", phase.every)
            if phase.lazy and phase.every < 2:
                raise UserError(f"The lazy {phase.name} phase runs every {phase.every} iteration(s); lazy "
                                f"regularisation needs an interval of at least 2 (StyleGAN2 uses 16 for R1 and 4 for "
                                f"path length). Use an interval >= 2, or 1 to add the term to the main loss instead.")
        for player in self.players.values():
            if sum(p.lazy for p in phases if p.player == player.name) > 1:
                raise ValueError(f"player {player.name!r} has more than one lazy phase")
        self.phases = tuple(phases)

    @property
    def batches_per_iteration(self) -> int:
        """Real minibatches one iteration consumes (the datamodule serves them stacked as one batch)."""
        return max((phase.repeats for phase in self.phases), default=1)

    def make_ema(self, network: nn.Module, decay: float) -> AveragedModel:
        """An exponential moving average of `network` (torch.optim.swa_utils): its first update copies the
        weights, later ones blend with `decay`; its step count is a buffer, so it is checkpointed."""
        if not 0.0 < decay < 1.0:
            raise UserError(f"model.ema_decay must lie in (0, 1), e.g. 0.999, got {decay}.")
        return AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay)).requires_grad_(False)

    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool | None = None, **inputs) -> dict:
        """Fresh samples as named fields (at least `x`), what sample grids show and the evaluator scores."""
        raise NotImplementedError

    def uses_ema(self, ema: bool | None) -> bool:
        """Whether `sample(ema=ema)` draws from an EMA copy: by default (None) whenever a player keeps one."""
        return ema is not False and any(player.ema for player in self.players.values())

    def sampling_context(self) -> dict:
        """What the samples depend on besides the weights, recorded with every evaluation (ProGAN: resolution, alpha)."""
        return {}

    def extra_grids(self, generator: torch.Generator, size: int) -> dict[str, tuple[Tensor, int]]:
        """The model's own grids beside the samples: name -> (images, columns) (StyleGAN: style mixing)."""
        return {}

    def after_step(self, phase: Phase) -> None:
        """Hook after each optimiser step of a phase (WGAN clips its critic's weights here)."""

    # ---- the loop ------------------------------------------------------------------------------------
    def lazy_scale(self, player: Player) -> float:
        lazy = [p.every for p in self.phases if p.player == player.name and p.lazy]
        return lazy[0] / (lazy[0] + 1) if lazy else 1.0

    def configure_optimizers(self):
        optimizers = []
        for player in self.players.values():
            c = self.lazy_scale(player)
            params = [p for name in player.networks for p in getattr(self, name).parameters()]
            kwargs = {"lr": player.lr * c}
            if player.betas is not None:
                kwargs["betas"] = tuple(beta**c for beta in player.betas)
            optimizers.append(player.optimizer(params, **kwargs))
        return optimizers

    @property
    def network_names(self) -> tuple[str, ...]:
        """The networks the players train, each once (CycleGAN: g_ab, g_ba, d_a, d_b)."""
        return tuple(dict.fromkeys(name for player in self.players.values() for name in player.networks))

    def configure_model(self) -> None:
        """Lightning calls this in `fit`, before the move to the device and before a checkpoint is restored.

        - mixed precision (`trainer.precision=bf16-mixed|16-mixed`): each network's outputs are cast back to
          float32, so under autocast only the layers inside run in 16 bits and every loss (softplus, sigmoid,
          means, L1, cross-entropy, a gradient penalty's norm) is computed in float32;
        - `channels_last`: 4-D weights (and, in `training_step`, image batches) in torch.channels_last;
        - `compile=networks`: each network's forward is compiled in place (`nn.Module.compile`), so parameter names
          and checkpoints stay those of the plain network. Gradient penalties run the eager forward (`gan.losses`):
          compiled graphs cannot be differentiated twice;
        - `compile=step`: each phase's whole update is compiled, its loss function with every network it calls and
          the loss arithmetic, and with them (AOTAutograd) their backward; `compile_mode=reduce-overhead` captures
          it as CUDA graphs on a GPU. What cannot be compiled is cut out of the graph and runs eagerly
          (`torch.compiler.disable`, or a graph break where torch.compile meets it): draws from the module's CPU
          generator (`draw`, `host_values`) and the terms that differentiate twice (gradient penalties, StyleGAN2's
          path length). Spectral norm compiles here: its power iteration is traced with the phase, unlike in
          `compile=networks` (pytorch/pytorch#185497).
        """
        if self._configured:
            return
        self._configured = True
        if str(self.trainer.precision).endswith("-mixed"):
            for name in self.network_names:
                getattr(self, name).register_forward_hook(float32_outputs)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_what == "step":
            self.phases = tuple(replace(phase, loss=torch.compile(phase.loss, mode=self.compile_mode))
                                for phase in self.phases)
        elif self.compile_what == "networks":
            for name in self.network_names:
                network = getattr(self, name)
                if any(parametrize.is_parametrized(m) for m in network.modules()):
                    # torch.compile breaks the backward of a network called twice before it (D on real, then on
                    # fake) when a parametrization updates a buffer in place: spectral norm's power iteration
                    # (pytorch/pytorch#185497, torch 2.14). Such a network stays eager.
                    rank_zero_warn(f"model.compile=networks: {name} has spectral normalisation, which torch.compile "
                                   f"cannot train yet (pytorch/pytorch#185497); it runs uncompiled. "
                                   f"model.compile=step compiles it.")
                    continue
                network.compile(mode=self.compile_mode)

    def on_train_start(self) -> None:
        self._segment_start, self._seconds_at_start = time.perf_counter(), self.train_seconds

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if self.channels_last:
            batch = {key: to_channels_last(value) for key, value in batch.items()}
        optimizers = self.optimizers()
        optimizers = dict(zip(self.players, optimizers if isinstance(optimizers, list) else [optimizers]))
        for player in self.players.values():
            if player.lr_factor is not None:
                for group in optimizers[player.name].param_groups:
                    group["lr"] = group.setdefault("initial_lr", group["lr"]) * player.lr_factor(self.g_iter)
        # Dropout and other users of torch's global RNG draw from a seed of (run seed, iteration, rank): a
        # resumed run repeats them exactly without checkpointing the global RNG.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed_generators(hash((self.seed, self.g_iter, self.global_rank)) % 2**63, self.device)
            self._run_phases(optimizers, split_batch(batch, self.batches_per_iteration))
        self.images_seen += len(next(iter(batch.values()))) * self.world_size
        self.g_iter += 1
        self.train_seconds = self._seconds_at_start + time.perf_counter() - self._segment_start
        if self.g_iter % self.log_every == 0:
            self.check_finite()
            self._log_training()

    def _run_phases(self, optimizers: dict, minibatches: list[dict[str, Tensor]]) -> None:
        active = []
        for phase in self.phases:
            if not phase.in_stage(self.g_iter):
                self._last.pop(f"{phase.name}_loss", None)  # a stage over or to come logs no stale loss
            elif self.g_iter % phase.every == 0:
                active.append(phase)
        # A player's EMA is updated once per iteration, after its last step (stylegan2-ada-pytorch
        # `training/training_loop.py`: one G_ema update per iteration, whatever the number of G phases run).
        last = {phase.player: i for i, phase in enumerate(active)}
        for i, phase in enumerate(active):
            player = self.players[phase.player]
            for repeat in range(phase.repeats):
                loss = self._update(optimizers[player.name], phase, minibatches[repeat])
                self.after_step(phase)
            self._last[f"{phase.name}_loss"] = loss
            if last[player.name] == i:
                self._update_ema(player)

    def _update(self, optimizer, phase: Phase, batch: Batch) -> Tensor:
        """One optimiser step of one player; only that player's parameters take gradients."""
        with self.toggled_optimizer(optimizer):
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # a new update: the graphs' outputs may be overwritten
            loss = phase.loss(batch)
            if self.cuda_graphs:  # keep what is logged: the next replay overwrites the graphs' outputs
                loss, self._last = loss.clone(), {key: value.clone() for key, value in self._last.items()}
            self._watch_finite(phase, loss)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss * phase.every if phase.lazy else loss)
            optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def _update_ema(self, player: Player) -> None:
        for name in player.ema:
            live, ema = getattr(self, name), getattr(self, f"ema_{name}")
            ema.update_parameters(live)
            for ema_buffer, live_buffer in zip(ema.module.buffers(), live.buffers()):
                ema_buffer.copy_(live_buffer)  # batch-norm statistics are copied, not averaged (as StyleGAN2)

    @property
    def cuda_graphs(self) -> bool:
        """Whether phases replay CUDA graphs (model.compile=step with compile_mode=reduce-overhead, on a GPU)."""
        return self.compile_what == "step" and self.compile_mode == "reduce-overhead" and self.device.type == "cuda"

    @property
    def world_size(self) -> int:
        try:
            return self.trainer.world_size
        except RuntimeError:  # not attached to a trainer (a model rebuilt for evaluation): one process
            return 1

    @torch.compiler.disable  # model.compile=step: the CPU generator cannot be traced; the phase's graph ends here
    def draw(self, sampler: Callable[[int, torch.Generator], Tensor], n: int) -> Tensor:
        """n draws from the module's RNG for this rank. Under DDP every rank draws the global batch and keeps
        its slice, so the union over ranks is the single-process stream and the RNG state stays shared."""
        rank = self.global_rank
        return sampler(n * self.world_size, self.rng)[rank * n:(rank + 1) * n].to(self.device)

    def _log_training(self) -> None:
        values = {f"train/{k}": v.item() for k, v in self._last.items()}
        # The progress bar's losses, as numbers: through self.log they would become device tensors that Lightning
        # turns back into numbers at every step's end (a wait for the device per step), logged or not.
        self.shown_losses = {k.split("/")[1]: v for k, v in values.items() if k.endswith("loss")}
        values.update(images_seen=self.images_seen, elapsed_s=round(self.train_seconds, 3))
        for logger in self.loggers:
            logger.log_metrics(values, step=self.g_iter)

    def _watch_finite(self, phase: Phase, loss: Tensor) -> None:
        """Remember, on the device, the first update whose loss is NaN or Inf: asking the device here (`if not
        isfinite(loss)`) would make the host wait for it at every optimiser step."""
        at, value = self._nonfinite
        if at.device != loss.device:
            at, value = at.to(loss.device), value.to(loss.device)
        first = (at < 0) & ~torch.isfinite(loss.detach())
        code = self.g_iter * len(self.phases) + self.phases.index(phase)
        self._nonfinite = (torch.where(first, code, at), torch.where(first, loss.detach().double(), value))

    def check_finite(self) -> None:
        """DivergenceError if an update so far had a non-finite loss, naming the iteration and the phase. Called at
        log steps, before every checkpoint (a diverged state is never written) and at the end; under DDP every rank
        calls it at the same iterations and all stop at the first bad iteration of any rank."""
        at, value = self._nonfinite
        if self.world_size > 1:
            first = self.trainer.strategy.reduce(torch.where(at < 0, math.inf, at).to(self.device), reduce_op="min")
            value, at = torch.where(first == at.to(first.device), value.to(first.device), math.nan), first
        at = float(at)  # the host waits for the device here, and only here
        if not 0 <= at < math.inf:
            return
        g_iter, index = divmod(int(at), len(self.phases))
        raise DivergenceError(
            f"Training diverged: the {self.phases[index].name} loss became {float(value)} in generator iteration "
            f"{g_iter + 1}; training stopped at iteration {self.g_iter}, its next log step or checkpoint, without "
            f"writing a checkpoint: the checkpoints written before are kept (their weights never saw that loss). Lower "
            f"the learning rates, add a regulariser (model.regularizer=gp) or spectral normalisation "
            f"(model.discriminator.norm=spectral), then resume from the last good checkpoint or start again."
        )

    # ---- checkpoint state that Lightning does not know about -------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_finite()
        checkpoint["gan_progress"] = {"g_iter": self.g_iter, "images_seen": self.images_seen,
                                      "train_seconds": self.train_seconds, "rng": self.rng.get_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        progress = checkpoint["gan_progress"]
        self.g_iter, self.images_seen = progress["g_iter"], progress["images_seen"]
        self.train_seconds = progress["train_seconds"]
        self.rng.set_state(progress["rng"])


def host_values(draw: Tensor):
    """The Python numbers of a draw made on the host (from a module's CPU generator, `self.rng`): reading them makes
    nothing wait for the device. A device tensor is refused: reading it would (tests/test_no_host_sync.py)."""
    if draw.device.type != "cpu":
        raise ValueError(f"host_values reads draws made on the host, not a tensor on {draw.device}")
    return draw.tolist()


def seed_generators(seed: int, device: torch.device) -> None:
    """Seed the CPU's default generator and `device`'s, nothing else. `torch.manual_seed` seeds every backend
    and records a stack trace for each lazily seeded one: ~0.4 ms a call, 6% of a toy GAN's iteration."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()].manual_seed(seed)


def lr_schedule(total_iters: int | None, decay: float) -> Callable[[int], float] | None:
    """The lr multiplier of pix2pix/CycleGAN/StarGAN, for any model: constant, then linearly towards zero over the
    last `decay` fraction of `total_iters` (CycleGAN: 100 + 100 epochs, decay 0.5; the reference code's
    `1 - max(0, i - constant) / (decay + 1)`); none at 0."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
        raise UserError(f"model.lr_decay must be a fraction of the training length in [0, 1] (0.5: constant for the "
                        f"first half, then linear decay to zero; 0: constant), got {decay!r}.")
    if not decay:
        return None
    if total_iters is None:
        raise UserError("model.lr_decay needs the training length model.total_iters (by default g_iters), but it is "
                        "null. Set model.total_iters (or g_iters), or model.lr_decay=0 for a constant lr.")
    total = positive_int("model.total_iters", total_iters)
    decay_iters = max(1, round(decay * total))
    constant = total - decay_iters
    return lambda i: 1.0 - max(0, i - constant) / (decay_iters + 1)


def float32_outputs(module: nn.Module, inputs, output):
    """Forward hook: a network's 16-bit floating outputs (a tensor or a tuple of them) as float32."""
    if isinstance(output, tuple):
        return tuple(float32_outputs(module, inputs, item) if isinstance(item, Tensor) else item for item in output)
    if isinstance(output, Tensor) and output.dtype in (torch.float16, torch.bfloat16):
        return output.float()
    return output


def to_channels_last(x: Tensor) -> Tensor:
    """Images [N, C, H, W] in torch.channels_last; other tensors (labels, points) as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


COMPILE = ("false", "networks", "step")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_setting(what: bool | str, mode: str) -> tuple[str, str]:
    """model.compile (false | networks | step; true, as runs saved before `step` existed say, is networks) and
    model.compile_mode (torch.compile's mode)."""
    what = {False: "false", True: "networks"}.get(what, what)
    if what not in COMPILE:
        raise UserError(f"model.compile={what!r} is not a compile setting. Use false (eager), networks (each "
                        f"network's forward compiled) or step (each phase's whole update: networks, loss and "
                        f"backward), e.g. model.compile=step.")
    if mode not in COMPILE_MODES:
        raise UserError(f"model.compile_mode={mode!r} is not a torch.compile mode. Use one of {', '.join(COMPILE_MODES)}"
                        f" (reduce-overhead captures CUDA graphs on a GPU), e.g. model.compile_mode=reduce-overhead.")
    return what, mode


def flag(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{key} must be true or false, got {value!r}.")
    return value


def split_batch(batch: Batch, parts: int) -> list[dict[str, Tensor]]:
    """The iteration's stacked real data as `parts` minibatches of named fields."""
    if parts == 1:
        return [dict(batch)]
    chunks = {key: value.chunk(parts) for key, value in batch.items()}
    return [{key: chunks[key][i] for key in batch} for i in range(parts)]
