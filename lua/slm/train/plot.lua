--- slm.train.plot: self-contained SVG line charts (loss curves).
--
--   local plot = require "slm.train.plot"
--   assert(plot.svg("loss.svg", {
--     title = "shakespeare-char", xlabel = "step", ylabel = "loss",
--     series = { { name = "train", points = { {0, 4.2}, {10, 3.1}, ... } },
--                { name = "val",   points = { {0, 4.24}, {200, 2.5} }, dots = true } },
--   }))                                      -- -> true | nil, msg (file not writable)
--   local text = plot.render(spec)           -- the same SVG as a string
--
-- The chart: axes with "nice" ticks (1, 2, 5 x 10^k) and their labels, light
-- grid lines, the axis labels and title, a legend, one colour per series
-- (a polyline, with a dot at each point when the series says dots = true; a
-- series of one point is a dot; `color` overrides). Points whose x or y is not a
-- finite number are skipped. Options: width (720), height (420), ymin, ymax,
-- xmin, xmax (fixed axis ranges instead of the data's). No script, no
-- external font or style: any browser or image viewer shows it.
local options = require "slm.options"

local M = {}

local COLORS = { "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf" }
M.COLORS = COLORS

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                         ['"'] = "&quot;", ["'"] = "&apos;" }))
end

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

