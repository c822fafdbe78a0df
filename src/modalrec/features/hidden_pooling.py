"""Pick a layer and pool token hidden states into one vector per item.

The study takes the hidden state at the end-of-sequence token; which layer, and whether before or
after generation, it does not say, so both are options here. The sequence is the prompt (left
padded in a batch) followed by the generated tokens, of which only those up to and including the
first end-of-sequence token count (after it a batch is padded).

Poolings:
- ``eos``: the state at the last generated token, i.e. the end-of-sequence token when the model
  stopped by itself (the last token produced when it hit the token limit);
- ``last_prompt``: the state at the last prompt token, before anything was generated;
- ``mean_generated``: mean over the generated tokens (end-of-sequence token included);
- ``mean_all``: mean over all prompt and generated tokens, padding excluded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from modalrec.errors import ConfigError

POOLINGS = ("eos", "last_prompt", "mean_generated", "mean_all")


def check_poolings(names: str | Iterable[str]) -> tuple[str, ...]:
    """Validate pooling names (a comma-separated string or a list), keeping order, no repeats."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise ConfigError("no pooling given", where="--pooling", hint=f"use one or more of {', '.join(POOLINGS)}")
    for name in items:
        if name not in POOLINGS:
            raise ConfigError(f"unknown pooling {name!r}", where="--pooling",
                              hint=f"use one or more of {', '.join(POOLINGS)}")
    return tuple(dict.fromkeys(items))


def select_layer(hidden_states: Sequence[torch.Tensor], layer: int) -> torch.Tensor:
    """One entry of a model's ``hidden_states``: 0 = embeddings, i = after block i, -1 = last.

    In transformers the last entry is the final block's output after the final norm.
    """
    n = len(hidden_states)
    if not -n <= layer < n:
        raise ConfigError(f"layer {layer} out of range for a model with {n - 1} blocks",
                          where="--layer", hint=f"use an index in [{-n}, {n - 1}] (negative counts from the end)")
    return hidden_states[layer]


def generated_mask(generated: torch.Tensor, eos_ids: Iterable[int], pad_id: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which generated tokens are real, and whether each row ended on an end-of-sequence token.

    Real tokens run up to and including the first end-of-sequence token. A trailing run of padding
    (a row stopped by a stop string while others went on) is not real either, when padding differs
    from every end-of-sequence token.
    """
    eos = torch.zeros_like(generated, dtype=torch.bool)
    for token in set(eos_ids):
        eos |= generated == token
    before_or_at_eos = (eos.long().cumsum(1) - eos.long()) == 0
    mask = before_or_at_eos
    if pad_id is not None and pad_id not in set(eos_ids):
        is_pad = generated == pad_id
        # trailing pads: a pad with only pads after it
        trailing = torch.flip(torch.cumprod(torch.flip(is_pad.long(), [1]), 1), [1]).bool()
        mask = mask & ~trailing
    stopped = (eos & mask).any(1) | (mask.sum(1) < generated.shape[1])
    return mask, stopped


def pool(hidden: torch.Tensor, prompt_mask: torch.Tensor, gen_mask: torch.Tensor,
         poolings: Iterable[str]) -> dict[str, torch.Tensor]:
    """Pool ``hidden`` (batch, prompt + generated, dim) into (batch, dim) float32 per pooling.

    ``prompt_mask`` (batch, prompt) marks real prompt tokens (0 on left padding); ``gen_mask``
    (batch, generated) marks real generated tokens (see ``generated_mask``).
    """
    batch, total, _ = hidden.shape
    n_prompt, n_gen = prompt_mask.shape[1], gen_mask.shape[1]
    if n_prompt + n_gen != total:
        raise ValueError(f"hidden states cover {total} tokens, masks {n_prompt} + {n_gen}")
    hidden = hidden.float()
    prompt_mask = prompt_mask.bool().to(hidden.device)
    gen_mask = gen_mask.bool().to(hidden.device)
    rows = torch.arange(batch, device=hidden.device)
    positions = torch.arange(total, device=hidden.device).expand(batch, total)
    full = torch.cat([prompt_mask, gen_mask], 1)
    last_prompt = torch.where(prompt_mask, positions[:, :n_prompt], -1).max(1).values
    out: dict[str, torch.Tensor] = {}
    for name in check_poolings(list(poolings)):
        if name == "eos":
            last = torch.where(full, positions, -1).max(1).values
            out[name] = hidden[rows, last]
        elif name == "last_prompt":
            out[name] = hidden[rows, last_prompt]
        elif name == "mean_generated":
            weights = torch.cat([torch.zeros_like(prompt_mask), gen_mask], 1).float()
            # a row with nothing generated falls back to its last prompt token
            empty = weights.sum(1) == 0
            weights[rows[empty], last_prompt[empty]] = 1.0
            out[name] = (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
        else:  # mean_all
            weights = full.float()
            out[name] = (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)
    return out
