"""Decoding strategies on toy step functions whose best outputs are known by construction.

Token ids everywhere: 0 = BOS, 1 = EOS, 2.. = words.
"""

from __future__ import annotations

import itertools
import math
from collections import namedtuple

import pytest
import torch

from radpair.errors import ConfigError
from radpair.generation import (
    DecodingConfig,
    beam_search,
    decode,
    greedy_search,
    nucleus_sampling,
    reorder_state,
)
from radpair.generation import decoding as decoding_module

BOS, EOS = 0, 1
ALL = ("greedy", "beam", "nucleus")


# --------------------------------------------------------------------------- toy models


def bigram(table: dict[int, dict[int, float]], vocab: int, eps: float = 1e-3) -> torch.Tensor:
    """Log transition matrix: listed probabilities, ``eps`` elsewhere, BOS never generated."""
    probs = torch.full((vocab, vocab), eps, dtype=torch.float64)
    for src, row in table.items():
        for dst, p in row.items():
            probs[src, dst] = p
    probs[:, BOS] = 0.0
    probs = probs / probs.sum(1, keepdim=True)
    return probs.log().float()


def bigram_step(logp: torch.Tensor):
    def step(prefix, state):
        assert state is None
        return logp[prefix[:, -1]], None

    return step


def sequence_logprob(logp: torch.Tensor, tokens: list[int], finished: bool) -> float:
    path = [BOS, *tokens] + ([EOS] if finished else [])
    return sum(float(logp[a, b]) for a, b in zip(path, path[1:]))


def script_model(scripts: list[list[int]], vocab: int = 8):
    """Each row (state = its script index) strongly wants its script, then EOS; second choices
    follow a fixed, tie-free order so that bans have a deterministic effect."""
    length = max(map(len, scripts)) + 1
    padded = torch.tensor([s + [EOS] * (length - len(s)) for s in scripts])
    base = -0.1 * torch.arange(vocab, dtype=torch.float32)
    base[BOS] = float("-inf")
    base[EOS] = -3.0
    calls = []

    def step(prefix, rows):
        t = min(prefix.shape[1] - 1, length - 1)
        target = padded[rows, t]
        calls.append(prefix.shape[0])
        return base.expand(len(rows), vocab) + 5.0 * torch.nn.functional.one_hot(target, vocab), rows

    state = torch.arange(len(scripts))
    return step, state, calls


