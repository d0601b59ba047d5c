#!/usr/bin/env python3
"""Code footprint of one unit of work, from a callgrind profile made with --dump-instr=yes.

    footprint.py PROFILE UNITS [TOP]

Reads the per-instruction costs of PROFILE (self costs only: a call's inclusive cost line is
skipped), groups instructions into 64-byte cache lines, and counts the lines executed at least
once per two units (UNITS: round trips or messages in the profile): the code a unit of work
runs through, which the instruction cache must hold. Prints instructions and simulated L1i
misses per unit (when the profile was made with --cache-sim=yes), the hot lines and their KiB,
the hot lines by group (webchan, the benchmark's servers, futures, the rest), the TOP
functions by hot lines, and the TOP functions by instructions per unit (self cost): side by
side for two servers, these say where one runs more code than the other.
"""
import collections
import re
import subprocess
import sys


def main():
    path, units = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    names = {}

    def name(field):
        return compressed(field, names)

    positions, events = ["line"], []
    last = [0]
    ir = collections.Counter()
    i1mr = collections.Counter()
    owner = {}
    obj_of = {}
    objects = {}
    obj = "?"
    func = "?"
    skip = False  # the cost line after calls= is the call's inclusive cost
    with open(path) as f:
        for line in f:
            if line.startswith("positions:"):
                positions = line.split()[1:]
                last = [0] * len(positions)
                if positions[0] != "instr":
                    sys.exit(f"{path}: no instruction addresses: make it with --dump-instr=yes")
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("ob="):
                obj = compressed(line[3:].strip(), objects)
            elif line.startswith("cob="):
                compressed(line[4:].strip(), objects)
            elif line.startswith("fn="):
                func = name(line[3:].strip())
            elif line.startswith("cfn="):
                name(line[4:].strip())
            elif line.startswith("calls="):
                skip = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                tokens = line.split()
                for i in range(len(positions)):
                    t = tokens[i]
                    if t == "*":
                        continue
                    last[i] = last[i] + int(t, 0) if t[0] in "+-" else int(t, 0)
                if skip:
                    skip = False
                    continue
                costs = [int(t) for t in tokens[len(positions):]]
                addr = last[0]
                if costs:
                    ir[addr] += costs[0]
                    owner.setdefault(addr, func)
                    obj_of.setdefault(addr, obj)
                if "I1mr" in events:
                    k = events.index("I1mr")
                    if len(costs) > k:
                        i1mr[addr] += costs[k]
    if positions[0] != "instr":
        # No "positions:" line at all: line numbers only.
        sys.exit(f"{path}: no instruction addresses: make it with --dump-instr=yes")
    if units <= 0:
        sys.exit("UNITS must be a positive count of round trips or messages")
    lines = collections.Counter()
    line_owner = {}
    for addr, cost in ir.items():
        lines[addr // 64] += cost
        line_owner.setdefault(addr // 64, owner[addr])
    hot = [l for l, cost in lines.items() if cost >= units / 2]
    print(f"instructions per unit: {sum(ir.values()) / units:.0f}")
    if i1mr:
        print(f"simulated L1i misses per unit: {sum(i1mr.values()) / units:.1f}")
    print(f"hot code lines: {len(hot)} ({len(hot) * 64 / 1024:.1f} KiB)")
    groups = collections.Counter()
    by_func = collections.Counter()
    for l in hot:
        fn = line_owner[l]
        by_func[fn] += 1
        if "webchan::" in fn:
            groups["webchan"] += 1
        elif "servers::" in fn:
            groups["the benchmark's servers"] += 1
        elif "futures" in fn:
            groups["futures"] += 1
        else:
            groups["the rest (tokio, hyper, libc, ...)"] += 1
    for group, n in groups.most_common():
        print(f"  {group}: {n}")
    print(f"top {top} functions by hot lines:")
    for fn, n in by_func.most_common(top):
        print(f"  {n:4} {fn[:140]}")
    by_func_ir = collections.Counter()
    for addr, cost in ir.items():
        by_func_ir[owner[addr]] += cost
    print(f"top {top} functions by instructions per unit:")
    for fn, cost in by_func_ir.most_common(top):
        print(f"  {cost / units:6.0f} {fn[:140]}")
    atomics(ir, owner, obj_of, units, top)


def compressed(field, table):
    """callgrind compresses the names of functions and objects: "(id) name" the first time,
    "(id)" after; `table` remembers them."""
    m = re.match(r"\((\d+)\)(?: (.*))?", field)
    if not m:
        return field
    if m.group(2):
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), "?")


def atomic_offsets(path):
    """Offsets of the atomic read-modify-write instructions in an object, and its symbols."""
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", path],
                             capture_output=True, text=True).stdout
    found, symbols = set(), {}
    for line in listing.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if m:
            ins = m.group(2)
            if ins.startswith("lock ") or (ins.startswith("xchg") and "(" in ins):
                found.add(int(m.group(1), 16))
            continue
        m = re.match(r"([0-9a-f]+) <(.*)>:", line)
        if m:
            symbols.setdefault(m.group(2), int(m.group(1), 16))
    for flag in ([], ["-D"]):
        out = subprocess.run(["nm", "-C", "--defined-only", *flag, path],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                symbols.setdefault(parts[2].split("@")[0], int(parts[0], 16))
    return found, symbols


def atomics(ir, owner, obj_of, units, top):
    by_obj = collections.defaultdict(list)
    for addr, o in obj_of.items():
        by_obj[o].append(addr)
    total, by_func, unknown = 0, collections.Counter(), 0
    for o, addrs in by_obj.items():
        if not o.startswith("/"):
            unknown += sum(ir[a] for a in addrs)
            continue
        offsets, symbols = atomic_offsets(o)
        # The load address: the one most executed addresses agree on, from their functions'
        # symbols (a function's name in the profile may carry a prefix, as __GI_ in glibc).
        bases = collections.Counter()
        for a in addrs:
            fn = owner[a].removeprefix("__GI_").removeprefix("__libc_")
            start = symbols.get(owner[a], symbols.get(fn))
            if start is not None and a >= start:
                bases[(a - start) & ~0xFFF] += 1
        if not bases:
            unknown += sum(ir[a] for a in addrs)
            continue
        base = bases.most_common(1)[0][0]
        for a in addrs:
            if a - base in offsets:
                total += ir[a]
                by_func[owner[a]] += ir[a]
    print(f"atomic read-modify-write instructions per unit: {total / units:.1f}"
          + (f" (objects not read: {unknown / units:.0f} instructions per unit)" if unknown else ""))
    for fn, n in by_func.most_common(top):
        if n / units >= 0.05:
            print(f"  {n / units:6.2f} {fn[:140]}")


if __name__ == "__main__":
    main()
