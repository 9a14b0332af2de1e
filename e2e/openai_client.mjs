// openai_client.mjs drives a model endpoint with the official `openai` npm
// client, as a real third-party client would: it reads a spec from stdin
// ({"baseURL": "...", "apiKey": "...", "model": "...", "embeddingModel": "...",
// "deniedModel": "...", "limitedModel": "..."}) and prints one JSON object with what each call
// returned, for openai_test.go to check.
import OpenAI from "openai";

const spec = JSON.parse(await new Promise((resolve, reject) => {
  let s = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d) => (s += d));
  process.stdin.on("end", () => resolve(s));
  process.stdin.on("error", reject);
}));

// The API key is the local endpoint's token (OPENAI_API_KEY): the endpoint
// admits only requests that carry it, then drops it; the mesh certificate
// authenticates the agent to the gateway.
const client = new OpenAI({ baseURL: spec.baseURL, apiKey: spec.apiKey, maxRetries: 0, timeout: 30_000 });
const out = {};

// Another local process without the token is refused by the endpoint
// itself: an AuthenticationError carrying our reason code.
try {
  const stranger = new OpenAI({ baseURL: spec.baseURL, apiKey: "sk-not-the-token", maxRetries: 0, timeout: 30_000 });
  await stranger.models.list();
  out.wrongKey = { error: "a client with the wrong key was answered" };
} catch (e) {
  if (!(e instanceof OpenAI.APIError)) throw e;
  out.wrongKey = { status: e.status, authenticationError: e instanceof OpenAI.AuthenticationError, type: e.type, code: e.code };
}

const models = [];
for await (const m of client.models.list()) models.push(m.id);
out.models = models;

const chat = await client.chat.completions.create({
  model: spec.model,
  messages: [{ role: "user", content: "hi" }],
});
out.chat = { content: chat.choices[0].message.content, usage: chat.usage };

const stream = await client.chat.completions.create({
  model: spec.model,
  messages: [{ role: "user", content: "hi" }],
  stream: true,
  stream_options: { include_usage: true },
});
let content = "";
let chunks = 0;
let usage = null;
for await (const chunk of stream) {
  chunks++;
  if (chunk.choices.length > 0 && chunk.choices[0].delta.content) content += chunk.choices[0].delta.content;
  if (chunk.usage) usage = chunk.usage;
}
out.stream = { content, chunks, usage };

// The SDK asks for base64 and decodes it; the gateway relays it unchanged.
const emb = await client.embeddings.create({ model: spec.embeddingModel, input: "hello" });
out.embedding = { values: Array.from(emb.data[0].embedding), usage: emb.usage };

try {
  await client.chat.completions.create({ model: spec.deniedModel, messages: [{ role: "user", content: "hi" }] });
  out.denied = { error: "the denied model was answered" };
} catch (e) {
  if (!(e instanceof OpenAI.APIError)) throw e;
  out.denied = { status: e.status, type: e.type, code: e.code, message: e.message, auditEvent: e.error?.audit_event ?? "" };
}

// A model under a one-request-per-minute limit: the second call is a 429
// that the SDK surfaces as a RateLimitError (maxRetries is 0).
out.limited = [];
for (let i = 0; i < 2; i++) {
  try {
    await client.chat.completions.create({ model: spec.limitedModel, messages: [{ role: "user", content: "hi" }] });
    out.limited.push({ status: 200 });
  } catch (e) {
    if (!(e instanceof OpenAI.APIError)) throw e;
    out.limited.push({ status: e.status, rateLimitError: e instanceof OpenAI.RateLimitError, type: e.type, code: e.code,
      retryAfter: e.headers?.get("retry-after") ?? null });
  }
}

process.stdout.write(JSON.stringify(out) + "\n");
