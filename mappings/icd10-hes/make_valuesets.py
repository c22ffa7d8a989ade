#!/usr/bin/env python3
"""Writes icd10-hes-valuesets.json: one ValueSet per financial year of the ICD-10 codes used in
Hospital Episode Statistics (HES) Admitted Patient Care, over the WHO ICD-10 CodeSystem
(http://hl7.org/fhir/sid/icd-10). HES lists codes in the NHS ALT_CODE form (J459, A09X); each is
turned into the WHO dotted code (J45.9, A09), the translation the ConceptMap
icd-10-alt-code-to-icd-10 serves. Codes HES used that the WHO 2019 release does not have (UK
additions and later WHO updates) cannot be members of a ValueSet over that CodeSystem: each
ValueSet's description counts them, and they are listed in icd10-hes-not-in-who-2019.txt.

    python3 mappings/icd10-hes/make_valuesets.py [HES_USAGE_CSV_GZ]

The default input is ../shared/data/icd10/nhs_hes_icd10_code_usage_2012-2024.csv.gz beside the
repository.
"""
import csv
import gzip
import json
import pathlib
import re
import sys
from collections import defaultdict

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
SOURCE = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared/data/icd10/nhs_hes_icd10_code_usage_2012-2024.csv.gz"
WHO = REPO / "mappings/data/icd10/who_icd10_2019_flat.csv"
SYSTEM = "http://hl7.org/fhir/sid/icd-10"


def dotted(alt):
    """J459 -> J45.9, A09X -> A09 (the ALT_CODE form's rule)."""
    alt = alt.strip().upper()
    if len(alt) == 4 and alt.endswith("X"):
        return alt[:3]
    if len(alt) > 3:
        return alt[:3] + "." + alt[3:]
    return alt


who = set()
with open(WHO, newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        who.add(row["code"])

ALT = re.compile(r"^[A-Z][0-9]{2}[0-9X]?$")
years = defaultdict(set)
skipped = defaultdict(int)
with gzip.open(SOURCE, "rt", newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        key = (row["start_date"], row["end_date"])
        alt = row["icd10_code"].strip().upper()
        if ALT.match(alt):
            years[key].add(dotted(alt))
        else:
            skipped[key] += 1  # "NULL" rows: no code recorded

entries, missing_lines = [], []
for (start, end), codes in sorted(years.items()):
    fy = f"{start[:4]}-{end[2:4]}"
    members = sorted(c for c in codes if c in who)
    missing = sorted(c for c in codes if c not in who)
    missing_lines.append(f"{fy}: {len(missing)}: {' '.join(missing)}")
    vid = f"icd-10-hes-apc-{fy}"
    vs = {
        "resourceType": "ValueSet",
        "id": vid,
        "url": f"https://fhir-registers.org/fhir/ValueSet/{vid}",
        "version": start,
        "name": f"ICD10UsedInHESAPC{start[:4]}{end[2:4]}",
        "title": f"ICD-10 codes used in HES Admitted Patient Care, financial year {fy}",
        "status": "active",
        "publisher": "fhir-registers",
        "description": (
            f"The ICD-10 codes recorded in Hospital Episode Statistics Admitted Patient Care from {start} "
            f"to {end} (NHS England (NHS Digital), HES, OGL v3.0), as WHO dotted codes: {len(codes)} "
            f"codes used, {len(members)} of them in the WHO ICD-10 2019 release served here; the other "
            f"{len(missing)} (UK additions and later updates) are listed in icd10-hes-not-in-who-2019.txt."
        ),
        "copyright": "Source: NHS England (NHS Digital), Hospital Episode Statistics, Open Government Licence v3.0. ICD-10 © World Health Organization.",
        "compose": {"include": [{"system": SYSTEM, "concept": [{"code": c} for c in members]}]},
    }
    entries.append({"fullUrl": vs["url"], "resource": vs})

bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
(HERE / "icd10-hes-valuesets.json").write_text(json.dumps(bundle, separators=(",", ":"), ensure_ascii=False) + "\n")
(HERE / "icd10-hes-not-in-who-2019.txt").write_text(
    "ICD-10 codes used in HES APC that the WHO ICD-10 2019 release does not have, by financial year\n"
    + "\n".join(missing_lines) + "\n")
print(f"wrote {len(entries)} ValueSets to {HERE / 'icd10-hes-valuesets.json'}")
