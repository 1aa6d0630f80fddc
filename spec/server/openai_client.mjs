// Drives an slm server with the official `openai` npm client (spec/92-server-clients_spec.lua
// installs it into a temporary folder and runs this with NODE_PATH there).
// argv: BASE_URL MODEL; prints one JSON object of what the client saw.
import OpenAI from "openai";

const [base, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base + "/v1", apiKey: "test-key", timeout: 30000, maxRetries: 0 });
const out = {};

const c = await client.completions.create({ model, prompt: "ROMEO:", max_tokens: 20, temperature: 0 });
out.completion = { text: c.choices[0].text, finish: c.choices[0].finish_reason, usage: c.usage, object: c.object };

const msgs = [{ role: "user", content: "Who art thou?" }];
const ch = await client.chat.completions.create({ model, messages: msgs, max_tokens: 20, temperature: 0 });
out.chat = { content: ch.choices[0].message.content, role: ch.choices[0].message.role,
             finish: ch.choices[0].finish_reason, object: ch.object };

const stream = await client.chat.completions.create({ model, messages: msgs, max_tokens: 20, temperature: 0,
                                                      stream: true, stream_options: { include_usage: true } });
let text = "", chunks = 0, usage = null, finish = null;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  const ch0 = chunk.choices[0];
  if (ch0 && ch0.delta.content) text += ch0.delta.content;
  if (ch0 && ch0.finish_reason) finish = ch0.finish_reason;
}
out.chat_stream = { content: text, chunks, usage, finish };

const cs = await client.completions.create({ model, prompt: "ROMEO:", max_tokens: 20, temperature: 0, stream: true });
let ctext = "";
for await (const chunk of cs) ctext += chunk.choices[0].text;
out.completion_stream = { text: ctext };

// the client asks for base64 by default and decodes it to floats
const e = await client.embeddings.create({ model, input: ["hello there", "x"] });
out.embeddings = { n: e.data.length, dim: e.data[0].embedding.length, first: e.data[0].embedding.slice(0, 4) };

const models = await client.models.list();
out.models = models.data.map((m) => m.id);

out.errors = {};
for (const [name, req] of [
  ["unknown_model", () => client.completions.create({ model: "nope", prompt: "a" })],
  ["bad_max_tokens", () => client.completions.create({ model, prompt: "a", max_tokens: -5 })],
  ["empty_messages", () => client.chat.completions.create({ model, messages: [] })],
  ["tools", () => client.chat.completions.create({ model, messages: msgs,
      tools: [{ type: "function", function: { name: "f", parameters: {} } }] })],
]) {
  try {
    await req();
    out.errors[name] = { status: "no error" };
  } catch (err) {
    out.errors[name] = { status: err.status, message: err.message, code: err.code ?? null, param: err.param ?? null };
  }
}
console.log(JSON.stringify(out));
