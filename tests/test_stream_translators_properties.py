"""Properties of the stream translators, for any input hypothesis can think of.

- StopFilter: however the text is cut into deltas, what it lets through is the text
  before the first stop sequence, as if it had seen the whole text at once.
- SSE parsing (iter_sse_data): however the upstream's bytes are cut into reads, with
  comments, event names, CRLF line ends and multi-byte characters split anywhere, the
  events come out whole and in order; a stream without [DONE] is reported cut.
- Chunk building (ChatChunks): every event is one `data:` line that parses back to what
  was put in, whatever the text holds, and the gateway's own parser reads its output.
"""

import asyncio
import json

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from completions.providers.base import Usage, iter_sse_data
from completions.stop import StopFilter, cut_at_stop
from completions.streaming import ChatChunks, TextCompletionChunks
from gateway.errors import UpstreamError

# Bounded so that the whole file runs in a few seconds.
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A small alphabet makes stop sequences and their prefixes turn up in the text often.
small_text = st.text(alphabet="ab\n é", max_size=40)
stops = st.lists(st.text(alphabet="ab\n é", min_size=1, max_size=5), min_size=1, max_size=4)
any_text = st.text(max_size=200)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
events = st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=4), max_size=8)


def _cut(data, cuts):
    """Split data at the given positions (any order, repeats allowed)."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@EXAMPLES
@given(text=small_text, stops=stops, cuts=st.lists(st.integers(min_value=0), max_size=10))
# Found by hypothesis: "a" ends before " aa" does, though " aa" starts first.
@example(text=" aa", stops=["a", " aa"], cuts=[2])
def test_stop_filter_lets_through_the_text_before_the_first_stop(text, stops, cuts):
    stop_filter = StopFilter(stops)

    sent = [stop_filter.feed(piece) for piece in _cut(text, cuts)]
    sent.append(stop_filter.flush())

    expected, found = cut_at_stop(text, stops)
    assert "".join(sent) == expected
    assert stop_filter.stopped == found


@EXAMPLES
@given(text=small_text, stops=stops, cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_stop_filter_never_sends_a_stop_sequence(text, stops, cuts):
    stop_filter = StopFilter(stops)

    sent = "".join(stop_filter.feed(piece) for piece in _cut(text, cuts)) + stop_filter.flush()

    assert not any(stop in sent for stop in stops)


def _sse_bytes(payloads, line_end, space, keep_alive, done):
    lines = []
    for payload in payloads:
        if keep_alive:
            lines.append(": keep-alive")
            lines.append("event: message")
        lines.append("data:" + (" " if space else "") + json.dumps(payload, ensure_ascii=False))
        lines.append("")
    if done:
        lines += ["data: [DONE]", ""]
    return (line_end.join(lines) + line_end).encode()


async def _read(raw_chunks):
    async def body():
        for chunk in raw_chunks:
            yield chunk

    response = httpx.Response(200, content=body())
    return [data async for data in iter_sse_data(response)]


@EXAMPLES
@given(
    payloads=events,
    line_end=st.sampled_from(["\n", "\r\n"]),
    space=st.booleans(),
    keep_alive=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
# Found by hypothesis: characters that str.splitlines() takes for line ends, but SSE does not.
@example(payloads=[{"\x85": "\u2028"}], line_end="\n", space=False, keep_alive=False, cuts=[])
def test_sse_parsing_yields_every_event_whole_however_the_bytes_are_cut(
    payloads, line_end, space, keep_alive, cuts
):
    raw = _sse_bytes(payloads, line_end, space, keep_alive, done=True)

    received = asyncio.run(_read(_cut(raw, cuts)))

    assert [json.loads(data) for data in received] == payloads


@EXAMPLES
@given(payloads=events, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_sse_parsing_reports_a_stream_without_done_as_cut(payloads, cuts):
    raw = _sse_bytes(payloads, "\n", True, False, done=False)
    received = []

    async def read():
        async def body():
            for chunk in _cut(raw, cuts):
                yield chunk

        async for data in iter_sse_data(httpx.Response(200, content=body())):
            received.append(data)

    with pytest.raises(UpstreamError) as error:
        asyncio.run(read())

    assert error.value.code == "stream_cut"
    # Everything that did arrive was passed on first.
    assert [json.loads(data) for data in received] == payloads


def _decode_event(event):
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    line = event[len(b"data: ") : -2]
    # One line: a newline in the text must not end the event early.
    assert b"\n" not in line and b"\r" not in line
    return json.loads(line)


@EXAMPLES
@given(text=any_text, model=st.text(min_size=1, max_size=50), include_usage=st.booleans())
def test_a_content_chunk_carries_any_text_in_one_event(text, model, include_usage):
    chunks = ChatChunks("chatcmpl-1", model, include_usage)

    chunk = _decode_event(chunks.content(text))

    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["model"] == model
    assert chunk["choices"][0]["delta"] == {"content": text}
    assert chunk["choices"][0]["finish_reason"] is None
    assert ("usage" in chunk) == include_usage


@EXAMPLES
@given(texts=st.lists(any_text, max_size=10), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_the_gateways_own_parser_reads_its_chunks_back(texts, cuts):
    chunks = ChatChunks("chatcmpl-1", "m", include_usage=True)
    stream = b"".join(
        [
            *chunks.opening(),
            *(chunks.content(text) for text in texts),
            chunks.finish("stop"),
            chunks.usage(Usage(prompt_tokens=3, completion_tokens=len(texts))),
            chunks.done(),
        ]
    )

    decoded = [json.loads(data) for data in asyncio.run(_read(_cut(stream, cuts)))]

    assert decoded[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content") for c in decoded[1:-2]]
    assert contents == texts
    assert decoded[-2]["choices"][0]["finish_reason"] == "stop"
    assert decoded[-1]["usage"]["completion_tokens"] == len(texts)
    assert len({c["id"] for c in decoded}) == 1


@EXAMPLES
@given(text=any_text)
def test_a_text_completion_chunk_carries_any_text(text):
    chunk = _decode_event(TextCompletionChunks("cmpl-1", "m", False).content(text))

    assert chunk["object"] == "text_completion"
    assert chunk["choices"][0]["text"] == text


@EXAMPLES
@given(message=any_text)
def test_an_error_event_carries_any_message(message):
    event = _decode_event(ChatChunks("chatcmpl-1", "m", False).error(UpstreamError(message)))

    assert event["error"]["message"] == (message or UpstreamError.default_message)
    assert event["error"]["type"] == "server_error"
