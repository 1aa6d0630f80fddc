--- slm.grammar: GBNF grammars (llama.cpp's format), incremental matching
-- and token masks for constrained generation.
--
--   local g = slm.grammar.compile([[
--   root ::= "yes" | "no" | num
--   num  ::= [0-9]{1,3}
--   ]])
--   g:match("12")    --> "complete"   (a whole sentence of the grammar)
--   g:match("ye")    --> "prefix"     (a valid start, not complete)
--   g:match("yo")    --> nil, 1       (s:sub(1, 1) is the longest valid prefix)
--   print(g:rules())                  -- the compiled rules, generated ones too
--
--   local m = g:matcher()             -- an incremental matcher for generation
--   m:accept("4")    --> true         (false, n: the bytes were refused from
--                                      byte n + 1 on; nothing was accepted)
--   m:complete()     --> true         the grammar may stop here
--   m:can_continue() --> true         some continuation exists
--   m:distance()     --> 0            fewest bytes still needed to complete
--                                      (math.huge: it never can)
--   m:clone(), m:reset()              a copy of the state; back to the start
--   m:allowed(tok [, limit])          ids (0-based, ascending) of the tokens
--                                      of tokenizer tok whose text keeps the
--                                      match alive; end-of-generation ids only
--                                      when complete; controls never. limit:
--                                      only tokens after which the grammar can
--                                      still complete within limit bytes
--   m:apply(tok, logits, out [, limit]) writes logits to out (f32 tensors of
--                                      one size) with -inf at disallowed ids;
--                                      returns the number allowed
--
-- The dialect: rules `name ::= ...` (names [a-zA-Z0-9-]), literals "...",
-- classes [...] and [^...] with ranges, `.` (any code point), groups, `|`,
-- `* + ? {m} {m,} {m,n}`, escapes \xNN \uNNNN \UNNNNNNNN \t \r \n \\ \" \[ \]
-- (any other is an error), `#` comments, a newline ending a rule except
-- inside ( ) or after `|`. Matching is on UTF-8 bytes: a character split
-- between two accept calls (two tokens) is kept in the state.
-- Errors name the place: "grammar:3:14: unknown escape '\q'",
-- "grammar:2:9: undefined rule: value". Left recursion (`a ::= a "x" | "y"`)
-- is refused, naming the rule: write it with a repetition (`"y" "x"*`).
-- Repetition counts are capped at 10000 each.
--
-- Masks walk the vocabulary as a trie of token texts, pruning a whole
-- subtree at the first refused byte, and are cached per matcher state, so
-- a state that recurs (inside a string, a list) costs a lookup. A grammar
-- and its matchers are for one thread at a time.
local core = require "slm.core"

local M = {}

local GRAMMAR_MT = debug.getregistry()["slm.Grammar"]

--- compile(text [, root]) -> grammar; raises "grammar:LINE:COL: ..." on bad
-- input. root: the start rule (default "root").
function M.compile(text, root)
  if type(text) ~= "string" then
    error("bad argument #1 to 'compile' (string expected, got " .. type(text) .. ")", 2)
  end
  if root ~= nil and type(root) ~= "string" then
    error("bad argument #2 to 'compile' (string expected, got " .. type(root) .. ")", 2)
  end
  local g, msg = core.grammar.compile(text, root)
  if not g then error(msg, 2) end
  return g
end

--- is_grammar(x) -> whether x is a compiled grammar.
function M.is_grammar(x)
  local mt = getmetatable(x)
  -- or a grammar made in Lua around one (slm.tools' lazy grammars)
  return mt == GRAMMAR_MT or (type(mt) == "table" and rawget(mt, "__grammar") == true)
end

--- load(path [, root]) -> grammar compiled from a .gbnf file, or nil, msg
-- when the file cannot be read (a bad grammar raises as compile does).
function M.load(path, root)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return M.compile(text, root)
end

--- json_schema_to_gbnf(schema) -> GBNF text; from_json_schema(schema) ->
-- a compiled grammar. schema: a Lua table or JSON text; the subset and its
-- errors: docs/STRUCTURED.md (lua/slm/grammar/json_schema.lua).
function M.json_schema_to_gbnf(schema)
  return require("slm.grammar.json_schema").to_gbnf(schema)
end

function M.from_json_schema(schema)
  return M.compile(M.json_schema_to_gbnf(schema))
end

return M
