#!/usr/bin/env python3
"""Generates years of monthly releases of a national-size postcode register from the real OS
Code-Point Open file, for the history benchmark (`HISTORY=60 benches/load.sh`) and the history
exactness test (tests/api/history_scale.rs).

Month 1 is the real file scaled up to `--target` postcodes (new postcodes as benches/gen_postcodes.py
makes them: a unit letter pair not yet used in an existing sector, near a postcode of that sector and
carrying its area codes). Every later month, with churn shaped like the real deltas between
Code-Point snapshots (../shared/data/SOURCES.md):
- `--introduce` (0.1 %) new postcodes appear;
- `--terminate` (0.1 %) postcodes are terminated: Code-Point drops them from the file (the mapping
  has no termination dates, so they leave the CodeSystem);
- `--change` (0.4 %) postcodes have one column changed: positional quality, grid reference (moved by
  up to 50 m) or electoral ward (another ward of the same district).
Once a year (every `--refresh-every` months) a geography code refresh renumbers a share of the
electoral wards, drawn between 10 % and 90 % for that year, so that share of postcodes has its
ward code changed.

The generator is deterministic for a seed. Introduced, terminated and changed postcodes of a month
are distinct, and a changed column always takes a new value, so the printed counts are exact.

    gen_history.py IN.csv.gz OUT_DIR [--months 60] [--target 2700000] [--seed 1] [--start 2021-01]
                   [--from-month 1] [--introduce 0.001] [--terminate 0.001] [--change 0.004]

Writes OUT_DIR/codepoint_m{NN}_{date}.csv.gz (Code-Point layout with header, in postcode order as
the real file is; gzip level 1) for the
months from `--from-month` on (earlier ones are simulated, not written), and prints one tab-separated
line per written month as soon as its file is complete:
    file  version  rows  introduced  terminated  changed  kind(first|monthly|refresh)
"""

import argparse
import gzip
import os
import random

UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the letters Royal Mail uses in the inward unit

# Columns of a Code-Point row (after csv quoting is undone).
PC, PQI, EAST, NORTH, COUNTRY, REGION, HA, COUNTY, DISTRICT, WARD = range(10)


def split_row(line):
    """A Code-Point line (`"TS181HU",10,445123,518123,"E92000001",…`) → its ten fields."""
    return [f.strip('"') for f in line.rstrip("\r\n").split(",")]


def join_row(f):
    """The ten fields → a Code-Point line, quoted as the real file quotes (text quoted)."""
    return (
        f'"{f[PC]}",{f[PQI]},{f[EAST]},{f[NORTH]},'
        + ",".join(f'"{v}"' for v in f[COUNTRY:])
        + "\n"
    )


def sector_of(postcode):
    """`TS181HU` / `TS18 1HU` (padded to 7) → ('TS18', '1', 'HU')."""
    pc = postcode.replace(" ", "")
    return pc[:-3], pc[-3], pc[-2:]


def padded(outward, digit, unit):
    """Code-Point's 7-character form: `B1  1AY`, `TS181HU`."""
    return f"{outward:<4}{digit}{unit}" if len(outward) < 4 else f"{outward}{digit}{unit}"


def month_date(start, k):
    """`2021-01` plus k months, as a release date `2021-02-01`."""
    y, m = (int(x) for x in start.split("-"))
    y, m = y + (m - 1 + k) // 12, (m - 1 + k) % 12 + 1
    return f"{y:04d}-{m:02d}-01"


