--- A two-model prompt pipeline: a small model drafts an answer, a second
-- model judges it (its answer constrained to yes/no), and a router either
-- accepts the draft or has the drafter try again with the judge's verdict.
--   bin/slm examples/pipeline.lua DRAFTER.gguf CHECKER.gguf "question" [max_tokens=24]
-- Both models run greedily, so a run is reproducible. Any decoders with a
-- tokenizer (byte-level rwkv.cpp files read bytes); encoders and llama2.c
-- checkpoints are refused.
local slm = require "slm"
local common = require "examples.common"

local drafter_path, checker_path, question = arg[1], arg[2], arg[3]
if not drafter_path or not checker_path or not question then
  io.stderr:write("usage: pipeline.lua DRAFTER CHECKER \"question\" [max_tokens=24]\n")
  os.exit(2)
end
local max_tokens = math.tointeger(tonumber(arg[4] or 24)) or 24

local function load(p) return common.model(p, { text = true, decoder = true }) end
local drafter, checker = load(drafter_path), load(checker_path)
local draft_sess, check_sess = drafter:session { ctx = 512 }, checker:session { ctx = 512 }

local run = slm.pipeline {
  { name = "draft", session = draft_sess, max_tokens = max_tokens, stop = { "\n" },
    template = "Question: {{question}}\nAnswer:", parse = function(text) return (text:gsub("^%s+", "")) end },
  slm.pipeline.route {
    name = "final",
    ask = { session = check_sess,
            template = "Question: {{question}}\nProposed answer: {{draft}}\nIs the answer correct (yes or no)?" },
    branches = {
      yes = function(ctx) return ctx.draft end,
      no = { name = "retry", session = draft_sess, max_tokens = max_tokens, stop = { "\n" },
             template = "Question: {{question}}\nA wrong answer: {{draft}}\nA better answer:" },
    },
  },
}

local ok, out, ctx = pcall(run, { question = question })
if not ok then common.die("%s", out) end
for _, e in ipairs(ctx.trace) do
  io.write(string.format("[%s]%s %q\n", e.name, e.branch and (" -> " .. e.branch) or "", e.text or tostring(e.value)))
  if e.branch_text then io.write(string.format("  [%s] %q\n", e.branch, e.branch_text)) end
end
io.write("final: ", tostring(out), "\n")
