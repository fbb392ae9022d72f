"""Cut a subset out of Twilio's OpenAPI description: some GET paths and the schemas they use.

    python tests/twilio_oai/make_subset.py twilio_api_v2010.json OUT.json PATH [PATH ...]

The paths are kept whole (every method); of ``components.schemas`` only those reachable from
them through ``$ref`` (transitively) are kept; everything else at the top level is copied as
is, except ``tags``. ``info`` gains ``x-subset-of``. Only for refreshing the vendored files
beside this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_REF = "#/components/schemas/"
SOURCE = "twilio/twilio-oai spec/json/twilio_api_v2010.json @ {commit} (tag {tag}), MIT"


def refs(node: Any) -> set[str]:
    """Names of the component schemas ``node`` refers to directly."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
            found.add(ref[len(SCHEMA_REF):])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def subset(doc: dict[str, Any], paths: list[str], source: str) -> dict[str, Any]:
    kept_paths = {p: doc["paths"][p] for p in paths}
    schemas = doc["components"]["schemas"]
    wanted, todo = set(), refs(kept_paths)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo |= refs(schemas[name])
    return {
        "openapi": doc["openapi"],
        "info": {**doc["info"], "x-subset-of": source},
        "servers": doc["servers"],
        "security": doc["security"],
        "components": {**doc["components"],
                       "schemas": {k: schemas[k] for k in sorted(wanted)}},
        "paths": kept_paths,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    full, target, *paths = argv
    doc = json.loads(Path(full).read_text(encoding="utf-8"))
    source = SOURCE.format(commit="d50069b44ea8cd23141385bdb6db48f16ff75bb5", tag="2.6.7")
    Path(target).write_text(json.dumps(subset(doc, paths, source), indent=1),
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