class Register:
    """The live postcodes, each as its output line, plus what new postcodes are made from."""

    def __init__(self, path, rnd):
        self.rnd = rnd
        with gzip.open(path, "rt", newline="") as f:
            self.header = f.readline()
            self.lines = {}
            for line in f:
                if line.strip():
                    self.lines[line[1:8]] = line if line.endswith("\n") else line + "\n"
        self.units = {}  # sector → unit letter pairs ever used
        self.members = {}  # sector → postcodes (keys) ever in it
        self.wards = {}  # district → its wards
        for key, line in self.lines.items():
            o, d, u = sector_of(key)
            self.units.setdefault((o, d), set()).add(u)
            self.members.setdefault((o, d), []).append(key)
            f = split_row(line)
            if f[WARD]:
                self.wards.setdefault(f[DISTRICT], set()).add(f[WARD])
        self.sectors = list(self.units)
        self.wards = {k: sorted(v) for k, v in self.wards.items()}
        self.ward_serial = 0  # renumbered wards get `{E05}9{serial:05d}`, codes no real ward has

    def keys(self):
        """Live postcodes, in a fixed order (sorted), for drawing samples reproducibly."""
        return sorted(self.lines)

    def introduce(self):
        """One new postcode: an unused unit pair in a random sector, near one of its postcodes."""
        rnd = self.rnd
        while True:
            sector = self.sectors[rnd.randrange(len(self.sectors))]
            used = self.units[sector]
            if len(used) >= len(UNIT_LETTERS) ** 2:
                continue
            model = rnd.choice(self.members[sector])
            if model not in self.lines:
                continue
            while True:
                unit = rnd.choice(UNIT_LETTERS) + rnd.choice(UNIT_LETTERS)
                if unit not in used:
                    break
            used.add(unit)
            key = padded(sector[0], sector[1], unit)
            f = split_row(self.lines[model])
            f[PC] = key
            if f[EAST] != "0":
                f[EAST] = str(max(0, int(f[EAST]) + rnd.randint(-50, 50)))
                f[NORTH] = str(max(0, int(f[NORTH]) + rnd.randint(-50, 50)))
            self.lines[key] = join_row(f)
            self.members[sector].append(key)
            return key

    def change(self, key):
        """Changes one column of a postcode to a new value."""
        rnd = self.rnd
        f = split_row(self.lines[key])
        while True:
            what = rnd.randrange(3)
            if what == 0:
                f[PQI] = rnd.choice([v for v in ("10", "20", "30", "40", "50", "60") if v != f[PQI]])
                break
            if what == 1:
                east, north = int(f[EAST]), int(f[NORTH])
                dx, dy = rnd.randint(1, 50), rnd.randint(-50, 50)
                f[EAST], f[NORTH] = str(east + dx), str(max(0, north + dy))
                break
            others = [w for w in self.wards.get(f[DISTRICT], []) if w != f[WARD]]
            if others:
                f[WARD] = rnd.choice(others)
                break
        self.lines[key] = join_row(f)

    def refresh(self, share):
        """Renumbers `share` of the wards; returns the postcodes whose ward code changed."""
        rnd = self.rnd
        all_wards = sorted({w for ws in self.wards.values() for w in ws})
        picked = set(rnd.sample(all_wards, int(len(all_wards) * share)))
        renumber = {}
        for w in sorted(picked):
            self.ward_serial += 1
            renumber[w] = f"{w[:3]}9{self.ward_serial:05d}"
        self.wards = {d: sorted(renumber.get(w, w) for w in ws) for d, ws in self.wards.items()}
        changed = 0
        for key, line in self.lines.items():
            f = split_row(line)
            new = renumber.get(f[WARD])
            if new is not None:
                f[WARD] = new
                self.lines[key] = join_row(f)
                changed += 1
        return changed

    def write(self, path):
        """Writes the release in postcode order (padded, as Code-Point is published)."""
        lines = self.lines
        with gzip.open(path, "wt", newline="", compresslevel=1) as out:
            out.write(self.header)
            out.write("".join([lines[k] for k in sorted(lines)]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("out_dir")
    ap.add_argument("--months", type=int, default=60)
    ap.add_argument("--from-month", type=int, default=1, help="first month written (1-based)")
    ap.add_argument("--target", type=int, default=2_700_000, help="postcodes in month 1")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", default="2021-01", help="month 1, YYYY-MM")
    ap.add_argument("--introduce", type=float, default=0.001)
    ap.add_argument("--terminate", type=float, default=0.001)
    ap.add_argument("--change", type=float, default=0.004)
    ap.add_argument("--refresh-every", type=int, default=12)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    reg = Register(args.input, rnd)
    while len(reg.lines) < args.target:
        reg.introduce()

    def emit(month, introduced, terminated, changed, kind):
        date = month_date(args.start, month - 1)
        if month < args.from_month:
            return
        path = os.path.join(args.out_dir, f"codepoint_m{month:02d}_{date}.csv.gz")
        reg.write(path)
        print(f"{path}\t{date}\t{len(reg.lines)}\t{introduced}\t{terminated}\t{changed}\t{kind}", flush=True)

    emit(1, 0, 0, 0, "first")
    for month in range(2, args.months + 1):
        n = len(reg.lines)
        if args.refresh_every and (month - 1) % args.refresh_every == 0:
            share = rnd.uniform(0.1, 0.9)
            changed = reg.refresh(share)
            emit(month, 0, 0, changed, "refresh")
            continue
        keys = reg.keys()
        n_term, n_change = round(n * args.terminate), round(n * args.change)
        picked = rnd.sample(keys, n_term + n_change)
        for key in picked[:n_term]:
            del reg.lines[key]
        for key in picked[n_term:]:
            reg.change(key)
        n_new = round(n * args.introduce)
        for _ in range(n_new):
            reg.introduce()
        emit(month, n_new, n_term, n_change, "monthly")


if __name__ == "__main__":
    main()
