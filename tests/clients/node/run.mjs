// The Node clients of the compatibility suite, each at its default settings.
//
// Reads a JSON object on stdin: {baseURL, keys: {alice, bob, dave}, models: {chat,
// embeddings, reasoning}, scenarios: ["openai.chat", ...]}; runs the scenarios at once and
// prints {scenario: {ok: true, value} | {ok: false, error: {class, status, message}}} as
// JSON. tests/clients/test_node_clients.py asserts on what it prints.
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import {
  embedMany,
  generateText,
  jsonSchema,
  Output,
  stepCountIs,
  streamText,
  tool,
} from "ai";
import OpenAI from "openai";

// Milliseconds one scenario may take: a client that sleeps through a long Retry-After is
// reported as timed out instead of holding the suite.
const SCENARIO_TIMEOUT_MS = 45_000;
const USER = "hello there world";
const ECHO_SCHEMA = {
  type: "object",
  properties: { echo: { type: "string" } },
  required: ["echo"],
  additionalProperties: false,
};
const LOOKUP_PARAMETERS = {
  type: "object",
  properties: { text: { type: "string" } },
  required: ["text"],
};

// Standard output carries the results alone: the clients' own logs (the AI SDK's warnings)
// go to standard error.
console.log = console.info = console.warn = console.error;

const config = JSON.parse(await readStdin());
const { keys, models } = config;

function openai(key = keys.alice) {
  return new OpenAI({ baseURL: config.baseURL, apiKey: key });
}

function aiSdk(key = keys.alice, settings = {}) {
  return createOpenAICompatible({
    name: "gateway",
    baseURL: config.baseURL,
    apiKey: key,
    ...settings,
  });
}

// Each error case: the key and the request that earns the status.
const ERRORS = {
  401: { key: "not-a-key", model: () => models.chat },
  403: { key: () => keys.bob, model: () => models.chat },
  404: { key: () => keys.alice, model: () => "no-such-model" },
  429: { key: () => keys.dave, model: () => models.chat },
  400: { key: () => keys.alice, model: () => models.chat, temperature: 5 },
};

function errorCase(status) {
  const spec = ERRORS[status];
  const key = typeof spec.key === "function" ? spec.key() : spec.key;
  return { key, model: spec.model(), temperature: spec.temperature };
}

