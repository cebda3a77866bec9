"""The OpenAPI 3.1 document of the /v1 surface, served at GET /v1/openapi.json.

Written by hand, as the contract: the request schemas say what validation accepts
(completions/serializers.py), the response schemas what the views answer, errors included.
tests/integration/test_openapi.py fuzzes a running gateway against it, so a change to either
side that the other does not follow fails there.

Schemas leave additional properties open, as OpenAI's do: a client must ignore fields it
does not know, and the gateway ignores unknown request fields.
"""

import functools
import json

from completions.media_views import OPENAI_CATEGORIES

ERROR_STATUSES = {
    "400": "The request is invalid; `param` names the parameter at fault.",
    "401": "No API key, or one that is wrong, revoked or expired.",
    "403": "The key may not do this (a read key running a model).",
    "404": "No such model, or one the key may not use (`code: model_not_found`).",
    "405": "Wrong method; the Allow header lists the right one.",
    "413": "The body is larger than the gateway's MAX_REQUEST_BYTES.",
    "429": "A rate limit, token limit or budget of the key, or of the provider, is spent.",
    "502": "The provider failed, could not be reached, or answered nonsense.",
    "504": "The provider did not answer in time.",
}
# The errors every endpoint may answer, and those only endpoints that run a model may.
COMMON_ERRORS = ("401", "404", "405", "429")
MODEL_ERRORS = ("400", "403", "413", "502", "504")

