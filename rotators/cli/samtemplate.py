"""Read a SAM template as `sam local invoke` does: a function's handler, settings and environment.

Resolves what a function's environment needs without AWS: `Ref` to parameters (defaults, or
overrides) and pseudo parameters, `Fn::If` with the template's Conditions, `Fn::Sub`,
`Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::FindInMap`. What only AWS knows (`Fn::GetAtt`,
`Fn::ImportValue`) resolves to an empty string, as in SAM. Globals are merged into each function
the way SAM merges them (maps key by key, the function's value winning).

Used by the `rotators` command and the bundle benchmark; never by a Lambda handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotators.errors import ConfigurationError

# The Lambda runtime of template.yaml (Globals), for a function run without the template.
DEFAULT_RUNTIME = "python3.13"
LOCAL_ACCOUNT_ID = "123456789012"  # what SAM uses for AWS::AccountId locally
FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}


class Unresolvable(Exception):
    """A value only AWS can know (an attribute of a deployed resource, an export)."""


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


def _loader() -> type[Any]:
    try:
        import yaml
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigurationError(
            "Reading template.yaml needs PyYAML: pip install 'rotators[local]'"
        ) from None

    class CfnLoader(yaml.SafeLoader):
        """CloudFormation's short tags (!Ref, !Sub, !If, ...) become their long forms."""

    def construct(loader: Any, tag_suffix: str, node: Any) -> dict[str, Any]:
        name = (
            "Ref"
            if tag_suffix == "Ref"
            else ("Condition" if tag_suffix == "Condition" else "Fn::" + tag_suffix)
        )
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag_suffix == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    CfnLoader.add_multi_constructor("!", construct)
    return CfnLoader


