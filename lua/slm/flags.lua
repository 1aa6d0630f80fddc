--- slm.flags: the command line's flag parser, shared by `slm` (lua/slm/cli.lua)
-- and `slm train` (lua/slm/train/cli.lua).
--
--   local pos, opt = flags.parse(argv, FLAGS, fail, how)
--
-- FLAGS maps a flag ("--temp", "-n") to {key, type [, min]}: type "bool"
-- (no value), "int", "num" (finite), "str" or "list" (repeatable, values
-- collected in order); `--flag=value` or `--flag value`; "--" ends the
-- flags. min: the smallest accepted value (how.strict[key]: values must be
-- above it). fail(fmt, ...) raises the one-line error. how.unknown: the
-- format of the unknown-flag message; how.numbers: arguments that read as
-- numbers ("-1") are positional; how.nonempty: "str" values must not be "".
local M = {}

function M.parse(argv, FLAGS, fail, how)
  how = how or {}
  local strict = how.strict or {}
  local pos, opt = {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      table.move(argv, i + 1, #argv, #pos + 1, pos)
      break
    end
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    local spec = a:sub(1, 1) == "-" and #a > 1 and FLAGS[name]
    if spec then
      local key, ty, min = spec[1], spec[2], spec[3]
      if ty == "bool" then
        if inline then fail("option %s takes no value", name) end
        opt[key] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = argv[i]
          if v == nil then fail("option %s needs a value", name) end
        end
        if ty == "int" then
          local n = math.tointeger(tonumber(v))
          if not n then fail("option %s: '%s' is not an integer", name, v) end
          v = n
        elseif ty == "num" then
          local n = tonumber(v)
          if not n or n ~= n or n == math.huge or n == -math.huge then
            fail("option %s: '%s' is not a number", name, v)
          end
          v = n
        elseif ty == "list" then
          if v == "" then fail("option %s needs a non-empty value", name) end
          local list = opt[key] or {}
          list[#list + 1] = v
          v = list
        elseif how.nonempty and v == "" then
          fail("option %s needs a non-empty value", name)
        end
        if min and (v < min or (strict[key] and v == min)) then
          fail("option %s must be %s %s (got %s)", name, strict[key] and "above" or "at least", min, v)
        end
        opt[key] = v
      end
    elseif a:sub(1, 1) == "-" and #a > 1 and not (how.numbers and tonumber(a)) then
      fail(how.unknown or "unknown option '%s'", a)
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return pos, opt
end

return M
