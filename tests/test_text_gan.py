"""Text GANs on SeqGAN's oracle benchmark: the oracle data, the likelihood metrics, REINFORCE with rollouts, the
moving-average baseline, and mle / seqgan / scratchgan trained and evaluated through the real config."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import assert_same, compose_config, final_state, kill_and_resume, model_settings
from gan.data.oracle import OracleDataModule
from gan.errors import UserError
from gan.metrics.backbone import resolve_backbone
from gan.metrics.text import token_nll
from gan.models.text import ScratchGAN, discounted_returns, mc_rewards, updated_baseline
from gan.nets.text import LSTMDiscriminator, LSTMGenerator
from gan.train import load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DATA = ["data=oracle", "data.vocab_size=20", "data.seq_len=6", "data.num_train=256", "data.num_val=64",
             "data.num_test=64", "data.batch_size=16"]
TINY_MODEL = {"mle": [],
              "seqgan": ["model.pretrain_iters=2", "model.d_pretrain_iters=1", "model.d_steps=3", "model.rollouts=2",
                         "model.discriminator.embed_dim=8", "model.discriminator.windows=[1,2,3]",
                         "model.discriminator.filters=[4,4,4]"],
              "scratchgan": ["model.discriminator.hidden_dim=16"]}


def oracle_data(tmp_path=None, **overrides) -> OracleDataModule:
    settings = dict(name="oracle", shape=[6], num_classes=None, batch_size=8, vocab_size=20, seq_len=6, embed_dim=8,
                    hidden_dim=8, num_train=200, num_val=50, num_test=50,
                    cache_dir=None if tmp_path is None else str(tmp_path))
    return OracleDataModule(**{**settings, **overrides})


# ---------------------------------------------------------------- the oracle and its data


def test_oracle_data_are_a_function_of_the_oracle_seed_and_are_cached(tmp_path):
    first, again = oracle_data(tmp_path, seed=0), oracle_data(None, seed=7)  # the run seed plays no part
    for split in ("train", "val", "test"):
        assert torch.equal(first.tokens(split), again.tokens(split))
        assert first.tokens(split).dtype == torch.int64 and first.tokens(split).shape[1] == 6
    assert_same(first.oracle.state_dict(), again.oracle.state_dict())
    assert not torch.equal(first.tokens("val"), first.tokens("test")[:50])  # splits have seeds of their own
    other = oracle_data(oracle_seed=1)
    assert not torch.equal(first.tokens("train"), other.tokens("train"))
    assert not torch.equal(first.oracle.output.weight, other.oracle.output.weight)
    assert first.oracle.output.weight.std() == pytest.approx(1.0, abs=0.25)  # SeqGAN's N(0, 1) oracle
    [cached] = (tmp_path / "oracle").glob("*.pt")
    cached_again = oracle_data(tmp_path)
    assert torch.equal(cached_again.tokens("train"), first.tokens("train"))
    assert not list((tmp_path / "oracle").glob(".*"))  # no temp file left behind
    batch = first.fields(*first.dataset("train").batch([0, 1, 2]))
    assert list(batch) == ["tokens"] and batch["tokens"].shape == (3, 6)


def test_oracle_shape_must_follow_the_sequence_length():
    with pytest.raises(UserError, match="data.seq_len"):
        oracle_data(shape=[7])


def test_text_data_use_the_oracle_backbone_only():
    text = SimpleNamespace(name="oracle", shape=(20,), backbone="oracle")
    assert resolve_backbone("auto", text) == "oracle"
    with pytest.raises(UserError, match="oracle"):
        resolve_backbone("toy", text)
    with pytest.raises(UserError, match="oracle"):
        resolve_backbone("oracle", SimpleNamespace(name="ring", shape=(2,), backbone="toy"))


# ---------------------------------------------------------------- the metric


def test_oracle_samples_score_better_than_uniform_tokens():
    data = oracle_data()
    own = token_nll(data.oracle, data.tokens("test"))
    uniform = token_nll(data.oracle, torch.randint(20, (50, 6), generator=torch.Generator().manual_seed(0)))
    assert own < uniform - 0.5


def test_per_token_nll_equals_a_hand_computation():
    torch.manual_seed(0)
    net = LSTMGenerator(vocab_size=3, seq_len=2, embed_dim=2, hidden_dim=2, init_std=0.5, start_token=0)
    tokens = torch.tensor([[2, 1], [0, 0]])
    W_ih, W_hh = net.lstm.weight_ih_l0, net.lstm.weight_hh_l0
    b = net.lstm.bias_ih_l0 + net.lstm.bias_hh_l0
    total = 0.0
    for row in tokens.tolist():
        h, c, previous = torch.zeros(2), torch.zeros(2), 0  # the start token
        for token in row:
            i, f, g, o = (W_ih @ net.embedding.weight[previous] + W_hh @ h + b).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            logits = net.output.weight @ h + net.output.bias
            total -= (logits[token] - torch.logsumexp(logits, 0)).item()
            previous = token
    assert token_nll(net, tokens, batch_size=1) == pytest.approx(total / 4, rel=1e-5)


# ---------------------------------------------------------------- REINFORCE, rollouts, the baseline


def test_reinforce_with_rollouts_raises_the_probability_of_the_rewarded_token():
    torch.manual_seed(0)
    net = LSTMGenerator(vocab_size=5, seq_len=3, embed_dim=4, hidden_dim=8, init_std=0.3)
    rng = torch.Generator().manual_seed(0)
    uniforms = lambda n, steps: torch.rand(n, steps, generator=rng)  # noqa: E731
    judge = lambda tokens: (tokens == 2).float().mean(1)  # noqa: E731 (a "discriminator" that likes token 2)

    def share_of_token_2() -> float:
        return (net.sample(torch.rand(2000, 3, generator=torch.Generator().manual_seed(1))) == 2).float().mean().item()

    before = share_of_token_2()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(15):
        with torch.no_grad():
            tokens = net.sample(uniforms(64, 3))
            rewards = mc_rewards(tokens, net, judge, rollouts=4, uniforms=uniforms)
        assert rewards.shape == (64, 3) and torch.equal(rewards[:, -1], judge(tokens))
        loss = -(net.log_probs(tokens) * rewards).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert share_of_token_2() > before + 0.2


def test_rollout_rewards_of_a_finished_prefix_are_exact():
    net = LSTMGenerator(vocab_size=4, seq_len=3, embed_dim=32, hidden_dim=32, init_std=0.1)
    tokens = torch.tensor([[1, 2, 3]])
    first_token = lambda tokens: (tokens[:, 0] == 1).float()  # noqa: E731 (known once token 1 is given)
    rewards = mc_rewards(tokens, net, first_token, 5, lambda n, s: torch.rand(n, s))
    assert torch.equal(rewards, torch.ones(1, 3))


def test_discounted_returns_and_the_moving_average_baseline_follow_their_definitions():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
    assert torch.allclose(discounted_returns(rewards, 0.5), torch.tensor([[1.5, 1.0, 2.0], [0.5, 1.0, 0.0]]))
    baseline = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(updated_baseline(baseline, rewards, 0.9), 0.9 * baseline + 0.1 * torch.tensor([0.5, 0.5, 1.0]))


def test_scratchgan_step_uses_and_updates_its_baseline():
    torch.manual_seed(0)
    G = LSTMGenerator(vocab_size=6, seq_len=4, embed_dim=4, hidden_dim=8, init_std=0.1)
    D = LSTMDiscriminator(vocab_size=6, seq_len=4, embed_dim=4, hidden_dim=8, dropout=0.1, layer_norm=True,
                          position_dim=2)
    module = ScratchGAN(G, D, torch.optim.Adam, torch.optim.Adam,
                        **{**model_settings("scratchgan"), "discount": 0.5, "baseline_decay": 0.8})
    assert module.baseline.shape == ()  # ScratchGAN's losses.py: one scalar EWMA, read after its update
    module.baseline.fill_(0.3)
    state = module.rng.get_state()
    loss = module.generator_loss({"tokens": torch.zeros(16, 4, dtype=torch.long)})
    module.rng.set_state(state)  # the same draws again, to recompute the step by hand
    tokens = module.fake_tokens(16)
    D.eval()
    with torch.no_grad():
        returns = discounted_returns(2 * torch.sigmoid(D(tokens)) - 1, 0.5)
    baseline = 0.8 * 0.3 + 0.2 * returns.mean()
    assert torch.allclose(module.baseline, baseline)
    expected = -(G.log_probs(tokens) * (returns - baseline)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sampling_is_reproducible_and_leaves_the_training_rng_alone(tmp_path):
    from hydra.utils import instantiate

    module = instantiate(compose_config(tmp_path, "model=seqgan", *TINY_DATA, *TINY_MODEL["seqgan"]).model)
    state = module.rng.get_state()
    first = module.sample(10, generator=torch.Generator().manual_seed(3))["tokens"]
    again = module.sample(10, generator=torch.Generator().manual_seed(3))["tokens"]
    assert first.shape == (10, 6) and first.dtype == torch.int64 and torch.equal(first, again)
    assert torch.equal(module.rng.get_state(), state)


def test_text_models_ask_for_text_data(tmp_path):
    with pytest.raises(UserError, match="data=oracle"):
        train(compose_config(tmp_path / "run", "model=mle", "data=digits"))


# ---------------------------------------------------------------- every text model through the real config


@pytest.mark.parametrize("model", ["mle", "seqgan", "scratchgan"])
def test_each_text_model_trains_and_is_evaluated_with_its_real_data_rows(tmp_path, model):
    run = tmp_path / "run"
    train(compose_config(run, f"model={model}", *TINY_DATA, *TINY_MODEL[model], "g_iters=6", "model.log_every=1",
                         "metrics=default", "metrics.num_samples=64", "metrics.final_num_samples=64",
                         "metrics.every_n_g_iters=3", f"paths.cache_dir={tmp_path / 'cache'}"))
    _, _, module = load_checkpoint(run)
    assert module.g_iter == 6
    report = json.loads((run / "eval.json").read_text())
    values, provenance = report["values"], report["provenance"]
    assert {"nll_oracle", "nll_test", "ref_real/nll_oracle", "ref_real/nll_test"} <= set(values)
    assert all(0 < v < 10 for v in values.values())
    assert values["ref_real/nll_oracle"] < values["nll_oracle"]  # 6 iterations do not reach the oracle's entropy
    assert (provenance["backbone"], provenance["split"], provenance["num_fake"]) == ("oracle", "test", 64)
    assert provenance["selection_monitor"] == "nll_oracle"
    lines = (run / "samples" / "iter_000006.txt").read_text().splitlines()
    assert len(lines) == 65 and all(0 <= int(t) < 20 for t in lines[1].split()) and len(lines[1].split()) == 6
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {key for record in records for key in record if key.endswith("_loss")}
    assert losses == {"mle": {"train/mle_loss"}, "seqgan": {"train/mle_loss", "train/d_loss", "train/g_loss"},
                      "scratchgan": {"train/d_loss", "train/g_loss"}}[model]
    if model == "seqgan":  # stages: MLE at 0-1, D alone at 2, then adversarial; the rollout starts as G
        stages = {r["g_iter"]: r["train/stage"] for r in records if "train/stage" in r}
        assert stages == {1: 0, 2: 0, 3: 1, 4: 2, 5: 2, 6: 2}
        assert "train/g_loss" not in next(r for r in records if r.get("g_iter") == 3)
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
        assert ckpt["global_step"] == 2 + 3 + 3 * (1 + 3)  # 2 MLE steps, 3 D steps, then 1 G + 3 D steps each


@pytest.mark.slow
def test_seqgan_killed_in_the_adversarial_stage_resumes_exactly(tmp_path):
    args = ["model=seqgan", *TINY_DATA, *TINY_MODEL["seqgan"], "model.pretrain_iters=3", "model.d_pretrain_iters=2",
            "g_iters=14", "logger=none", "metrics=none", "callbacks.checkpoint.every_g_iters=3",
            "callbacks.samples.every_g_iters=100", "model.log_every=5", f"paths.cache_dir={tmp_path / 'cache'}"]
    whole, parts = kill_and_resume(tmp_path, args)
    killed_at = torch.load(parts / "checkpoints" / "g000009.ckpt", weights_only=False)
    assert killed_at["gan_progress"]["g_iter"] == 9  # four adversarial iterations in (they start at 5)
    state = final_state(whole)
    assert state["progress"]["g_iter"] == 14
    assert_same(state, final_state(parts))


def test_rollout_is_a_delayed_copy_of_the_generator(tmp_path):
    from hydra.utils import instantiate

    module = instantiate(compose_config(tmp_path, "model=seqgan", *TINY_DATA, *TINY_MODEL["seqgan"],
                                        "model.rollout_update_rate=0.75").model)
    rollout, live = module.rollout.output.weight, module.generator.output.weight
    with torch.no_grad():
        live.add_(1.0)
    before = rollout.clone()
    module.after_step(next(p for p in module.phases if p.name == "g"))
    assert torch.allclose(rollout, 0.75 * before + 0.25 * live)
    assert isinstance(module.rollout, nn.Module) and not any(p.requires_grad for p in module.rollout.parameters())
