"""The OpenAI API's requests, checked field by field, and its error shape.

A request becomes a ChatRequest, CompletionRequest or EmbeddingRequest, or an ApiError (HTTP 4xx
with OpenAI's {"error": {"message", "type", "param", "code"}}) that names the field. Sampling
fields become one GenerationSettings per choice, so they are checked by the same rules as the
CLI's flags. A field lucidlm does not implement (tools, a JSON schema, suffix, ...) is refused,
never ignored; `null` means "the default" for every field, as in OpenAI's API. The few fields that
cannot change a result (`user`, `metadata`, `store`) are accepted and ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import LucidError, SettingError
from ..generation import GenerationSettings
from ..generation.settings import MIN_TEMPERATURE

IGNORED = {"user", "metadata", "store"}  # cannot change what is generated
MAX_STOPS = 4  # OpenAI's limit
MAX_TOP_LOGPROBS = 20  # chat; the legacy completions endpoint allows 5
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Sampling:
    """What every generating request shares."""

    settings: list[GenerationSettings]  # one per choice (n), seeds differing
    max_tokens: int | None  # None: as many as the context leaves
    stream: bool
    include_usage: bool
    logprobs: int | None  # None: none; k: the chosen token's log-probability and the top k


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    sampling: Sampling


@dataclass
class CompletionRequest:
    prompts: list[str | list[int]]
    sampling: Sampling
    echo: bool = False


@dataclass
class EmbeddingRequest:
    texts: list[str]
    base64: bool = False


@dataclass
class AttentionRequest:
    """The page's look inside: the attention of the last of `completion`'s tokens (given as their
    bytes, from the chat's logprobs) over the conversation."""

    messages: list[dict[str, str]]
    completion: list[bytes] = field(default_factory=list)


# --- fields -------------------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


class Fields:
    """A request body, read one field at a time; `done()` refuses whatever was not read."""

    def __init__(self, body: Any, allowed_extra: set[str] = IGNORED) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        self.body, self.read = body, set(allowed_extra)

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        value = self.body.get(name)
        return default if value is None else value

    def int(self, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
        value = self.get(name, default)
        if value is None:
            return None
        if not _is_int(value) or value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ApiError(400, f"{name} must be a whole number {span} (got {value!r})", name)
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.get(name, default)
        if not _is_number(value) or not low <= value <= high:
            raise ApiError(400, f"{name} must be a number between {low:g} and {high:g} (got {value!r})", name)
        return float(value)

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ApiError(400, f"{name} must be true or false (got {value!r})", name)
        return value

    def done(self) -> None:
        for name, value in self.body.items():
            if name not in self.read and value is not None:
                raise ApiError(400, f"lucidlm does not support the field {name!r}", name, "unsupported_field")


def _model(fields: Fields, names: set[str]) -> None:
    name = fields.get("model")
    if not isinstance(name, str):
        raise ApiError(400, "model is required, as a string (GET /v1/models lists it)", "model")
    if name not in names:
        raise ApiError(404, f"the model {name!r} does not exist here; this server has {sorted(names)}",
                       "model", "model_not_found")


def _stops(fields: Fields) -> tuple[str, ...]:
    stop = fields.get("stop", [])
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them", "stop")
    return tuple(stops)


def _logit_bias(fields: Fields, vocab_size: int) -> dict[int, float]:
    bias = fields.get("logit_bias", {})
    if not isinstance(bias, dict):
        raise ApiError(400, "logit_bias must map token ids to numbers between -100 and 100", "logit_bias")
    out = {}
    for key, value in bias.items():
        token = int(key) if isinstance(key, str) and key.isascii() and key.isdecimal() else None
        if token is None or token >= vocab_size:
            raise ApiError(400, f"logit_bias: {key!r} is not a token id of this model (0 to {vocab_size - 1})",
                           "logit_bias")
        if not _is_number(value) or not -100 <= value <= 100:
            raise ApiError(400, f"logit_bias: the bias of token {key} must be between -100 and 100 (got {value!r})",
                           "logit_bias")
        out[token] = float(value)
    return out


def _sampling(fields: Fields, vocab_size: int, max_n: int, logprobs: int | None, max_tokens: int | None,
              context: int) -> Sampling:
    n = fields.int("n", 1, 1, max_n)
    temperature = fields.number("temperature", 1.0, 0.0, 2.0)
    stream = fields.bool("stream")
    options = fields.get("stream_options", {})
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise ApiError(400, "stream_options may only hold include_usage", "stream_options")
    if options and not stream:
        raise ApiError(400, "stream_options is only allowed with stream: true", "stream_options")
    include_usage = options.get("include_usage") or False
    if not isinstance(include_usage, bool):
        raise ApiError(400, "stream_options.include_usage must be true or false", "stream_options")
    seed = fields.int("seed", None, 0, 2 ** 63 - 1)
    base = dict(temperature=temperature if temperature >= MIN_TEMPERATURE else 0.0,
                top_p=fields.number("top_p", 1.0, 0.0, 1.0),
                presence_penalty=fields.number("presence_penalty", 0.0, -2.0, 2.0),
                frequency_penalty=fields.number("frequency_penalty", 0.0, -2.0, 2.0),
                logit_bias=_logit_bias(fields, vocab_size), stop=_stops(fields),
                # Penalties count every token of the prompt and the completion (OpenAI: the completion's).
                penalty_window=context, max_tokens=max_tokens or context)
    if base["top_p"] == 0:
        raise ApiError(400, "top_p must be greater than 0 (use temperature 0 for greedy decoding)", "top_p")
    try:
        settings = [GenerationSettings(**base, seed=None if seed is None else (seed + i) % 2 ** 64) for i in range(n)]
    except SettingError as exc:  # every field was checked above; this keeps the two rule sets honest
        raise ApiError(400, str(exc), exc.field) from None
    return Sampling(settings, max_tokens, stream, include_usage, logprobs)


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"messages[{index}].content: lucidlm reads text parts only, not {kind!r}",
                               f"messages[{index}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(400, f"messages[{index}].content must be a string or a list of text parts",
                   f"messages[{index}].content")


def messages_of(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] must be an object with role and content", f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)} (got {role!r})",
                           f"messages[{i}].role")
        for name, value in message.items():
            if name not in ("role", "content") and value not in (None, [], ""):
                raise ApiError(400, f"messages[{i}]: lucidlm does not support the field {name!r}",
                               f"messages[{i}].{name}", "unsupported_field")
        out.append({"role": ROLES[role], "content": _content(message, i)})
    return out


