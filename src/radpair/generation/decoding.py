"""Batched autoregressive decoding (greedy, beam, nucleus) for the report-generation models.

Why not Hugging Face ``generate``: it drives a ``PreTrainedModel`` through its own cache API
(``past_key_values``, ``prepare_inputs_for_generation``). Neither of our captioners fits that:
TieNet is an LSTM with spatial attention whose state is ``(h, c)`` plus image features, and
RadTex is a VirTex-style decoder that re-reads the whole prefix every step. Both can, however,
be written as one small *step function* over an arbitrary nested state, so the search loops
live here and stay model-agnostic. The per-step logit rules that HF gets right and batched
(no-repeat n-gram bans, top-p filtering) are reused from ``transformers`` rather than rewritten.

Conventions shared by all strategies:

* Lengths count *new* tokens: BOS is never counted, EOS is.
* Every reported log-probability is under the *constrained* model distribution, i.e. after
  the ``min_length`` EOS ban and the no-repeat n-gram ban are applied, and before temperature
  or top-p (those shape sampling, not the model's belief).
* Beam ranking uses a plain power length penalty, ``sum_logprob / len ** length_penalty``
  (HF / fairseq style, not GNMT's ``((5 + len) / 6) ** alpha``).
* If the bans leave a row with no token at all (tiny vocabularies, aggressive n-gram size),
  EOS is allowed for that row: ending is the only move that cannot repeat anything, and the
  alternative is a NaN distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from radpair.errors import ConfigError, unknown_choice_message

Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
STRATEGIES = ("greedy", "beam", "nucleus")
_PASSTHROUGH = (int, float, bool, str, bytes)


# --------------------------------------------------------------------------- config / output


@dataclass
class DecodingConfig:
    """How to turn a step function into reports.

    ``strategy`` is only read by :func:`decode`; the strategy functions ignore it so they can be
    called directly with a shared config.
    """

    strategy: str = "greedy"
    max_length: int = 170
    min_length: int = 0
    beam_width: int = 2
    length_penalty: float = 1.0
    no_repeat_ngram: int = 0
    top_p: float = 0.9
    temperature: float = 1.0

    def validate(self) -> None:
        """Fail before any model call, naming the field and the accepted range."""
        if self.strategy not in STRATEGIES:
            raise ConfigError(unknown_choice_message("decoding strategy", self.strategy, STRATEGIES))
        _require_int("max_length", self.max_length, minimum=1)
        _require_int("min_length", self.min_length, minimum=0)
        if self.min_length > self.max_length:
            raise ConfigError(
                f"decoding min_length ({self.min_length}) exceeds max_length ({self.max_length})"
            )
        _require_int("beam_width", self.beam_width, minimum=1)
        _require_int("no_repeat_ngram", self.no_repeat_ngram, minimum=0)
        _require_finite("length_penalty", self.length_penalty)
        _require_finite("top_p", self.top_p)
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ConfigError(f"decoding top_p must be in (0, 1], got {self.top_p!r}")
        _require_finite("temperature", self.temperature)
        if float(self.temperature) <= 0.0:
            raise ConfigError(f"decoding temperature must be > 0, got {self.temperature!r}")


def _require_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"decoding {name} must be an integer >= {minimum}, got {value!r}")


def _require_finite(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"decoding {name} must be a finite number, got {value!r}")


@dataclass
class DecodeOutput:
    """One result per input row.

    ``tokens`` exclude BOS and the final EOS, so they can go straight to a tokenizer.
    ``scores`` (CPU, float32) are total log-probabilities of the returned sequences, EOS
    included when reached; for beam search they are the length-penalised scores the beams
    were ranked by (equal to the total log-probability when ``length_penalty == 0``).
    ``finished`` (CPU, bool) says whether EOS was produced within ``max_length``.
    """

    tokens: list[list[int]]
    scores: torch.Tensor
    finished: torch.Tensor


# --------------------------------------------------------------------------- state handling


def reorder_state(state: Any, index: torch.Tensor) -> Any:
    """Select rows of every tensor in a nested state, keeping the container types.

    Beam search expands and permutes hypotheses; the models own arbitrary states (LSTM
    ``(h, c)``, image features, caches), so the reordering must not need to know their shape.
    Python scalars and None pass through because they are not per-row.
    """
    if state is None or isinstance(state, _PASSTHROUGH):
        return state
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # namedtuple
        return type(state)(*(reorder_state(s, index) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_state(s, index) for s in state)
    if isinstance(state, dict):
        return type(state)((k, reorder_state(v, index)) for k, v in state.items())
    raise TypeError(
        f"cannot reorder decoding state of type {type(state).__name__}; "
        "use tensors inside tuples, lists, dicts or None"
    )


def _state_device(state: Any) -> torch.device:
    """The first tensor's device, so BOS is created where the model will look for it."""
    return _first_tensor_device(state) or torch.device("cpu")


