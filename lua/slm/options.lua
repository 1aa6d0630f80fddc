--- slm.options: strict option tables with errors that name the mistake.
--
--   local KNOWN = options.known { "ctx", "batch" }
--   options.check("session", opts, KNOWN)              -- unknown keys
--   options.fail("session", "ctx", "a positive integer", opts.ctx)
--   -- "session: ctx must be a positive integer, got 0"
--
-- A misspelt option that were silently ignored would run with the default
-- instead of what the caller asked for, so every option table of the API
-- refuses keys it does not know and lists the ones it does. Values are
-- checked by their users, through fail(), so that every message has the
-- same shape: "<what>: <option> must be <expected>, got <value>".
local M = {}

--- known(list) -> {set = {[name] = true}, text = "a, b, c" (sorted)}
function M.known(list)
  local set, sorted = {}, {}
  for i, k in ipairs(list) do set[k], sorted[i] = true, k end
  table.sort(sorted)
  return { set = set, text = table.concat(sorted, ", ") }
end

--- A value as a message shows it: numbers and booleans as written,
-- strings quoted (cut when long), other values by their type.
function M.show(v)
  local ty = type(v)
  if ty == "number" or ty == "boolean" or ty == "nil" then return tostring(v) end
  if ty == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return (string.format("%q", v):gsub("\\\n", "\\n"))
  end
  return "a " .. ty
end

--- check(what, opts, known [, level]) -> opts (an empty table for nil):
-- opts must be nil or a table whose keys are all in known; else the error
-- "<what>: unknown option '<key>' (known: ...)" or "<what>: options must be a
-- table, got ..." raised at `level` (default 3: the caller of the function
-- that calls check).
function M.check(what, opts, known, level)
  level = level or 3
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(string.format("%s: options must be a table, got %s", what, M.show(opts)), level)
  end
  for k in pairs(opts) do
    if not known.set[k] then
      error(string.format("%s: unknown option '%s' (known: %s)", what, tostring(k), known.text), level)
    end
  end
  return opts
end

--- message(what, key, expected, got) -> "<what>: <key> must be <expected>, got <got>"
function M.message(what, key, expected, got)
  return string.format("%s: %s must be %s, got %s", what, key, expected, M.show(got))
end

--- fail(what, key, expected, got [, level]): raises message(...) at level
-- (default 3, as check).
function M.fail(what, key, expected, got, level)
  error(M.message(what, key, expected, got), level or 3)
end

-- Value checks used by several modules: each returns true when v is nil
-- (the default applies) or fits.
function M.is_int(v, min) return v == nil or (math.type(v) == "integer" and (min == nil or v >= min)) end
function M.is_bool(v) return v == nil or type(v) == "boolean" end
function M.is_string(v) return v == nil or type(v) == "string" end

return M
