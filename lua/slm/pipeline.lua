--- slm.pipeline: prompt pipelines - template -> generate -> parse -> next step.
--
--   local run = slm.pipeline {
--     {name = "draft", session = small, template = "Q: {{question}}\nA:",
--      max_tokens = 40, stop = {"\n"}},
--     {name = "verdict", session = checker,
--      template = "Question: {{question}}\nAnswer: {{draft}}\nCorrect (yes/no)?",
--      regex = " ?(yes|no)", parse = "(%a+)"},
--     slm.pipeline.route {name = "final",
--      when = function(ctx) return ctx.verdict end,     -- a branch name
--      branches = {yes = function(ctx) return ctx.draft end,
--                  no = {session = small, template = "Q: {{question}}\nA better answer:"}}},
--   }
--   local out, ctx = run {question = "What is 2 + 2?"}
--
-- A step is a function(ctx) -> value, or a table:
--   name        where the value goes: ctx[name] (default "step<i>")
--   template    a string with {{var}} / {{var.field}} taken from ctx, or a
--               function(ctx) -> prompt
--   session or model   the session to generate on (a model gets a new
--               session each run); the session is reset before the step
--               unless keep = true
--   chat        a chat template name (or true for the model's own): the
--               prompt becomes one user message (with `system`) and runs
--               through sess:chat
--   max_tokens (default 64), sampler, stop, stop_ids, regex, special: as
--               sess:generate
--   parse       function(text, ctx) -> value, or a Lua pattern whose first
--               capture (or whole match) is the value; no match is an error
-- Each step sees the inputs and every earlier value in ctx; ctx.last is the
-- previous step's value and ctx.trace lists {name =, prompt =, text =,
-- value =, branch =, branch_prompt =, branch_text =} per step. Calling the
-- pipeline on a table of inputs runs it on a copy of them (the inputs stay
-- as they were) and returns the last value and ctx. An error in a step is
-- raised as "pipeline step 'name': message". A step table is checked when
-- the pipeline is built: an unknown key, a value of the wrong kind or a
-- missing template or session is an error naming the step and the key.
--
-- slm.pipeline.route{name =, when = function(ctx) -> branch name | ask = step
-- table, branches = {name = step or pipeline}, default = branch name}
-- chooses a branch by a Lua predicate, or by asking a model: an `ask` step
-- is generated with its answer constrained to the branch names (a regex
-- alternation of them, optional leading space), so a random or a wrong model
-- still answers with one of them. The branch's value is the route's value.
--
-- slm.pipeline.parallel{step, step, ...} runs independent generate steps at
-- once, their sessions' tokens batched into shared forwards (slm.batch);
-- each value goes to ctx[its name], the step's value is {name = value}.
local options = require "slm.options"
local generate = require "slm.generate"

local M = {}