def _first_tensor_device(state: Any) -> torch.device | None:
    if isinstance(state, torch.Tensor):
        return state.device
    children = state.values() if isinstance(state, dict) else state if isinstance(state, (tuple, list)) else ()
    for child in children:
        device = _first_tensor_device(child)
        if device is not None:
            return device
    return None


def _call_step(step: Step, prefix: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    """Run the model and catch shape mistakes here rather than deep inside the search."""
    logits, state = step(prefix, state)
    if logits.dim() != 2 or logits.shape[0] != prefix.shape[0]:
        raise ValueError(
            f"step function returned logits of shape {tuple(logits.shape)}; "
            f"expected [{prefix.shape[0]}, vocab]"
        )
    return logits, state


# --------------------------------------------------------------------------- logit rules


class _Constraints:
    """The bans every strategy shares; built once per call so HF is imported only if needed."""

    def __init__(self, cfg: DecodingConfig, eos_id: int) -> None:
        self.min_length = cfg.min_length
        self.eos_id = eos_id
        self.no_repeat = _no_repeat_processor(cfg.no_repeat_ngram)

    def apply(self, logits: torch.Tensor, prefix: torch.Tensor, generated: int) -> torch.Tensor:
        """Constrained float logits for the next token, given ``generated`` new tokens so far."""
        # Always a private float32 copy: older transformers ban n-grams in place, and the step's
        # logits may be a view of something the model still uses.
        logits = logits.to(torch.float32, copy=True)
        if generated < self.min_length:
            logits = logits.index_fill(1, self._eos(logits), float("-inf"))
        if self.no_repeat is not None:
            # BOS is not part of the hypothesis, so it must not count as the start of an n-gram.
            logits = self.no_repeat(prefix[:, 1:], logits)
        return self._allow_eos_when_stuck(logits)

    def _eos(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.eos_id], device=logits.device)

    def _allow_eos_when_stuck(self, logits: torch.Tensor) -> torch.Tensor:
        stuck = torch.isneginf(logits).all(dim=-1, keepdim=True)
        is_eos = torch.arange(logits.shape[-1], device=logits.device) == self.eos_id
        return torch.where(stuck & is_eos, torch.zeros_like(logits), logits)


