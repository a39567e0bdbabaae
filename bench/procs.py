"""Processes under measurement: CPU time per process tree (Linux /proc) and py-spy profiles.

CPU time answers "what does a message cost each component", which the noisy rates of a
shared machine cannot: a process's user + system time does not grow because another process
holds the core.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU of each process, with that of its children it has reaped."""
    times = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:  # utime, stime, cutime, cstime are fields 14–17
            times[pid] = sum(int(value) for value in fields[11:15]) / _TICK
    return times


class CpuMeter:
    """CPU used by named groups of process trees between `start()` and `stop()`.

    Processes that appear meanwhile (a uvicorn or Postfix child) count in full; processes
    that exit meanwhile count through their parent's reaped-children time, or are lost if
    nobody reaps them (rare: the trees measured here keep their children)."""

    def __init__(self, roots: dict[str, Callable[[], list[int]]]) -> None:
        self.roots = roots  # looked up at each sample: backends and children come and go
        self.before: dict[str, dict[int, float]] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        return {
            name: cpu_seconds({pid for root in roots() for pid in descendants(root)})
            for name, roots in self.roots.items()
        }

    def start(self) -> None:
        """Take the starting sample."""
        self.before = self._sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds each group used since `start()`."""
        after = self._sample()
        used = {}
        for name, times in after.items():
            earlier = self.before.get(name, {})
            used[name] = sum(t - earlier.get(pid, 0.0) for pid, t in times.items())
        return used


def postgres_backends(database: str) -> list[int]:
    """Process ids of the PostgreSQL backends connected to `database` (needs a local server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # A backend's title: "postgres: <user> <database> <host>(<port>) <state>"
        if command.startswith(b"postgres: ") and f" {database} ".encode() in command:
            found.append(int(entry.name))
    return found


# --- py-spy --------------------------------------------------------------------------------


def py_spy() -> str | None:
    """The py-spy executable (the venv's first), or None."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profile:
    """py-spy recording one process tree until `stop()`, in its raw (collapsed stacks) format."""

    def __init__(self, pid: int, out: Path, *, rate: int = 100) -> None:
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None
        spy = py_spy()
        if spy is None:
            print(
                "py-spy is not installed (bench/setup.sh installs it); no profile", file=sys.stderr
            )
            return
        command = [spy, "record", "--pid", str(pid), "--subprocesses", "--rate", str(rate)]
        command += ["--format", "raw", "--output", str(out), "--nonblocking"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> Path | None:
        """End the recording (py-spy writes its file on SIGINT); the file, if one was written."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.out if self.out.exists() and self.out.stat().st_size else None


def _frames(raw: Path) -> Iterable[tuple[list[str], int]]:
    """(frames from the root outwards, samples) per line of py-spy's raw output."""
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        if number.isdigit() and frames:  # (--subprocesses puts the process first: dropped)
            yield frames, int(number)


def summarise_profile(raw: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Shares of samples: by module (inclusive) and by function (self, the leaf frame)."""
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    total = 0
    for frames, samples in _frames(raw):
        total += samples
        for module in {_module_of(frame) for frame in frames}:
            modules[module] = modules.get(module, 0) + samples
        leaf = _function_of(frames[-1])
        functions[leaf] = functions.get(leaf, 0) + samples

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        ordered = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [(name, count / total) for name, count in ordered] if total else []

    return {"modules_inclusive": ranked(modules), "functions_self": ranked(functions)}


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def _module_of(frame: str) -> str:
    """`function (path/to/module.py:12)` → a short module name."""
    match = re.search(r"\(([^:()]+)\.py:\d+\)", frame)
    if match is None:
        return frame.split(" ")[0]
    return _short_path(match.group(1)).replace("/", ".")


def _function_of(frame: str) -> str:
    """`function (path/to/module.py:12)` → `module.function`."""
    match = re.match(r"(.*?) \(([^:()]+)\.py:\d+\)", frame)
    if match is None:
        return frame
    return _short_path(match.group(2)).replace("/", ".") + "." + match.group(1)


def write_summary(raw: Path, title: str) -> tuple[Path, dict[str, list[tuple[str, float]]]]:
    """A readable summary beside the raw profile; returns its path and the figures."""
    summary = summarise_profile(raw)
    lines = [title, "", "by module, inclusive share of samples:"]
    lines += [f"  {share:6.1%}  {name}" for name, share in summary["modules_inclusive"]]
    lines += ["", "by function, self share of samples (the frame on the CPU):"]
    lines += [f"  {share:6.1%}  {name}" for name, share in summary["functions_self"]]
    out = raw.with_name(raw.name.replace(".raw.txt", ".summary.txt"))
    out.write_text("\n".join(lines) + "\n")
    return out, summary
