"""What one Workers AI model takes, read from its own input JSON Schema.

Cloudflare publishes each model's request schema (`GET .../ai/models/schema?model=`,
stored on `Model.input_schema` by `sync_models`). Its top level is a `oneOf`/`anyOf` of
request forms, sometimes nested: a Prompt form (`prompt` required), a Messages form
(`messages`), and on some models an async batch (`requests`) and the Responses form
(`input`). Two families of chat forms exist:

    native      llama-3.x, mistral, hermes, qwen3, gpt-oss (docs copy), ...: `max_tokens`
                default 256, `top_k`, `seed` >= 1, `response_format` "JSON Mode" whose
                `json_schema` is the bare schema ({}), no `tool_choice`, no `stop`
    chat        kimi, glm, deepseek-v4, ...: OpenAI's Chat Completions body:
                `response_format` as OpenAI's envelope {name, schema, strict},
                `tool_choice` (named function enforced), `stop`, `reasoning_effort`

Rather than name families, the gateway reads which fields a form has and their bounds,
so that a model Cloudflare adds tomorrow is served from its schema alone.
"""

import functools
from dataclasses import dataclass

from gateway.errors import InvalidRequest

# Request forms that are not chat or prompt: the async queue and the Responses API.
OTHER_FORMS = ("requests", "input")


def _forms(schema):
    """Return the object forms (with `properties`) of a schema's oneOf/anyOf tree."""
    if not isinstance(schema, dict):
        return []
    for key in ("oneOf", "anyOf"):
        if isinstance(schema.get(key), list):
            return [form for branch in schema[key] for form in _forms(branch)]
    return [schema] if isinstance(schema.get("properties"), dict) else []


def _alternatives(spec):
    """Return a property's non-null alternatives: {anyOf: [{number}, {null}]} -> [{number}]."""
    if not isinstance(spec, dict):
        return []
    for key in ("anyOf", "oneOf"):
        if isinstance(spec.get(key), list):
            return [alt for branch in spec[key] for alt in _alternatives(branch)]
    return [] if spec.get("type") == "null" else [spec]


@dataclass(frozen=True)
class Bounds:
    minimum: float | None = None
    maximum: float | None = None
    default: object = None

    def allows(self, value):
        return (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum
        )

    def describe(self):
        low = "" if self.minimum is None else f"{self.minimum:g}"
        high = "" if self.maximum is None else f"{self.maximum:g}"
        if low and high:
            return f"from {low} to {high}"
        return f"at least {low}" if low else f"at most {high}"


