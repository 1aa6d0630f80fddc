-- slm.train.plot: the SVG is well-formed XML (checked by a small parser
-- here) and holds the points, mapped linearly onto the axes.
local helpers = require "spec.helpers"
local plot = require "slm.train.plot"

-- A crude XML parser: elements with attributes, text, the XML declaration;
-- raises on a mismatched or unclosed tag, an unquoted or repeated attribute,
-- a bare "<" or "&" that is not an entity. Returns the root element
-- {name=, attr=, kids=, text=}.
local function parse_xml(s)
  local pos = 1
  local root = { name = "#doc", attr = {}, kids = {}, text = "" }
  local stack = { root }
  local function check_text(t)
    assert(not t:find("<"), "bare < in text")
    for amp in t:gmatch("&[^;]*;?") do
      assert(amp:match("^&[%a#][%w]*;$"), "bad entity " .. amp)
    end
  end
  while pos <= #s do
    local lt = s:find("<", pos, true)
    local text = s:sub(pos, (lt or #s + 1) - 1)
    check_text(text)
    stack[#stack].text = stack[#stack].text .. text
    if not lt then break end
    if s:sub(lt, lt + 4) == "<?xml" then
      local e = assert(s:find("?>", lt, true), "unclosed declaration")
      pos = e + 2
    elseif s:sub(lt + 1, lt + 1) == "/" then
      local name, e = s:match("^</([%w:%-]+)%s*>()", lt)
      assert(name, "bad closing tag at " .. lt)
      local top = table.remove(stack)
      assert(top.name == name, "closing </" .. name .. "> for <" .. top.name .. ">")
      pos = e
    else
      local name, e = s:match("^<([%w:%-]+)()", lt)
      assert(name, "bad tag at " .. lt)
      local el = { name = name, attr = {}, kids = {}, text = "" }
      pos = e
      while true do
        local ws, close = s:match("^(%s*)(/?>)", pos)
        if close then
          pos = pos + #ws + #close
          break
        end
        local k, v, e2 = s:match('^%s+([%w:%-]+)="([^"<]*)"()', pos)
        assert(k, "bad attribute in <" .. name .. "> at " .. pos .. ": " .. s:sub(pos, pos + 30))
        assert(el.attr[k] == nil, "repeated attribute " .. k)
        check_text(v)
        el.attr[k] = v
        pos = e2
      end
      local parent = stack[#stack]
      parent.kids[#parent.kids + 1] = el
      if s:sub(pos - 2, pos - 1) ~= "/>" then stack[#stack + 1] = el end
    end
  end
  assert(#stack == 1, "unclosed <" .. stack[#stack].name .. ">")
  assert(#root.kids == 1, "one root element")
  return root.kids[1]
end

local function all(el, name, out)
  out = out or {}
  for _, k in ipairs(el.kids) do
    if k.name == name then out[#out + 1] = k end
    all(k, name, out)
  end
  return out
end

local function unescape(t)
  return (t:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&apos;", "'"):gsub("&amp;", "&"))
end

describe("plot.svg", function()
  local train, val = {}, {}
  for i = 0, 100 do train[#train + 1] = { i * 20, 4.2 * math.exp(-i / 15) + 1.5 } end
  for i = 0, 10 do val[#val + 1] = { i * 200, 4.2 * math.exp(-i * 10 / 15) + 1.6 } end

  it("writes well-formed XML with every point, on linear axes", function()
    local p = os.tmpname()
    assert.is_true(plot.svg(p, { title = "loss <&> \"curves\"", xlabel = "step", ylabel = "loss",
                                 series = { { name = "train", points = train }, { name = "val & co", points = val } } }))
    local text = helpers.read(p)
    assert.is_nil(helpers.size(p .. ".tmp"))
    local svg = parse_xml(text)
    assert.equal("svg", svg.name)
    assert.equal("http://www.w3.org/2000/svg", svg.attr.xmlns)
    local lines = all(svg, "polyline")
    assert.equal(2, #lines)
    local colors, scales = {}, {}
    for i, pl in ipairs(lines) do
      local src = i == 1 and train or val
      local px = {}
      for x, y in pl.attr.points:gmatch("([%d.%-]+),([%d.%-]+)") do px[#px + 1] = { tonumber(x), tonumber(y) } end
      assert.equal(#src, #px)
      -- pixel = a + b * value on each axis, b > 0 for x and b < 0 for y (SVG's y grows down)
      local bx = (px[#px][1] - px[1][1]) / (src[#src][1] - src[1][1])
      local by = (px[#px][2] - px[1][2]) / (src[#src][2] - src[1][2])
      assert.is_true(bx > 0)
      assert.is_true(by < 0)
      for j = 1, #src do
        assert.near(px[1][1] + bx * (src[j][1] - src[1][1]), px[j][1], 0.02)
        assert.near(px[1][2] + by * (src[j][2] - src[1][2]), px[j][2], 0.02)
        assert.is_true(px[j][1] >= 0 and px[j][1] <= 720 and px[j][2] >= 0 and px[j][2] <= 420)
      end
      colors[pl.attr.stroke] = true
      scales[i] = { bx, by, px[1][1] - bx * src[1][1], px[1][2] - by * src[1][2] }
    end
    -- both series on the same axes
    for k = 1, 4 do assert.near(scales[1][k], scales[2][k], 0.05) end
    assert.equal(2, (function() local n = 0 for _ in pairs(colors) do n = n + 1 end return n end)())
    -- tick labels, title, axis labels and legend, escaped
    local texts = {}
    for _, t in ipairs(all(svg, "text")) do texts[#texts + 1] = unescape(t.text) end
    local joined = "|" .. table.concat(texts, "|") .. "|"
    assert.matches('|loss <&> "curves"|', joined, 1, true)
    assert.matches("|step|", joined, 1, true)
    assert.matches("|loss|", joined, 1, true)
    assert.matches("|train|", joined, 1, true)
    assert.matches("|val & co|", joined, 1, true)
    for _, tick in ipairs { "|0|", "|500|", "|1000|", "|1500|", "|2000|", "|1|", "|6|" } do
      assert.matches(tick, joined, 1, true)
    end
  end)

  it("one point is a dot; non-finite points are skipped; fixed ranges", function()
    local dotted = parse_xml(plot.render { series = { { points = { { 1, 2 }, { 2, 3 }, { 3, 5 } }, dots = true } } })
    assert.equal(3, #all(dotted, "circle"))
    local text = plot.render { series = { { name = "one", points = { { 3, 7 } } },
                                          { name = "gaps", points = { { 0, 1 }, { 1, 0 / 0 }, { 2, math.huge }, { 3, 2 } } } },
                               ymin = 0, ymax = 10 }
    local svg = parse_xml(text)
    assert.equal(1, #all(svg, "circle"))
    local pl = all(svg, "polyline")
    assert.equal(1, #pl)
    local n = 0
    for _ in pl[1].attr.points:gmatch(",") do n = n + 1 end
    assert.equal(2, n)
    local ticks = {}
    for _, g in ipairs(all(svg, "g")) do
      if g.attr.class == "yticks" then
        for _, t in ipairs(all(g, "text")) do ticks[#ticks + 1] = t.text end
      end
    end
    assert.same({ "0", "2", "4", "6", "8", "10" }, ticks)
  end)

  it("checks its arguments; an unwritable path is nil, msg", function()
    assert.equal("plot: series must be a non-empty list of {name =, points = {{x, y}, ...}}, got a table",
                 helpers.errmsg(plot.render, { series = {} }))
    assert.equal("plot: series[1].points[2] must be {x, y} (two numbers), got a table",
                 helpers.errmsg(plot.render, { series = { { points = { { 1, 2 }, { 1 } } } } }))
    assert.equal("plot: unknown option 'colour' (known: height, series, title, width, xlabel, xmax, xmin, ylabel, ymax, ymin)",
                 helpers.errmsg(plot.render, { series = { { points = {} } }, colour = 1 }))
    assert.equal("plot: width must be a number >= 200, got 10",
                 helpers.errmsg(plot.render, { series = { { points = {} } }, width = 10 }))
    local ok, err = plot.svg("/nonexistent-dir/x.svg", { series = { { points = { { 1, 2 } } } } })
    assert.is_nil(ok)
    assert.matches("No such file or directory", err)
  end)
end)
