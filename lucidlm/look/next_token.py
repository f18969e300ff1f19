"""The next-token view: the model's probabilities for the token after a text, and what each stage
of the sampler chain (temperature, top-k, top-p, min-p; generation/sampler.py) does to them.

`next_token(model, tokenizer, text, top=10, settings=GenerationSettings(...))` runs the text once
and returns a NextTokenView: the top tokens with their probabilities before sampling, their
probabilities after the whole chain, and which stage removed each one that a sampler could not
draw. The same functions the sampler uses compute every stage. (Penalties and a logit bias act on
what has been generated, so a single next token shows the model's own probabilities.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..generation import GenerationSettings
from ..generation.sampler import apply_temperature, min_p_filter, top_k_filter, top_p_filter
from .figures import new_figure
from .tokens import as_batch, labels, text_ids


@dataclass
class Candidate:
    token: int
    label: str
    probability: float  # the model's softmax, temperature 1
    sampled: float  # after the whole chain (0 when a stage removed it)
    removed_by: str | None  # the first stage that removed it, or None


@dataclass
class NextTokenView:
    text_tokens: list[str]
    candidates: list[Candidate]
    settings: GenerationSettings
    kept: int  # tokens a sampler with these settings could draw

    def table(self) -> str:
        s = self.settings
        chain = "greedy (temperature 0: the most likely token)" if s.temperature == 0 else \
            f"temperature {s.temperature}, top-k {s.top_k or 'off'}, top-p {s.top_p}, min-p {s.min_p or 'off'}"
        lines = [f"after: {''.join(self.text_tokens[-12:])}",
                 f"sampler chain: {chain} ({self.kept} token{'s' if self.kept != 1 else ''} left to draw from)",
                 f"{'#':>3}  {'token':<16} {'p':>7}  {'sampled':>7}  removed by"]
        for n, c in enumerate(self.candidates, 1):
            lines.append(f"{n:>3}  {c.label[:16]:<16} {c.probability:>7.4f}  {c.sampled:>7.4f}  {c.removed_by or ''}")
        return "\n".join(lines)

    def bar_chart(self):
        """A matplotlib Figure: the model's probabilities, and what the sampler draws from."""
        fig = new_figure(figsize=(8, 0.35 * len(self.candidates) + 1.2), layout="tight")
        ax = fig.subplots()
        y = range(len(self.candidates))[::-1]
        ax.barh(y, [c.probability for c in self.candidates], color="#9db4d8", label="model (temperature 1)")
        ax.barh(y, [c.sampled for c in self.candidates], height=0.4, color="#2456a6", label="after the sampler chain")
        ax.set_yticks(list(y), [c.label for c in self.candidates])
        ax.set_xlabel("probability")
        ax.set_title(f"next token after “{''.join(self.text_tokens[-8:])}”")
        ax.legend(loc="lower right")
        return fig


@torch.no_grad()
def next_token(model, tokenizer, text, top: int = 10, settings: GenerationSettings | None = None) -> NextTokenView:
    settings = settings or GenerationSettings(temperature=1.0)
    ids = text_ids(model, tokenizer, text)
    logits = model(as_batch(model, ids), logits_for="last")[0, -1].float()  # (V,)
    if settings.temperature == 0:  # greedy: the argmax, whatever the other settings say (as the sampler does)
        stages = [("greedy", lambda x: torch.where(x == x.max(), x, torch.full_like(x, float("-inf"))))]
    else:  # sampler_chain's order
        stages = [("temperature", lambda x: apply_temperature(x, settings.temperature)),
                  ("top-k", lambda x: top_k_filter(x, settings.top_k)),
                  ("top-p", lambda x: top_p_filter(x, settings.top_p)),
                  ("min-p", lambda x: min_p_filter(x, settings.min_p))]
    removed_at: dict[int, str] = {}
    current = logits[None]
    for name, stage in stages:
        current = stage(current)
        for token in torch.nonzero(torch.isinf(current[0]) & (current[0] < 0)).flatten().tolist():
            removed_at.setdefault(token, name)
    probabilities, sampled = logits.softmax(-1), current[0].softmax(-1)
    top_ids = torch.topk(probabilities, min(top, probabilities.numel())).indices.tolist()
    names = labels(tokenizer, top_ids)
    candidates = [Candidate(t, name, float(probabilities[t]), float(sampled[t]), removed_at.get(t))
                  for t, name in zip(top_ids, names)]
    return NextTokenView(labels(tokenizer, ids), candidates, settings, int(torch.isfinite(current[0]).sum()))