NULLABLE_STRING = {"type": ["string", "null"]}
# A name-like string as validation takes it: not blank once trimmed, no NUL character.
NAME = {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*\\S[^\\u0000]*$"}
FINISH_REASON = {"type": ["string", "null"], "enum": ["stop", "length", "tool_calls", None]}
NON_NEGATIVE = {"type": "integer", "minimum": 0}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": NULLABLE_STRING,
                    "code": NULLABLE_STRING,
                },
            }
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "capabilities": {
                "type": "object",
                "properties": {
                    "chat": {"type": "boolean"},
                    "completions": {"type": "boolean"},
                    "embeddings": {"type": "boolean"},
                },
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        },
    },
    "Usage": {
        "type": "object",
        "required": ["prompt_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": NON_NEGATIVE,
            "completion_tokens": NON_NEGATIVE,
            "total_tokens": NON_NEGATIVE,
        },
    },
    "TextPart": {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    },
    "ImagePart": {
        "type": "object",
        "required": ["type", "image_url"],
        "properties": {
            "type": {"const": "image_url"},
            "image_url": {
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
    "ToolCall": {
        "type": "object",
        "required": ["id", "type", "function"],
        "properties": {
            "id": NAME,
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "properties": {"name": NAME, "arguments": {"type": "string"}},
            },
        },
    },
    "Message": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {
                "oneOf": [
                    {"type": "string", "maxLength": 1_000_000},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/TextPart"},
                                {"$ref": "#/components/schemas/ImagePart"},
                            ]
                        },
                    },
                    {"type": "null"},
                ]
            },
            "name": {**NAME, "maxLength": 64},
            "tool_call_id": NAME,
            "tool_calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}},
        },
        "allOf": [
            # Content is required, but for an assistant message that only calls tools.
            {
                "anyOf": [
                    {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
                    {
                        "required": ["role", "tool_calls"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "tool_calls": {"minItems": 1},
                        },
                    },
                ]
            },
            # A tool message names the call it answers.
            {
                "if": {"properties": {"role": {"const": "tool"}}},
                "then": {"required": ["tool_call_id"]},
            },
        ],
    },
    "Stop": {
        "oneOf": [
            {"type": "string", "minLength": 1, "maxLength": 256},
            {
                "type": "array",
                "maxItems": 4,
                "items": {"type": "string", "minLength": 1, "maxLength": 256},
            },
        ]
    },
    "StreamOptions": {
        "type": "object",
        "properties": {"include_usage": {"type": "boolean"}},
    },
    # stream_options only with stream: true.
    "StreamOptionsNeedStream": {
        "if": {"required": ["stream_options"]},
        "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {**NAME, "maxLength": 200, "examples": ["echo"]},
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2048,
                "items": {"$ref": "#/components/schemas/Message"},
            },
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "top_k": {"type": "integer", "minimum": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "stop": {"$ref": "#/components/schemas/Stop"},
            "seed": {"type": "integer"},
            "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "n": {"const": 1},
            "stream": {"type": "boolean"},
            "stream_options": {"$ref": "#/components/schemas/StreamOptions"},
            "user": {**NAME, "maxLength": 256},
            "tools": {
                "type": "array",
                "maxItems": 128,
                "items": {
                    "type": "object",
                    "required": ["type", "function"],
                    "properties": {
                        "type": {"const": "function"},
                        "function": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                                "description": {"type": "string"},
                                "parameters": {"type": "object"},
                                "strict": {"type": ["boolean", "null"]},
                            },
                        },
                    },
                },
            },
            "tool_choice": {
                "oneOf": [
                    {"enum": ["none", "auto", "required"]},
                    {
                        "type": "object",
                        "required": ["type", "function"],
                        "properties": {
                            "type": {"const": "function"},
                            "function": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                        },
                    },
                ]
            },
            "parallel_tool_calls": {"type": "boolean"},
            # Taken for compatibility, refused if asked for (400).
            "logprobs": {"enum": [False, None]},
            "top_logprobs": {"enum": [0, None]},
            "logit_bias": {"type": ["object", "null"], "maxProperties": 0},
            "response_format": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["text", "json_object", "json_schema"]},
                    "json_schema": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                            "description": {"type": "string"},
                            "schema": {"type": "object"},
                            "strict": {"type": ["boolean", "null"]},
                        },
                    },
                },
                "if": {"properties": {"type": {"const": "json_schema"}}},
                "then": {"required": ["json_schema"]},
            },
        },
        "allOf": [
            {"$ref": "#/components/schemas/StreamOptionsNeedStream"},
            # tool_choice, but "none", only with tools.
            {
                "if": {
                    "required": ["tool_choice"],
                    "properties": {"tool_choice": {"not": {"const": "none"}}},
                },
                "then": {"required": ["tools"], "properties": {"tools": {"minItems": 1}}},
            },
        ],
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": NON_NEGATIVE,
                        "message": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "role": {"const": "assistant"},
                                "content": NULLABLE_STRING,
                                "tool_calls": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/ToolCall"},
                                },
                            },
                        },
                        "finish_reason": FINISH_REASON,
                    },
                },
            },
            "usage": {"$ref": "#/components/schemas/Usage"},
        },
    },
    "ChatCompletionChunk": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion.chunk"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "delta", "finish_reason"],
                    "properties": {
                        "index": NON_NEGATIVE,
                        "delta": {
                            "type": "object",
                            "properties": {
                                "role": {"const": "assistant"},
                                "content": NULLABLE_STRING,
                                "tool_calls": {"type": "array"},
                            },
                        },
                        "finish_reason": FINISH_REASON,
                    },
                },
            },
            # Only with stream_options.include_usage: null on every chunk but the last.
            "usage": {"anyOf": [{"$ref": "#/components/schemas/Usage"}, {"type": "null"}]},
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {**NAME, "maxLength": 200, "examples": ["echo"]},
            "prompt": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "minItems": 1, "maxItems": 16, "items": {"type": "string"}},
                ]
            },
            "suffix": NULLABLE_STRING,
            "max_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "stop": {"$ref": "#/components/schemas/Stop"},
            "seed": {"type": "integer"},
            "top_k": {"type": "integer", "minimum": 1},
            "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
            "echo": {"type": "boolean"},
            "n": {"const": 1},
            "best_of": {"const": 1},
            "logprobs": {"enum": [0, None]},
            "logit_bias": {"type": ["object", "null"], "maxProperties": 0},
            "stream": {"type": "boolean"},
            "stream_options": {"$ref": "#/components/schemas/StreamOptions"},
            "user": {**NAME, "maxLength": 256},
        },
        "allOf": [
            {"$ref": "#/components/schemas/StreamOptionsNeedStream"},
            # A streamed completion takes one prompt.
            {
                "if": {"required": ["stream"], "properties": {"stream": {"const": True}}},
                "then": {
                    "properties": {"prompt": {"anyOf": [{"type": "string"}, {"maxItems": 1}]}}
                },
            },
        ],
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "text_completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "text", "finish_reason"],
                    "properties": {
                        "index": NON_NEGATIVE,
                        "text": {"type": "string"},
                        "finish_reason": FINISH_REASON,
                    },
                },
            },
            "usage": {"$ref": "#/components/schemas/Usage"},
        },
    },
    "CompletionChunk": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "text_completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "text", "finish_reason"],
                    "properties": {
                        "index": NON_NEGATIVE,
                        "text": {"type": "string"},
                        "finish_reason": FINISH_REASON,
                    },
                },
            },
            "usage": {"anyOf": [{"$ref": "#/components/schemas/Usage"}, {"type": "null"}]},
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {**NAME, "maxLength": 200},
            "input": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 2048,
                        "items": {"type": "string", "minLength": 1},
                    },
                ]
            },
            "encoding_format": {"enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
            "user": {**NAME, "maxLength": 256},
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"},
            "model": {"type": "string"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "index", "embedding"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": NON_NEGATIVE,
                        # A list of floats, or their bytes in base64 (encoding_format).
                        "embedding": {
                            "oneOf": [
                                {"type": "array", "items": {"type": "number"}},
                                {"type": "string"},
                            ]
                        },
                    },
                },
            },
            "usage": {"$ref": "#/components/schemas/Usage"},
        },
    },
    # The Responses API (completions/responses.py): items and tools are checked item by
    # item, what the gateway cannot honour refused with a 400 naming it.
    "ResponseRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": {**NAME, "maxLength": 200, "examples": ["echo"]},
            "input": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "type": {
                                    "enum": ["message", "function_call", "function_call_output"]
                                },
                                "role": {"enum": ["user", "system", "developer", "assistant"]},
                                "content": {
                                    "oneOf": [
                                        {"type": "string"},
                                        {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["type"],
                                                "properties": {
                                                    "type": {
                                                        "enum": [
                                                            "input_text",
                                                            "output_text",
                                                            "input_image",
                                                        ]
                                                    },
                                                    "text": {"type": "string"},
                                                    "image_url": {"type": "string"},
                                                },
                                            },
                                        },
                                    ]
                                },
                                "call_id": {"type": "string"},
                                "name": {"type": "string"},
                                "arguments": {"type": "string"},
                                "output": {"type": "string"},
                            },
                        },
                    },
                ]
            },
            "instructions": {"type": "string"},
            "tools": {
                "type": "array",
                "maxItems": 128,
                "items": {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {
                        "type": {"const": "function"},
                        "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                        "description": {"type": "string"},
                        "parameters": {"type": "object"},
                        "strict": {"type": ["boolean", "null"]},
                    },
                },
            },
            "tool_choice": {
                "oneOf": [
                    {"enum": ["none", "auto", "required"]},
                    {
                        "type": "object",
                        "required": ["type", "name"],
                        "properties": {"type": {"const": "function"}, "name": {"type": "string"}},
                    },
                ]
            },
            "text": {
                "type": "object",
                "properties": {
                    "format": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {
                            "type": {"enum": ["text", "json_object", "json_schema"]},
                            "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                            "schema": {"type": "object"},
                            "strict": {"type": ["boolean", "null"]},
                        },
                    }
                },
            },
            "reasoning": {
                "type": "object",
                "properties": {
                    "effort": {"enum": ["none", "minimal", "low", "medium", "high", "xhigh"]}
                },
            },
            "max_output_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "parallel_tool_calls": {"type": "boolean"},
            "user": {**NAME, "maxLength": 256},
            "metadata": {
                "type": "object",
                "maxProperties": 16,
                "additionalProperties": {"type": "string", "maxLength": 512},
            },
            "store": {"type": "boolean"},
            "stream": {"type": "boolean"},
            "previous_response_id": {"type": "string", "maxLength": 64},
            # Taken for compatibility, refused if asked for (400).
            "background": {"const": False},
            "include": {"type": "array", "maxItems": 0},
            "truncation": {"const": "disabled"},
        },
    },
    "ResponseOutputItem": {
        "type": "object",
        "required": ["id", "type", "status"],
        "properties": {
            "id": {"type": "string"},
            "type": {"enum": ["message", "function_call", "reasoning"]},
            "status": {"enum": ["in_progress", "completed", "incomplete"]},
            "role": {"const": "assistant"},
            "content": {"type": "array"},
            "call_id": {"type": "string"},
            "name": {"type": "string"},
            "arguments": {"type": "string"},
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "created_at", "status", "model", "output"],
        "properties": {
            "id": {"type": "string", "pattern": "^resp_"},
            "object": {"const": "response"},
            "created_at": {"type": "integer"},
            "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]},
            "model": {"type": "string"},
            "output": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ResponseOutputItem"},
            },
            "previous_response_id": NULLABLE_STRING,
            "usage": {
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["input_tokens", "output_tokens", "total_tokens"],
                        "properties": {
                            "input_tokens": NON_NEGATIVE,
                            "output_tokens": NON_NEGATIVE,
                            "total_tokens": NON_NEGATIVE,
                        },
                    },
                    {"type": "null"},
                ]
            },
        },
    },
    # One event of a streamed response: response.created, response.output_text.delta, ...,
    # response.completed (or error and response.failed if it fails once started).
    "ResponseStreamEvent": {
        "type": "object",
        "required": ["type", "sequence_number"],
        "properties": {"type": {"type": "string"}, "sequence_number": NON_NEGATIVE},
    },
    "ResponseDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response.deleted"},
            "deleted": {"const": True},
        },
    },
}

