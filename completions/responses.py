"""The Responses API's request (POST /v1/responses) as a chat completion.

A Responses request is validated here, its input items (messages, function calls and their
outputs) become chat messages, its function tools, tool_choice and text.format become
chat's, and the result is validated once more as the chat view validates a chat: every
provider then gets what it gets from /v1/chat/completions. The answer's side is
completions/response_events.py; the views are completions/responses_views.py.

What cannot be honoured is refused with a 400 naming the parameter: built-in tools
(web_search, file_search, ...), `background`, `conversation`, `include`, stored `prompt`s,
`truncation: auto`, log probabilities, input files and items by reference.
"""

from rest_framework import serializers

from completions.fields import (
    JSONObjectField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
)
from completions.serializers import (
    MAX_PROMPT_CACHE_KEY_CHARACTERS,
    MAX_TOOLS,
    ChatCompletionSerializer,
    Serializer,
    validate_body,
)
from gateway.errors import InvalidRequest

# OpenAI's limits on metadata: 16 pairs, keys of 64 characters, values of 512.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARACTERS = 64
MAX_METADATA_VALUE_CHARACTERS = 512
# The Responses names of the chat fields a translated request may be refused for, so that
# an error names what the client sent.
CHAT_PARAM_NAMES = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
}
# Fields passed on to chat under the same name, or as chat calls them.
CHAT_FIELDS = {
    "max_output_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "parallel_tool_calls": "parallel_tool_calls",
    "user": "user",
    "prompt_cache_key": "prompt_cache_key",
}


class ResponseRequestSerializer(Serializer):
    model = StrictCharField(max_length=200)
    # A string, or a list of items: checked item by item by chat_messages().
    input = serializers.JSONField(required=False)
    instructions = StrictCharField(required=False, allow_blank=True)
    tools = serializers.ListField(child=JSONObjectField(), required=False, max_length=MAX_TOOLS)
    tool_choice = serializers.JSONField(required=False)
    text = JSONObjectField(required=False)
    reasoning = JSONObjectField(required=False)
    max_output_tokens = StrictIntegerField(required=False, min_value=1)
    temperature = StrictFloatField(required=False, min_value=0, max_value=2)
    top_p = StrictFloatField(required=False, min_value=0, max_value=1)
    parallel_tool_calls = StrictBooleanField(required=False)
    user = StrictCharField(required=False, max_length=256)
    metadata = JSONObjectField(required=False)
    prompt_cache_key = StrictCharField(
        required=False, allow_blank=True, max_length=MAX_PROMPT_CACHE_KEY_CHARACTERS
    )
    # OpenAI stores responses unless told not to.
    store = StrictBooleanField(required=False, default=True)
    stream = StrictBooleanField(required=False, default=False)
    previous_response_id = StrictCharField(required=False, max_length=64)
    # Taken so that their harmless values pass; refused by refuse_unsupported() otherwise.
    background = StrictBooleanField(required=False)
    conversation = serializers.JSONField(required=False)
    include = serializers.ListField(child=StrictCharField(), required=False)
    prompt = serializers.JSONField(required=False)
    truncation = serializers.ChoiceField(choices=["auto", "disabled"], required=False)
    top_logprobs = StrictIntegerField(required=False, min_value=0)

    def validate_metadata(self, value):
        if len(value) > MAX_METADATA_PAIRS:
            raise serializers.ValidationError(f"At most {MAX_METADATA_PAIRS} pairs.")
        for key, text in value.items():
            if len(key) > MAX_METADATA_KEY_CHARACTERS or not isinstance(text, str):
                raise serializers.ValidationError(
                    f"Keys of at most {MAX_METADATA_KEY_CHARACTERS} characters, string values."
                )
            if len(text) > MAX_METADATA_VALUE_CHARACTERS:
                raise serializers.ValidationError(
                    f"Values of at most {MAX_METADATA_VALUE_CHARACTERS} characters."
                )
        return value


def refuse_unsupported(data):
    """Refuse, naming the parameter, what the gateway cannot honour (InvalidRequest)."""
    if data.get("background"):
        raise InvalidRequest(
            "Background responses are not supported; send 'background': false or leave it out.",
            param="background",
        )
    if data.get("conversation") is not None:
        raise InvalidRequest(
            "Conversations are not supported; continue one with 'previous_response_id'.",
            param="conversation",
        )
    if data.get("include"):
        raise InvalidRequest(
            f"'include' cannot add '{data['include'][0]}'; the gateway adds nothing to a "
            "response, send an empty list or leave it out.",
            param="include",
        )
    if data.get("prompt") is not None:
        raise InvalidRequest(
            "Stored prompts are not supported; send 'instructions' and 'input'.", param="prompt"
        )
    if data.get("truncation") == "auto":
        raise InvalidRequest(
            "Truncation is not supported; send 'truncation': 'disabled' or leave it out.",
            param="truncation",
        )
    if data.get("top_logprobs"):
        raise InvalidRequest("Log probabilities are not supported.", param="top_logprobs")


