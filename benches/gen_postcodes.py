#!/usr/bin/env python3
"""Scales the real OS Code-Point Open file (1.68M GB postcodes) up to a national-size register with
several releases, for the load benchmark (benches/load.sh).

Release 1 is the real file. Each later release terminates a share of the postcodes (they are gone
from the file, as Code-Point drops terminated postcodes) and introduces new ones. A new postcode is
a unit letter pair not yet used in an existing postcode sector (`TS18 1` + `XY`), placed near a
postcode of that sector (easting/northing jittered by up to 50 m) and carrying that postcode's
area codes, so the text, the code shapes and the filters behave like the real register.

    gen_postcodes.py IN.csv.gz OUT_DIR [--target 2700000] [--releases 3] [--seed 1]

Writes OUT_DIR/codepoint_gen_r{N}_{date}.csv.gz (Code-Point layout, with header) and prints one
line per release: file, version, rows, introduced, terminated.
"""

import argparse
import csv
import gzip
import os
import random

UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the letters Royal Mail uses in the inward unit
DATES = ["2014-08-01", "2016-08-01", "2018-08-01", "2020-08-01", "2022-08-01"]


def sector_of(postcode):
    """`TS181HU` / `TS18 1HU` (padded to 7) → ('TS18', '1', 'HU')."""
    pc = postcode.replace(" ", "")
    return pc[:-3], pc[-3], pc[-2:]


def padded(outward, digit, unit):
    """Code-Point's 7-character form: `B1  1AY`, `TS181HU`."""
    return f"{outward:<4}{digit}{unit}" if len(outward) < 4 else f"{outward}{digit}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("out_dir")
    ap.add_argument("--target", type=int, default=2_700_000, help="postcodes in the last release")
    ap.add_argument("--releases", type=int, default=3)
    ap.add_argument("--terminate", type=float, default=0.02, help="share terminated per release")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)

    with gzip.open(args.input, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader if r]
    units = {}  # sector → unit letter pairs in use
    members = {}  # sector → indexes of its real postcodes
    for i, r in enumerate(rows):
        o, d, u = sector_of(r[0])
        units.setdefault((o, d), set()).add(u)
        members.setdefault((o, d), []).append(i)
    sectors = list(units)
    live = dict.fromkeys(range(len(rows)))  # row indexes in release order
    releases = max(1, min(args.releases, len(DATES)))
    new_per_release = 0
    if releases > 1:
        survivors = len(rows) * (1 - args.terminate) ** (releases - 1)
        new_per_release = max(0, int((args.target - survivors) / (releases - 1)) + 1)

    def write(n, live_rows):
        name = f"codepoint_gen_r{n + 1}_{DATES[n]}.csv.gz"
        path = os.path.join(args.out_dir, name)
        with gzip.open(path, "wt", newline="", compresslevel=1) as out:
            w = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
            w.writerow(header)
            for i in live_rows:
                r = rows[i]
                w.writerow([r[0], int(r[1]), int(r[2]), int(r[3])] + r[4:])
        return path

    print(f"{write(0, live)}\t{DATES[0]}\t{len(live)}\t0\t0", flush=True)
    for n in range(1, releases):
        ending = rnd.sample(list(live), int(len(live) * args.terminate))
        for i in ending:
            del live[i]
        introduced = 0
        target = args.target if n == releases - 1 else len(live) + new_per_release - len(ending)
        while len(live) < target:
            o, d = sectors[rnd.randrange(len(sectors))]
            used = units[(o, d)]
            if len(used) >= len(UNIT_LETTERS) ** 2:
                continue
            unit = rnd.choice(UNIT_LETTERS) + rnd.choice(UNIT_LETTERS)
            if unit in used:
                continue
            used.add(unit)
            # A real postcode of the same sector gives the place and the area codes.
            near = rows[rnd.choice(members[(o, d)])]
            jitter = lambda v: str(max(0, int(v) + rnd.randint(-50, 50))) if int(v) else v
            rows.append([padded(o, d, unit), "10", jitter(near[2]), jitter(near[3])] + near[4:])
            live[len(rows) - 1] = None
            introduced += 1
        print(f"{write(n, live)}\t{DATES[n]}\t{len(live)}\t{introduced}\t{len(ending)}", flush=True)


if __name__ == "__main__":
    main()
