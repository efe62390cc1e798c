"""Token-sequence networks of the text GANs: the LSTM language model (generator, SeqGAN's oracle, the rollout policy),
SeqGAN's CNN discriminator and ScratchGAN's per-step LSTM discriminator. No training logic.

Sampling takes its randomness as uniforms (one per token, drawn by the caller from whichever generator it owns) and
inverts the categorical CDF with them, so a draw depends only on those numbers, on any device.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.errors import UserError, positive_int

State = tuple[Tensor, Tensor]


def text_sizes(vocab_size, seq_len) -> tuple[int, int]:
    """(vocab_size, seq_len) of the data, or a UserError when the data are not token sequences (no vocabulary)."""
    if vocab_size is None or seq_len is None:
        raise UserError("This model generates token sequences and needs text data with a vocabulary: use data=oracle "
                        "(SeqGAN's synthetic benchmark).")
    return positive_int("data.vocab_size", vocab_size), positive_int("data.seq_len", seq_len)


def categorical(logits: Tensor, uniforms: Tensor) -> Tensor:
    """One token per row of `logits` [N, V], by inverting the CDF of softmax(logits) at `uniforms` [N] in [0, 1)."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)
    index = torch.searchsorted(cdf, (uniforms.to(cdf) * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
    return index.clamp_(max=logits.shape[-1] - 1)


class LSTMGenerator(nn.Module):
    """An LSTM language model over `vocab_size` tokens, sequences of `seq_len` (SeqGAN: embedding and hidden 32).

    Every parameter is drawn from N(0, init_std^2), with one bias per gate as the reference LSTM (PyTorch's second
    bias set to zero): init_std 1 is SeqGAN's oracle, 0.1 its generator. The first input is `start_token`.
    """

    def __init__(self, vocab_size: int, seq_len: int, embed_dim: int, hidden_dim: int, init_std: float,
                 start_token: int = 0):
        super().__init__()
        self.vocab_size, self.seq_len = text_sizes(vocab_size, seq_len)
        self.start_token = int(start_token)
        self.embedding = nn.Embedding(self.vocab_size, positive_int("embed_dim", embed_dim))
        self.lstm = nn.LSTM(embed_dim, positive_int("hidden_dim", hidden_dim), batch_first=True)
        self.output = nn.Linear(hidden_dim, self.vocab_size)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.normal_(0.0, float(init_std))
            self.lstm.bias_hh_l0.zero_()

    def inputs(self, tokens: Tensor) -> Tensor:
        """The inputs that predict `tokens` [B, T]: the start token, then every token but the last."""
        return torch.cat([self.start(tokens), tokens[:, :-1]], dim=1)

    def start(self, tokens: Tensor) -> Tensor:
        return torch.full((len(tokens), 1), self.start_token, dtype=torch.long, device=tokens.device)

    def run(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """(logits [B, L, V] of the token after each input, the LSTM state after the last input)."""
        out, state = self.lstm(self.embedding(inputs), state)
        return self.output(out), state

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits [B, T, V]: position t predicts tokens[:, t] from tokens[:, :t] (teacher forcing)."""
        return self.run(self.inputs(tokens))[0]

    def log_probs(self, tokens: Tensor) -> Tensor:
        """log p(y_t | y_<t) of every token, [B, T]."""
        logits = self(tokens)
        return -F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1),
                                reduction="none").view_as(tokens)

    def prefix_state(self, tokens: Tensor, length: int) -> tuple[Tensor, State]:
        """(logits [B, V] of the next token, state) after reading the start token and tokens[:, :length]."""
        logits, state = self.run(torch.cat([self.start(tokens), tokens[:, :length]], dim=1))
        return logits[:, -1], state

    def continue_from(self, logits: Tensor, state: State, uniforms: Tensor) -> Tensor:
        """Sample uniforms.shape[1] tokens [N, S], the first from `logits` [N, V], then reading each one back."""
        tokens = []
        for step in range(uniforms.shape[1]):
            token = categorical(logits, uniforms[:, step])
            tokens.append(token)
            if step + 1 < uniforms.shape[1]:
                out, state = self.run(token[:, None], state)
                logits = out[:, 0]
        return torch.stack(tokens, dim=1)

    def sample(self, uniforms: Tensor) -> Tensor:
        """Sequences [N, seq_len] drawn with `uniforms` [N, seq_len] (one uniform in [0, 1) per token)."""
        empty = torch.empty(len(uniforms), 0, dtype=torch.long, device=uniforms.device)
        return self.continue_from(*self.prefix_state(empty, 0), uniforms)


class Highway(nn.Module):
    """y = t * relu(W_H x) + (1 - t) * x, t = sigmoid(W_T x) (Srivastava et al. 2015; SeqGAN's discriminator)."""

    def __init__(self, size: int):
        super().__init__()
        self.transform, self.gate = nn.Linear(size, size), nn.Linear(size, size)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.gate(x))
        return gate * F.relu(self.transform(x)) + (1 - gate) * x


class CNNDiscriminator(nn.Module):
    """SeqGAN's discriminator (after Kim 2014 / Zhang & LeCun 2015): embedding, 1-D convolutions of several window
    sizes with many filters each, ReLU, max-over-time pooling, a highway layer, dropout, one logit (sigmoid: the
    probability that the sequence is real). Windows longer than the sequence are left out (the paper's 15 and 20
    need sequences of at least that length). Defaults are the paper's."""

    def __init__(self, vocab_size: int, seq_len: int, embed_dim: int, windows: Sequence[int], filters: Sequence[int],
                 filter_scale: float, dropout: float):
        super().__init__()
        if len(windows) != len(filters):
            raise UserError(f"model.discriminator.windows ({len(windows)} sizes) and model.discriminator.filters "
                            f"({len(filters)} counts) must have the same length: one filter count per window size.")
        vocab_size, seq_len = text_sizes(vocab_size, seq_len)
        kept = [(int(w), max(1, round(int(f) * float(filter_scale)))) for w, f in zip(windows, filters) if w <= seq_len]
        if not kept:
            raise UserError(f"No window of model.discriminator.windows={list(windows)} fits sequences of length "
                            f"{seq_len}. Use windows of at most {seq_len}.")
        self.embedding = nn.Embedding(vocab_size, positive_int("embed_dim", embed_dim))
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, f, w) for w, f in kept)
        features = sum(f for _, f in kept)
        self.highway, self.dropout, self.output = Highway(features), nn.Dropout(dropout), nn.Linear(features, 1)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embedding(tokens).transpose(1, 2)  # [B, E, T]
        pooled = torch.cat([F.relu(conv(x)).amax(dim=2) for conv in self.convs], dim=1)
        return self.output(self.dropout(self.highway(pooled))).squeeze(1)


class LSTMDiscriminator(nn.Module):
    """ScratchGAN's discriminator: an LSTM reads the sequence and gives one logit per position, the logit at t
    judging the prefix y_1..y_t (a dense, per-step reward for the generator). Dropout on embeddings and outputs.

    As the reference (deepmind-research scratchgan/discriminator_nets.py LSTMEmbedDiscNet): `position_dim` > 0
    appends that many fixed cosine waves to each embedding (utils.get_position_signal) and projects the two linearly
    to the LSTM's width (lines 80-85); `layer_norm` makes the LSTM sonnet's layer-normalised one (line 94,
    `snt.LSTM(feature_size, use_layer_norm=True)`). Both off: a plain nn.LSTM on the embeddings."""

    def __init__(self, vocab_size: int, seq_len: int, embed_dim: int, hidden_dim: int, dropout: float,
                 layer_norm: bool, position_dim: int):
        super().__init__()
        vocab_size, seq_len = text_sizes(vocab_size, seq_len)
        self.embedding = nn.Embedding(vocab_size, positive_int("embed_dim", embed_dim))
        hidden_dim = positive_int("hidden_dim", hidden_dim)
        if isinstance(position_dim, bool) or not isinstance(position_dim, int) or position_dim < 0:
            raise UserError(f"model.discriminator.position_dim must be an integer >= 0, got {position_dim!r}.")
        self.project = None
        if position_dim:
            self.register_buffer("positions", position_signal(seq_len, position_dim), persistent=False)
            self.project = nn.Linear(embed_dim + position_dim, hidden_dim)
        inputs = hidden_dim if position_dim else embed_dim
        self.lstm = LayerNormLSTM(inputs, hidden_dim) if layer_norm else nn.LSTM(inputs, hidden_dim, batch_first=True)
        self.dropout, self.output = nn.Dropout(dropout), nn.Linear(hidden_dim, 1)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits [B, T]."""
        inputs = self.dropout(self.embedding(tokens))
        if self.project is not None:
            positions = self.positions[: tokens.shape[1]].expand(len(tokens), -1, -1)
            inputs = self.project(torch.cat([inputs, positions.to(inputs)], dim=-1))
        out, _ = self.lstm(inputs)
        return self.output(self.dropout(out)).squeeze(-1)


def position_signal(seq_len: int, position_dim: int) -> Tensor:
    """ScratchGAN's fixed position signal [T, P] (utils.get_position_signal): cosine waves whose periods are spaced
    geometrically from 2 to T, shifted by linspace(0, 2, P) half-turns: cos(pi * (t / period_p + shift_p))."""
    periods = torch.exp(torch.linspace(math.log(2.0), math.log(float(seq_len)), position_dim, dtype=torch.float64))
    shifts = torch.linspace(0.0, 2.0, position_dim, dtype=torch.float64)
    steps = torch.arange(seq_len, dtype=torch.float64)[:, None]
    return torch.cos(math.pi * (steps / periods[None, :] + shifts[None, :])).float()


class LayerNormLSTM(nn.Module):
    """Sonnet 1's LSTM with use_layer_norm (gated_rnn.py LSTM._build): gates = LayerNorm(W [x; h]) + b split into
    i, j, f, o; c' = sigmoid(f + 1) c + sigmoid(i) tanh(j) (forget_bias 1.0); h' = tanh(c') sigmoid(o). Batch first,
    zero initial state; returns (outputs [B, T, H], (h, c)) as nn.LSTM does."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.gates = nn.Linear(input_dim + hidden_dim, 4 * hidden_dim, bias=False)
        self.norm = nn.LayerNorm(4 * hidden_dim)
        self.bias = nn.Parameter(torch.zeros(4 * hidden_dim))

    def forward(self, inputs: Tensor) -> tuple[Tensor, State]:
        h = c = inputs.new_zeros(len(inputs), self.hidden_dim)
        outputs = []
        for t in range(inputs.shape[1]):
            i, j, f, o = (self.norm(self.gates(torch.cat([inputs[:, t], h], dim=-1))) + self.bias).chunk(4, dim=-1)
            c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(j)
            h = torch.tanh(c) * torch.sigmoid(o)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)