def input_items(value):
    """Return a request's input as a list of items: a string is one user message."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequest(
            "Invalid value for 'input': must be a string or a list of items.", param="input"
        )
    return value


def chat_request(data, items):
    """Return the validated chat (ChatCompletionSerializer) for a Responses request.

    `items` are the input items, those of the previous responses first.
    """
    messages = (
        [{"role": "system", "content": data["instructions"]}] if data.get("instructions") else []
    )
    messages += chat_messages(items)
    if not messages:
        raise InvalidRequest("Invalid value for 'input': This field is required.", param="input")
    chat = {"model": data["model"], "messages": messages, "stream": data["stream"]}
    for name, chat_name in CHAT_FIELDS.items():
        if name in data:
            chat[chat_name] = data[name]
    if data.get("tools"):
        chat["tools"] = chat_tools(data["tools"])
    if "tool_choice" in data:
        chat["tool_choice"] = chat_tool_choice(data["tool_choice"])
    response_format = chat_response_format(data.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    effort = (data.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    try:
        return validate_body(ChatCompletionSerializer, chat)
    except InvalidRequest as error:
        raise _renamed(error) from None


def _renamed(error):
    """Return a chat validation error naming the Responses parameter at fault."""
    param = error.param or ""
    if param.startswith("tools[") and ".function." in param:
        # Responses tools are flat: chat's tools[0].function.name is its tools[0].name.
        renamed = param.replace(".function.", ".", 1)
        return InvalidRequest(str(error).replace(param, renamed, 1), param=renamed)
    for chat_name, name in CHAT_PARAM_NAMES.items():
        if param == chat_name or param.startswith((chat_name + ".", chat_name + "[")):
            # Chat's message indexes are not the input's: the input is named as a whole.
            renamed = name if chat_name == "messages" else name + param[len(chat_name) :]
            message = str(error).replace(f"'{param}'", f"'{renamed}'", 1)
            return InvalidRequest(message, param=renamed)
    return error


def chat_messages(items):
    """Return chat messages for Responses input items; refuse an item chat cannot carry."""
    messages = []
    for index, item in enumerate(items):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"Invalid value for '{param}': must be an object.", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest(
                    f"Invalid value for '{param}.role': must be user, system, developer or "
                    "assistant.",
                    param=f"{param}.role",
                )
            messages.append(
                {"role": role, "content": _chat_content(item.get("content"), f"{param}.content")}
            )
        elif kind == "function_call":
            call = {
                "id": _text(item, "call_id", param),
                "type": "function",
                "function": {
                    "name": _text(item, "name", param),
                    "arguments": _text(item, "arguments", param, blank=True),
                },
            }
            last = messages[-1] if messages else None
            # Calls of one turn, and the text before them, are one chat message.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = _chat_content(output, f"{param}.output")
            elif not isinstance(output, str):
                raise InvalidRequest(
                    f"Invalid value for '{param}.output': must be a string or content parts.",
                    param=f"{param}.output",
                )
            messages.append(
                {"role": "tool", "tool_call_id": _text(item, "call_id", param), "content": output}
            )
        elif kind == "reasoning":
            # Chat completions take no reasoning back: the model reasons afresh each turn.
            continue
        else:
            raise InvalidRequest(
                f"Input items of type '{kind}' are not supported; send messages, "
                "function_call and function_call_output items.",
                param=f"{param}.type",
            )
    return messages


def _text(item, name, param, blank=False):
    value = item.get(name)
    if not isinstance(value, str) or not (value or blank):
        raise InvalidRequest(
            f"Invalid value for '{param}.{name}': must be a string.", param=f"{param}.{name}"
        )
    return value


def _chat_content(content, param):
    """Return chat content for a message's content: a string, or text and image parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(
            f"Invalid value for '{param}': must be a string or a list of content parts.",
            param=param,
        )
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"]}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_image":
            raise InvalidRequest(
                "Images by file_id are not supported; send 'image_url' (a URL or a data: URI).",
                param=f"{param}[{index}].image_url",
            )
        else:
            raise InvalidRequest(
                f"Content parts of type '{kind}' are not supported; send input_text and "
                "input_image parts.",
                param=f"{param}[{index}].type",
            )
    # One text part is sent as a string, as chat clients send it.
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def chat_tools(tools):
    """Return chat's tools for Responses function tools; refuse the built-in tools."""
    chat = []
    for index, tool in enumerate(tools):
        kind = tool.get("type")
        if kind != "function":
            raise InvalidRequest(
                f"Tools of type '{kind}' are not supported: the gateway runs no built-in "
                "tools; send function tools.",
                param=f"tools[{index}].type",
            )
        function = {
            name: tool[name]
            for name in ("name", "description", "parameters", "strict")
            if tool.get(name) is not None
        }
        chat.append({"type": "function", "function": function})
    return chat


def chat_tool_choice(choice):
    """Return chat's tool_choice for a Responses tool_choice."""
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise InvalidRequest(
        'Invalid value for \'tool_choice\': must be "none", "auto", "required" or '
        '{"type": "function", "name": "..."}; built-in tools are not supported.',
        param="tool_choice",
    )


def chat_response_format(text):
    """Return chat's response_format for a Responses `text` object, or None for plain text."""
    form = (text or {}).get("format")
    if form is None:
        return None
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {
            name: form[name]
            for name in ("name", "description", "schema", "strict")
            if form.get(name) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        "Invalid value for 'text.format.type': must be text, json_object or json_schema.",
        param="text.format.type",
    )
