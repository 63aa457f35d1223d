#!/usr/bin/env python3
"""Validates docs/openapi.yaml with openapi-spec-validator, then each given JSON body against one of
its component schemas with openapi-schema-validator (OpenAPI 3.1 dialect).

    check_openapi.py SPEC [SCHEMA BODY_FILE]...

Exits 1 with every error printed when the spec or a body does not validate. Run by the browser
test (tests/browser/main.rs) on live responses of the daemon.
"""
import json
import sys

import yaml
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def main(argv):
    if len(argv) < 2 or len(argv) % 2 != 0:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    validate(spec)
    print(f"{argv[1]}: valid OpenAPI {spec['openapi']}")
    # Component schemas refer to each other as "#/components/schemas/X": resolve them in the spec.
    registry = Registry().with_resource("urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012))
    failures = 0
    for name, path in zip(argv[2::2], argv[3::2]):
        if name not in spec["components"]["schemas"]:
            print(f"{path}: no component schema {name!r}", file=sys.stderr)
            failures += 1
            continue
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
        validator = OAS31Validator({"$ref": f"urn:spec#/components/schemas/{name}"}, registry=registry)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        for error in errors:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            print(f"{path}: {name} at {where}: {error.message}", file=sys.stderr)
        failures += len(errors)
        if not errors:
            print(f"{path}: matches {name}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
