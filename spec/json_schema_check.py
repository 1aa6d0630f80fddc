"""Independent check for spec/94-json-schema_spec.lua: validates JSON texts
against a JSON Schema with python-jsonschema (Debian python3-jsonschema),
Draft 2020-12, formats checked.

usage: python3 spec/json_schema_check.py SCHEMA_FILE INSTANCES_FILE

INSTANCES_FILE holds one JSON text per line (split on LF only). Prints one
line per instance: "ok", "invalid <message>" or "bad-json <message>".
Exits 3 with a message when jsonschema is not installed.
"""
import json
import sys

try:
    import jsonschema
except ImportError:
    print("python3-jsonschema is not installed", file=sys.stderr)
    sys.exit(3)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    with open(sys.argv[2], encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError as e:
            print("bad-json", str(e).replace("\n", " "))
            continue
        err = jsonschema.exceptions.best_match(validator.iter_errors(value))
        print("ok" if err is None else "invalid " + err.message.replace("\n", " "))


main()