def load_yaml(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class FunctionSpec:
    """What `sam local invoke` needs to know about one function."""

    logical_id: str
    handler: str
    runtime: str
    timeout: int
    memory: int
    function_name: str
    variables: Mapping[str, str]
    architectures: tuple[str, ...] = ()
    condition: str | None = None


@dataclass
class SamTemplate:
    data: dict[str, Any]
    parameter_overrides: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    stack_name: str = "local"
    path: Path | None = None

    @classmethod
    def load(
        cls, path: str | Path, parameter_overrides: Mapping[str, str] | None = None, region: str = "us-east-1"
    ) -> SamTemplate:
        file = Path(path)
        if not file.is_file():
            raise ConfigurationError(
                f"No template at {str(file)!r}: pass --template with the path of template.yaml"
            )
        data = load_yaml(file.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
            raise ConfigurationError(f"{file} is not a CloudFormation/SAM template (no Resources)")
        template = cls(data, dict(parameter_overrides or {}), region, path=file)
        unknown = set(template.parameter_overrides) - set(template.data.get("Parameters", {}))
        if unknown:
            raise ConfigurationError(
                f"--parameter-overrides names unknown parameters: {', '.join(sorted(unknown))}"
            )
        return template

    # -- functions ------------------------------------------------------------------------------
    def function_ids(self) -> list[str]:
        return [
            name
            for name, resource in self.data["Resources"].items()
            if isinstance(resource, dict) and resource.get("Type") in FUNCTION_TYPES
        ]

    def function(self, logical_id: str) -> FunctionSpec:
        resource = self.data["Resources"].get(logical_id)
        if not isinstance(resource, dict) or resource.get("Type") not in FUNCTION_TYPES:
            raise ConfigurationError(
                f"{logical_id!r} is not a function in {self.path or 'the template'}: "
                f"choose one of {', '.join(self.function_ids())}"
            )
        properties = dict(resource.get("Properties") or {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties = merge_globals(self.data.get("Globals", {}).get("Function", {}), properties)
        handler = self._string(properties.get("Handler"))
        if not handler:
            raise ConfigurationError(f"{logical_id} has no Handler")
        variables = (properties.get("Environment") or {}).get("Variables") or {}
        resolved_vars: dict[str, str] = {}
        for name, value in variables.items():
            try:
                resolved = self.resolve(value)
            except Unresolvable:
                resolved = ""
            if resolved is not NO_VALUE:
                resolved_vars[str(name)] = stringify(resolved)
        architectures = self.resolve(properties.get("Architectures", ["x86_64"]))
        return FunctionSpec(
            logical_id=logical_id,
            handler=handler,
            runtime=self._string(properties.get("Runtime")),
            timeout=int(self._string(properties.get("Timeout")) or 3),
            memory=int(self._string(properties.get("MemorySize")) or 128),
            function_name=self._string(properties.get("FunctionName")) or logical_id,
            variables=resolved_vars,
            architectures=tuple(str(a) for a in architectures) if isinstance(architectures, list) else (),
            condition=resource.get("Condition"),
        )

    def _string(self, value: Any) -> str:
        try:
            resolved = self.resolve(value)
        except Unresolvable:
            return ""
        return "" if resolved is NO_VALUE or resolved is None else stringify(resolved)

    # -- parameters and conditions ----------------------------------------------------------------
    def parameter(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": LOCAL_ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{self.region}:{LOCAL_ACCOUNT_ID}:stack/{self.stack_name}/local"
            ),
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        declared = self.data.get("Parameters", {}).get(name)
        if declared is None:
            raise Unresolvable(name)  # a resource: its physical id is only known once deployed
        if name in self.parameter_overrides:
            value: Any = self.parameter_overrides[name]
        elif "Default" in declared:
            value = declared["Default"]
        else:
            raise ConfigurationError(
                f"Parameter {name} has no default: pass --parameter-overrides {name}=..."
            )
        kind = str(declared.get("Type", "String"))
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            text = stringify(value)
            return [] if text == "" else [part.strip() for part in text.split(",")]
        return stringify(value)

    def condition(self, name: str) -> bool:
        conditions = self.data.get("Conditions", {})
        if name not in conditions:
            raise ConfigurationError(f"Condition {name!r} is not defined in the template")
        return bool(self.resolve(conditions[name]))

    # -- intrinsic functions ----------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:  # noqa: PLR0911, PLR0912 - one branch per intrinsic
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        ((key, arg),) = value.items()
        if key == "Ref":
            return self.parameter(str(arg))
        if key == "Condition":
            return self.condition(str(arg))
        if key == "Fn::If":
            name, if_true, if_false = arg
            return self.resolve(if_true if self.condition(name) else if_false)
        if key == "Fn::Equals":
            left, right = (stringify(self.resolve(a)) for a in arg)
            return left == right
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(a) for a in arg)
        if key == "Fn::Or":
            return any(self.resolve(a) for a in arg)
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::Join":
            delimiter, items = arg
            resolved_items = self.resolve(items)
            return str(delimiter).join(stringify(i) for i in resolved_items)
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(stringify(self.resolve(index)))]
        if key == "Fn::Split":
            delimiter, text = arg
            return stringify(self.resolve(text)).split(delimiter)
        if key == "Fn::FindInMap":
            map_name, first, second = (stringify(self.resolve(a)) for a in arg)
            return self.data.get("Mappings", {})[map_name][first][second]
        if key in {"Fn::GetAtt", "Fn::ImportValue", "Fn::GetAZs", "Fn::Base64", "Fn::Cidr"}:
            raise Unresolvable(key)
        return {key: self.resolve(arg)}

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, local_vars = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, local_vars = arg, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local_vars:
                return stringify(local_vars[name])
            if "." in name:
                raise Unresolvable(name)
            return stringify(self.parameter(name))

        return re.sub(r"\$\{([^}]+)\}", replace, str(text))


def merge_globals(global_props: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals: maps merge key by key, lists concatenate, anything else the function wins."""
    merged: dict[str, Any] = dict(global_props)
    for key, value in props.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = merge_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = current + value
        else:
            merged[key] = value
    return merged


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)).startswith(("Fn::", "Ref", "Condition"))


def stringify(value: Any) -> str:
    """A value as Lambda sees an environment variable (SAM's rules: booleans in lower case,
    lists and unresolved intrinsics empty)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None or isinstance(value, dict | list | tuple):
        return ""
    return str(value)


def parse_parameter_overrides(text: str | None) -> dict[str, str]:
    """SAM's two spellings: `Key=Value Key2=Value2` and
    `ParameterKey=Key,ParameterValue=Value ...` (quote values that hold spaces)."""
    import shlex

    result: dict[str, str] = {}
    for item in shlex.split(text or ""):
        long_form = re.fullmatch(r"ParameterKey=([^,]+),ParameterValue=(.*)", item)
        if long_form:
            result[long_form.group(1)] = long_form.group(2)
        elif "=" in item:
            key, value = item.split("=", 1)
            result[key] = value
        else:
            raise ConfigurationError(f"--parameter-overrides item {item!r} is not Key=Value")
    return result