# The media endpoints (completions/media_views.py, media_serializers.py).
TEXT = {**NAME, "maxLength": 32_000}
SCHEMAS.update(
    {
        "ImageRequest": {
            "type": "object",
            "required": ["model", "prompt"],
            "properties": {
                "model": {**NAME, "maxLength": 200},
                "prompt": TEXT,
                "n": {"type": "integer", "minimum": 1, "maximum": 10},
                "size": {
                    "description": "'auto', or WIDTHxHEIGHT in pixels for models that take "
                    "a size (1024x1024 is every model's default).",
                    "type": ["string", "null"],
                },
                "response_format": {
                    "description": "Only b64_json: 'url' is refused with a 400, as the "
                    "gateway keeps no images.",
                    "enum": ["b64_json", "url", None],
                },
            },
        },
        "ImageList": {
            "type": "object",
            "required": ["created", "data"],
            "properties": {
                "created": {"type": "integer"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["b64_json"],
                        "properties": {"b64_json": {"type": "string"}},
                    },
                },
            },
        },
        "TranscriptionForm": {
            "type": "object",
            "required": ["file", "model"],
            "properties": {
                "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                "model": {**NAME, "maxLength": 200},
                "language": {**NAME, "maxLength": 20},
                "prompt": {"type": "string"},
                "response_format": {"enum": ["json", "text", "srt", "verbose_json", "vtt"]},
            },
        },
        "Transcription": {
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {"type": "string"},
                "task": {"enum": ["transcribe", "translate"]},
                "language": {"type": "string"},
                "duration": {"type": "number", "minimum": 0},
                "segments": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "start", "end", "text"],
                        "properties": {
                            "id": NON_NEGATIVE,
                            "start": {"type": "number"},
                            "end": {"type": "number"},
                            "text": {"type": "string"},
                        },
                    },
                },
                "words": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["word", "start", "end"],
                        "properties": {
                            "word": {"type": "string"},
                            "start": {"type": "number"},
                            "end": {"type": "number"},
                        },
                    },
                },
                "usage": {
                    "type": "object",
                    "required": ["type", "seconds"],
                    "properties": {"type": {"const": "duration"}, "seconds": NON_NEGATIVE},
                },
            },
        },
        "SpeechRequest": {
            "type": "object",
            "required": ["model", "input", "voice"],
            "properties": {
                "model": {**NAME, "maxLength": 200},
                "input": {**NAME, "maxLength": 4096},
                "voice": {**NAME, "maxLength": 100},
                "response_format": {"enum": ["mp3", "opus", "aac", "flac", "wav", "pcm"]},
            },
        },
        "ModerationRequest": {
            "type": "object",
            "required": ["model", "input"],
            "properties": {
                "model": {**NAME, "maxLength": 200},
                "input": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 32,
                            "items": {"type": "string"},
                        },
                    ]
                },
            },
        },
        "ModerationList": {
            "type": "object",
            "required": ["id", "model", "results"],
            "properties": {
                "id": {"type": "string"},
                "model": {"type": "string"},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["flagged", "categories", "category_scores"],
                        "properties": {
                            "flagged": {"type": "boolean"},
                            "categories": {
                                "type": "object",
                                "required": OPENAI_CATEGORIES,
                                "additionalProperties": {"type": "boolean"},
                            },
                            # Llama Guard gives no scores: 1.0 for a category it names.
                            "category_scores": {
                                "type": "object",
                                "required": OPENAI_CATEGORIES,
                                "additionalProperties": {"enum": [0.0, 1.0]},
                            },
                        },
                    },
                },
            },
        },
        "RerankRequest": {
            "type": "object",
            "required": ["model", "query", "documents"],
            "properties": {
                "model": {**NAME, "maxLength": 200},
                "query": TEXT,
                "documents": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {
                        "oneOf": [
                            {"type": "string", "minLength": 1},
                            {
                                "type": "object",
                                "required": ["text"],
                                "properties": {"text": {"type": "string", "minLength": 1}},
                            },
                        ]
                    },
                },
                "top_n": {"type": "integer", "minimum": 1},
                "return_documents": {"type": "boolean"},
            },
        },
        "RerankList": {
            "type": "object",
            "required": ["id", "model", "results"],
            "properties": {
                "id": {"type": "string"},
                "model": {"type": "string"},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "relevance_score"],
                        "properties": {
                            "index": NON_NEGATIVE,
                            "relevance_score": {"type": "number"},
                            "document": {
                                "type": "object",
                                "required": ["text"],
                                "properties": {"text": {"type": "string"}},
                            },
                        },
                    },
                },
                "usage": {
                    "type": "object",
                    "properties": {"documents": NON_NEGATIVE},
                },
            },
        },
    }
)
# The key holder's own endpoints (apikeys/views.py, apikeys/self_service.py).
MOMENT = {"type": "string", "format": "date-time"}
USD = {"type": "number", "minimum": 0}
SCHEMAS.update(
    {
        "Window": {
            "type": "object",
            "required": ["per", "limit", "used", "remaining", "resets_in_seconds", "resets_at"],
            "properties": {
                "per": {"enum": ["second", "minute", "hour", "day"]},
                "limit": NON_NEGATIVE,
                "used": NON_NEGATIVE,
                "remaining": NON_NEGATIVE,
                "resets_in_seconds": {"type": "number", "minimum": 0},
                "resets_at": MOMENT,
            },
        },
        "Budget": {
            "type": "object",
            "required": ["period", "limit_usd", "spent_usd", "remaining_usd", "resets_at"],
            "properties": {
                "period": {"enum": ["day", "week", "month", "lifetime"]},
                "limit_usd": USD,
                "spent_usd": USD,
                "remaining_usd": USD,
                "resets_at": {**MOMENT, "type": ["string", "null"]},
            },
        },
        "ApiKey": {
            "type": "object",
            "required": [
                "object",
                "name",
                "prefix",
                "permissions",
                "state",
                "team",
                "allowed_models",
                "rate_limit",
                "request_window",
                "token_windows",
                "budgets",
                "expires_at",
                "rotation",
            ],
            "properties": {
                "object": {"const": "api_key"},
                "name": {"type": "string"},
                "prefix": {"type": "string"},
                "permissions": {"enum": ["read", "read-write"]},
                "state": {"enum": ["active", "disabled", "revoked", "expired"]},
                "created_at": MOMENT,
                "expires_at": {**MOMENT, "type": ["string", "null"]},
                "team": NULLABLE_STRING,
                "allowed_models": {"type": "array", "items": {"type": "string"}},
                "rate_limit": {"type": "string"},
                "request_window": {
                    "oneOf": [{"$ref": "#/components/schemas/Window"}, {"type": "null"}]
                },
                "token_windows": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Window"},
                },
                "budgets": {
                    "type": "object",
                    "required": ["key", "team"],
                    "properties": {
                        "key": {"type": "array", "items": {"$ref": "#/components/schemas/Budget"}},
                        "team": {
                            "type": ["array", "null"],
                            "items": {"$ref": "#/components/schemas/Budget"},
                        },
                    },
                },
                "rotation": {
                    "type": ["object", "null"],
                    "description": "Null for a key never rotated and with no rotation policy.",
                    "properties": {
                        "rotated_at": {"type": ["string", "null"], "format": "date-time"},
                        "previous_secret_valid_until": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "Until when the replaced secret is still taken.",
                        },
                        "rotate_every_days": {"type": ["integer", "null"]},
                        "rotation_due_at": {"type": ["string", "null"], "format": "date-time"},
                        "rotation_due": {"type": "boolean"},
                    },
                },
            },
        },
        "UsageResult": {
            "type": "object",
            "required": [
                "object",
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "cost",
                "model",
                "endpoint",
            ],
            "properties": {
                "object": {"const": "usage.result"},
                "requests": NON_NEGATIVE,
                "prompt_tokens": NON_NEGATIVE,
                "completion_tokens": NON_NEGATIVE,
                "total_tokens": NON_NEGATIVE,
                "cost": {**USD, "description": "USD"},
                "model": NULLABLE_STRING,
                "endpoint": NULLABLE_STRING,
            },
        },
        "UsagePage": {
            "type": "object",
            "required": ["object", "data", "has_more", "next_page"],
            "properties": {
                "object": {"const": "page"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["object", "start_time", "end_time", "results"],
                        "properties": {
                            "object": {"const": "bucket"},
                            "start_time": {"type": "integer", "description": "Unix seconds"},
                            "end_time": {"type": "integer", "description": "Unix seconds"},
                            "results": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/UsageResult"},
                            },
                        },
                    },
                },
                "has_more": {"const": False},
                "next_page": {"type": "null"},
            },
        },
    }
)
MOMENT_PARAMETER = {
    "type": "string",
    "description": "An ISO 8601 date or date and time (read in LIMITS_TIME_ZONE without an "
    "offset), or Unix seconds.",
}
USAGE_PARAMETERS = [
    {
        "name": "start",
        "in": "query",
        "description": "The first moment counted; 7 days before `end` by default.",
        "schema": MOMENT_PARAMETER,
    },
    {
        "name": "end",
        "in": "query",
        "description": "The moment after the last one counted (exclusive); now by default.",
        "schema": MOMENT_PARAMETER,
    },
    {
        "name": "bucket",
        "in": "query",
        "description": "Days in LIMITS_TIME_ZONE (366 at most) or UTC hours (31 days at most).",
        "schema": {"enum": ["day", "hour"], "default": "day"},
    },
    {
        "name": "group_by",
        "in": "query",
        "description": "Sum per model, endpoint, or both; also comma-separated.",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": {"enum": ["model", "endpoint"]}},
    },
]

