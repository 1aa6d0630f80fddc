-- docs/TUTORIAL.md runs as written: every fenced block of it is run or
-- checked, so a student who types what it says sees what it shows.
--
--   ```lua   lines typed into the REPL: all lua blocks, in order, go through
--            one `bin/slm repl` process (one Lua state, globals carried from
--            block to block); a block fails when the REPL reports an error
--            in it or does not finish it.
--   ```sh    shell commands, one a line, each run from the checkout root
--            (stdin /dev/null) and required to exit 0. They run after the
--            lua blocks, in order: a sh block may read files a lua block
--            wrote (the trained model), never the other way round.
--   ```text  what the block before it prints, compared by form: line by
--            line and word by word, integers exactly, decimal numbers by
--            shape only, a word holding `…` matches from there to the end of
--            its line, and a line holding only `…` matches any lines.
-- Any other fence is an error here: nothing in the tutorial goes unchecked.
local helpers = require "spec.helpers"

local DOC = "docs/TUTORIAL.md"

-- {lang =, body =, line = (of the opening fence), out = (a text block)}
local function blocks(src)
  local list, cur, n = {}, nil, 0
  for line in (src .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if cur then
      if line:match("^```%s*$") then
        if cur.lang == "text" then
          local prev = list[#list]
          assert(prev and prev.lang ~= "text" and not prev.out,
                 DOC .. ":" .. cur.line .. ": a text block must follow a lua or sh block")
          prev.out, prev.out_line = cur.body, cur.line
        else
          list[#list + 1] = cur
        end
        cur = nil
      else
        cur.body[#cur.body + 1] = line
      end
    else
      local lang = line:match("^```(.*)$")
      if lang then
        assert(lang == "lua" or lang == "sh" or lang == "text",
               DOC .. ":" .. n .. ": unknown fence '```" .. lang .. "' (lua, sh or text)")
        cur = { lang = lang, body = {}, line = n }
      end
    end
  end
  assert(not cur, DOC .. ": a block is not closed")
  return list
end

-- the form match of shown output against real output --------------------------

local NUM = "[%-+]?%d+%.?%d*[eE]?[%-+]?%d*"

-- a shown word as a pattern: integers literal, decimals any number, `…` the
-- rest of the line (returns the pattern and whether it ends the line)
local function word_pattern(w)
  local cut = w:find("…", 1, true)
  local rest = cut and w:sub(1, cut - 1) or w
  local p, pos = {}, 1
  while pos <= #rest do
    local a, b = rest:find("%d+%.%d+", pos)
    if not a then
      p[#p + 1] = rest:sub(pos):gsub("%p", "%%%0")
      break
    end
    -- a sign before a decimal is part of its shape ("-0.01" shows as " 0.01" elsewhere)
    local pre = rest:sub(pos, a - 1):gsub("[%-+]$", "")
    p[#p + 1] = pre:gsub("%p", "%%%0")
    local e = rest:match("^[eE][%-+]?%d+", b + 1)
    p[#p + 1] = NUM
    pos = b + 1 + (e and #e or 0)
  end
  return "^" .. table.concat(p) .. (cut and "" or "$"), cut ~= nil
end

local function words(s)
  local t = {}
  for w in s:gmatch("%S+") do t[#t + 1] = w end
  return t
end

local function line_matches(want, got)
  local ws, gs = words(want), words(got)
  for i, w in ipairs(ws) do
    local g = gs[i]
    local pat, rest_free = word_pattern(w)
    if not g then return rest_free and pat == "^" end
    if not g:match(pat) then return false end
    if rest_free then return true end
  end
  return #gs == #ws
end

-- want, got: lists of lines; a want line "…" matches any number of lines
local function lines_match(want, wi, got, gi)
  if wi > #want then return gi > #got end
  if want[wi]:match("^%s*…%s*$") then
    for k = gi, #got + 1 do
      if lines_match(want, wi + 1, got, k) then return true end
    end
    return false
  end
  if gi > #got or not line_matches(want[wi], got[gi]) then return false end
  return lines_match(want, wi + 1, got, gi + 1)
end

local function split_lines(s)
  local t = {}
  for line in s:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  if s ~= "" and s:sub(-1) ~= "\n" then t[#t + 1] = s:match("([^\n]*)$") end
  return t
end

local function check_form(b, got)
  if not b.out then return end
  local ok = lines_match(b.out, 1, split_lines(got), 1)
  assert(ok, string.format("%s:%d: the output of the %s block at line %d does not have the form shown\n"
                           .. "--- shown:\n%s\n--- got:\n%s", DOC, b.out_line, b.lang, b.line,
                           table.concat(b.out, "\n"), got))
end

-- running -------------------------------------------------------------------------

local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") </dev/null 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  return (out:gsub("exit=%d+%s*$", "")), tonumber(out:match("exit=(%d+)%s*$"))
end

local function corpus()
  for _, p in ipairs { "data/tinyshakespeare.txt", "../shared/corpora/tinyshakespeare.txt" } do
    if helpers.exists(p) then return p end
  end
end

describe("docs/TUTORIAL.md", function()
  local src = helpers.read(DOC)

  it("has only lua, sh and text blocks, each text block after a block it shows", function()
    local list = blocks(src)
    local n = { lua = 0, sh = 0 }
    for _, b in ipairs(list) do n[b.lang] = n[b.lang] + 1 end
    assert.is_true(n.lua >= 5 and n.sh >= 2)
  end)

  it("the form match is strict where it should be", function()
    assert.is_true(line_matches("loss 4.1808  step 12", "loss 2.0311  step 12"))
    assert.is_false(line_matches("loss 4.1808  step 12", "loss 2.0311  step 13"))   -- integers exact
    assert.is_false(line_matches("loss 4.1808", "loss x"))
    assert.is_true(line_matches(" 0.0173  -0.0140", "-0.0173   0.0140"))
    assert.is_true(line_matches("ROMEO:…", "ROMEO:\\nI wis the"))
    assert.is_false(line_matches("ROMEO:…", "JULIET: ay"))
    assert.is_true(line_matches("step 101  loss …", "step 101  loss 2.4 ROMEO: a b"))
    assert.is_false(line_matches("a b", "a b c"))
    assert.is_true(lines_match({ "a", "…", "d" }, 1, { "a", "b", "c", "d" }, 1))
    assert.is_true(lines_match({ "a", "…", "d" }, 1, { "a", "d" }, 1))
    assert.is_false(lines_match({ "a", "…", "d" }, 1, { "a", "b" }, 1))
  end)

  it("runs every block: the lua blocks in one REPL, then the sh commands", function()
    if not corpus() then
      return pending("tinyshakespeare.txt not found (data/ or ../shared/corpora/): the tutorial trains on it")
    end
    finally(function()   -- the files the tutorial writes, even when it fails
      os.remove("tutorial.gguf")
      os.remove("tutorial.optim.gguf")
    end)
    local list = blocks(src)
    -- the lua blocks, each followed by a marker line the REPL prints
    local input, lua_blocks = {}, {}
    for _, b in ipairs(list) do
      if b.lang == "lua" then
        lua_blocks[#lua_blocks + 1] = b
        for _, l in ipairs(b.body) do input[#input + 1] = l end
        input[#input + 1] = string.format("print('--8<-- block %d')", #lua_blocks)
      end
    end
    local inf = helpers.tmpfile(table.concat(input, "\n") .. "\n")
    local out, code = sh("SLM_PROGRESS=0 bin/slm repl < " .. inf)
    os.remove(inf)
    assert.equal(0, code, out)
    local pos = 1
    for i, b in ipairs(lua_blocks) do
      local marker = string.format("--8<-- block %d\n", i)
      local a, e = out:find(marker, pos, true)
      assert(a, string.format("%s:%d: the REPL did not finish this lua block (an unclosed chunk?)\n%s",
                              DOC, b.line, out:sub(pos)))
      local got = out:sub(pos, a - 1)
      for line in got:gmatch("[^\n]+") do
        assert(not (line:match("^error: ") or line:match("^repl:%d+:")),
               string.format("%s:%d: the REPL reports an error in this lua block: %s", DOC, b.line, line))
      end
      check_form(b, got)
      pos = e + 1
    end
    assert.equal("", out:sub(pos))
    -- the shell commands
    for _, b in ipairs(list) do
      if b.lang == "sh" then
        local all = {}
        for _, cmd in ipairs(b.body) do
          if cmd:match("%S") and not cmd:match("^%s*#") then
            local o, c = sh("SLM_PROGRESS=0 " .. cmd)
            assert(c == 0, string.format("%s:%d: `%s` exited with %s:\n%s", DOC, b.line, cmd, tostring(c), o))
            all[#all + 1] = o
          end
        end
        check_form(b, table.concat(all))
      end
    end
  end)
end)