class ModelSchema:
    """The request forms of one model, and what each field takes."""

    def __init__(self, input_schema):
        forms = [f for f in _forms(input_schema) if not set(f["properties"]) & set(OTHER_FORMS)]
        self.messages_form = next(
            (f["properties"] for f in forms if "messages" in f["properties"]), None
        )
        self.prompt_form = next(
            (f["properties"] for f in forms if "prompt" in f["properties"]), None
        )

    @property
    def takes_messages(self):
        return self.messages_form is not None

    @property
    def takes_prompt(self):
        return self.prompt_form is not None

    def form(self, chat):
        """Return the properties of the form a request uses: messages for chat when the
        model takes them, else the prompt form (and the other way round)."""
        if chat:
            return self.messages_form if self.takes_messages else self.prompt_form
        return self.prompt_form if self.takes_prompt else self.messages_form

    def has(self, name, chat=True):
        return name in (self.form(chat) or {})

    def bounds(self, name, chat=True):
        """Return the numeric bounds and default of a field, from its first numeric form."""
        spec = (self.form(chat) or {}).get(name)
        for alt in _alternatives(spec):
            if alt.get("type") in ("number", "integer"):
                return Bounds(
                    alt.get("minimum"), alt.get("maximum"), spec.get("default", alt.get("default"))
                )
        return Bounds(default=spec.get("default") if isinstance(spec, dict) else None)

    def enum(self, name, chat=True):
        """Return the allowed string values of a field, or None if any string goes."""
        for alt in _alternatives((self.form(chat) or {}).get(name)):
            if isinstance(alt.get("enum"), list):
                return [v for v in alt["enum"] if isinstance(v, str)]
        return None

    @functools.cached_property
    def json_schema_form(self):
        """Return how the model takes OpenAI's json_schema: "envelope" (OpenAI's own
        {name, schema, strict}), "bare" (the schema itself, Workers AI's JSON Mode),
        "guided_json" (a top-level field holding the schema), or None."""
        for alt in _alternatives(
            (self.messages_form or self.prompt_form or {}).get("response_format")
        ):
            for variant in _forms(alt) or [alt]:
                props = variant.get("properties") or {}
                if "json_schema" not in props:
                    continue
                inner = props["json_schema"]
                inner_props = inner.get("properties") if isinstance(inner, dict) else None
                if isinstance(inner_props, dict) and "schema" in inner_props:
                    return "envelope"
                return "bare"
        if self.has("guided_json") or self.has("guided_json", chat=False):
            return "guided_json"
        return None

    @functools.cached_property
    def content_takes_parts(self):
        """Whether a message's content may be a list of parts (else a string only)."""
        return bool(self._content_alternatives(lambda alt: alt.get("type") == "array"))

    @functools.cached_property
    def content_takes_images(self):
        """Whether content parts may be image_url parts (data: URIs on Workers AI)."""

        def has_image_part(alt):
            items = alt.get("items") if alt.get("type") == "array" else None
            return any(
                "image_url" in (v.get("properties") or {}) for v in _forms(items) or [items or {}]
            )

        return bool(self._content_alternatives(has_image_part))

    @property
    def takes_image_bytes(self):
        """Whether the model takes one image as a top-level `image` (llama-3.2-vision)."""
        return self.has("image")

    def _content_alternatives(self, test):
        messages = (self.messages_form or {}).get("messages") or {}
        items = messages.get("items") or {}
        found = []
        for variant in _forms(items) or [items]:
            content = (variant.get("properties") or {}).get("content")
            found += [alt for alt in _alternatives(content) if test(alt)]
        return found


def schema_of(model):
    """Return the ModelSchema of a Model row, or None when it has no stored schema.

    Parsed once per row: the catalogue (completions/registry.py) keeps its rows between
    requests, and a row with another schema is a new row.
    """
    stored = getattr(model, "input_schema", None)
    if not stored:
        return None
    cached = getattr(model, "_parsed_schema", None)
    if cached is None or cached[0] is not stored:
        cached = (stored, ModelSchema(stored))
        model._parsed_schema = cached
    return cached[1]


# Parameters OpenAI documents as best effort, dropped where a model has no such field rather
# than refused: `user` names the end user for abuse monitoring, `parallel_tool_calls` and
# `reasoning_effort` only tune how a model works.
HINTS = ("user", "parallel_tool_calls", "reasoning_effort")


def check_params(schema, model_name, params, chat=True):
    """Refuse a parameter the model has no field for, or a value outside its range.

    Returns the params the model takes (hints it lacks dropped). The 400 names the OpenAI
    parameter, where Workers AI would answer an unnamed 5006 "Bad input".
    """
    kept = {}
    for name, value in params.items():
        if not schema.has(name, chat):
            if name in HINTS or name == "stop":
                # stop is applied by the gateway where the model has no field for it.
                continue
            raise InvalidRequest(
                f"The model '{model_name}' does not take '{name}'; leave it out.", param=name
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bounds = schema.bounds(name, chat)
            if not bounds.allows(value):
                raise InvalidRequest(
                    f"Invalid value for '{name}': the model '{model_name}' takes "
                    f"{bounds.describe()}.",
                    param=name,
                )
        allowed = schema.enum(name, chat) if isinstance(value, str) else None
        if allowed is not None and value not in allowed:
            raise InvalidRequest(
                f"Invalid value for '{name}': the model '{model_name}' takes one of "
                f"{', '.join(allowed)}.",
                param=name,
            )
        kept[name] = value
    return kept
