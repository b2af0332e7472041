"""Print how SAM CLI itself reads each function of a template for `sam local invoke`, as JSON.

Runs in the SAM tools venv: `.venv-sam/bin/python sam/local_functions.py template.yaml [K=V ...]`.
tests/unit/test_samtemplate.py compares it with rotators.cli.samtemplate, the reader behind
`rotators invoke`, so the Docker-free twin sees the same handler and environment as SAM.
"""

from __future__ import annotations

import json
import sys

from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
from samcli.local.lambdafn.env_vars import EnvironmentVariables


def main(path: str, overrides: list[str]) -> int:
    parameters = dict(item.split("=", 1) for item in overrides)
    stacks, _ = SamLocalStackProvider.get_stacks(path, parameter_overrides=parameters)
    found = {}
    for function in SamFunctionProvider(stacks).get_all():
        variables = (function.environment or {}).get("Variables", {})
        resolved = EnvironmentVariables(variables=variables).resolve()  # SAM's own stringify
        found[function.name] = {
            "handler": function.handler,
            "runtime": function.runtime,
            "timeout": function.timeout,
            "memory": function.memory,
            "function_name": function.functionname,
            "variables": {k: resolved[k] for k in variables},
        }
    json.dump(found, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
