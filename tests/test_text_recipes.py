"""The text GANs' recipes against their reference code (issue 20, "Faithful recipes").

ScratchGAN: deepmind-research `scratchgan/experiment.py` (flags, the L2 term, the optimisers) and `scratchgan/losses.py`
(reinforce_loss: one scalar EWMA baseline read after its update). SeqGAN: LantaoYu/SeqGAN `sequence_gan.py` (D's
training per adversarial step and before it) and `rollout.py` (the rollout network). The source lines are transcribed
below as they read there; each test derives the expected value from them, not from our YAML."""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import Tensor, nn

from conftest import compose_config, model_settings
from gan.models.text import ScratchGAN
from gan.nets.text import LayerNormLSTM, LSTMGenerator, position_signal

pytestmark = pytest.mark.usefixtures("one_thread")

# deepmind-research scratchgan/experiment.py, by line number
SCRATCHGAN_FLAGS = {
    49: 'flags.DEFINE_float("l2_disc", 1e-6, "L2 regularization discriminator.")',
    55: 'flags.DEFINE_integer("num_disc_updates", 1, "Number of discriminator updates.")',
    58: 'flags.DEFINE_float("gen_lr", 9.59e-5, "Learning rate generator.")',
    59: 'flags.DEFINE_float("disc_lr", 9.38e-3, "Learning rate discriminator.")',
    60: 'flags.DEFINE_float("gen_beta1", 0.5, "Beta1 for generator.")',
    61: 'flags.DEFINE_float("disc_beta1", 0.5, "Beta1 for discriminator.")',
    62: 'flags.DEFINE_float("gamma", 0.23, "Discount factor.")',
    63: 'flags.DEFINE_float("baseline_decay", 0.08, "Baseline decay rate.")',
}
# experiment.py:217-219: the L2 term is over all of D's variables, in TensorFlow's l2_loss (sum of squares / 2)
SCRATCHGAN_L2 = ["l2_disc = tf.reduce_sum(tf.add_n([tf.nn.l2_loss(v) for v in disc_vars]))",
                 "scalar_disc_loss = tf.reduce_mean(disc_loss) + config.l2_disc * l2_disc"]
# losses.py:82-90: one scalar, starting at 0.0, updated with the mean over batch and positions, read after the update
SCRATCHGAN_BASELINE = ['ewma_reward = tf.get_variable("ewma_reward", initializer=0.0)',
                       "mean_reward = tf.reduce_mean(cumulative_rewards)",
                       "new_ewma_reward = decay * ewma_reward + (1.0 - decay) * mean_reward",
                       "with tf.control_dependencies([update_op]):",
                       "advantage = cumulative_rewards - ewma_reward"]
# LantaoYu/SeqGAN sequence_gan.py, by line number
SEQGAN_LINES = {30: "dis_batch_size = 64", 39: "generated_num = 10000", 123: "for _ in range(50):",
                126: "for _ in range(3):", 163: "for _ in range(5):", 167: "for _ in range(3):"}


def flag(line: int) -> float:
    return float(re.search(r'"[a-z_0-9]+", ([0-9.e-]+),', SCRATCHGAN_FLAGS[line]).group(1))


def loop(line: int) -> int:
    return int(re.search(r"range\((\d+)\)", SEQGAN_LINES[line]).group(1))


def assignment(line: int) -> int:
    return int(SEQGAN_LINES[line].split("=")[1])


# ---------------------------------------------------------------- ScratchGAN


def test_scratchgan_settings_are_the_reference_flags():
    settings = model_settings("scratchgan")
    assert settings["g_lr"] == flag(58) and settings["d_lr"] == flag(59)
    assert settings["betas"][0] == flag(60) == flag(61)
    assert settings["discount"] == flag(62) and settings["baseline_decay"] == flag(63)
    assert settings["d_l2"] == flag(49) and settings["d_steps"] == flag(55)
    assert "for v in disc_vars" in SCRATCHGAN_L2[0] and settings["d_l2_biases"] is True
    assert "reduce_mean(cumulative_rewards)" in SCRATCHGAN_BASELINE[1] and settings["baseline_per_position"] is False
    assert "control_dependencies" in SCRATCHGAN_BASELINE[3] and settings["baseline_after_update"] is True
    assert settings["grad_clip"] is None  # experiment.py:224-227: optimizer.minimize, no clipping


class FixedLogits(nn.Module):
    """A discriminator stand-in whose logits per prefix are given, so that the rewards are known by hand."""

    def __init__(self, logits: Tensor):
        super().__init__()
        self.logits = logits
        self.weight = nn.Parameter(torch.tensor([3.0, 4.0]))
        self.bias = nn.Parameter(torch.tensor([12.0]))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.logits[: len(tokens)]


