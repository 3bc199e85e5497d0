"""A1111-style prompt encoding: long prompts, ``(word:1.3)`` weights, ``BREAK``, clip skip.

diffusers' own encoding truncates at 77 tokens and knows no weights.  Brushwork encodes as
AUTOMATIC1111 does, so prompts copied from A1111/CivitAI behave as their authors meant:

* The prompt is split into weighted runs (:func:`generation.prompt_weights.parse_prompt_attention`)
  and tokenized without truncation.  Tokens go into chunks of 75; each chunk is wrapped in
  BOS/EOS and padded to 77, and the chunks' hidden states are concatenated, so tokens past
  the 77th still count.  When a chunk fills up, the text after its last comma (if within
  the last 20 tokens) moves to the next chunk, as A1111 does; ``BREAK`` starts a new chunk.
* Each token's hidden state is multiplied by its weight, then the chunk is rescaled so its
  mean is what it was before (A1111's method: weights shift emphasis, not overall scale).
  A1111 takes that mean over the whole batch; here it is per prompt, so an image comes
  out the same whether it was generated alone or in a batch.
* The negative prompt is padded with empty chunks to the same number of chunks.
* Clip skip in A1111's meaning: 1 = the last layer; N = the N-th layer from the end, then the
  final layer norm (SD1/SD2).  SDXL conditions on the penultimate layer of both encoders by
  design, so there clip skip N takes the (N+1)-th layer from the end (1 = native).
* SDXL: both text encoders, hidden states concatenated; the pooled embedding is the second
  encoder's projection of the first chunk.  An empty negative prompt gives zeros when the
  model's config asks for it (``force_zeros_for_empty_prompt``), as diffusers does.

Padding places EOS right after the text and pad tokens after it, exactly what the
tokenizers (and so the models' training) did; for SD1, whose pad token is EOS, this is
token-for-token what A1111 sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from generation.errors import RequestError
from generation.models._quiet import quiet_libraries

CHUNK_TOKENS = 75  # text tokens per chunk; with BOS and EOS it is CLIP's 77
COMMA_BACKTRACK = 20
BREAK = "BREAK"


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """77 token ids and their weights (BOS/EOS/padding weigh 1)."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]

    @property
    def weighted(self) -> bool:
        return any(w != 1.0 for w in self.weights)


@dataclass(frozen=True, slots=True)
class EncodedPrompt:
    """One image's conditioning: positive and negative, same length (``chunks × 77``)."""

    embeds: torch.Tensor  # (1, L, D)
    negative: torch.Tensor  # (1, L, D)
    pooled: torch.Tensor | None = None  # (1, P), SDXL only
    negative_pooled: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.embeds.shape[1])


def _parse(text: str) -> list[tuple[str, float]]:
    from generation.prompt_weights import parse_prompt_attention

    return parse_prompt_attention(text)


