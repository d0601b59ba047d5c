#!/usr/bin/env python3
"""Cache lines and pages one round trip touches, from a valgrind lackey trace.

    lines.py TRACE UNITS BINARY

TRACE: the log of `valgrind --tool=lackey --trace-mem=yes` over a server that did UNITS round
trips (or messages) and nothing else of note; BINARY: the server's executable, to tell its
static data from the heap. The trace is cut into units at an instruction executed exactly once
per unit (found by its count: UNITS, or the nearest), the first tenth and the last few units
are dropped (start-up, the connection's handshake and end), and for each unit the distinct
64-byte lines of code and of data (stack, heap, the binary's static data) and the distinct
4 KiB pages are counted. Prints the medians.

Unlike instructions, this counts what the caches and the TLB must hold for one round trip:
when other processes (the load client, the kernel's network stack) run on the core between two
round trips, each of these lines is likely to be fetched again (benches/HISTORY.md, "What a cache
line costs a round trip").
"""
import collections
import statistics
import subprocess
import sys

# Where valgrind maps a position-independent executable (its load address 0 moves here).
PIE_BASE = 0x108000


def binary_end(binary):
    """The end of the executable's mapped image (under valgrind), from its program headers."""
    header = subprocess.run(["readelf", "-hW", binary], capture_output=True, text=True, check=True)
    # A position-dependent executable (EXEC) is mapped where it says; a PIE (DYN) at PIE_BASE.
    base = PIE_BASE if "DYN" in header.stdout else 0
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True)
    end = 0
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == "LOAD":
            vaddr, memsz = int(fields[2], 16), int(fields[5], 16)
            end = max(end, vaddr + memsz)
    if end == 0:
        sys.exit(f"{binary}: no LOAD segments (not an ELF executable?)")
    return base + end


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, units, binary = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if units <= 0:
        sys.exit("UNITS must be a positive count of round trips or messages")
    static_end = binary_end(binary)
    counts = collections.Counter()
    with open(path) as f:
        for line in f:
            if line.startswith("I "):
                counts[line[3:].split(",", 1)[0]] += 1
    if not counts:
        sys.exit(f"{path}: no instruction lines (made with --trace-mem=yes?)")
    # The marker: executed exactly once per unit; the lowest address of those that are.
    exact = sorted((a for a, c in counts.items() if c == units), key=lambda a: int(a, 16))
    if exact:
        marker = exact[0]
    else:
        marker = min(counts, key=lambda a: (abs(counts[a] - units), int(a, 16)))
    units_seen = counts[marker]
    del counts

    per_unit = []
    code, stack, heap, static, pages_code, pages_data = (set() for _ in range(6))
    started = False
    with open(path) as f:
        for line in f:
            kind = line[:2].strip()
            if kind not in ("I", "L", "S", "M"):
                continue
            text = line[3:].split(",", 1)[0]
            addr = int(text, 16)
            if kind == "I":
                if text == marker:
                    if started:
                        per_unit.append((len(code), len(stack), len(heap), len(static),
                                         len(pages_code), len(pages_data)))
                    started = True
                    for s in (code, stack, heap, static, pages_code, pages_data):
                        s.clear()
                code.add(addr >> 6)
                pages_code.add(addr >> 12)
            else:
                # The main thread's stack sits at the top of the address space under valgrind.
                if addr >= 0x1000000000:
                    stack.add(addr >> 6)
                elif addr < static_end:
                    static.add(addr >> 6)
                else:
                    heap.add(addr >> 6)
                pages_data.add(addr >> 12)
    skip = len(per_unit) // 10
    kept = per_unit[skip:len(per_unit) - 3]
    if len(kept) < 10:
        sys.exit(f"only {len(kept)} whole units in the trace: run the load longer")

    def med(i):
        return statistics.median(u[i] for u in kept)

    data = statistics.median(u[1] + u[2] + u[3] for u in kept)
    print(f"units: {units} expected, {units_seen} seen at the marker, {len(kept)} measured")
    if units_seen != units:
        # No instruction ran exactly once per unit: the nearest count was taken, which may
        # belong to something that is not periodic (the handshake, a timer) or runs twice per
        # unit (two reads per message). Read the figures with care.
        print(f"warning: no instruction ran exactly {units} times; the cut is approximate")
    print(f"code lines per unit: {med(0):.0f}")
    print(f"data lines per unit: {data:.0f} (stack {med(1):.0f}, heap {med(2):.0f}, "
          f"static {med(3):.0f})")
    print(f"pages per unit: code {med(4):.0f}, data {med(5):.0f}")


if __name__ == "__main__":
    main()