def scratchgan(discriminator: nn.Module, **overrides) -> ScratchGAN:
    torch.manual_seed(0)
    G = LSTMGenerator(vocab_size=5, seq_len=3, embed_dim=4, hidden_dim=8, init_std=0.1)
    return ScratchGAN(G, discriminator, torch.optim.Adam, torch.optim.Adam,
                      **{**model_settings("scratchgan"), **overrides})


def test_scalar_baseline_on_hand_computed_rewards_is_read_after_its_update():
    # sigmoid(ln 3) = 3/4: rewards 2 sigmoid - 1 are [0.5, 0, 0.5] and [0, 0, -0.5]
    logits = torch.tensor([[math.log(3), 0.0, math.log(3)], [0.0, 0.0, -math.log(3)]])
    module = scratchgan(FixedLogits(logits), discount=0.5)
    assert module.baseline_decay == flag(63) == 0.08 and module.baseline.shape == () and module.baseline == 0.0
    # returns with discount 1/2: [0.625, 0.25, 0.5] and [-0.125, -0.25, -0.5]; their mean over all six is 1/12
    returns = torch.tensor([[0.625, 0.25, 0.5], [-0.125, -0.25, -0.5]])
    first = 0.08 * 0.0 + 0.92 / 12  # 0.0766667
    state = module.rng.get_state()
    loss = module.generator_loss({"tokens": torch.zeros(2, 3, dtype=torch.long)})
    assert module.baseline.item() == pytest.approx(first)
    module.rng.set_state(state)
    tokens = module.fake_tokens(2)
    expected = -(module.generator.log_probs(tokens) * (returns - first)).mean()  # the advantage uses the new value
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    module.generator_loss({"tokens": torch.zeros(2, 3, dtype=torch.long)})
    assert module.baseline.item() == pytest.approx(0.08 * first + 0.92 / 12)  # 0.0828


def test_scratchgan_l2_is_tensorflows_l2_loss_of_all_variables():
    module = scratchgan(FixedLogits(torch.zeros(4, 3)), d_l2=0.01)  # large enough to read beside a loss of ln 2
    batch = {"tokens": torch.zeros(4, 3, dtype=torch.long)}
    state = module.rng.get_state()
    loss = module.discriminator_loss(batch)
    module.rng.set_state(state)
    without = module.real_fake_loss(batch)
    # l2_loss = sum of squares / 2 over weight and bias: (9 + 16 + 144) / 2 = 84.5
    assert (loss - without).item() == pytest.approx(0.01 * 84.5, rel=1e-5)
    module.d_l2_biases = False  # the earlier recipe left biases out
    module.rng.set_state(state)
    assert (module.discriminator_loss(batch) - without).item() == pytest.approx(0.01 * 12.5, rel=1e-5)


def test_scratchgan_oracle_preset_keeps_the_recipe_its_table_was_measured_with(tmp_path):
    settings = compose_config(tmp_path, "model=scratchgan", "data=oracle").model
    assert (settings.g_lr, settings.d_lr, settings.baseline_decay, settings.grad_clip) == (1e-3, 1e-3, 0.99, 5.0)
    assert settings.baseline_per_position and not settings.baseline_after_update
    assert (settings.d_l2, settings.d_l2_biases) == (2e-4, False)  # = 1e-4 x sum of squares of the weights


# ---------------------------------------------------------------- SeqGAN


def test_seqgan_d_steps_are_the_reference_epochs_in_minibatch_steps():
    settings = model_settings("seqgan")
    batch = assignment(30)
    negatives = assignment(39) // batch * batch  # generate_samples writes whole batches: 9,984
    per_epoch = (assignment(39) + negatives) // batch  # dataloader.py:69 int(len(labels) / batch_size) = 312
    assert per_epoch == 312
    assert settings["d_steps"] == loop(163) * loop(167) * per_epoch == 4680
    assert settings["d_pretrain_iters"] * settings["d_steps"] == loop(123) * loop(126) * per_epoch == 46800
    assert model_settings("seqgan", "", "data=oracle")["d_steps"] == 3  # the oracle table's preset keeps its value


class TFRollout:
    """rollout.py's parameters as TensorFlow evaluates them: each is an expression over G's live variables, built by
    create_*_unit as tf.identity(G.W) (lines 107-121, 216-217) and rebuilt by update_params as
    update_rate * previous + (1 - update_rate) * tf.identity(G.W) (lines 162-176, 229-230)."""

    def __init__(self, generator: nn.Module, update_rate: float):
        self.expressions = {name: (lambda p=p: p.detach().clone()) for name, p in generator.named_parameters()}
        self.generator, self.update_rate = generator, update_rate

    def update_params(self):
        live = dict(self.generator.named_parameters())
        self.expressions = {name: (lambda old=old, p=live[name]: self.update_rate * old() + (1 - self.update_rate)
                                   * p.detach().clone()) for name, old in self.expressions.items()}

    def parameters(self) -> dict[str, Tensor]:  # sess.run: every expression reads the variables' current values
        return {name: expression() for name, expression in self.expressions.items()}


