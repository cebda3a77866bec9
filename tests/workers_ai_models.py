"""Cloudflare's own catalogue entries of Workers AI models, as test data.

`tests/fixtures/workers_ai_models/` holds one file per model, copied unchanged (re-indented)
from Cloudflare's documentation (cloudflare/cloudflare-docs,
`src/content/workers-ai-models/*.json`, CC BY 4.0); `SOURCES.md` there gives the commit of
each file. An entry is what the catalogue API lists (id, name, description, task,
properties) plus `schema: {input, output}`, the JSON Schemas of the model's request and
answer that `GET /accounts/{id}/ai/models/schema?model=...` returns.

The fake upstream serves these entries and checks requests against their input schemas, so
that the gateway is tested against what Cloudflare says its models take, not against a
belief shared by the code and its fake.
"""

import copy
import functools
import json
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "fixtures" / "workers_ai_models"


@functools.cache
def _entries():
    entries = {}
    for path in sorted(FOLDER.glob("*.json")):
        entry = json.loads(path.read_text())
        entries[entry["name"]] = entry
    return entries


def names():
    """Return the model names (`@cf/...`, `@hf/...`) that have a file."""
    return list(_entries())


def entry(name):
    """Return a fresh copy of a model's whole entry, or None if no file has it."""
    found = _entries().get(name)
    return copy.deepcopy(found) if found is not None else None


def schema(name):
    """Return a fresh copy of {"input": ..., "output": ...} of a model, or None."""
    found = _entries().get(name)
    return copy.deepcopy(found["schema"]) if found is not None else None


def catalogue_entry(name):
    """Return the entry as the catalogue search lists it: without the schema."""
    found = entry(name)
    if found is not None:
        found.pop("schema", None)
    return found


def properties(name):
    """Return the entry's properties as {property_id: value}."""
    found = _entries().get(name) or {}
    return {p["property_id"]: p["value"] for p in found.get("properties", [])}
