--- Samplers: chains of stages run in C, built from Lua tables.
--
--   local s = slm.sampler.chain{
--     {"penalties", last_n = 64, repeat_penalty = 1.1, frequency = 0, presence = 0},
--     {"top_k", 40}, {"top_p", 0.95, min_keep = 1}, {"min_p", 0.05},
--     {"typical", 0.9}, {"temp", 0.8}, {"logit_bias", {[13] = -math.huge}},
--     function(c) ... end,          -- a Lua stage: c is a Candidates view
--     {"dist", seed = 42},
--   }
--   local id = s:sample(logits)     -- f32 tensor of n_vocab, or a table
--   s:accept(id)                    -- feeds the penalties' history
--
-- Stages run in the order given; the last one selects (greedy or dist).
-- Token ids are 0-based (as in the model files); positions in a Candidates
-- view are 1-based. Methods of a sampler: sample, accept, reset, state,
-- set_state, free; tostring shows the chain.
--
-- Seeds: a dist stage without a seed draws a fresh one (from /dev/urandom),
-- so two runs differ unless a seed is given; slm.sampler.seed(s) tells the
-- seed a chain's dist stage uses, which reproduces the run when passed back.
local core = require "slm.core"
local options = require "slm.options"

local M = {}

-- the seed of each chain's dist stage (weak keys: chains are collected)
local seeds = setmetatable({}, { __mode = "k" })

--- A fresh seed in [0, 2^31): 4 bytes of /dev/urandom, or the clock where
-- there is none.
function M.fresh_seed()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(4)
  if f then f:close() end
  if b and #b == 4 then return string.unpack("<I4", b) & 0x7fffffff end
  return (os.time() ~ math.floor(core.clock() * 1e6)) & 0x7fffffff
end

--- seed(sampler) -> the seed of the chain's dist stage, or nil (greedy chains).
function M.seed(s)
  return seeds[s]
end

local NAMES = {"penalties", "top_k", "top_p", "min_p", "typical", "temp",
               "logit_bias", "greedy", "dist"}
local VALID = table.concat(NAMES, ", ") .. ", or a Lua function"

-- For each stage: the fields it accepts, and a function returning the
-- arguments of the C constructor (s:_add(name, ...)). e[2] is the first
-- positional parameter; the named form is accepted too.
local function num(e, what, key, default)
  local v = e[key]
  if v == nil then v = default end
  if type(v) ~= "number" then
    error(("%s must be a number (got %s)"):format(what, type(v)), 0)
  end
  return v
end

local function int(e, what, key, default)
  local v = num(e, what, key, default)
  if math.type(v) ~= "integer" then
    if v ~= math.floor(v) then error(("%s must be an integer (got %s)"):format(what, v), 0) end
    v = math.tointeger(v) or error(("%s is out of range (got %s)"):format(what, v), 0)
  end
  return v
end

local function pos(e, key)           -- {"top_k", 40} or {"top_k", k = 40}
  if e[2] ~= nil and e[key] ~= nil then
    error(("give %s once (positionally or as %s =)"):format(key, key), 0)
  end
  if e[2] ~= nil then e[key] = e[2] end
end

local STAGES = {
  greedy = {fields = {}, args = function() end},
  dist = {fields = {"seed"}, args = function(e)
    pos(e, "seed")
    if e.seed == nil then e.seed = M.fresh_seed() end
    return int(e, "seed", "seed")
  end},
  temp = {fields = {"t"}, args = function(e)
    pos(e, "t")
    return num(e, "temperature", "t")
  end},
  top_k = {fields = {"k"}, args = function(e)
    pos(e, "k")
    return int(e, "k", "k")
  end},
  top_p = {fields = {"p", "min_keep"}, args = function(e)
    pos(e, "p")
    return num(e, "p", "p"), int(e, "min_keep", "min_keep", 1)
  end},
  penalties = {fields = {"last_n", "repeat_penalty", "frequency", "presence"},
    args = function(e)
      return int(e, "last_n", "last_n", 64), num(e, "repeat_penalty", "repeat_penalty", 1),
             num(e, "frequency", "frequency", 0), num(e, "presence", "presence", 0)
    end},
  logit_bias = {fields = {"bias"}, args = function(e)
    pos(e, "bias")
    if type(e.bias) ~= "table" then
      error("bias must be a table {[token id] = bias}", 0)
    end
    return e.bias
  end},
}
STAGES.min_p = STAGES.top_p
STAGES.typical = STAGES.top_p

-- Normalizes one entry of a chain spec to name, entry table.
local function entry(e, i)
  if type(e) == "function" then return "lua", {e} end
  if type(e) == "string" then return e, {e} end
  if type(e) ~= "table" then
    error(("slm.sampler.chain: stage %d is a %s (expected a table, a name or a function)")
          :format(i, type(e)), 3)
  end
  if type(e[1]) == "function" then return "lua", e end
  if type(e[1]) ~= "string" then
    error(("slm.sampler.chain: stage %d has no name (its first element must be one of %s)")
          :format(i, VALID), 3)
  end
  return e[1], e
end