def test_rollout_network_is_the_live_generator_as_in_the_reference(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config(tmp_path, "model=seqgan", "scale=none", "data=oracle", "data.vocab_size=20",
                         "data.seq_len=6", "model.discriminator.embed_dim=8", "model.discriminator.windows=[1,2,3]",
                         "model.discriminator.filters=[4,4,4]")
    module = instantiate(cfg.model)
    assert module.rollout_update_rate == 0.0 and module.rollout is None
    reference = TFRollout(module.generator, 0.8)  # sequence_gan.py:137 ROLLOUT(generator, 0.8)
    for _ in range(3):  # G steps, each followed by sequence_gan.py:160 rollout.update_params()
        with torch.no_grad():
            for p in module.generator.parameters():
                p.add_(torch.randn_like(p))
        module.after_step(next(phase for phase in module.phases if phase.name == "g"))
        reference.update_params()
        ours = dict(module.rollout_policy.named_parameters())
        for name, value in reference.parameters().items():
            assert torch.allclose(ours[name], value, atol=1e-6)
    assert module.rollout_policy is module.generator  # no copy: the rewards' completions are G's own


# ---------------------------------------------------------------- ScratchGAN's discriminator (discriminator_nets.py)


def test_scratchgan_discriminator_settings_are_the_references():
    settings = model_settings("scratchgan", "discriminator")
    assert settings["layer_norm"] is True  # experiment.py:45 flags.DEFINE_bool("layer_norm_disc", True, ...)
    assert settings["position_dim"] == 8  # discriminator_nets.py:80 position_dim = 8


def test_position_signal_is_the_references_cosines():
    # utils.get_position_signal(4, 2): periods exp(linspace(log 2, log 4, 2)) = [2, 4],
    # shifts linspace(0, 2, 2) = [0, 2]
    # cos(pi * (t / 2 + 0)) = 1, 0, -1, 0 and cos(pi * (t / 4 + 2)) = 1, 0.7071, 0, -0.7071
    half = math.sqrt(0.5)
    expected = torch.tensor([[1.0, 1.0], [0.0, half], [-1.0, 0.0], [0.0, -half]])
    assert torch.allclose(position_signal(4, 2), expected, atol=1e-6)


def test_layer_norm_lstm_is_sonnets():
    torch.manual_seed(0)
    lstm = LayerNormLSTM(3, 2)
    with torch.no_grad():
        lstm.norm.weight.uniform_(0.5, 1.5), lstm.norm.bias.normal_(), lstm.bias.normal_()
    x = torch.randn(5, 2, 3)
    out, (h, c) = lstm(x)
    W = lstm.gates.weight.T  # [x; h] -> 4H, then LayerNorm, then + b; i, j, f, o; forget bias 1
    hand_h = hand_c = torch.zeros(5, 2)
    for t in range(2):
        gates = torch.cat([x[:, t], hand_h], 1) @ W
        gates = (gates - gates.mean(1, keepdim=True)) / torch.sqrt(gates.var(1, unbiased=False, keepdim=True) + 1e-5)
        i, j, f, o = (gates * lstm.norm.weight + lstm.norm.bias + lstm.bias).split(2, dim=1)
        hand_c = torch.sigmoid(f + 1) * hand_c + torch.sigmoid(i) * torch.tanh(j)
        hand_h = torch.tanh(hand_c) * torch.sigmoid(o)
        assert torch.allclose(out[:, t], hand_h, atol=1e-6)
    assert torch.allclose(h, hand_h, atol=1e-6) and torch.allclose(c, hand_c, atol=1e-6)


def test_scratchgan_with_the_reference_recipe_trains_through_the_real_config(tmp_path):
    from gan.train import load_checkpoint, train

    run = tmp_path / "run"
    train(compose_config(run, "model=scratchgan", "scale=none", "data=oracle", "data.vocab_size=20", "data.seq_len=6",
                         "data.num_train=256", "data.num_val=64", "data.num_test=64", "data.batch_size=16",
                         "model.discriminator.hidden_dim=16", f"paths.cache_dir={tmp_path / 'cache'}"))
    _, _, module = load_checkpoint(run)
    assert module.g_iter == 4 and module.baseline.shape == () and module.baseline != 0
    assert isinstance(module.discriminator.lstm, LayerNormLSTM) and module.discriminator.project is not None
    assert module.grad_clip is None
