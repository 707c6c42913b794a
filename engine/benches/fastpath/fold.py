#!/usr/bin/env python3
"""Folded stacks from `perf script` (what inferno-collapse-perf or stackcollapse-perf.pl make,
for a machine without them), and a text summary of folded stacks.

    perf script -i perf.data | fold.py > folded.txt     # "thread;outer;...;leaf COUNT" lines
    fold.py --summary < folded.txt > summary.txt         # shares by thread, self and inclusive

The folded file feeds any flame-graph renderer (inferno-flamegraph, flamegraph.pl, speedscope).
"""
import collections
import re
import sys

OFFSET = re.compile(r"\+0x[0-9a-f]+$")
# Rust's legacy mangling suffix (::h0123456789abcdef) only makes names longer.
HASH = re.compile(r"::h[0-9a-f]{16}$")


def frame_name(line):
    # "    55d0c0a1b2c3 symbol+0x1f (/path/to/dso)"
    parts = line.strip().split(" ", 1)
    if len(parts) < 2:
        return "[unknown]"
    rest = parts[1]
    dso = ""
    if rest.endswith(")") and " (" in rest:
        rest, dso = rest.rsplit(" (", 1)
        dso = dso[:-1].rsplit("/", 1)[-1]
    name = HASH.sub("", OFFSET.sub("", rest.strip()))
    if name in ("", "[unknown]"):
        return f"[{dso or 'unknown'}]"
    # The kernel's frames carry inferno's `_[k]` mark, so renderers colour them and the
    # summary can tell kernel time from user time.
    suffix = "_[k]" if dso.startswith("[kernel") else ""
    return name.replace(";", ":") + suffix


def fold(lines):
    counts = collections.Counter()
    thread, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if thread is not None:
                counts[";".join([thread] + frames[::-1])] += 1
            thread, frames = None, []
        elif line[0] not in " \t":
            # "comm pid/tid time: period event:" — a thread name may hold spaces.
            match = re.match(r"^(.*?)\s+\d+(/\d+)?\s", line)
            name = match.group(1) if match else line.split()[0]
            thread = re.sub(r"[-_ ]?\d+$", "", name) or name
        else:
            frames.append(frame_name(line))
    if thread is not None:
        counts[";".join([thread] + frames[::-1])] += 1
    for stack, count in sorted(counts.items()):
        print(f"{stack} {count}")


# Where a leaf frame's time goes, by the first rule that matches its name.
CATEGORIES = [
    ("kernel (scheduler, futex, syscalls, I/O)", lambda name: name.endswith("_[k]")),
    ("SQLite", lambda name: name.startswith(("sqlite3", "pcache1", "wal", "btree", "vdbe", "pager"))),
    ("allocator", lambda name: any(word in name for word in
                                   ("malloc", "free", "_int_", "cache_bin", "je_", "arena", "tcache"))),
    ("libc copies and compares", lambda name: name.startswith(("__mem", "__str", "mem", "str"))),
    ("sqlx", lambda name: "sqlx" in name),
    ("serde / JSON", lambda name: "serde" in name),
    ("minijinja (templates)", lambda name: "minijinja" in name),
    ("tokio", lambda name: "tokio" in name),
    ("flume", lambda name: "flume" in name),
    ("hyper / axum / http", lambda name: any(word in name for word in ("hyper", "axum", "http"))),
    ("enrichflow", lambda name: "enrichflow" in name),
]


def category(name):
    for label, test in CATEGORIES:
        if test(name):
            return label
    return "other"


def summary(lines, top=40):
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    total = sum(count for _, count in stacks) or 1
    threads, leaves, inclusive, categories, syscalls = (collections.Counter() for _ in range(5))
    for frames, count in stacks:
        if frames[-1].endswith("_[k]"):
            entry = next((name for name in frames if name.startswith(("__x64_sys_", "__do_sys_"))),
                         "(no system call: interrupt or fault)")
            syscalls[entry.removesuffix("_[k]")] += count
        threads[frames[0]] += count
        leaves[frames[-1]] += count
        categories[category(frames[-1])] += count
        for name in set(frames[1:]):
            if name.startswith(("enrichflow::", "<enrichflow::")):
                inclusive[name] += count
    share = lambda count: f"{100.0 * count / total:6.2f} %"
    print(f"{total} samples")
    print("\n## By thread (name without its number)")
    for name, count in threads.most_common(top):
        print(f"{share(count)}  {name}")
    print("\n## Self time by kind of leaf frame (rules in fold.py)")
    for name, count in categories.most_common():
        print(f"{share(count)}  {name}")
    print("\n## Kernel self time by the system call it is under")
    for name, count in syscalls.most_common(15):
        print(f"{share(count)}  {name}")
    print(f"\n## Top {top} functions by self time (leaf frame)")
    for name, count in leaves.most_common(top):
        print(f"{share(count)}  {name[:160]}")
    print(f"\n## Top {top} enrichflow functions by inclusive time (on the stack)")
    for name, count in inclusive.most_common(top):
        print(f"{share(count)}  {name[:160]}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--summary"]:
        summary(sys.stdin)
    else:
        fold(sys.stdin)