--- Builds a sampler chain from a list of stages (see the top of this file).
function M.chain(spec)
  if type(spec) ~= "table" then
    error("slm.sampler.chain: expected a list of stages", 2)
  end
  local s = core.sampler.new()
  for i, e in ipairs(spec) do
    local name, t = entry(e, i)
    if name == "lua" then
      if t[2] ~= nil then
        error(("slm.sampler.chain: stage %d (lua function) takes no parameters"):format(i), 2)
      end
      s:_add("lua", t[1], type(t.name) == "string" and t.name or "lua")
    else
      local def = STAGES[name]
      if not def then
        error(("slm.sampler.chain: stage %d: unknown stage '%s' (valid: %s)")
              :format(i, tostring(name), VALID), 2)
      end
      local copy, allowed = {}, {}
      for _, f in ipairs(def.fields) do allowed[f] = true end
      for k, v in pairs(t) do
        if k ~= 1 and k ~= 2 and not allowed[k] then
          error(("slm.sampler.chain: stage %d (%s): unknown parameter '%s' (valid: %s)")
                :format(i, name, tostring(k),
                        #def.fields > 0 and table.concat(def.fields, ", ") or "none"), 2)
        end
        copy[k] = v
      end
      local args = table.pack(pcall(def.args, copy))
      if not args[1] then
        error(("slm.sampler.chain: stage %d (%s): %s"):format(i, name, args[2]), 2)
      end
      local ok, err = pcall(s._add, s, name, table.unpack(args, 2, args.n))
      if not ok then
        err = tostring(err):gsub("^" .. name .. ": ", "")
        error(("slm.sampler.chain: stage %d (%s): %s"):format(i, name, err), 2)
      end
      if name == "dist" then seeds[s] = args[2] end
    end
  end
  return s
end

--- Argmax sampling (ties go to the lowest id).
function M.greedy()
  return M.chain{{"greedy"}}
end

-- The options of default: each with what it must be, as a test and as
-- words (the CLI checks its flags with the same table and names the flag).
M.DEFAULT_OPTIONS = {
  { "temp", "a finite number >= 0", function(v) return type(v) == "number" and v >= 0 and v < math.huge end },
  { "top_k", "an integer >= 0 (0 disables)", function(v) return math.type(v) == "integer" and v >= 0 end },
  { "top_p", "a number in (0, 1]", function(v) return type(v) == "number" and v > 0 and v <= 1 end },
  { "min_p", "a number in [0, 1]", function(v) return type(v) == "number" and v >= 0 and v <= 1 end },
  { "seed", "an integer >= 0", function(v) return math.type(v) == "integer" and v >= 0 end },
  { "repeat_penalty", "a finite number > 0 (1 disables)",
    function(v) return type(v) == "number" and v > 0 and v < math.huge end },
  { "frequency", "a finite number", function(v) return type(v) == "number" and math.abs(v) < math.huge end },
  { "presence", "a finite number", function(v) return type(v) == "number" and math.abs(v) < math.huge end },
  { "last_n", "an integer >= 0", function(v) return math.type(v) == "integer" and v >= 0 end },
}
local DEFAULT_KNOWN = {}
for i, o in ipairs(M.DEFAULT_OPTIONS) do DEFAULT_KNOWN[i] = o[1] end
DEFAULT_KNOWN = options.known(DEFAULT_KNOWN)

--- check_default(o) -> nil when the options of default are right, else the
-- name of the first wrong one, what it must be and its value.
function M.check_default(o)
  for _, d in ipairs(M.DEFAULT_OPTIONS) do
    local v = o[d[1]]
    if v ~= nil and not d[3](v) then return d[1], d[2], v end
  end
end

--- The usual chain, as the reference implementation orders it:
-- [penalties] -> top_k -> top_p -> min_p -> temp -> dist. Defaults: temp 0.8,
-- top_k 40, top_p 0.95, min_p 0.05, a fresh seed (see Seeds above);
-- penalties only when one of repeat_penalty, frequency or presence is given
-- (last_n 64). temp = 0 gives greedy sampling (after the penalties). An
-- unknown option or a wrong value is an error naming it.
local stages

function M.default(o)
  return M.chain(stages(o, 4))
end

--- default_stages(o) -> the list of stages default(o) chains (for
-- generate's regex option, which puts its own stage first).
function M.default_stages(o)
  return (stages(o, 4))
end

-- errors at level (as options.check takes it: 4 is the caller of the
-- function that called stages)
function stages(o, level)
  o = options.check("slm.sampler.default", o, DEFAULT_KNOWN, level)
  local key, expected, got = M.check_default(o)
  if key then options.fail("slm.sampler.default", key, expected, got, level) end
  local spec = {}
  if o.repeat_penalty or o.frequency or o.presence then
    spec[#spec + 1] = {"penalties", last_n = o.last_n or 64, repeat_penalty = o.repeat_penalty,
                       frequency = o.frequency, presence = o.presence}
  end
  if o.temp == 0 then
    spec[#spec + 1] = {"greedy"}
  else
    spec[#spec + 1] = {"top_k", o.top_k or 40}
    spec[#spec + 1] = {"top_p", o.top_p or 0.95}
    spec[#spec + 1] = {"min_p", o.min_p or 0.05}
    spec[#spec + 1] = {"temp", o.temp or 0.8}
    spec[#spec + 1] = {"dist", seed = o.seed}
  end
  return spec
end

return M