local GEN_KEYS = generate.OPTIONS
local STEP_KEYS = { "name", "template", "session", "model", "ctx", "keep", "chat", "system", "parse" }
for _, k in ipairs(GEN_KEYS) do STEP_KEYS[#STEP_KEYS + 1] = k end
local STEP_OPTS = options.known(STEP_KEYS)
local ROUTE_OPTS = options.known { "name", "when", "ask", "branches", "default" }

-- A generate step's keys and values, checked when the pipeline is built
-- (what: how messages name the step); errors at level (as error's).
local function check_step(step, what, level)
  level = level + 1
  options.check(what, step, STEP_OPTS, level + 1)
  local function bad(key, expected) options.fail(what, key, expected, step[key], level + 2) end
  if not options.is_string(step.name) then bad("name", "a string") end
  local tt = type(step.template)
  if tt ~= "string" and tt ~= "function" then bad("template", "a string or a function(ctx)") end
  if step.session == nil and step.model == nil then bad("session", "a session (or model = a model)") end
  if step.session ~= nil and type(step.session) ~= "table" then bad("session", "a session") end
  if step.model ~= nil and type(step.model) ~= "table" then bad("model", "a model") end
  if not options.is_int(step.ctx, 1) then bad("ctx", "a positive integer") end
  if not options.is_bool(step.keep) then bad("keep", "a boolean") end
  if step.chat ~= nil and step.chat ~= true and type(step.chat) ~= "string" then
    bad("chat", "true or a chat template name")
  end
  if not options.is_string(step.system) then bad("system", "a string") end
  local pt = type(step.parse)
  if step.parse ~= nil and pt ~= "string" and pt ~= "function" then bad("parse", "a Lua pattern or a function") end
  local msg = generate.problem(what, step)
  if msg then error(msg, level) end
end

local function lookup(ctx, path)
  local v = ctx
  for key in path:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    v = v[tonumber(key) or key]
  end
  return v
end

--- fill(template, ctx) -> text: {{var}} replaced by tostring(ctx.var).
function M.fill(template, ctx)
  return (template:gsub("{{%s*([%w_.]+)%s*}}", function(path)
    local v = lookup(ctx, path)
    if v == nil then error("template variable '" .. path .. "' is not set", 0) end
    return tostring(v)
  end))
end

local function escape_regex(s) return (s:gsub("[%^%$%(%)%%.%[%]%*%+%-%?{}|\\]", "\\%0")) end

local function session_of(step)
  if step.session then
    if not step.keep then step.session:reset() end
    return step.session
  end
  if step.model then return step.model:session { ctx = step.ctx } end
  error("needs a session or a model", 0)
end

-- a generate step's prompt and session, and the function that generates
-- its text on that session
local function prepare(step, ctx)
  local prompt
  if type(step.template) == "function" then
    prompt = step.template(ctx)
  elseif type(step.template) == "string" then
    prompt = M.fill(step.template, ctx)
  else
    error("needs a template (a string or a function)", 0)
  end
  if type(prompt) ~= "string" then error("template gave " .. type(prompt) .. ", not a string", 0) end
  local sess = session_of(step)
  local gopts = {}
  for _, k in ipairs(GEN_KEYS) do gopts[k] = step[k] end
  if gopts.max_tokens == nil then gopts.max_tokens = 64 end
  local function gen(s)
    if step.chat then
      local msgs = {}
      if step.system then msgs[1] = { role = "system", content = step.system } end
      msgs[#msgs + 1] = { role = "user", content = prompt }
      gopts.template = step.chat ~= true and step.chat or nil
      return s:chat(msgs, gopts)
    end
    return s:generate(prompt, gopts, function() end)
  end
  return prompt, sess, gen
end

-- the step's value from its text (parse); fills the trace entry
local function parse(step, ctx, prompt, text, entry)
  local value = text
  if type(step.parse) == "function" then
    value = step.parse(text, ctx)
  elseif type(step.parse) == "string" then
    local a, b, cap = text:find(step.parse)
    if not a then error(string.format("parse pattern %q does not match %q", step.parse, text), 0) end
    value = cap or text:sub(a, b)
  elseif step.parse ~= nil then
    error("parse must be a function or a pattern", 0)
  end
  entry.prompt, entry.text = prompt, text
  return value
end

-- one generate step: -> value; fills the trace entry
local function run_generate(step, ctx, entry)
  local prompt, sess, gen = prepare(step, ctx)
  return parse(step, ctx, prompt, (gen(sess)), entry)
end

local Route = {}
Route.__index = Route

local Pipeline = {}
Pipeline.__index = Pipeline

--- route{...} -> a step choosing one of its branches
local check_any

function M.route(spec)
  if type(spec) ~= "table" or type(spec.branches) ~= "table" then
    error("bad argument #1 to 'route' (table with branches expected)", 2)
  end
  local what = "route '" .. tostring(spec.name or "?") .. "'"
  options.check(what, spec, ROUTE_OPTS)
  if (spec.when == nil) == (spec.ask == nil) then error("route: give exactly one of when and ask", 2) end
  if spec.when ~= nil and type(spec.when) ~= "function" then
    options.fail(what, "when", "a function(ctx) -> branch name", spec.when)
  end
  local names = {}
  for k, b in pairs(spec.branches) do
    names[#names + 1] = k
    check_any(b, string.format("%s branch '%s'", what, tostring(k)), 2)
  end
  table.sort(names)
  if spec.ask ~= nil then
    if type(spec.ask) ~= "table" then options.fail(what, "ask", "a step table", spec.ask) end
    for _, k in ipairs { "regex", "parse" } do
      if spec.ask[k] ~= nil then
        error(string.format("%s: ask: the route sets %s (the answer is one of the branch names)", what, k), 2)
      end
    end
    check_step(spec.ask, what .. " ask", 2)
  end
  local r = setmetatable({ name = spec.name, when = spec.when, branches = spec.branches,
                           default = spec.default, names = names }, Route)
  if spec.ask then
    -- the answer is one of the branch names, generated under a regex
    local alts = {}
    for i, n in ipairs(names) do alts[i] = escape_regex(n) end
    local ask = {}
    for k, v in pairs(spec.ask) do ask[k] = v end
    ask.regex = " ?(?:" .. table.concat(alts, "|") .. ")"
    ask.parse = function(text) return (text:gsub("^ ", "")) end
    r.ask = ask
  end
  return r
end

--- parallel{step, step, ...} -> a step running independent generate
-- steps (tables, each with its own name and session) at once: their
-- sessions' tokens go through slm.batch's forwards together (sessions of
-- one model share each forward). Each value goes to ctx[name] as a step's
-- would; the parallel step's own value is {name = value, ...}. The steps
-- see ctx as it was before the parallel step.
local Parallel = {}
Parallel.__index = Parallel

function M.parallel(steps)
  if type(steps) ~= "table" or #steps == 0 then error("bad argument #1 to 'parallel' (list of steps expected)", 2) end
  local names = {}
  for i, st in ipairs(steps) do
    local what = "parallel step " .. i
    if type(st) ~= "table" or getmetatable(st) ~= nil then error(what .. " must be a generate step table", 2) end
    check_step(st, what, 2)
    if type(st.name) ~= "string" then error(what .. ": needs a name (its value goes to ctx[name])", 2) end
    if names[st.name] then
      error(string.format("parallel steps %d and %d are both named '%s'", names[st.name], i, st.name), 2)
    end
    names[st.name] = i
  end
  return setmetatable({ steps = steps }, Parallel)
end

local function run_parallel(p, ctx, entry)
  local jobs, prompts = {}, {}
  for i, st in ipairs(p.steps) do
    local prompt, sess, gen = prepare(st, ctx)
    prompts[i] = prompt
    jobs[i] = { sess = sess, fn = gen }
  end
  local results = require("slm.batch").together(jobs)
  local values = {}
  entry.parallel = {}
  for i, st in ipairs(p.steps) do
    local sub = { name = st.name }
    values[st.name] = parse(st, ctx, prompts[i], results[i][1], sub)
    sub.value = values[st.name]
    entry.parallel[i] = sub
  end
  for name, v in pairs(values) do ctx[name] = v end
  return values
end

local run_step

-- route step: -> the branch's value
local function run_route(r, ctx, entry)
  local choice
  if r.ask then
    choice = run_generate(r.ask, ctx, entry)
  else
    choice = r.when(ctx)
  end
  if r.branches[choice] == nil and r.default ~= nil then choice = r.default end
  local branch = r.branches[choice]
  if branch == nil then
    error(string.format("no branch '%s' (branches: %s)", tostring(choice), table.concat(r.names, ", ")), 0)
  end
  entry.branch = choice
  local sub = {}
  local value = run_step(branch, ctx, sub)
  entry.branch_prompt, entry.branch_text = sub.prompt, sub.text
  return value
end

-- -> value; the step's details go to entry
function run_step(step, ctx, entry)
  if type(step) == "function" then return step(ctx) end
  if getmetatable(step) == Route then return run_route(step, ctx, entry) end
  if getmetatable(step) == Parallel then return run_parallel(step, ctx, entry) end
  if getmetatable(step) == Pipeline then
    return (step:run(ctx))   -- a nested pipeline sees and extends the same ctx
  end
  if type(step) == "table" then return run_generate(step, ctx, entry) end
  error("a step is a function, a table or a route (got " .. type(step) .. ")", 0)
end

-- Any step: functions, routes and pipelines are checked when made; a
-- table is a generate step.
function check_any(step, what, level)
  local mt = getmetatable(step)
  if type(step) == "function" or mt == Route or mt == Pipeline or mt == Parallel then return end
  if type(step) ~= "table" then
    error(string.format("%s is a %s (a function, a table or a route expected)", what, type(step)), level + 1)
  end
  check_step(step, what, level + 1)
end

--- slm.pipeline{step, step, ...} -> callable: p(inputs) -> last value, ctx
function M.new(steps)
  if type(steps) ~= "table" or #steps == 0 then error("bad argument #1 to 'pipeline' (list of steps expected)", 2) end
  for i, s in ipairs(steps) do
    if type(s) ~= "function" and type(s) ~= "table" then
      error(string.format("pipeline: step %d is a %s (a function, a table or a route expected)", i, type(s)), 2)
    end
    local name = type(s) == "table" and type(s.name) == "string" and s.name or ("step" .. i)
    check_any(s, string.format("pipeline step %d ('%s')", i, name), 2)
  end
  return setmetatable({ steps = steps }, Pipeline)
end

function Pipeline:__call(inputs)
  if inputs ~= nil and type(inputs) ~= "table" then error("bad argument #1 to pipeline (table of inputs expected)", 2) end
  local ctx = {}
  for k, v in pairs(inputs or {}) do ctx[k] = v end
  ctx.trace = {}
  return self:run(ctx)
end

--- p:run(ctx) -> last value, ctx: runs the steps on ctx itself (which must
-- have a trace list); calling p(inputs) runs them on a copy of inputs.
function Pipeline:run(ctx)
  local value
  for i, step in ipairs(self.steps) do
    local name = type(step) == "table" and step.name or ("step" .. i)
    -- the entry goes in first: a nested pipeline's entries follow it
    local entry = { name = name }
    ctx.trace[#ctx.trace + 1] = entry
    local ok, v = pcall(run_step, step, ctx, entry)
    if not ok then
      -- the step names the place; where inside slm it was raised does not
      local msg = tostring(v):gsub("^[^:\n]*slm[/\\][%w_]+%.lua:%d+: ", "")
      if not msg:find("^pipeline step '") then msg = string.format("pipeline step '%s': %s", name, msg) end
      error(msg, 0)
    end
    value = v
    entry.value = v
    ctx[name], ctx.last = v, v
  end
  return value, ctx
end

return setmetatable(M, { __call = function(_, steps) return M.new(steps) end })