const scenarios = {
  "openai.models": async () => {
    const page = await openai().models.list();
    return page.data.map((model) => model.id);
  },
  "openai.chat": async () => {
    const completion = await openai().chat.completions.create({
      model: models.chat,
      messages: [{ role: "user", content: USER }],
    });
    return completion.choices[0].message.content;
  },
  "openai.stream": async () => {
    const stream = await openai().chat.completions.create({
      model: models.chat,
      messages: [{ role: "user", content: USER }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage = chunk.usage ?? usage;
    }
    return { text, usage };
  },
  "openai.tools": async () => {
    const client = openai();
    const tools = [
      {
        type: "function",
        function: { name: "lookup", description: "Look a text up.", parameters: LOOKUP_PARAMETERS },
      },
    ];
    const messages = [{ role: "user", content: USER }];
    const first = await client.chat.completions.create({ model: models.chat, messages, tools });
    const message = first.choices[0].message;
    // The SDK's own message object goes back as it is, as applications keep history.
    messages.push(message);
    for (const call of message.tool_calls) {
      const { text } = JSON.parse(call.function.arguments);
      messages.push({ role: "tool", tool_call_id: call.id, content: `found ${text}` });
    }
    const second = await client.chat.completions.create({ model: models.chat, messages, tools });
    return {
      called: message.tool_calls.map((call) => call.function.name),
      answer: second.choices[0].message.content,
    };
  },
  "openai.structured": async () => {
    const completion = await openai().chat.completions.create({
      model: models.chat,
      messages: [{ role: "user", content: USER }],
      response_format: {
        type: "json_schema",
        json_schema: { name: "echo", schema: ECHO_SCHEMA, strict: true },
      },
    });
    return JSON.parse(completion.choices[0].message.content);
  },
  "openai.embeddings": async () => {
    // openai-node asks for base64 at its defaults and decodes it.
    const result = await openai().embeddings.create({
      model: models.embeddings,
      input: ["first text", "second"],
    });
    return result.data.map((item) => item.embedding.length);
  },
  "ai.chat": async () => {
    const result = await generateText({ model: aiSdk().chatModel(models.chat), prompt: USER });
    return result.text;
  },
  "ai.stream": async () => {
    // At its defaults the AI SDK does not ask an OpenAI-compatible server for a stream's
    // usage; includeUsage is its setting for that.
    const provider = aiSdk(keys.alice, { includeUsage: true });
    const result = streamText({ model: provider.chatModel(models.chat), prompt: USER });
    let text = "";
    for await (const piece of result.textStream) text += piece;
    const usage = await result.usage;
    return { text, usage: { input: usage.inputTokens, output: usage.outputTokens } };
  },
  "ai.stream-defaults": async () => {
    const result = streamText({ model: aiSdk().chatModel(models.chat), prompt: USER });
    let text = "";
    for await (const piece of result.textStream) text += piece;
    const usage = await result.usage;
    return { text, usage: { input: usage.inputTokens ?? null, output: usage.outputTokens ?? null } };
  },
  "ai.tools": async () => {
    const result = await generateText({
      model: aiSdk().chatModel(models.chat),
      prompt: USER,
      tools: {
        lookup: tool({
          description: "Look a text up.",
          inputSchema: jsonSchema(LOOKUP_PARAMETERS),
          execute: async ({ text }) => `found ${text}`,
        }),
      },
      stopWhen: stepCountIs(3),
    });
    return {
      called: result.steps.flatMap((step) => step.toolCalls.map((call) => call.toolName)),
      answer: result.text,
    };
  },
  "ai.structured": async () => {
    const result = await generateText({
      model: aiSdk().chatModel(models.chat),
      prompt: USER,
      output: Output.object({ schema: jsonSchema(ECHO_SCHEMA) }),
    });
    return result.output;
  },
  "ai.embeddings": async () => {
    const result = await embedMany({
      model: aiSdk().embeddingModel(models.embeddings),
      values: ["first text", "second"],
    });
    return result.embeddings.map((vector) => vector.length);
  },
  "ai.reasoning": async () => {
    const result = await generateText({ model: aiSdk().chatModel(models.reasoning), prompt: USER });
    return { reasoning: result.reasoningText ?? null, text: result.text };
  },
  "ai.reasoning-stream": async () => {
    const result = streamText({ model: aiSdk().chatModel(models.reasoning), prompt: USER });
    let reasoning = "";
    let text = "";
    for await (const part of result.fullStream) {
      if (part.type === "reasoning-delta") reasoning += part.text;
      if (part.type === "text-delta") text += part.text;
    }
    return { reasoning, text };
  },
  "openai.reasoning": async () => {
    const completion = await openai().chat.completions.create({
      model: models.reasoning,
      messages: [{ role: "user", content: USER }],
    });
    return { reasoning: completion.choices[0].message.reasoning_content ?? null };
  },
};

for (const status of Object.keys(ERRORS)) {
  scenarios[`openai.error-${status}`] = async () => {
    const { key, model, temperature } = errorCase(status);
    await openai(key).chat.completions.create({
      model,
      messages: [{ role: "user", content: USER }],
      temperature,
    });
  };
  scenarios[`ai.error-${status}`] = async () => {
    const { key, model, temperature } = errorCase(status);
    await generateText({ model: aiSdk(key).chatModel(model), prompt: USER, temperature });
  };
}

class ScenarioTimeout extends Error {
  constructor() {
    super(`no answer within ${SCENARIO_TIMEOUT_MS} ms`);
  }
}

async function run(name) {
  const started = Date.now();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ScenarioTimeout()), SCENARIO_TIMEOUT_MS);
  });
  try {
    const value = await Promise.race([scenarios[name](), timeout]);
    return { ok: true, value: value ?? null, ms: Date.now() - started };
  } catch (error) {
    return { ok: false, error: describe(error), ms: Date.now() - started };
  } finally {
    clearTimeout(timer);
  }
}

function describe(error) {
  // The AI SDK wraps the last failure of its retries in a RetryError.
  const last = error?.lastError;
  return {
    class: error?.constructor?.name ?? String(error),
    status: error?.status ?? error?.statusCode ?? last?.statusCode ?? null,
    message: String(error?.message ?? error).slice(0, 300),
    cause: last ? last.constructor.name : null,
  };
}

function readStdin() {
  return new Promise((resolve, reject) => {
    let data = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => (data += chunk));
    process.stdin.on("end", () => resolve(data));
    process.stdin.on("error", reject);
  });
}

const names = config.scenarios ?? Object.keys(scenarios);
const results = await Promise.all(names.map(async (name) => [name, await run(name)]));
// Exits once written: timers of a client still sleeping (a retry) would keep it alive, and
// a pipe is written asynchronously.
process.stdout.write(JSON.stringify(Object.fromEntries(results)), () => process.exit(0));
