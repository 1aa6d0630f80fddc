-- JSON Schema -> GBNF (lua/slm/grammar/json_schema.lua): the fixtures'
-- accept/reject instances, errors for what the subset does not cover, and
-- ground truths the converter does not compute (integer ranges by
-- arithmetic, patterns and generated texts by python-jsonschema).
local helpers = require "spec.helpers"
local JS = require "slm.grammar.json_schema"
local cjson = require "cjson"

local SCHEMAS = { "any_one_of", "array_items", "enum_const", "nested_object", "object_closed",
                  "object_required", "refs_defs", "string_bounds" }

-- the grammar engine (branch grammar): slm.grammar.compile
local has_grammar, grammar = pcall(require, "slm.grammar")
has_grammar = has_grammar and type(grammar) == "table" and grammar.compile ~= nil
local NO_ENGINE = "slm.grammar.compile is not available (the grammar engine)"

local function compile(schema)
  return grammar.compile(JS.to_gbnf(schema))
end

local function lines(path)
  local out = {}
  for line in (helpers.read(path)):gmatch("([^\n]*)\n") do out[#out + 1] = line end
  return out
end

local validate = helpers.json_schema_verdicts

describe("json_schema: the fixtures' instances", function()
  -- Invalid instances that break a constraint the subset cannot express:
  -- none of the fixtures' (each is rejected), so the list is empty; an
  -- entry would name the line and the reason.
  local CANNOT_EXPRESS = {}

  for _, name in ipairs(SCHEMAS) do
    it(name .. ": every valid line is a complete match, every invalid one is rejected", function()
      local dir, why = helpers.fixture("grammars/schemas")
      if not dir then return pending(why) end
      if not has_grammar then return pending(NO_ENGINE) end
      local text = helpers.read(dir .. "/" .. name .. ".schema.json")
      local g = compile(text)
      local n_valid, n_invalid = 0, 0
      for _, line in ipairs(lines(dir .. "/" .. name .. ".valid.jsonl")) do
        assert.equal("complete", (g:match(line)), name .. " valid: " .. line)
        n_valid = n_valid + 1
      end
      for i, line in ipairs(lines(dir .. "/" .. name .. ".invalid.jsonl")) do
        if not CANNOT_EXPRESS[name .. ":" .. i] then
          assert.is_not.equal("complete", (g:match(line)), name .. " invalid: " .. line)
          n_invalid = n_invalid + 1
        end
      end
      assert.is_true(n_valid >= 8 and n_invalid >= 10)
    end)
  end
end)

describe("json_schema: errors name the keyword and its JSON pointer", function()
  local CASES = {
    { { type = "object", properties = { a = { ["not"] = { type = "string" } } } },
      "json_schema: keyword 'not' is not supported (at #/properties/a)" },
    { { ["if"] = {}, ["then"] = {} }, "keyword '[it][fh][e]?n?' is not supported %(at #%)" },
    { { type = "object", patternProperties = { ["^a"] = {} } },
      "json_schema: keyword 'patternProperties' is not supported (at #)" },
    { { type = "object", dependentRequired = { a = { "b" } } },
      "json_schema: keyword 'dependentRequired' is not supported (at #)" },
    { { type = "array", items = { type = "string" }, uniqueItems = true },
      "json_schema: keyword 'uniqueItems' is not supported (at #)" },
    { { type = "integer", multipleOf = 2 }, "json_schema: keyword 'multipleOf' is not supported (at #)" },
    { { type = "number", minimum = 0 },
      "json_schema: minimum on a number is not expressible (bounds are supported for type integer only) (at #/minimum)" },
    { { type = "string", pattern = "(?=a)b" },
      'json_schema: pattern "(?=a)b": lookaround and named groups are not supported (at character 2) (at #/pattern)' },
    { { type = "string", pattern = "\\bword" },
      'json_schema: pattern "\\\\bword": word boundaries (\\b) are not supported (at character 3) (at #/pattern)' },
    { { type = "string", pattern = "(a)\\1" },
      'json_schema: pattern "(a)\\\\1": backreferences are not supported (at character 6) (at #/pattern)' },
    { { type = "string", format = "email" },
      "json_schema: format email is not supported (known: date, date-time, time, uuid) (at #/format)" },
    { { type = "string", pattern = "^a$", minLength = 2 },
      "json_schema: pattern together with minLength/maxLength is not expressible (at #)" },
    { { ["$ref"] = "http://example.com/x" },
      "json_schema: $ref http://example.com/x is not local (only #... references are supported) (at #/$ref)" },
    { { ["$ref"] = "#/$defs/missing" }, "json_schema: $ref #/$defs/missing points to nothing (at #/$ref)" },
    { { type = "strng" }, "json_schema: unknown type strng (at #/type)" },
    { { type = { "string", "nul" } }, "json_schema: unknown type nul (at #/type/1)" },
    { { enum = {} }, "json_schema: enum must be a non-empty list (at #/enum)" },
    { { type = "integer", minimum = 5, maximum = 4 }, "json_schema: no integer lies within the bounds (at #)" },
    { { type = "array", minItems = 3, maxItems = 2 }, "json_schema: maxItems is less than minItems (at #)" },
    { { type = "object", required = { "x" }, additionalProperties = false },
      "json_schema: required property x is not declared and additionalProperties is false (at #/required/0)" },
    { false, "json_schema: the schema false accepts nothing (at #)" },
    { { allOf = { { type = "object", properties = { a = { type = "string" } } },
                  { type = "object", properties = { a = { type = "integer" } } } } },
      "json_schema: property a is declared by two allOf members (at #/allOf/1/properties/a)" },
    { { const = { 1, 2 } },
      "json_schema: const/enum values must be strings, numbers, booleans or null (objects and arrays are not supported) (at #/const)" },
    { { type = "string", minLength = -1 }, "json_schema: minLength must be a non-negative integer (at #/minLength)" },
    { { type = "object", properties = { a = { type = "string", maxLength = 1.5 } } },
      "json_schema: maxLength must be a non-negative integer (at #/properties/a/maxLength)" },
    { { anyOf = { { type = "string" } }, type = "string" },
      "json_schema: anyOf together with type is not supported (at #)" },
    { { ["$ref"] = "#/$defs/a", type = "object", ["$defs"] = { a = {} } },
      "json_schema: $ref together with type is not supported (at #)" },
    { 42, "json_schema: the schema must be a table or JSON text, got number" },
  }
  for i, case in ipairs(CASES) do
    it("case " .. i .. ": " .. (case[2]:match("'(.-)'") or case[2]:sub(14, 60)), function()
      local msg = helpers.errmsg(JS.to_gbnf, case[1])
      if case[2]:find("%[") then assert.matches(case[2], msg) else assert.equal(case[2], msg) end
    end)
  end

  it("JSON text: an unknown keyword deep inside $defs is found when referenced", function()
    local text = '{"$defs": {"p": {"type": "object", "properties": {"a/b": {"contains": {}}}}}, "$ref": "#/$defs/p"}'
    assert.equal("json_schema: keyword 'contains' is not supported (at #/$defs/p/properties/a~1b)",
                 helpers.errmsg(JS.to_gbnf, text))
  end)

  it("JSON text that is not JSON", function()
    assert.matches("^json_schema: the schema is not valid JSON %(", helpers.errmsg(JS.to_gbnf, "{nope"))
  end)

  it("annotations are ignored, not refused", function()
    local g = JS.to_gbnf { title = "T", description = "d", ["$schema"] = "x", ["$id"] = "y", examples = { 1 },
                           default = 1, ["$comment"] = "c", deprecated = false, type = "integer" }
    assert.matches("^root ::= integer\n", g)
  end)
end)

describe("json_schema: the grammar text", function()
  it("bounded whitespace, the reference's rule", function()
    local g = JS.to_gbnf { type = "object", properties = { a = { type = "string" } } }
    assert.truthy(g:find('\nspace ::= | " " | "\\n" [ \\t]{0,20}\n', 1, true))
  end)

  it("every rule that is referred to is defined, and only those are written", function()
    local dir, why = helpers.fixture("grammars/schemas")
    if not dir then return pending(why) end
    for _, name in ipairs(SCHEMAS) do
      local g = JS.to_gbnf(helpers.read(dir .. "/" .. name .. ".schema.json"))
      local defined = {}
      for rule in g:gmatch("([%w%-]+) ::= ") do
        assert.is_nil(defined[rule], name .. ": " .. rule .. " defined twice")
        defined[rule] = true
      end
      assert.is_true(defined.root)
    end
  end)
end)

describe("json_schema: matching, with ground truths", function()
  local function engine()
    if not has_grammar then pending(NO_ENGINE) return false end
    return true
  end

  it("integer bounds: every integer near the bounds and 300 random ones, against arithmetic", function()
    if not engine() then return end
    math.randomseed(7)
    local checked = 0
    for trial = 1, 40 do
      local lo = math.random(-3000, 3000)
      local hi = lo + math.random(0, trial < 20 and 200 or 100000)
      local s = { type = "integer", minimum = lo, maximum = hi }
      if trial % 7 == 0 then s.minimum = nil end
      if trial % 11 == 0 then s.maximum = nil end
      if trial % 5 == 0 then s.exclusiveMinimum, s.minimum = lo - 0.5, nil end
      local g = compile(s)
      local xs = {}
      for _ = 1, 300 do xs[#xs + 1] = math.random(lo - 50, hi + 50) end
      for x = lo - 12, lo + 12 do xs[#xs + 1] = x end
      for x = hi - 12, hi + 12 do xs[#xs + 1] = x end
      for _, x in ipairs(xs) do
        local want = (s.minimum == nil or x >= s.minimum) and (s.maximum == nil or x <= s.maximum)
                     and (s.exclusiveMinimum == nil or x > s.exclusiveMinimum)
        assert.equal(want, g:match(string.format("%d", x)) == "complete",
                     string.format("%d in [%s, %s]", x, tostring(s.minimum or s.exclusiveMinimum), tostring(s.maximum)))
        checked = checked + 1
      end
    end
    assert.is_true(checked > 10000)
  end)

  it("member order: the text's properties order for JSON text, required-then-sorted for a Lua table", function()
    if not engine() then return end
    local text = '{"type": "object", "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "integer"}, '
                 .. '"mid": {"type": "integer"}}, "required": ["mid"], "additionalProperties": false}'
    local g = compile(text)
    assert.equal("complete", (g:match('{"mid": 1, "zeta": 2, "alpha": 3}')))
    assert.is_nil((g:match('{"mid": 1, "alpha": 3, "zeta": 2}')))
    local t = compile(cjson.decode(text))
    assert.equal("complete", (t:match('{"mid": 1, "alpha": 3, "zeta": 2}')))
    assert.is_nil((t:match('{"mid": 1, "zeta": 2, "alpha": 3}')))
  end)

  it("additionalProperties: extra keys after the declared ones, never a declared key again", function()
    if not engine() then return end
    local g = compile { type = "object", properties = { name = { type = "string" }, n = { type = "integer" } },
                        required = { "name" } }
    assert.equal("complete", (g:match('{"name": "a", "names": 1, "na": [true, {"x": null}]}')))
    assert.equal("complete", (g:match('{"name": "a", "n": 1, "": 0}')))
    assert.is_nil((g:match('{"name": "a", "name": 1}')))
    assert.is_nil((g:match('{"name": "a", "n": 1, "n": 2}')))
    local typed = compile { type = "object", additionalProperties = { type = "integer" } }
    assert.equal("complete", (typed:match('{"a": 1, "b": 2}')))
    assert.is_nil((typed:match('{"a": "x"}')))
  end)

  it("recursion through $ref, and $ref to the root", function()
    if not engine() then return end
    local g = compile('{"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, '
      .. '"next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["v", "next"], '
      .. '"additionalProperties": false}}, "$ref": "#/$defs/node"}')
    assert.equal("complete", (g:match('{"v": 1, "next": {"v": 2, "next": {"v": 3, "next": null}}}')))
    assert.is_nil((g:match('{"v": 1, "next": {"v": 2}}')))
    local r = compile { type = "object", properties = { kids = { type = "array", items = { ["$ref"] = "#" } } },
                        additionalProperties = false }
    assert.equal("complete", (r:match('{"kids": [{}, {"kids": [{"kids": []}]}]}')))
  end)

  it("prefixItems with items and bounds; formats; allOf", function()
    if not engine() then return end
    local a = compile { type = "array", prefixItems = { { type = "integer" }, { type = "string" } },
                        items = { type = "boolean" }, minItems = 1, maxItems = 4 }
    for s, want in pairs { ["[1]"] = true, ['[1, "a"]'] = true, ['[1, "a", true, false]'] = true,
                           ['[1, "a", true, false, true]'] = false, ["[]"] = false, ['["a"]'] = false } do
      assert.equal(want, a:match(s) == "complete", s)
    end
    local d = compile { type = "string", format = "date-time" }
    assert.equal("complete", (d:match('"2024-02-29T12:00:00.5+01:00"')))
    assert.is_not.equal("complete", (d:match('"2024-13-01T00:00:00Z"')))
    local u = compile { type = "string", format = "uuid" }
    assert.equal("complete", (u:match('"123e4567-e89b-12d3-a456-426614174000"')))
    local all = compile { allOf = { { type = "object", properties = { a = { type = "integer" } }, required = { "a" } },
                                    { properties = { b = { type = "string" } } } }, additionalProperties = false }
    assert.equal("complete", (all:match('{"a": 1, "b": "x"}')))
    assert.equal("complete", (all:match('{"a": 1}')))
    assert.is_nil((all:match('{"b": "x"}')))
  end)

  it("patterns: random strings agree with python-jsonschema's verdicts", function()
    if not engine() then return end
    -- each pattern with strings it matches (random strings mostly do not)
    local PATTERNS = {
      { "^[a-z][a-z0-9_]*$", "a", "user_1", "z9" }, { "^[A-Z]{3}-[0-9]{2}$", "ABC-12", "ZZZ-00" },
      { "ab+c", "abc", "xabbbcx", " abc" }, { "^(ab|cd)*e?$", "", "abcde", "cdab" }, { "^a.c$", "abc", 'a"c', "a\\c" },
      { "^[^a-c]{2,3}$", "xy", '"\\z', "é9" }, { '^x"y\\\\z$', 'x"y\\z' }, { "\\d{2}", "12", "a00b" },
      { "^(?:a|b){1,2}c+?$", "ac", "bacc" }, { "^\\w\\s\\W$", "a -", '_ "' },
    }
    local ALPHABET = { "a", "b", "c", "d", "e", "x", "y", "z", "A", "B", "Z", "0", "1", "9", "_", "-", " ",
                       '"', "\\", "é" }
    math.randomseed(3)
    local total = 0
    for _, case in ipairs(PATTERNS) do
      local pat = case[1]
      local schema = { type = "string", pattern = pat }
      local g = compile(schema)
      local texts, seen = {}, {}
      local function add(s)
        if not seen[s] then
          seen[s] = true
          -- JSON text of s written canonically (" and \ escaped)
          texts[#texts + 1] = '"' .. s:gsub('[\\"]', "\\%0") .. '"'
        end
      end
      for i = 2, #case do add(case[i]) end
      -- Python's \w \d \s take non-ASCII letters, digits and spaces, ECMA's
      -- (JSON Schema's dialect, the converter's) do not: no é for those
      local n_alpha = pat:find("\\[wWdDsS]") and #ALPHABET - 1 or #ALPHABET
      for _ = 1, 400 do
        local parts = {}
        for _ = 1, math.random(0, 6) do parts[#parts + 1] = ALPHABET[math.random(n_alpha)] end
        add(table.concat(parts))
      end
      local verdicts, why = validate(cjson.encode(schema), texts)
      if not verdicts then return pending(why) end
      local accepted = 0
      for i, t in ipairs(texts) do
        local ok = verdicts[i] == "ok"
        assert.equal(ok, g:match(t) == "complete", pat .. " on " .. t .. ": " .. verdicts[i])
        if ok then accepted = accepted + 1 end
      end
      assert.is_true(accepted >= #case - 1, pat)
      total = total + #texts
    end
    assert.is_true(total > 2000)
  end)
end)

describe("json_schema: generation", function()
  -- dense-q8_0: a random llama (its unconstrained output is noise) whose
  -- 512-piece SentencePiece vocabulary has byte fallback
  local slm = require "slm"
  local function model()
    local p, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not p then pending(why) return nil end
    return assert(slm.load(p))
  end

  for _, name in ipairs(SCHEMAS) do
    it("50 seeded generations of " .. name .. " decode, validate (python-jsonschema) and stop at completion", function()
      local m = model()
      local spath, why = helpers.fixture("grammars/schemas/" .. name .. ".schema.json")
      if not m or not spath then return pending(why or "model") end
      local text = helpers.read(spath)
      local g = slm.grammar.from_json_schema(text)
      local sess = m:session { ctx = 256 }
      sess:eval { 1 }
      local snap = sess:snapshot()
      local outs = {}
      for seed = 1, 50 do
        sess:restore(snap)
        local out, info = sess:generate(nil, { max_tokens = 60, json_schema = text,
                                               sampler = { { "dist", seed = seed } } }, function() end)
        assert.equal("complete", info.grammar, ("seed %d: %q"):format(seed, out))
        assert.is_true(info.stopped == "grammar" or info.stopped == "max_tokens", info.stopped)
        assert.equal("complete", (g:match(out)))
        assert.is_true(pcall(cjson.decode, out), out)
        -- newlines only occur as whitespace between tokens (a string
        -- cannot hold a raw one): one line per text for the validator
        outs[#outs + 1] = (out:gsub("\n", " "))
      end
      local verdicts, vwhy = validate(text, outs)
      if not verdicts then return pending(vwhy) end
      for i, v in ipairs(verdicts) do assert.equal("ok", v, outs[i]) end
      assert.equal(50, #verdicts)
    end)
  end

  it("sess:generate{json_schema} refuses a bad schema naming the keyword, and bad combinations", function()
    local m = model()
    if not m then return end
    local sess = m:session { ctx = 64 }
    assert.equal("generate: json_schema: keyword 'not' is not supported (at #)",
                 helpers.errmsg(sess.generate, sess, "x", { json_schema = { ["not"] = {} } }))
    assert.equal("generate: json_schema must be a schema (a table or JSON text), got 5",
                 helpers.errmsg(sess.generate, sess, "x", { json_schema = 5 }))
    assert.equal("generate: give one of json_schema, grammar and regex",
                 helpers.errmsg(sess.generate, sess, "x", { json_schema = {}, regex = "a" }))
  end)
end)

describe("json_schema: bin/slm run/chat --json-schema FILE", function()
  -- stdout, stderr, exit code of bin/slm with args (stdin from a file)
  local function run(args, stdin)
    local errf = os.tmpname()
    local cmd = "SLM_PROGRESS=0 bin/slm " .. args .. " 2>" .. errf
    if stdin then cmd = cmd .. " <" .. helpers.tmpfile(stdin) end
    local p = io.popen(cmd .. '; echo "exit=$?"')
    local out = p:read("a")
    p:close()
    local err = helpers.read(errf)
    local code = tonumber(out:match("exit=(%d+)%s*$"))
    return (out:gsub("exit=%d+%s*$", "")), err, code
  end

  it("run and chat print JSON that validates; a bad schema fails before the model loads", function()
    local model, why = helpers.fixture("gguf/dense-q8_0.gguf")
    local spath = helpers.fixture("grammars/schemas/object_closed.schema.json")
    if not model or not spath then return pending(why or "schema fixture") end
    local texts = {}
    for seed = 1, 3 do
      local out, err, code = run("run " .. model .. " -p x -n 60 --seed " .. seed .. " --json-schema " .. spath)
      assert.equal(0, code, err)
      texts[#texts + 1] = (out:gsub("\n", " "))
    end
    local out, err, code = run("chat " .. model .. " -n 60 --seed 1 --json-schema " .. spath, "hi\n")
    assert.equal(0, code, err)
    texts[#texts + 1] = (out:gsub("\n", " "))
    for _, t in ipairs(texts) do assert.is_true(pcall(cjson.decode, t), t) end
    local verdicts, vwhy = validate(helpers.read(spath), texts)
    if not verdicts then return pending(vwhy) end
    assert.same({ "ok", "ok", "ok", "ok" }, verdicts)

    local bad = helpers.tmpfile('{"type": "object", "properties": {"a": {"not": {}}}}')
    local _, err2, code2 = run("run /nonexistent.gguf -p x --json-schema " .. bad)
    assert.equal(1, code2)
    assert.equal("slm: option --json-schema: " .. bad .. ": json_schema: keyword 'not' is not supported "
                 .. "(at #/properties/a)\n", err2)
  end)
end)
