"""Print template.yaml as CloudFormation after the SAM transform, so policy scanners see the
roles and policies that SAM generates (a scan of the SAM template alone misses them).

Runs in the SAM tools venv (.venv-sam): `python sam/transform.py template.yaml > out.json`.
Only policy templates and Refs are used, so no AWS managed-policy lookup (no network) is needed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def main(path: str) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the translator wants one; no call is made
    template: dict[str, Any] = yaml_parse(Path(path).read_text())
    # As `sam validate` does: local code paths become a placeholder S3 location.
    sections = [template.get("Globals", {}).get("Function", {})]
    sections += [r.get("Properties", {}) for r in template["Resources"].values()]
    for properties in sections:
        if isinstance(properties.get("CodeUri"), str) and not properties["CodeUri"].startswith("s3://"):
            properties["CodeUri"] = "s3://placeholder-bucket/code.zip"
    output = transform(template, {}, _NoManagedPolicies())  # type: ignore[arg-type]
    json.dump(output, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
