-- wrk script for the data-path benchmarks (bench/wrk.py): `tools/call echo` over handshake sessions
-- opened beforehand. SESSIONS (comma-separated Mcp-Session-Id values, may be empty for none), BEARER
-- and TOOL (the echo tool's name as the target exposes it, default `echo`) come from the environment.
-- Each answer is checked: a call that is not a 200 carrying the echoed text counts as an error.
local sessions = {}
for s in string.gmatch(os.getenv("SESSIONS") or "", "[^,]+") do table.insert(sessions, s) end
local auth = os.getenv("BEARER")
local tool = os.getenv("TOOL") or "echo"
local threads = {}
n = 0
bad = 0

-- Runs in the main Lua state once per wrk thread; done() reads each thread's `bad` back.
function setup(thread) table.insert(threads, thread) end

function request()
  n = n + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["MCP-Protocol-Version"] = "2025-06-18",
  }
  if #sessions > 0 then headers["Mcp-Session-Id"] = sessions[(n % #sessions) + 1] end
  if auth then headers["Authorization"] = "Bearer " .. auth end
  local body = '{"jsonrpc":"2.0","id":' .. n .. ',"method":"tools/call","params":{"name":"' .. tool .. '","arguments":{"message":"hello ' .. n .. '"}}}'
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, "Echo: hello", 1, true) then bad = bad + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("bad") end
  io.write(string.format('{"requests": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d, "socket_errors": %d, "bad": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status,
    bad))
end
