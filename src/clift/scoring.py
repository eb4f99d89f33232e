"""Label scoring from one prompt pass: every option of every example scored off the prompt's KV cache.

``rank`` evaluation runs one full forward pass per (example, option) pair, so its cost grows with the
number of options times the prompt length. Scoring reads each prompt once:

- causal LMs: the prompt batch runs once with ``use_cache=True``; its cache is repeated once per option
  (``DynamicCache.batch_repeat_interleave``) and all options' tokens (answer + eos) run in one batched
  pass of a few tokens that attends to the cached prompt. The first answer token of every option is
  scored from the prompt's last logits, which all options share.
- seq2seq LMs: the encoder runs once; its output is repeated per option and the decoder scores all
  options in one batched pass.

The log-likelihood of option ``o`` for prompt ``x`` is ``log p(o | x) = Σ_t log p(o_t | x, o_<t)`` over
the option's tokens (eos included), exactly what ``rank`` sums, so ``normalization="none"`` predicts
what ``rank`` predicts (up to float rounding on exact ties). Two published variants:

- ``length``: ``log p(o | x) / |o|`` (tokens), as lm-evaluation-harness's ``acc_norm`` does per token;
- ``pmi``: ``log p(o | x) − log p(o | x₀)`` with ``x₀`` the task's content-free prompt (the same
  template with an empty sentence), i.e. the likelihood divided by the option's prior under the
  template (calibration in the sense of Zhao et al. 2021 / Holtzman et al. 2021).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from clift.data.collate import PromptEncoder

Normalization = Literal["none", "length", "pmi"]
NORMALIZATIONS: tuple[str, ...] = ("none", "length", "pmi")


def _pad_right(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, L) ids and the (B, L) attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _option_table(options: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, T) option ids (right-padded) and their (K, T) mask of real tokens."""
    return _pad_right(options, pad_id)


def _cache_kwarg(model: nn.Module) -> str:
    """Name of the forward argument that takes a KV cache (``cache`` from transformers 5.24, before that
    ``past_key_values``), read from the underlying model's signature (PEFT wrappers forward ``**kwargs``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _gather_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log-softmax of ``logits`` (..., V) picked at ``targets`` (...), in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def causal_option_logprobs(
    model: nn.Module, prompts: Sequence[Sequence[int]], options: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """Summed log-likelihood of every option after every prompt, for a decoder-only LM.

    Args:
        model: a causal LM (PEFT-wrapped or not) whose forward accepts ``past_key_values``.
        prompts: B prompt token-id lists (specials included), any lengths.
        options: K option token-id lists (answer tokens + eos), each at least one token.
        pad_id: id used for padding (masked out, never scored).

    Returns:
        (B, K) float32 tensor: ``Σ_t log p(option_t | prompt, option_<t)``.
    """
    device = next(model.parameters()).device
    b, k = len(prompts), len(options)
    ids, mask = _pad_right(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    lengths = mask.sum(-1)  # (B,)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    last = out.logits[torch.arange(b, device=device), lengths - 1]  # (B, V): the shared next-token logits
    opt_ids, opt_mask = (t.to(device) for t in _option_table(options, pad_id))  # (K, T)
    first = _gather_logprob(last.unsqueeze(1).expand(b, k, -1), opt_ids[:, 0].expand(b, k))  # (B, K)
    if opt_ids.shape[1] == 1:
        return first
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.batch_repeat_interleave(k)  # (B·K) rows, row b·K + j = prompt b for option j
    cont = opt_ids[:, :-1].repeat(b, 1)  # (B·K, T-1): option tokens fed after the prompt
    cont_mask = opt_mask[:, :-1].repeat(b, 1)
    full_mask = torch.cat([mask.repeat_interleave(k, 0), cont_mask], dim=1)
    cont_pos = lengths.repeat_interleave(k).unsqueeze(1) + torch.arange(cont.shape[1], device=device)
    cached = {_cache_kwarg(model): cache}
    logits = model(input_ids=cont, attention_mask=full_mask, position_ids=cont_pos, **cached).logits
    rest = _gather_logprob(logits, opt_ids[:, 1:].repeat(b, 1)) * opt_mask[:, 1:].repeat(b, 1)
    return first + rest.sum(-1).view(b, k)


@torch.no_grad()
def seq2seq_option_logprobs(
    model: nn.Module, prompts: Sequence[Sequence[int]], options: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """Summed log-likelihood of every option for every prompt, for an encoder-decoder LM.

    The encoder runs once per prompt; the decoder scores all B·K (prompt, option) pairs in one pass.

    Returns:
        (B, K) float32 tensor.
    """
    device = next(model.parameters()).device
    b, k = len(prompts), len(options)
    ids, mask = (t.to(device) for t in _pad_right(prompts, pad_id))
    encoder = model.get_encoder()
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
    opt_ids, opt_mask = (t.to(device) for t in _option_table(options, pad_id))
    labels = opt_ids.masked_fill(opt_mask == 0, -100).repeat(b, 1)  # (B·K, T)
    enc_out = (hidden.repeat_interleave(k, 0),)
    logits = model(
        encoder_outputs=enc_out, attention_mask=mask.repeat_interleave(k, 0), labels=labels, use_cache=False
    ).logits
    picked = _gather_logprob(logits, opt_ids.repeat(b, 1)) * opt_mask.repeat(b, 1)
    return picked.sum(-1).view(b, k)


def option_logprobs(
    model: nn.Module, encoder: PromptEncoder, prompts: Sequence[Sequence[int]], options: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed option log-likelihoods and option token counts for one batch of prompts.

    Args:
        model: the LM.
        encoder: the run's prompt encoder (gives the option tokens exactly as training and ``rank`` do).
        prompts: B prompt token-id lists.
        options: the K label strings.

    Returns:
        ``(scores, lengths)``: (B, K) float32 log-likelihoods and (K,) token counts (eos included).
    """
    targets = [encoder.target_ids(o) for o in options]
    fn = causal_option_logprobs if encoder.kind == "causal" else seq2seq_option_logprobs
    scores = fn(model, prompts, targets, encoder.pad_id)
    return scores.cpu(), torch.tensor([len(t) for t in targets], dtype=torch.float32)


def normalize_scores(
    scores: torch.Tensor, lengths: torch.Tensor, prior: torch.Tensor | None, normalization: str
) -> torch.Tensor:
    """Apply a scoring rule to raw option log-likelihoods.

    Args:
        scores: (B, K) summed log-likelihoods ``log p(o | x)``.
        lengths: (K,) option token counts.
        prior: (K,) ``log p(o | x₀)`` under the content-free prompt; required for ``pmi``.
        normalization: ``none`` | ``length`` | ``pmi``.

    Returns:
        (B, K) scores whose argmax is the prediction.

    Raises:
        ValueError: for an unknown rule, or ``pmi`` without a prior.
    """
    if normalization == "none":
        return scores
    if normalization == "length":
        return scores / lengths
    if normalization == "pmi":
        if prior is None:
            raise ValueError("normalization 'pmi' needs the options' log-likelihood under the content-free prompt.")
        return scores - prior
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