# The content types /v1/audio/speech answers, by response_format.
AUDIO_TYPES = ["audio/mpeg", "audio/wav", "audio/flac", "audio/ogg", "audio/aac", "audio/pcm"]

HEADERS = {
    "RequestId": {
        "description": "The request's id, also kept on its usage record.",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    },
    "RetryAfter": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}


def _error_response(status):
    headers = {"x-request-id": {"$ref": "#/components/headers/RequestId"}}
    if status == "429":
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    return {
        "description": ERROR_STATUSES[status],
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _event(chunk):
    """Return the schema of one server-sent event of a stream of `chunk` objects.

    Each event's data is a chunk, or an error object if the stream failed once started,
    and the last is `[DONE]`.
    """
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "anyOf": [
                                {"$ref": f"#/components/schemas/{chunk}"},
                                {"$ref": "#/components/schemas/Error"},
                            ]
                        },
                    },
                ]
            }
        },
    }


def _operation(summary, ok, *, body=None, chunk=None, errors=COMMON_ERRORS):
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ok}"}}}
    if chunk:
        content["text/event-stream"] = {"schema": _event(chunk)}
    operation = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": {
                "description": "OK",
                "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                "content": content,
            },
            **{status: {"$ref": f"#/components/responses/Error{status}"} for status in errors},
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return operation


