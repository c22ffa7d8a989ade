#!/usr/bin/env python3
"""Writes valuesets.json: one ValueSet per UK Core CodeSystem in this folder, holding all of its
codes (compose.include of the system), so each code list answers $expand and ValueSet
$validate-code. Run it again after adding or updating a CodeSystem file:

    python3 mappings/datadictionary/make_valuesets.py
"""
import json
import pathlib
import xml.etree.ElementTree as ET

NS = {"f": "http://hl7.org/fhir"}
HERE = pathlib.Path(__file__).resolve().parent


def value(root, name):
    el = root.find(f"f:{name}", NS)
    return None if el is None else el.get("value")


entries = []
for path in sorted(HERE.glob("*.xml")):
    root = ET.parse(path).getroot()
    if root.tag != "{http://hl7.org/fhir}CodeSystem":
        continue
    cs_id, url = value(root, "id"), value(root, "url")
    title = value(root, "title") or value(root, "name") or cs_id
    vs = {
        "resourceType": "ValueSet",
        "id": f"{cs_id}-all",
        "url": f"https://fhir-registers.org/fhir/ValueSet/{cs_id}-all",
        "name": "".join(ch for ch in f"{value(root, 'name') or cs_id}All" if ch.isalnum()),
        "title": f"{title}: all codes",
        "status": "active",
        "publisher": "fhir-registers",
        "description": f"Every code of the CodeSystem {url} ({path.name}).",
        "compose": {"include": [{"system": url}]},
    }
    if value(root, "version"):
        vs["compose"]["include"][0]["version"] = value(root, "version")
    entries.append({"fullUrl": vs["url"], "resource": vs})

bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
(HERE / "valuesets.json").write_text(json.dumps(bundle, indent=1, ensure_ascii=False) + "\n")
print(f"wrote {len(entries)} ValueSets to {HERE / 'valuesets.json'}")