-- Ticks covering [lo, hi]: about n steps of 1, 2 or 5 times a power of ten.
-- Returns the list of tick values and the (possibly widened) range.
local function nice_ticks(lo, hi, n)
  if hi <= lo then
    local pad = lo ~= 0 and math.abs(lo) * 0.1 or 1
    lo, hi = lo - pad, hi + pad
  end
  local raw = (hi - lo) / n
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local step = mag
  for _, m in ipairs { 1, 2, 5, 10 } do
    step = m * mag
    if step >= raw then break end
  end
  local first = math.floor(lo / step + 1e-9) * step
  local last = math.ceil(hi / step - 1e-9) * step
  local ticks = {}
  for i = 0, math.floor((last - first) / step + 0.5) do ticks[#ticks + 1] = first + i * step end
  return ticks, first, last, step
end

-- A tick label: as few digits as the step needs ("0.5", "1500", "1e+06").
local function label(v, step)
  if math.abs(v) < step * 1e-6 then v = 0 end
  local digits = math.max(0, -math.floor(math.log(step, 10) + 1e-9))
  local s
  if math.abs(v) >= 1e6 or (v ~= 0 and math.abs(v) < 1e-4) then s = string.format("%.3g", v)
  else s = string.format("%." .. digits .. "f", v) end
  return s
end

local function num(v) return string.format("%.2f", v) end

local SPEC = options.known { "series", "title", "xlabel", "ylabel", "width", "height", "xmin", "xmax", "ymin",
                             "ymax" }

local function check_spec(spec)
  options.check("plot", spec, SPEC, 4)
  if type(spec) ~= "table" then error("plot: a table {series = ...} expected", 4) end
  if type(spec.series) ~= "table" or #spec.series == 0 then
    options.fail("plot", "series", "a non-empty list of {name =, points = {{x, y}, ...}}", spec.series, 4)
  end
  for i, s in ipairs(spec.series) do
    if type(s) ~= "table" or type(s.points) ~= "table" then
      options.fail("plot", "series[" .. i .. "].points", "a list of {x, y}", type(s) == "table" and s.points or s, 4)
    end
    for j, p in ipairs(s.points) do
      if type(p) ~= "table" or type(p[1]) ~= "number" or type(p[2]) ~= "number" then
        options.fail("plot", string.format("series[%d].points[%d]", i, j), "{x, y} (two numbers)", p, 4)
      end
    end
  end
  for _, k in ipairs { "width", "height" } do
    if spec[k] ~= nil and not (type(spec[k]) == "number" and spec[k] >= 200) then
      options.fail("plot", k, "a number >= 200", spec[k], 4)
    end
  end
  for _, k in ipairs { "xmin", "xmax", "ymin", "ymax" } do
    if spec[k] ~= nil and not finite(spec[k]) then options.fail("plot", k, "a finite number", spec[k], 4) end
  end
end

--- render(spec) -> SVG text
function M.render(spec)
  check_spec(spec)
  local W, H = spec.width or 720, spec.height or 420
  local left, right, top, bottom = 70, 20, spec.title and 40 or 20, 55
  local pw, ph = W - left - right, H - top - bottom

  -- data ranges over the finite points
  local xlo, xhi, ylo, yhi = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(spec.series) do
    for _, p in ipairs(s.points) do
      if finite(p[1]) and finite(p[2]) then
        xlo, xhi = math.min(xlo, p[1]), math.max(xhi, p[1])
        ylo, yhi = math.min(ylo, p[2]), math.max(yhi, p[2])
      end
    end
  end
  if xlo > xhi then xlo, xhi, ylo, yhi = 0, 1, 0, 1 end   -- no finite point: empty axes
  xlo, xhi = spec.xmin or xlo, spec.xmax or xhi
  ylo, yhi = spec.ymin or ylo, spec.ymax or yhi
  local xt, x0, x1, xstep = nice_ticks(xlo, xhi, 8)
  local yt, y0, y1, ystep = nice_ticks(ylo, yhi, 6)
  local function px(x) return left + (x - x0) / (x1 - x0) * pw end
  local function py(y) return top + ph - (y - y0) / (y1 - y0) * ph end

  local o = {}
  local function add(...) o[#o + 1] = table.concat({ ... }) end
  add('<?xml version="1.0" encoding="UTF-8"?>\n')
  add('<svg xmlns="http://www.w3.org/2000/svg" width="', W, '" height="', H, '" viewBox="0 0 ', W, " ", H,
      '" font-family="sans-serif" font-size="12">\n')
  add('<rect x="0" y="0" width="', W, '" height="', H, '" fill="white"/>\n')
  if spec.title then
    add('<text x="', num(left + pw / 2), '" y="22" text-anchor="middle" font-size="15">', esc(spec.title), "</text>\n")
  end
  -- grid and ticks
  add('<g class="grid" stroke="#e0e0e0" stroke-width="1">\n')
  for _, v in ipairs(xt) do add('<line x1="', num(px(v)), '" y1="', top, '" x2="', num(px(v)), '" y2="', top + ph, '"/>\n') end
  for _, v in ipairs(yt) do add('<line x1="', left, '" y1="', num(py(v)), '" x2="', left + pw, '" y2="', num(py(v)), '"/>\n') end
  add("</g>\n")
  add('<g class="axes" stroke="black" stroke-width="1">\n')
  add('<line x1="', left, '" y1="', top + ph, '" x2="', left + pw, '" y2="', top + ph, '"/>\n')
  add('<line x1="', left, '" y1="', top, '" x2="', left, '" y2="', top + ph, '"/>\n')
  for _, v in ipairs(xt) do add('<line x1="', num(px(v)), '" y1="', top + ph, '" x2="', num(px(v)), '" y2="', top + ph + 5, '"/>\n') end
  for _, v in ipairs(yt) do add('<line x1="', left - 5, '" y1="', num(py(v)), '" x2="', left, '" y2="', num(py(v)), '"/>\n') end
  add("</g>\n")
  add('<g class="xticks" text-anchor="middle">\n')
  for _, v in ipairs(xt) do add('<text x="', num(px(v)), '" y="', top + ph + 19, '">', esc(label(v, xstep)), "</text>\n") end
  add("</g>\n")
  add('<g class="yticks" text-anchor="end">\n')
  for _, v in ipairs(yt) do add('<text x="', left - 8, '" y="', num(py(v) + 4), '">', esc(label(v, ystep)), "</text>\n") end
  add("</g>\n")
  if spec.xlabel then
    add('<text x="', num(left + pw / 2), '" y="', H - 12, '" text-anchor="middle">', esc(spec.xlabel), "</text>\n")
  end
  if spec.ylabel then
    add('<text x="16" y="', num(top + ph / 2), '" text-anchor="middle" transform="rotate(-90 16 ',
        num(top + ph / 2), ')">', esc(spec.ylabel), "</text>\n")
  end
  -- series, clipped to the plot area
  add('<clipPath id="area"><rect x="', left, '" y="', top, '" width="', pw, '" height="', ph, '"/></clipPath>\n')
  add('<g class="series" clip-path="url(#area)" fill="none" stroke-width="1.6">\n')
  for i, s in ipairs(spec.series) do
    local color = s.color or COLORS[(i - 1) % #COLORS + 1]
    local pts = {}
    for _, p in ipairs(s.points) do
      if finite(p[1]) and finite(p[2]) then pts[#pts + 1] = num(px(p[1])) .. "," .. num(py(p[2])) end
    end
    if #pts == 1 then
      local x, y = pts[1]:match("([^,]+),(.+)")
      add('<circle cx="', x, '" cy="', y, '" r="3" fill="', esc(color), '" stroke="none"><title>', esc(s.name or ""),
          "</title></circle>\n")
    elseif #pts > 1 then
      add('<polyline stroke="', esc(color), '" points="', table.concat(pts, " "), '"><title>', esc(s.name or ""),
          "</title></polyline>\n")
      if s.dots then
        for _, xy in ipairs(pts) do
          local x, y = xy:match("([^,]+),(.+)")
          add('<circle cx="', x, '" cy="', y, '" r="2.5" fill="', esc(color), '" stroke="none"/>\n')
        end
      end
    end
  end
  add("</g>\n")
  -- legend, top right inside the plot area
  local names = {}
  for i, s in ipairs(spec.series) do if s.name then names[#names + 1] = { i, s } end end
  if #names > 0 then
    local longest = 0
    for _, e in ipairs(names) do longest = math.max(longest, utf8.len(tostring(e[2].name)) or #e[2].name) end
    local lw, lh = 40 + longest * 7, 8 + 18 * #names
    local lx, ly = left + pw - lw - 8, top + 8
    add('<g class="legend">\n')
    add('<rect x="', num(lx), '" y="', num(ly), '" width="', num(lw), '" height="', lh,
        '" fill="white" fill-opacity="0.85" stroke="#999"/>\n')
    for k, e in ipairs(names) do
      local i, s = e[1], e[2]
      local color = s.color or COLORS[(i - 1) % #COLORS + 1]
      local yy = ly + 4 + 18 * (k - 1) + 9
      add('<line x1="', num(lx + 6), '" y1="', num(yy), '" x2="', num(lx + 28), '" y2="', num(yy), '" stroke="',
          esc(color), '" stroke-width="2"/>\n')
      add('<text x="', num(lx + 34), '" y="', num(yy + 4), '">', esc(s.name), "</text>\n")
    end
    add("</g>\n")
  end
  add("</svg>\n")
  return table.concat(o)
end

--- svg(path, spec) -> true | nil, msg
function M.svg(path, spec)
  if type(path) ~= "string" then
    error("bad argument #1 to 'svg' (file name expected, got " .. type(path) .. ")", 2)
  end
  local text = M.render(spec)
  local tmp = path .. ".tmp"
  local fh, err = io.open(tmp, "wb")
  if not fh then return nil, err end
  local ok, werr = fh:write(text)
  fh:close()
  if not ok then
    os.remove(tmp)
    return nil, werr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

return M