def _response_format(fields: Fields) -> None:
    fmt = fields.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ApiError(400, "lucidlm does not support response_format other than {\"type\": \"text\"}: it does not "
                            "constrain output to JSON", "response_format", "unsupported_field")


def parse_chat(body: Any, names: set[str], vocab_size: int, max_n: int, context: int) -> ChatRequest:
    fields = Fields(body)
    _model(fields, names)
    messages = messages_of(fields.get("messages"))
    _response_format(fields)
    newer, older = fields.int("max_completion_tokens", None, 1), fields.int("max_tokens", None, 1)
    max_tokens = newer if newer is not None else older  # the newer name wins, as in OpenAI's API
    logprobs = None
    if fields.bool("logprobs"):
        logprobs = fields.int("top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
    elif fields.get("top_logprobs") is not None:
        raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    sampling = _sampling(fields, vocab_size, max_n, logprobs, max_tokens, context)
    fields.done()
    return ChatRequest(messages, sampling)


def parse_completion(body: Any, names: set[str], vocab_size: int, max_n: int, context: int) -> CompletionRequest:
    fields = Fields(body)
    _model(fields, names)
    prompt = fields.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt)):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(
            isinstance(p, str) or (isinstance(p, list) and p and all(_is_int(t) for t in p)) for p in prompt):
        prompts = list(prompt)
    else:
        raise ApiError(400, "prompt must be a string, a list of strings, a list of token ids or a list of such lists",
                       "prompt")
    if any(p == "" for p in prompts):
        raise ApiError(400, "the prompt is empty", "prompt")
    for p in prompts:
        if isinstance(p, list) and any(not 0 <= t < vocab_size for t in p):
            raise ApiError(400, f"prompt: token ids must be between 0 and {vocab_size - 1}", "prompt")
    if fields.int("best_of", 1, 1) != 1:
        raise ApiError(400, "lucidlm does not support best_of above 1 (ask for n choices instead)", "best_of",
                       "unsupported_field")
    echo = fields.bool("echo")
    max_tokens = fields.int("max_tokens", 16, 0)
    if max_tokens == 0 and not echo:
        raise ApiError(400, "max_tokens 0 generates nothing: it is allowed only with echo (to score a prompt)",
                       "max_tokens")
    logprobs = fields.int("logprobs", None, 0, 5)
    sampling = _sampling(fields, vocab_size, max_n, logprobs, max_tokens, context)
    fields.done()
    return CompletionRequest(prompts, sampling, echo)


def parse_embedding(body: Any, names: set[str]) -> EmbeddingRequest:
    fields = Fields(body)
    _model(fields, names)
    given = fields.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise ApiError(400, "input must be a non-empty string or a list of them (lucidlm embeds text, not token ids)",
                       "input")
    encoding = fields.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be float or base64", "encoding_format")
    if fields.get("dimensions") is not None:
        raise ApiError(400, "lucidlm does not support dimensions: the model's vectors have one size",
                       "dimensions", "unsupported_field")
    fields.done()
    return EmbeddingRequest(texts, encoding == "base64")


def parse_attention(body: Any) -> AttentionRequest:
    fields = Fields(body, set())
    messages = messages_of(fields.get("messages"))
    completion = fields.get("completion", [])
    if not isinstance(completion, list) or not all(
            isinstance(t, list) and t and all(_is_int(b) and 0 <= b < 256 for b in t) for t in completion):
        raise ApiError(400, "completion must be a list of tokens, each the list of its bytes", "completion")
    fields.done()
    return AttentionRequest(messages, [bytes(t) for t in completion])


def lucid_error(exc: LucidError) -> ApiError:
    """A model-side refusal (a prompt too long, an encoder asked to chat) as a 400."""
    return ApiError(400, str(exc))