def history_tables(vocab: int = 7, modulus: int = 97, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    table = 2.0 * torch.randn(modulus, vocab, generator=g)
    table[:, BOS] = float("-inf")
    table[:, EOS] -= 0.5
    return table


def _next_history(hist: torch.Tensor, last: torch.Tensor, modulus: int) -> torch.Tensor:
    return (hist * 3 + last + 1) % modulus


def history_model(table: torch.Tensor, offsets: torch.Tensor):
    """Logits depend on a per-row offset and a running hash of the prefix, both carried in a
    nested state: a mis-ordered state after a beam reorder gives different tokens."""
    modulus = table.shape[0]

    def step(prefix, state):
        hist = _next_history(state["hist"][0], prefix[:, -1], modulus)
        logits = table[(hist + state["offset"]) % modulus]
        return logits, {"offset": state["offset"], "hist": (hist, None), "calls": state["calls"] + 1}

    state = {"offset": offsets.clone(), "hist": (torch.zeros_like(offsets), None), "calls": 0}
    return step, state


def history_reference(table: torch.Tensor, offsets: torch.Tensor):
    """The same model, stateless: recomputes the hash from the prefix and finds the input row
    from the documented layout (row b's beams are contiguous)."""
    modulus = table.shape[0]

    def step(prefix, state):
        per_row = prefix.shape[0] // len(offsets)
        hist = torch.zeros(prefix.shape[0], dtype=torch.long)
        for col in range(prefix.shape[1]):
            hist = _next_history(hist, prefix[:, col], modulus)
        offset = offsets[torch.arange(prefix.shape[0]) // per_row]
        return table[(hist + offset) % modulus], None

    return step


def run(strategy_fn, step, state, batch, **cfg_kwargs):
    generator = cfg_kwargs.pop("generator", None)
    cfg = DecodingConfig(**cfg_kwargs)
    return strategy_fn(step, state, batch, bos_id=BOS, eos_id=EOS, cfg=cfg, generator=generator)


def run_named(strategy: str, step, state, batch, **cfg_kwargs):
    generator = cfg_kwargs.pop("generator", torch.Generator().manual_seed(0))
    cfg = DecodingConfig(strategy=strategy, **cfg_kwargs)
    return decode(step, state, batch, bos_id=BOS, eos_id=EOS, cfg=cfg, generator=generator)


def assert_same(a, b):
    assert a.tokens == b.tokens
    assert torch.equal(a.finished, b.finished)
    assert torch.allclose(a.scores, b.scores)


OFFSETS = torch.tensor([0, 5, 11, 23, 42])


# --------------------------------------------------------------------------- greedy / beam basics


def test_greedy_follows_argmax_and_scores_are_sequence_logprobs():
    logp = bigram({BOS: {2: 0.7}, 2: {3: 0.6}, 3: {EOS: 0.8}}, vocab=5)
    out = run(greedy_search, bigram_step(logp), None, 3)
    assert out.tokens == [[2, 3]] * 3
    assert out.finished.tolist() == [True] * 3
    assert out.scores.shape == (3,)
    assert out.scores[0].item() == pytest.approx(sequence_logprob(logp, [2, 3], True), abs=1e-5)


def test_beam_beats_myopic_greedy():
    # Greedy takes A (0.6) but every continuation of A is weak; B then EOS is worth 0.36 > 0.216.
    A, B, C = 2, 3, 4
    logp = bigram(
        {
            BOS: {A: 0.6, B: 0.4},
            A: {C: 0.4, B: 0.32, EOS: 0.28},
            B: {EOS: 0.9, A: 0.06, C: 0.04},
            C: {EOS: 0.9, A: 0.06, B: 0.04},
        },
        vocab=5,
    )
    greedy = run(greedy_search, bigram_step(logp), None, 1)
    beam = run(beam_search, bigram_step(logp), None, 1, beam_width=2, length_penalty=0.0)
    assert greedy.tokens == [[A, C]]
    assert beam.tokens == [[B]]
    assert beam.finished.tolist() == [True]
    assert beam.scores[0].item() == pytest.approx(sequence_logprob(logp, [B], True), abs=1e-5)
    assert beam.scores[0] > greedy.scores[0]


def test_length_penalty_changes_the_choice():
    # Short [X] has log-prob ~-0.70 (len 2); long [Y, Z, W] ~-0.96 (len 4).
    X, Y, Z, W = 2, 3, 4, 5
    logp = bigram({BOS: {X: 0.5, Y: 0.45}, X: {EOS: 0.97}, Y: {Z: 0.95}, Z: {W: 0.95}, W: {EOS: 0.95}}, vocab=6)
    plain = run(beam_search, bigram_step(logp), None, 1, beam_width=2, length_penalty=0.0)
    normalised = run(beam_search, bigram_step(logp), None, 1, beam_width=2, length_penalty=1.0)
    assert plain.tokens == [[X]]
    assert normalised.tokens == [[Y, Z, W]]
    expected = sequence_logprob(logp, [Y, Z, W], True) / 4
    assert normalised.scores[0].item() == pytest.approx(expected, abs=1e-5)


def test_wide_beam_matches_exhaustive_search():
    g = torch.Generator().manual_seed(3)
    logp = torch.log_softmax(torch.randn(5, 5, generator=g), dim=-1)
    logp[:, BOS] = float("-inf")
    logp = torch.log_softmax(logp, dim=-1)
    words, max_length = [2, 3, 4], 3
    best = max(
        [sequence_logprob(logp, list(p), True) for n in range(max_length) for p in itertools.product(words, repeat=n)]
        + [sequence_logprob(logp, list(p), False) for p in itertools.product(words, repeat=max_length)]
    )
    out = run(beam_search, bigram_step(logp), None, 2, beam_width=16, length_penalty=0.0, max_length=max_length)
    assert out.scores.tolist() == pytest.approx([best, best], abs=1e-5)


@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 0.6, 1.0, 2.0])
@pytest.mark.parametrize("no_repeat_ngram", [0, 2])
def test_beam_width_one_is_greedy(length_penalty, no_repeat_ngram):
    table = history_tables(seed=1)
    step, state = history_model(table, OFFSETS)
    greedy = run(greedy_search, step, state, 5, max_length=12, no_repeat_ngram=no_repeat_ngram)
    beam = run(
        beam_search, step, state, 5, max_length=12, beam_width=1,
        length_penalty=length_penalty, no_repeat_ngram=no_repeat_ngram,
    )
    assert beam.tokens == greedy.tokens
    assert beam.finished.tolist() == greedy.finished.tolist()
    assert any(greedy.finished) and any(len(t) > 1 for t in greedy.tokens)  # the case is not trivial


