"""wrk, the C load generator every HTTP benchmark uses, and the Lua scripts that drive it.

Two ways to run it:
- for a fixed time with one constant body (`constant_script` + `run_wrk`): requests per
  second and latency percentiles of an endpoint;
- until a number of sends was accepted (`sends_script` + `WrkRun`): each request gets a body
  built in Lua with its own recipients (so every message is a distinct copy), failures are
  retried with fresh recipients, an optional schedule offers a fixed rate, and the time at
  which each 202 was read can be written out with the message id. wrk's main thread sleeps
  for the whole `-d`, so the harness ends such a run with SIGINT once it has what it wants;
  wrk then prints its report as usual.

Debian's wrk has no `-R` (that is wrk2): the fixed rate comes from wrk's `delay()` hook with a
schedule kept per wrk thread, read off CLOCK_MONOTONIC through LuaJIT's ffi (the clock of
Python's time.perf_counter(), so the harness can compare the two).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# wrk gives up on a request after 2 s by default and never tells the script: a send that took
# longer would be neither counted nor retried (seen at a load average of 10).
TIMEOUT = "120s"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class Result:
    """What wrk measured for one scenario."""

    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_report(name: str, output: str) -> Result:
    """wrk's printed report (run with --latency) as a Result."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"\s50%\s+(\S+)", output)
    p99 = re.search(r"\s99%\s+(\S+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or p50 is None or p99 is None or total is None:
        raise RuntimeError(f"wrk printed no report:\n{output}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Result(
        name,
        float(rps.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        int(total.group(1)),
        int(bad.group(1)) if bad else 0,
    )


def _header_lines(headers: dict[str, str]) -> list[str]:
    merged = {**headers, "Content-Type": "application/json"}
    return [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in merged.items()]


def constant_script(
    body: dict[str, Any], headers: dict[str, str], scratch: Path, name: str
) -> Path:
    """A wrk script that POSTs the same `body` every time."""
    body_file = scratch / f"{name}.json"
    body_file.write_text(json.dumps(body))
    lines = ['wrk.method = "POST"', f'local f = io.open("{body_file}", "rb")']
    lines += ["wrk.body = f:read('*a')", "f:close()", *_header_lines(headers)]
    script = scratch / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def run_wrk(
    name: str, url: str, script: Path, *, connections: int, seconds: float, threads: int = 1
) -> Result:
    """Drive `url` with wrk for `seconds` and parse its report."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["--timeout", TIMEOUT, "--latency", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_report(name, output)


# --- sends built in Lua ----------------------------------------------------------------------

RECIPIENT = "@@R@@"  # in a unit: replaced by a unique local part
_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC, as Python's time.perf_counter()
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local function slurp(name)
  local f = assert(io.open(DIR .. "/" .. name, "rb")); local s = f:read("*a"); f:close(); return s
end

local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  head, unit, tail = slurp("head"), slurp("unit"), slurp("tail")
  accepted, failed, sent, warm, slot, log = 0, 0, 0, 0, 0, nil
  if RECORD then
    log = assert(io.open(DIR .. "/accepted-" .. tid .. ".txt", "w"))
    log:setvbuf("line") -- wrk never closes a thread's Lua state: nothing may wait in a buffer
  end
end

local function body()
  local parts = {}
  for j = 1, UNITS do
    local rcpt = TAG .. "-" .. tid .. "-" .. sent .. "-" .. j
    parts[j] = unit:gsub("@@R@@", rcpt)
  end
  return head .. table.concat(parts, ",") .. tail
end

function request()
  -- Each connection's first request only opens it, so the schedule starts warm.
  if warm < CONNECTIONS then
    warm = warm + 1
    return wrk.format("GET", "/healthz")
  end
  if sent >= QUOTA + failed then return wrk.format("GET", "/healthz") end
  sent = sent + 1
  return wrk.format("POST", PATH, nil, body())
end

function delay()
  if RATE <= 0 or warm < CONNECTIONS then return 0 end
  local t = now()
  if start == nil then start = t end
  slot = slot + 1
  local due = start + (slot - 1) / RATE
  if due <= t then return 0 end
  return (due - t) * 1000
end

function response(status, headers, text)
  if status == 202 then
    accepted = accepted + 1
    if log then
      local id = text:match('"id"%s*:%s*"([^"]+)"')
      if id then log:write(id, " ", string.format("%.6f", now()), "\n") end
    end
  elseif status >= 300 then
    failed = failed + 1
  end
  if accepted >= QUOTA then
    if log then log:close(); log = nil end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("BENCH thread %d accepted %d failed %d\n",
      t:get("tid"), t:get("accepted"), t:get("failed")))
  end
end
"""


@dataclass(frozen=True)
class Sends:
    """A body split around its repeated unit: head + unit, unit, … + tail."""

    path: str
    head: str
    unit: str  # contains RECIPIENT where each copy's unique local part goes
    tail: str
    units: int = 1  # units per request


def sends_script(
    sends: Sends,
    headers: dict[str, str],
    directory: Path,
    *,
    quota: int,
    connections: int,
    tag: str,
    rate: float = 0.0,
    record: bool = False,
) -> Path:
    """A wrk script for one wrk thread: `quota` accepted sends, at `rate` per second if set."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("head", "unit", "tail"):
        (directory / name).write_text(getattr(sends, name))
    constants = {
        "DIR": json.dumps(str(directory)),
        "PATH": json.dumps(sends.path),
        "UNITS": str(sends.units),
        "QUOTA": str(quota),
        "CONNECTIONS": str(connections),
        "RATE": repr(float(rate)),
        "TAG": json.dumps(tag),
        "RECORD": "true" if record else "false",
    }
    lines = [f"{name} = {value}" for name, value in constants.items()]
    script = directory / "sends.lua"
    script.write_text("\n".join([*lines, *_header_lines(headers), _LUA]))
    return script


class WrkRun:
    """wrk running a sends script in the background until `stop()`."""

    def __init__(self, url: str, script: Path, *, connections: int, seconds: float = 3600) -> None:
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
        command += ["--timeout", TIMEOUT, "--latency"]
        self.process = subprocess.Popen(
            [*command, "-s", str(script), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finished(self) -> bool:
        """Whether wrk has exited (its -d ran out, or it failed)."""
        return self.process.poll() is not None

    def stop(self, name: str) -> tuple[Result, int, int]:
        """End the run; returns the report and the sends accepted and refused."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=60)
        counts = re.findall(r"BENCH thread \d+ accepted (\d+) failed (\d+)", output)
        accepted = sum(int(a) for a, _ in counts)
        failed = sum(int(f) for _, f in counts)
        return parse_report(name, output), accepted, failed


def read_accepted(directory: Path) -> dict[str, float]:
    """Message id → perf_counter() at which wrk read its 202 (from a recording run)."""
    accepted: dict[str, float] = {}
    for file in directory.glob("accepted-*.txt"):
        for line in file.read_text().splitlines():
            message_id, _, at = line.partition(" ")
            accepted[message_id.lower()] = float(at)
    return accepted
