#!/usr/bin/env python3
"""Turn the HES OPCS-4 code-usage table into one release file per financial year.

Input: the HES usage table as repackaged by ebmdatalab/codeusage (`data/opcs4_usage.rda` exported
to CSV, gzipped or not), one row per code per financial year:

    start_date,end_date,opcs4_code,description,usage
    2012-04-01,2013-03-31,A011,Hemispherectomy,13

Output, for each financial year, `opcs4_hes_<YYYY-MM>_to_<YYYY-MM>.csv.gz` (first and last month of
the year, so `fhir-registers import` reads the release version, `2012-04-01`, from the file name):

    code,display,kind,title_source
    A,Chapter A (title not given by HES),chapter,placeholder
    A01,Major excision of tissue of brain,category,derived
    A01.1,Hemispherectomy,subcategory,hes

- `subcategory`: every 4-character code HES lists for the year, written the way OPCS-4 writes it
  (`A01.1`; HES stores `A011`), with its HES title for that year (`title_source = hes`).
- `category`: the 3-character category of each of them (`A01`). HES gives no category titles. By
  the OPCS-4 convention a category's `.9` code is "Unspecified <category title>" and its `.8` code
  "Other specified <category title>" (the two agree for all 1,422 categories where HES lists both),
  so the title is taken from them (`title_source = derived`): from this year's `.9`, else this
  year's `.8`, else the same derivation from the nearest earlier year, else the nearest later year
  (so a category does not lose its title in a year its `.8`/`.9` went unused). Where no year gives
  one, the title is a stated placeholder, `Category O11 (title not given by HES)`
  (`title_source = placeholder`).
- `chapter`: the chapter letter (`A`). HES gives no chapter titles either: always a placeholder.

The usage counts are left out on purpose: they change every year for nearly every code, and a
release is meant to differ from the one before by the codes that appeared, went out of use or
changed title.

Files are gzipped with a zero timestamp and no name, so running the script again over the same
input gives the same bytes.

Usage:
    python3 make_releases.py nhs_hes_opcs4_code_usage_2012-2024.csv.gz [OUT_DIR]
OUT_DIR defaults to this script's folder. Only the Python standard library is needed.
"""

import csv
import gzip
import io
import re
import sys
from collections import defaultdict
from pathlib import Path

CODE = re.compile(r"[A-Z][0-9]{3}")
HEADER = ["start_date", "end_date", "opcs4_code", "description", "usage"]


def read_years(path):
    """{(start_date, end_date): {code: title}} from the HES usage table."""
    opener = gzip.open if str(path).endswith(".gz") else open
    years = defaultdict(dict)
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header != HEADER:
            sys.exit(f"{path}: header {header}, expected {HEADER}")
        for line, (start, end, code, title, _usage) in enumerate(reader, start=2):
            if not CODE.fullmatch(code):
                sys.exit(f"{path}:{line}: code {code!r} is not a 4-character OPCS-4 code")
            title = title.strip()
            if not title:
                sys.exit(f"{path}:{line}: code {code} has no title")
            seen = years[(start, end)].get(code)
            if seen is not None and seen != title:
                sys.exit(f"{path}:{line}: code {code} has two titles in {start}: {seen!r}, {title!r}")
            years[(start, end)][code] = title
    return years


def category_titles(titles):
    """{category: title} derived from one year's `.9` / `.8` titles, where they follow the rule."""
    by_category = defaultdict(dict)
    for code, title in titles.items():
        by_category[code[:3]][code[3]] = title
    out = {}
    for category, subs in by_category.items():
        for digit, prefix in (("9", "Unspecified "), ("8", "Other specified ")):
            t = subs.get(digit, "")
            if t.startswith(prefix) and len(t) > len(prefix):
                rest = t[len(prefix):]
                out[category] = rest[0].upper() + rest[1:]
                break
    return out


def release_rows(titles, derived_by_year, index):
    """The rows of one year's release, sorted by code."""
    rows = []
    for letter in sorted({c[0] for c in titles}):
        rows.append((letter, f"Chapter {letter} (title not given by HES)", "chapter", "placeholder"))
    for category in sorted({c[:3] for c in titles}):
        order = [index] + list(range(index - 1, -1, -1)) + list(range(index + 1, len(derived_by_year)))
        title = next((derived_by_year[i][category] for i in order if category in derived_by_year[i]), None)
        if title is None:
            rows.append((category, f"Category {category} (title not given by HES)", "category", "placeholder"))
        else:
            rows.append((category, title, "category", "derived"))
    for code, title in titles.items():
        rows.append((f"{code[:3]}.{code[3]}", title, "subcategory", "hes"))
    rows.sort(key=lambda r: r[0])
    return rows


def write_gz(path, rows):
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["code", "display", "kind", "title_source"])
    w.writerows(rows)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.getvalue().encode("utf-8"))


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    source = Path(argv[1])
    out_dir = Path(argv[2]) if len(argv) == 3 else Path(__file__).resolve().parent
    years = read_years(source)
    periods = sorted(years)
    derived = [category_titles(years[p]) for p in periods]
    for i, (start, end) in enumerate(periods):
        rows = release_rows(years[(start, end)], derived, i)
        name = f"opcs4_hes_{start[:7]}_to_{end[:7]}.csv.gz"
        write_gz(out_dir / name, rows)
        kinds = defaultdict(int)
        for r in rows:
            kinds[(r[2], r[3])] += 1
        counts = ", ".join(f"{k} {s} {n}" for (k, s), n in sorted(kinds.items()))
        print(f"{name}: version {start}, {len(rows)} rows ({counts})")


if __name__ == "__main__":
    main(sys.argv)