class _Chunker:
    """Turns weighted runs into 77-token chunks for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.bos = int(tokenizer.bos_token_id)
        self.eos = int(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad = int(pad) if pad is not None else self.eos
        comma = tokenizer.convert_tokens_to_ids(",</w>")
        unk = tokenizer.unk_token_id
        self.comma = int(comma) if comma is not None and comma != unk else None

    def wrap(self, ids: list[int], weights: list[float]) -> TokenChunk:
        fill = CHUNK_TOKENS - len(ids)
        return TokenChunk(
            ids=(self.bos, *ids, self.eos, *([self.pad] * fill)),
            weights=(1.0, *weights, 1.0, *([1.0] * fill)),
        )

    def empty(self) -> TokenChunk:
        return self.wrap([], [])

    def chunks(self, text: str) -> list[TokenChunk]:
        runs = _parse(text)
        texts = [t for t, w in runs if not (t == BREAK and w == -1.0)]
        with quiet_libraries():  # "sequence longer than 77": expected, we chunk it
            tokenized = iter(self.tokenizer(texts, add_special_tokens=False, truncation=False).input_ids
                             if texts else [])
        out: list[TokenChunk] = []
        ids: list[int] = []
        weights: list[float] = []
        last_comma = -1

        def close() -> None:
            nonlocal ids, weights, last_comma
            out.append(self.wrap(ids, weights))
            ids, weights, last_comma = [], [], -1

        for text, weight in runs:
            if text == BREAK and weight == -1.0:
                close()
                continue
            for token in next(tokenized):
                if self.comma is not None and token == self.comma:
                    last_comma = len(ids)
                elif (len(ids) == CHUNK_TOKENS and last_comma != -1
                      and len(ids) - last_comma <= COMMA_BACKTRACK):
                    cut = last_comma + 1  # keep the comma, move the words after it
                    moved_ids, moved_weights = ids[cut:], weights[cut:]
                    ids, weights = ids[:cut], weights[:cut]
                    close()
                    ids, weights = moved_ids, moved_weights
                if len(ids) == CHUNK_TOKENS:
                    close()
                ids.append(int(token))
                weights.append(float(weight))
        if ids or not out:
            close()
        return out


class PromptEncoder:
    """Encodes prompt/negative pairs for one loaded pipeline (SD1, SD2, tiny or SDXL)."""

    def __init__(self, pipe: Any, family: str) -> None:
        self.family = family
        self.is_xl = family == "sdxl"
        if self.is_xl:
            encoders = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
        else:
            encoders = [(pipe.tokenizer, pipe.text_encoder)]
        self._encoders = [(_Chunker(tok), enc) for tok, enc in encoders]
        self.zero_empty_negative = self.is_xl and bool(pipe.config.get("force_zeros_for_empty_prompt", True))

    def chunk_count(self, prompt: str, negative: str) -> int:
        return max(len(ch.chunks(text)) for ch, _ in self._encoders for text in (prompt, negative))

    @torch.no_grad()
    def encode(self, prompt: str, negative: str, clip_skip: int | None = None) -> EncodedPrompt:
        """Encode one image's prompt and negative prompt (see the module docstring)."""
        per_encoder = [(ch, enc, ch.chunks(prompt), ch.chunks(negative)) for ch, enc in self._encoders]
        count = max(max(len(p), len(n)) for _, _, p, n in per_encoder)
        hidden: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for index, (chunker, encoder, pos, neg) in enumerate(per_encoder):
            pos = pos + [chunker.empty()] * (count - len(pos))
            neg = neg + [chunker.empty()] * (count - len(neg))
            states, projected = self._run(encoder, pos + neg, clip_skip)
            hidden.append(states)
            if self.is_xl and index == len(per_encoder) - 1:
                assert projected is not None, "SDXL's last text encoder gives a pooled projection"
                pooled = projected[[0, count]]  # first chunk of the prompt, first of the negative
        states = torch.cat(hidden, dim=-1) if len(hidden) > 1 else hidden[0]
        dim = states.shape[-1]
        embeds = states[:count].reshape(1, count * states.shape[1], dim)
        negative_embeds = states[count:].reshape(1, count * states.shape[1], dim)
        pos_pooled = neg_pooled = None
        if pooled is not None:
            pos_pooled, neg_pooled = pooled[0:1], pooled[1:2]
        if self.zero_empty_negative and not negative:
            negative_embeds = torch.zeros_like(negative_embeds)
            neg_pooled = torch.zeros_like(pos_pooled) if pos_pooled is not None else None
        return EncodedPrompt(embeds, negative_embeds, pos_pooled, neg_pooled)

    def _run(self, encoder: Any, chunks: Sequence[TokenChunk], clip_skip: int | None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = encoder.device
        ids = torch.tensor([c.ids for c in chunks], dtype=torch.long, device=device)
        skip = clip_skip or 1
        layers = int(encoder.config.num_hidden_layers)
        depth = skip + 1 if self.is_xl else skip
        if depth > layers:
            raise RequestError("request.out_of_range", flag="--clip-skip", value=skip, low=1,
                               high=layers - 1 if self.is_xl else layers)
        need_hidden = self.is_xl or skip > 1
        out = encoder(input_ids=ids, output_hidden_states=need_hidden)
        if self.is_xl:
            states = out.hidden_states[-depth]  # SDXL's native conditioning: no final layer norm
        elif skip > 1:
            states = _final_layer_norm(encoder)(out.hidden_states[-skip])
        else:
            states = out.last_hidden_state
        if any(c.weighted for c in chunks):
            states = _apply_weights(states, chunks)
        projected = getattr(out, "text_embeds", None)
        return states, projected


def _final_layer_norm(encoder: Any) -> Any:
    """transformers 5 flattened CLIPTextModel; 4.x keeps the layers under ``text_model``."""
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


def _apply_weights(states: torch.Tensor, chunks: Sequence[TokenChunk]) -> torch.Tensor:
    """Scale each token by its weight, then restore each chunk's mean (A1111)."""
    weights = torch.tensor([c.weights for c in chunks], dtype=torch.float32, device=states.device)
    flat = states.float()
    before = flat.mean(dim=(1, 2), keepdim=True)
    scaled = flat * weights.unsqueeze(-1)
    after = scaled.mean(dim=(1, 2), keepdim=True)
    ratio = torch.where(after == 0, torch.ones_like(after), before / after)
    # chunks without weights keep their exact values
    plain = torch.tensor([not c.weighted for c in chunks], device=states.device).view(-1, 1, 1)
    result = torch.where(plain, flat, scaled * ratio)
    return result.to(states.dtype)
