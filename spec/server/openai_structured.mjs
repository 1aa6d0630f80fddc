// Structured output and tool calls through the official `openai` npm client
// (spec/92-server-clients_spec.lua copies this beside the installed package).
// argv: BASE_URL MODEL SCHEMA_JSON (the schema and the tool's parameters; JS
// objects keep the text's member order); prints one JSON object.
import OpenAI from "openai";

const [base, model, schemaText] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base + "/v1", apiKey: "test-key", timeout: 60000, maxRetries: 0 });
const schema = JSON.parse(schemaText);
const messages = [{ role: "user", content: "Weather in Paris?" }];
const out = {};

// response_format json_schema, through create and through the parse helper
const rf = { type: "json_schema", json_schema: { name: "weather", strict: true, schema } };
const c = await client.chat.completions.create({ model, messages, max_tokens: 60, temperature: 0, response_format: rf });
out.schema = { content: c.choices[0].message.content, finish: c.choices[0].finish_reason };
const p = await client.chat.completions.parse({ model, messages, max_tokens: 60, temperature: 0, response_format: rf });
out.schema_parsed = p.choices[0].message.parsed;

// a strict tool, tool_choice "required": the parse helper decodes the arguments
const tools = [{ type: "function", function: { name: "get_weather", description: "Weather of a city",
                                               parameters: schema, strict: true } }];
const t = await client.chat.completions.parse({ model, messages, max_tokens: 80, temperature: 0, tools,
                                                tool_choice: "required" });
const msg = t.choices[0].message;
out.tool = { finish: t.choices[0].finish_reason, content: msg.content,
             calls: (msg.tool_calls || []).map((tc) => ({ id: tc.id, type: tc.type, name: tc.function.name,
                                                          arguments: tc.function.arguments,
                                                          parsed: tc.function.parsed_arguments })) };

// the same streamed, accumulated by the client's stream helper
const s = client.chat.completions.stream({ model, messages, max_tokens: 80, temperature: 0, tools,
                                          tool_choice: "required" });
const final = await s.finalChatCompletion();
const fm = final.choices[0].message;
out.tool_stream = { finish: final.choices[0].finish_reason,
                    calls: (fm.tool_calls || []).map((tc) => ({ name: tc.function.name, arguments: tc.function.arguments })) };

// the call and its result sent back
const back = await client.chat.completions.create({ model, max_tokens: 8, temperature: 0, tools, messages: [
  ...messages, { role: "assistant", content: null, tool_calls: msg.tool_calls.map((tc) => ({ id: tc.id, type: "function",
    function: { name: tc.function.name, arguments: tc.function.arguments } })) },
  { role: "tool", tool_call_id: msg.tool_calls[0].id, content: "sunny" }] });
out.back = { usage: back.usage, finish: back.choices[0].finish_reason };

try {
  await client.chat.completions.create({ model, messages, response_format: { type: "json_schema",
    json_schema: { name: "x", schema: { type: "string", format: "email" } } } });
  out.bad_schema = { status: "no error" };
} catch (err) {
  out.bad_schema = { status: err.status, param: err.param ?? null, code: err.code ?? null, message: err.message };
}
console.log(JSON.stringify(out));
