"""lucidlm as a model backend of lm-evaluation-harness ("lucidlm"): loglikelihood,
loglikelihood_rolling and generate_until as its docs/model_guide.md describes them, on lucidlm's
own scoring (score_batch) and generation engine (batch_generate). lm_eval finds third-party models
only in its registry (no entry points), so this module registers itself when imported, and
running it is the `lm_eval` command with the backend registered:

    python -m lucidlm.evaluate.lm_eval_backend --model lucidlm --model_args model=PATH --tasks capitals \\
        --include_path tasks/
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import model_registry
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

from ..errors import LucidError
from ..generation import GenerationSettings, batch_generate
from ..generation.text import check_generates
from ..options import resolve_device
from ..weights import load
from .score import score_batch

NAME = "lucidlm"
logger = logging.getLogger(__name__)
DEFAULT_GENERATE_TOKENS = 256  # lm-eval's max_gen_toks default


class LucidLM(TemplateLM):
    """model_args: model (a path or hub id; default SmolLM2-135M-Instruct), dtype (float32 by
    default, as `lm_eval --model hf` computes), device, batch_size, max_gen_toks."""

    def __init__(self, model: str | None = None, dtype: str = "float32", device: str | None = None,
                 batch_size: int | str = 16, max_gen_toks: int = DEFAULT_GENERATE_TOKENS, **unused: Any) -> None:
        super().__init__()
        unknown = sorted(k for k, v in unused.items() if v is not None and k not in ("max_batch_size",))
        if unknown:
            raise LucidError(f"the lucidlm backend does not take {', '.join(unknown)} "
                             f"(it takes model, dtype, device, batch_size, max_gen_toks)")
        self.model, self.tokenizer = load(model or None, dtype=dtype, device=self._device_for(device))
        check_generates(self.model)
        if self.tokenizer is None:
            raise LucidError("this model has no tokenizer, so lm_eval cannot give it text")
        self.model.eval()
        # "auto" (lm_eval's adaptive batch size) has nothing to probe on a CPU: our default then.
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.max_gen_toks = int(max_gen_toks)
        self._device = self.model.device

    @staticmethod
    def _device_for(name: str | None):
        """lm_eval's command passes --device cuda unless told otherwise: like its hf backend, take
        that as a preference and run where we can."""
        try:
            return resolve_device(name)
        except LucidError as exc:
            logger.warning("%s; running on the best device available instead", exc)
            return resolve_device("auto")

    # --- what TemplateLM needs -------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context becomes: BOS, else EOS (as lm-eval's HFLM chooses)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self.model.config.context_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Plain text to ids; BOS first as the tokenizer says (add_special_tokens=None), unless
        the text already starts with it, or as asked."""
        bos = self.tokenizer.bos_token
        add = self.tokenizer.add_bos_token and not (bos and string.startswith(bos)) \
            if add_special_tokens is None else add_special_tokens
        ids = self.tokenizer.encode(string, add_bos=add)
        left = kwargs.get("left_truncate_len")
        return ids[-left:] if left else ids

    def tok_decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """requests: ((context, continuation) strings or None, context ids, continuation ids)."""
        scores = score_batch(self.model, [(context, continuation) for _, context, continuation in requests],
                             self.batch_size)
        for (key, _, _), s in zip(requests, scores):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, (s.logprob, s.is_greedy))
        return [(s.logprob, s.is_greedy) for s in scores]

    # --- the three requests ----------------------------------------------------------------------

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """A document's whole log-likelihood after the prefix token, in windows of the model's
        context, each token predicted once with as much context as fits (lm-eval's windows)."""
        windows, owners = [], []
        for index, (text,) in enumerate(req.args for req in requests):
            for pair in map(lm_utils.make_disjoint_window,
                            lm_utils.get_rolling_token_windows(token_list=self.tok_encode(text),
                                                               prefix_token=self.prefix_token_id,
                                                               max_seq_len=self.max_length, context_len=1)):
                windows.append((None, *pair))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[owner] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return totals

    def _settings(self, gen_kwargs: dict) -> GenerationSettings:
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        stop = [s for s in handle_stop_sequences(kwargs.pop("until", None), eos=None) if s]
        max_tokens = int(kwargs.pop("max_gen_toks"))
        sample = kwargs.pop("do_sample", False)
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0) if sample else 0.0
        top_p, top_k = float(kwargs.pop("top_p", 1.0) or 1.0), int(kwargs.pop("top_k", 0) or 0)
        seed = kwargs.pop("seed", None)
        if kwargs:
            raise LucidError(f"the lucidlm backend does not know the generation arguments {', '.join(sorted(kwargs))}")
        return GenerationSettings(max_tokens=max_tokens, stop=tuple(stop), temperature=temperature, top_p=top_p,
                                  top_k=top_k, seed=seed)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Generate (greedy unless do_sample) until a stop string, EOS or max_gen_toks; the prompt
        keeps its newest tokens when it and the answer do not fit in the context."""
        prompts, settings = [], []
        for context, gen_kwargs in (req.args for req in requests):
            s = self._settings(gen_kwargs)
            room = self.max_length - s.max_tokens
            if room < 1:
                raise LucidError(f"max_gen_toks {s.max_tokens} leaves no room for a prompt in the context "
                                 f"of {self.max_length}")
            prompts.append(self.tok_encode(context)[-room:])
            settings.append(s)
        outputs = []
        for start in range(0, len(prompts), self.batch_size):
            outputs += batch_generate(self.model, self.tokenizer, prompts[start:start + self.batch_size],
                                      settings=settings[start:start + self.batch_size])
        for req, text in zip(requests, outputs):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return outputs

    # --- chat templates (lm_eval --apply_chat_template) -------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.model, "source", NAME)).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template or "" if chat_template else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt,
                                                  tokenize=False)


def register() -> None:
    """Put "lucidlm" in lm_eval's model registry as a lazy "module:Class" entry, the way lm_eval
    lists its own backends (registering the same entry again is a no-op)."""
    model_registry.register(NAME, target=f"lucidlm.evaluate.lm_eval_backend:{LucidLM.__name__}")


register()


def main(argv: list[str] | None = None) -> None:
    """The `lm_eval` command, with this backend registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = ["lm_eval", *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
