"""Derives the OpenAPI document for the second conformance run from the BRP Personen spec.

JSON Schema does not enforce an OpenAPI `discriminator`, so generators draw bodies from the bare
`PersonenQuery` (any `type` string) and almost every one is refused before policy. This writes the
same document with the discriminator spelled out as JSON Schema says it:

- the request body of `POST /personen` is a `oneOf` over the seven query types of the mapping,
  each with `type` fixed to its name; the 200 answer likewise over the seven response types;
- `Field` is narrowed to the fields a case type may ask for (its `allowed_fields` in
  policies/entities.json), so that generated lookups and searches reach the Cedar decision and the
  registry instead of stopping at `fieldNotAllowed`.

Nothing else changes: every answer is still checked against the spec's own response schemas.

Usage: conformance_spec.py SPEC.yaml ENTITIES.json CASE_TYPE OUT.json
"""

import json
import sys

import yaml


def expand(schemas, name):
    """A oneOf over the discriminator mapping of `name`, `type` fixed per branch."""
    mapping = schemas[name]["discriminator"]["mapping"]
    branches = []
    for value, ref in mapping.items():
        branches.append(
            {
                "allOf": [
                    {"$ref": ref},
                    {"type": "object", "properties": {"type": {"const": value}}},
                ]
            }
        )
    return {"oneOf": branches}


def main():
    spec_path, entities_path, case_type, out_path = sys.argv[1:5]
    with open(spec_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    with open(entities_path, encoding="utf-8") as f:
        entities = json.load(f)
    allowed = next(
        e["attrs"]["allowed_fields"]
        for e in entities
        if e["uid"]["type"] == "Gate::CaseType" and e["uid"]["id"] == case_type
    )
    schemas = spec["components"]["schemas"]
    schemas["PersonenQueryByType"] = expand(schemas, "PersonenQuery")
    schemas["PersonenQueryResponseByType"] = expand(schemas, "PersonenQueryResponse")
    schemas["Field"] = dict(schemas["Field"], enum=sorted(allowed))

    post = spec["paths"]["/personen"]["post"]
    for media in post["requestBody"]["content"].values():
        media["schema"] = {"$ref": "#/components/schemas/PersonenQueryByType"}
    for media in post["responses"]["200"]["content"].values():
        media["schema"] = {"$ref": "#/components/schemas/PersonenQueryResponseByType"}

    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1, ensure_ascii=False, default=str)


if __name__ == "__main__":
    main()