# --------------------------------------------------------------------------- state handling


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_stateful_model_matches_stateless_reference(strategy):
    table = history_tables(seed=2)
    step, state = history_model(table, OFFSETS)
    reference = history_reference(table, OFFSETS)
    kwargs = dict(max_length=10, beam_width=3, length_penalty=0.7)
    assert_same(run_named(strategy, step, state, 5, **kwargs), run_named(strategy, reference, None, 5, **kwargs))


def test_beam_state_must_follow_reordered_beams(monkeypatch):
    table = history_tables(seed=2)
    step, state = history_model(table, OFFSETS)
    kwargs = dict(max_length=10, beam_width=3, length_penalty=0.7)
    correct = run(beam_search, step, state, 5, **kwargs)
    real = decoding_module.reorder_state
    expansion = []

    def expand_only(s, index):  # expands once, then (wrongly) never permutes
        expansion.append(expansion[0] if expansion else index)  # nested calls share the index
        return real(s, index) if index is expansion[0] else s

    monkeypatch.setattr(decoding_module, "reorder_state", expand_only)
    broken = run(beam_search, step, state, 5, **kwargs)
    assert broken.tokens != correct.tokens  # so the reference test above can catch a bad reorder


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_batching_does_not_leak_between_rows(strategy):
    table = history_tables(seed=4)
    step, state = history_model(table, OFFSETS)
    kwargs = dict(max_length=9, beam_width=3, length_penalty=0.5, no_repeat_ngram=2)
    batched = run_named(strategy, step, state, 5, **kwargs)
    for row in range(5):
        alone_step, alone_state = history_model(table, OFFSETS[row : row + 1])
        alone = run_named(strategy, alone_step, alone_state, 1, **kwargs)
        assert alone.tokens[0] == batched.tokens[row]
        assert alone.finished[0] == batched.finished[row]
        assert alone.scores[0].item() == pytest.approx(batched.scores[row].item(), abs=1e-5)


def test_reorder_state_handles_nested_structures():
    Pair = namedtuple("Pair", "h c")
    state = {"lstm": Pair(torch.arange(3), torch.arange(3) * 10), "feats": [torch.eye(3), None], "step": 4}
    out = reorder_state(state, torch.tensor([2, 2, 0]))
    assert isinstance(out["lstm"], Pair)
    assert out["lstm"].h.tolist() == [2, 2, 0]
    assert out["lstm"].c.tolist() == [20, 20, 0]
    assert out["feats"][0].tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0]]
    assert out["feats"][1] is None and out["step"] == 4
    assert reorder_state(None, torch.tensor([0])) is None
    with pytest.raises(TypeError, match="cannot reorder"):
        reorder_state(object(), torch.tensor([0]))


def test_wrong_logit_shape_is_reported():
    def step(prefix, state):
        return torch.zeros(prefix.shape[0] + 1, 4), state

    with pytest.raises(ValueError, match="expected \\[2, vocab\\]"):
        run(greedy_search, step, None, 2)


# --------------------------------------------------------------------------- lengths


@pytest.mark.parametrize("strategy", ALL)
def test_max_length_truncates_and_flags_unfinished_rows(strategy):
    step, state, calls = script_model([[2, 3], [4] * 10, []])
    out = run_named(strategy, step, state, 3, max_length=4, top_p=1e-6)
    assert out.tokens == [[2, 3], [4, 4, 4, 4], []]
    assert out.finished.tolist() == [True, False, True]


@pytest.mark.parametrize("strategy", ["greedy", "nucleus"])
def test_stops_once_every_row_is_finished(strategy):
    step, state, calls = script_model([[2, 3], [4, 5, 6], []])
    out = run_named(strategy, step, state, 3, max_length=50)
    assert out.finished.all()
    assert len(calls) == 4  # the longest script plus its EOS


def test_beam_stops_early_too():
    step, state, calls = script_model([[2, 3], [4, 5, 6], []])
    out = run_named("beam", step, state, 3, max_length=50, beam_width=2)
    assert out.tokens == [[2, 3], [4, 5, 6], []]
    assert len(calls) < 10
    assert set(calls) == {6}  # B * W model rows every step


@pytest.mark.parametrize("strategy", ALL)
def test_min_length_forbids_early_eos(strategy):
    step, state, _ = script_model([[], [2]])
    out = run_named(strategy, step, state, 2, min_length=3, top_p=0.5)
    assert [len(t) for t in out.tokens] == [3, 3]
    assert out.finished.all()