def _no_repeat_processor(size: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    if size <= 0:
        return None
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    return NoRepeatNGramLogitsProcessor(size)


def _top_p_warper(top_p: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from transformers.generation.logits_process import TopPLogitsWarper

    return TopPLogitsWarper(float(top_p))


# --------------------------------------------------------------------------- single-path loop


Pick = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _single_path(
    step: Step, state: Any, batch_size: int, bos_id: int, eos_id: int, cfg: DecodingConfig, pick: Pick
) -> DecodeOutput:
    """Shared loop of greedy and sampling: one hypothesis per row, ``pick`` chooses the token.

    Finished rows are fed EOS and score nothing, so the model sees a harmless token and the
    batch keeps its shape (the step functions may hold per-row tensors we cannot shrink safely).
    """
    constraints = _Constraints(cfg, eos_id)
    prefix = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=_state_device(state))
    finished = torch.zeros(batch_size, dtype=torch.bool, device=prefix.device)
    scores = torch.zeros(batch_size, device=prefix.device)
    for generated in range(cfg.max_length):
        logits, state = _call_step(step, prefix, state)
        prefix, finished, scores = (t.to(logits.device) for t in (prefix, finished, scores))
        constrained = constraints.apply(logits, prefix, generated)
        logprobs = torch.log_softmax(constrained, dim=-1)
        token = pick(constrained, prefix)
        token = torch.where(finished, torch.full_like(token, eos_id), token)
        gained = logprobs.gather(1, token[:, None]).squeeze(1)
        scores = scores + torch.where(finished, torch.zeros_like(gained), gained)
        prefix = torch.cat([prefix, token[:, None]], dim=1)
        finished = finished | (token == eos_id)
        if bool(finished.all()):
            break
    tokens = [_cut_at_eos(row, eos_id) for row in prefix[:, 1:].tolist()]
    return DecodeOutput(tokens, scores.float().cpu(), finished.cpu())


def _cut_at_eos(row: list[int], eos_id: int) -> list[int]:
    return row[: row.index(eos_id)] if eos_id in row else row


def greedy_search(
    step: Step,
    state: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    cfg: DecodingConfig,
    generator: torch.Generator | None = None,
) -> DecodeOutput:
    """Most likely token at every step; the baseline every other strategy is compared with.

    ``temperature`` and ``top_p`` do not change an argmax, so they are ignored; ``generator`` is
    accepted only so that all strategies share one signature.
    """
    _check_call(cfg, batch_size)
    return _single_path(step, state, batch_size, bos_id, eos_id, cfg, lambda logits, _: logits.argmax(-1))


def nucleus_sampling(
    step: Step,
    state: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    cfg: DecodingConfig,
    generator: torch.Generator | None = None,
) -> DecodeOutput:
    """Top-p sampling with temperature, drawing only from ``generator``.

    Reproducibility must not depend on, or disturb, whatever else uses the global RNG (data
    loaders, dropout); without a generator a fresh, randomly seeded one is used.
    """
    _check_call(cfg, batch_size)
    if generator is None:
        generator = torch.Generator(device=_state_device(state))
        generator.seed()
    top_p = _top_p_warper(cfg.top_p)

    def pick(logits: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(top_p(prefix, logits / float(cfg.temperature)), dim=-1)
        return _sample(probs, generator)

    return _single_path(step, state, batch_size, bos_id, eos_id, cfg, pick)


def _sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw on the generator's device, so a CPU generator also seeds a CUDA model's samples."""
    if probs.device != generator.device:
        return torch.multinomial(probs.to(generator.device), 1, generator=generator).squeeze(1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# --------------------------------------------------------------------------- beam search


@dataclass
class _Hypothesis:
    score: float
    tokens: list[int]
    finished: bool


class _Pool:
    """A row's best ``width`` completed hypotheses, ranked by length-penalised score."""

    def __init__(self, width: int, length_penalty: float) -> None:
        self.width = width
        self.alpha = float(length_penalty)
        self.hypotheses: list[_Hypothesis] = []

    def penalised(self, logprob: float, length: int) -> float:
        return logprob / (max(length, 1) ** self.alpha)

    def add(self, logprob: float, tokens: list[int], finished: bool) -> None:
        length = len(tokens) + int(finished)
        self.hypotheses.append(_Hypothesis(self.penalised(logprob, length), tokens, finished))
        self.hypotheses.sort(key=lambda h: h.score, reverse=True)
        del self.hypotheses[self.width :]

    def is_done(self, best_live_logprob: float, length: int) -> bool:
        """The usual heuristic (HF ``early_stopping=False``, fairseq): stop once the pool is full
        and the best live beam, scored at its current length, cannot beat the worst pooled one.

        It is exact when ``length_penalty <= 0`` and, unlike a max-length bound, makes width 1
        return exactly the greedy sequence for any penalty.
        """
        if best_live_logprob == float("-inf"):
            return True
        if len(self.hypotheses) < self.width:
            return False
        return self.hypotheses[-1].score >= self.penalised(best_live_logprob, length)

    def best(self) -> _Hypothesis:
        return self.hypotheses[0]


def beam_search(
    step: Step,
    state: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    cfg: DecodingConfig,
    generator: torch.Generator | None = None,
) -> DecodeOutput:
    """Width-``beam_width`` search over all rows at once (``batch_size * beam_width`` model rows).

    Row ``b``'s beams are the contiguous model rows ``b*W .. b*W+W-1``. At step 0 only the
    first beam is live, otherwise W copies of one prefix would fill the beam. Each step keeps,
    per row, the best W non-EOS continuations among the top 2W candidates (there are always
    enough, since each beam contributes at most one EOS); EOS candidates ranked within the top
    W go to the row's pool. ``generator`` is unused (the search is deterministic).
    """
    _check_call(cfg, batch_size)
    width, device = cfg.beam_width, _state_device(state)
    state = reorder_state(state, torch.arange(batch_size, device=device).repeat_interleave(width))
    prefix = torch.full((batch_size * width, 1), bos_id, dtype=torch.long, device=device)
    beam_logprob = _initial_beam_logprob(batch_size, width, device)
    pools = [_Pool(width, cfg.length_penalty) for _ in range(batch_size)]
    done = [False] * batch_size
    constraints = _Constraints(cfg, eos_id)
    for generated in range(cfg.max_length):
        logits, state = _call_step(step, prefix, state)
        prefix, beam_logprob = prefix.to(logits.device), beam_logprob.to(logits.device)
        logprobs = torch.log_softmax(constraints.apply(logits, prefix, generated), dim=-1)
        cand_logprob, source, token = _top_candidates(beam_logprob, logprobs, width)
        _pool_finished(pools, done, prefix, cand_logprob, source, token, eos_id)
        keep = _first_non_eos(token, eos_id, width)
        beam_logprob = cand_logprob.gather(1, keep)
        rows = source.gather(1, keep).reshape(-1)
        prefix = torch.cat([prefix.index_select(0, rows), token.gather(1, keep).reshape(-1, 1)], dim=1)
        state = reorder_state(state, rows)
        _update_done(pools, done, beam_logprob, generated + 1)
        if all(done):
            break
    return _finalise(pools, done, prefix, beam_logprob, eos_id)


def _initial_beam_logprob(batch_size: int, width: int, device: torch.device) -> torch.Tensor:
    logprob = torch.full((batch_size, width), float("-inf"), device=device)
    logprob[:, 0] = 0.0
    return logprob


def _top_candidates(
    beam_logprob: torch.Tensor, logprobs: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top 2W (beam, token) extensions per row: cumulative log-prob, flat source model row, token."""
    batch_size, vocab = beam_logprob.shape[0], logprobs.shape[-1]
    total = (beam_logprob.reshape(-1, 1) + logprobs).reshape(batch_size, width * vocab)
    cand_logprob, flat = total.topk(min(2 * width, width * vocab), dim=1)
    row_base = torch.arange(batch_size, device=flat.device)[:, None] * width
    return cand_logprob, row_base + flat // vocab, flat % vocab


def _first_non_eos(token: torch.Tensor, eos_id: int, width: int) -> torch.Tensor:
    """Column indices of the first W non-EOS candidates, keeping their rank order."""
    return torch.sort((token == eos_id).to(torch.uint8), dim=1, stable=True).indices[:, :width]


def _pool_finished(
    pools: list[_Pool],
    done: list[bool],
    prefix: torch.Tensor,
    cand_logprob: torch.Tensor,
    source: torch.Tensor,
    token: torch.Tensor,
    eos_id: int,
) -> None:
    """Move EOS candidates ranked within the top W into their row's pool (Python only for those)."""
    width = pools[0].width
    rank = torch.arange(token.shape[1], device=token.device)
    ends = (token == eos_id) & (rank < width) & torch.isfinite(cand_logprob)
    if not bool(ends.any()):
        return
    for row, col in ends.nonzero().tolist():
        if done[row]:
            continue
        tokens = prefix[source[row, col], 1:].tolist()
        pools[row].add(float(cand_logprob[row, col]), tokens, finished=True)


def _update_done(pools: list[_Pool], done: list[bool], beam_logprob: torch.Tensor, length: int) -> None:
    best_live = beam_logprob.max(dim=1).values.tolist()
    for row, pool in enumerate(pools):
        done[row] = done[row] or pool.is_done(best_live[row], length)


def _finalise(
    pools: list[_Pool], done: list[bool], prefix: torch.Tensor, beam_logprob: torch.Tensor, eos_id: int
) -> DecodeOutput:
    """Rows cut off by max_length compete with their live (unfinished) beams."""
    width = pools[0].width
    live = beam_logprob.reshape(-1).tolist()
    live_tokens = prefix[:, 1:].tolist()
    for row, pool in enumerate(pools):
        if done[row] and pool.hypotheses:
            continue
        for beam in range(row * width, (row + 1) * width):
            if live[beam] != float("-inf"):
                pool.add(live[beam], live_tokens[beam], finished=False)
    best = [pool.best() if pool.hypotheses else _Hypothesis(float("-inf"), [], False) for pool in pools]
    return DecodeOutput(
        tokens=[h.tokens for h in best],
        scores=torch.tensor([h.score for h in best], dtype=torch.float32),
        finished=torch.tensor([h.finished for h in best], dtype=torch.bool),
    )


# --------------------------------------------------------------------------- dispatch


def _check_call(cfg: DecodingConfig, batch_size: int) -> None:
    cfg.validate()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"decoding batch_size must be an integer >= 1, got {batch_size!r}")


_DISPATCH = {"greedy": greedy_search, "beam": beam_search, "nucleus": nucleus_sampling}


def decode(
    step: Step,
    state: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    cfg: DecodingConfig,
    generator: torch.Generator | None = None,
) -> DecodeOutput:
    """Run ``cfg.strategy``; one entry point so configs, not code, choose the search."""
    cfg.validate()
    search = _DISPATCH[cfg.strategy]
    return search(step, state, batch_size, bos_id=bos_id, eos_id=eos_id, cfg=cfg, generator=generator)