def _media_operation(summary, ok, body, *, form=False, answers=None):
    """Return a model-running operation whose body is a multipart form (form) or whose
    answer is of other content types than JSON (answers: {content type: schema})."""
    operation = _operation(summary, ok, body=body, errors=COMMON_ERRORS + MODEL_ERRORS)
    if form:
        operation["requestBody"]["content"] = {
            "multipart/form-data": {
                "schema": {"$ref": f"#/components/schemas/{body}"},
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            }
        }
    if answers is not None:
        operation["responses"]["200"]["content"] = answers
    return operation


TRANSCRIPTION_ANSWERS = {
    "application/json": {"schema": {"$ref": "#/components/schemas/Transcription"}},
    # response_format text, srt or vtt.
    "text/plain": {"schema": {"type": "string"}},
}


DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "LLM gateway",
        "version": "1",
        "description": "OpenAI-compatible API in front of Cloudflare Workers AI and "
        "OpenAI-compatible servers. Authenticate with `Authorization: Bearer <key>`.",
    },
    "paths": {
        "/v1/models": {"get": _operation("List the models the key may use", "ModelList")},
        "/v1/models/{model}": {
            "parameters": [
                {
                    "name": "model",
                    "in": "path",
                    "required": True,
                    "description": "A model id or alias; ids may contain slashes.",
                    "schema": {"type": "string", "minLength": 1},
                }
            ],
            "get": _operation("Retrieve a model", "Model"),
        },
        "/v1/chat/completions": {
            "post": _operation(
                "Create a chat completion",
                "ChatCompletion",
                body="ChatCompletionRequest",
                chunk="ChatCompletionChunk",
                errors=COMMON_ERRORS + MODEL_ERRORS,
            )
        },
        "/v1/completions": {
            "post": _operation(
                "Create a text completion (legacy)",
                "Completion",
                body="CompletionRequest",
                chunk="CompletionChunk",
                errors=COMMON_ERRORS + MODEL_ERRORS,
            )
        },
        "/v1/embeddings": {
            "post": _operation(
                "Create embeddings",
                "EmbeddingList",
                body="EmbeddingRequest",
                errors=COMMON_ERRORS + MODEL_ERRORS,
            )
        },
        "/v1/responses": {
            "post": _operation(
                "Create a response (OpenAI's Responses API, over chat completions)",
                "Response",
                body="ResponseRequest",
                chunk="ResponseStreamEvent",
                errors=COMMON_ERRORS + MODEL_ERRORS,
            )
        },
        "/v1/responses/{response_id}": {
            "parameters": [
                {
                    "name": "response_id",
                    "in": "path",
                    "required": True,
                    "description": "A stored response's id (resp_...), made with this key.",
                    "schema": {"type": "string", "minLength": 1},
                }
            ],
            "get": _operation("Retrieve a stored response", "Response"),
            "delete": _operation(
                "Delete a stored response", "ResponseDeleted", errors=COMMON_ERRORS + ("403",)
            ),
        },
        "/v1/images/generations": {
            "post": _media_operation("Generate images", "ImageList", "ImageRequest")
        },
        "/v1/audio/transcriptions": {
            "post": _media_operation(
                "Transcribe audio",
                "Transcription",
                "TranscriptionForm",
                form=True,
                answers=TRANSCRIPTION_ANSWERS,
            )
        },
        "/v1/audio/translations": {
            "post": _media_operation(
                "Translate audio into English text",
                "Transcription",
                "TranscriptionForm",
                form=True,
                answers=TRANSCRIPTION_ANSWERS,
            )
        },
        "/v1/audio/speech": {
            "post": _media_operation(
                "Speak text",
                None,
                "SpeechRequest",
                answers={kind: {"schema": {"type": "string"}} for kind in AUDIO_TYPES},
            )
        },
        "/v1/moderations": {
            "post": _media_operation(
                "Classify text for moderation", "ModerationList", "ModerationRequest"
            )
        },
        "/v1/key": {
            "get": _operation("Describe the calling key, its limits and budgets", "ApiKey")
        },
        "/v1/usage": {
            "get": {
                **_operation(
                    "The calling key's usage per day or hour",
                    "UsagePage",
                    errors=COMMON_ERRORS + ("400",),
                ),
                "parameters": USAGE_PARAMETERS,
            }
        },
        "/v1/rerank": {
            "post": _media_operation(
                "Rank documents by relevance to a query", "RerankList", "RerankRequest"
            )
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": SCHEMAS,
        "headers": HEADERS,
        "responses": {f"Error{status}": _error_response(status) for status in ERROR_STATUSES},
    },
}


@functools.cache
def openapi_json():
    """Return the OpenAPI document as JSON bytes, encoded once per process."""
    return json.dumps(DOCUMENT, separators=(",", ":")).encode()