# --------------------------------------------------------------------------- no-repeat n-grams


def _ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_blocks_a_model_that_wants_to_repeat(strategy, n):
    scripts = [[2, 3] * 5, [4] * 6, [5, 6, 7] * 3]
    step, state, _ = script_model(scripts)
    free = run_named(strategy, step, state, 3, max_length=12, top_p=0.3)
    assert free.tokens == scripts  # without the ban the model repeats
    out = run_named(strategy, step, state, 3, max_length=12, top_p=0.3, no_repeat_ngram=n)
    for tokens in out.tokens:
        grams = _ngrams(tokens, n)
        assert len(grams) == len(set(grams)), tokens
    assert out.tokens != scripts


def test_no_repeat_ngram_exact_greedy_choice():
    step, state, _ = script_model([[2, 3, 2, 3, 2]])
    out = run_named("greedy", step, state, 1, no_repeat_ngram=2)
    # at 2,3,2 the model wants 3, but (2,3) was used: the next preferred token 2 is taken instead
    assert out.tokens[0][:4] == [2, 3, 2, 2]


def test_all_tokens_banned_falls_back_to_eos():
    def step(prefix, state):  # only token 2 is ever allowed by the model
        logits = torch.full((prefix.shape[0], 3), float("-inf"))
        logits[:, 2] = 0.0
        return logits, state

    out = run(greedy_search, step, None, 2, no_repeat_ngram=1)
    assert out.tokens == [[2], [2]]
    assert out.finished.all()


# --------------------------------------------------------------------------- nucleus


def test_nucleus_is_reproducible_per_generator_and_leaves_global_rng_alone():
    table = history_tables(seed=5)
    step, state = history_model(table, OFFSETS)
    kwargs = dict(max_length=15, top_p=0.95, temperature=1.5)
    before = torch.get_rng_state()

    def sample(seed):
        return run(nucleus_sampling, step, state, 5, generator=torch.Generator().manual_seed(seed), **kwargs)

    a, b, c = sample(0), sample(0), sample(1)
    run(nucleus_sampling, step, state, 5, **kwargs)  # no generator: a private one, still not the global RNG
    assert torch.equal(torch.get_rng_state(), before)
    assert a.tokens == b.tokens and torch.equal(a.scores, b.scores)
    assert a.tokens != c.tokens


def test_tiny_top_p_is_greedy():
    table = history_tables(seed=6)
    step, state = history_model(table, OFFSETS)
    greedy = run(greedy_search, step, state, 5, max_length=12)
    nucleus = run(nucleus_sampling, step, state, 5, max_length=12, top_p=1e-6, temperature=0.7,
                  generator=torch.Generator().manual_seed(0))
    assert nucleus.tokens == greedy.tokens
    assert torch.allclose(nucleus.scores, greedy.scores)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("name, hint", [("beem", "beam"), ("greedyy", "greedy"), ("nucleous", "nucleus")])
def test_unknown_strategy_suggests_the_closest(name, hint):
    with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
        DecodingConfig(strategy=name).validate()
    with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
        decode(bigram_step(torch.zeros(3, 3)), None, 1, bos_id=BOS, eos_id=EOS, cfg=DecodingConfig(strategy=name))


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_length", 0),
        ("min_length", -1),
        ("min_length", 500),
        ("beam_width", 0),
        ("beam_width", 2.0),
        ("no_repeat_ngram", -1),
        ("length_penalty", math.nan),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("temperature", 0.0),
    ],
)
def test_bad_values_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        DecodingConfig(**{field: value}).validate()


def test_bad_batch_size_is_a_config_error():
    with pytest.raises(ConfigError, match="batch_size"):
        run(greedy_search, bigram_step(torch.zeros(3, 3)), None, 0)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    table = history_tables(seed=7)
    cpu_step, cpu_state = history_model(table, OFFSETS)
    gpu_step, gpu_state = history_model(table.cuda(), OFFSETS.cuda())
    for strategy in ("greedy", "beam"):
        kwargs = dict(max_length=10, beam_width=3, no_repeat_ngram=2)
        assert run_named(strategy, gpu_step, gpu_state, 5, **kwargs).tokens == run_named(
            strategy, cpu_step, cpu_state, 5, **kwargs
        ).tokens
    gen = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    a = run_named("nucleus", gpu_step, gpu_state, 5, generator=gen())
    b = run_named("nucleus", gpu_step, gpu_state, 5, generator=gen())
    assert a.tokens == b.tokens
