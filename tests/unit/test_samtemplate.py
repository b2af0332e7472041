"""template.yaml read as `sam local invoke` reads it, and the files that must agree with it."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rotators.cli.invoke import LambdaContext, resolve_environment
from rotators.cli.samtemplate import DEFAULT_RUNTIME, SamTemplate, parse_parameter_overrides
from rotators.cli.wire import ENGINES, rotation_rules
from rotators.database import DatabaseRotator
from rotators.engines import ENGINES as REGISTRY
from rotators.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


@pytest.fixture(scope="module")
def template() -> SamTemplate:
    return SamTemplate.load(TEMPLATE)


def test_every_engine_has_a_function_with_its_handler_from_globals(template: SamTemplate) -> None:
    for engine, expected in ENGINES.items():
        spec = template.function(expected.logical_id)
        assert spec.handler == expected.handler, engine
        assert spec.runtime == DEFAULT_RUNTIME, "Globals apply to every function"
        assert spec.timeout == 60 and spec.memory == 256
        assert spec.architectures == ("x86_64",)
    assert template.function("ApiKeyExampleRotator").condition == "DeployApiKeyExample"


def test_sam_build_makes_wheels_for_the_template_runtime() -> None:
    """sam/Makefile picks the wheels' CPython; a bundle for another one would not import on Lambda."""
    makefile = (ROOT / "sam" / "Makefile").read_text()
    version = re.search(r"^LAMBDA_PYTHON \?= (\S+)", makefile, re.MULTILINE)
    assert version is not None
    assert f"python{version.group(1)}" == DEFAULT_RUNTIME


def test_function_name_resolves_sub_with_parameter_default_and_override() -> None:
    assert SamTemplate.load(TEMPLATE).function("MySQLRotator").function_name == "rotators-mysql"
    overridden = SamTemplate.load(TEMPLATE, {"FunctionNamePrefix": "team-a"})
    assert overridden.function("MySQLRotator").function_name == "team-a-mysql"


def test_environment_defaults_and_conditional_variables(template: SamTemplate) -> None:
    variables = template.function("PostgreSQLRotator").variables
    assert variables["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert variables["POWERTOOLS_SERVICE_NAME"] == "rotators"
    assert variables["SECRETS_MANAGER_ENDPOINT"] == "", "declared, so --env-vars can set it"
    assert variables["EXCLUDE_CHARACTERS"] == DatabaseRotator.excluded_characters, (
        "the engines' default, spelled out: SAM's local runs cannot resolve Fn::If in variables"
    )

    overridden = SamTemplate.load(TEMPLATE, {"ExcludeCharacters": "/@", "LogLevel": "DEBUG"})
    variables = overridden.function("PostgreSQLRotator").variables
    assert variables["EXCLUDE_CHARACTERS"] == "/@"
    assert variables["POWERTOOLS_LOG_LEVEL"] == "DEBUG"


def test_conditions_follow_list_parameters() -> None:
    assert not SamTemplate.load(TEMPLATE).condition("HasVpc")
    with_vpc = SamTemplate.load(TEMPLATE, parse_parameter_overrides("SubnetIds=subnet-1,subnet-2"))
    assert with_vpc.condition("HasVpc")
    assert with_vpc.resolve({"Fn::Select": [1, {"Ref": "SubnetIds"}]}) == "subnet-2"


def test_sub_pseudo_parameters_and_unresolvable_attributes(template: SamTemplate) -> None:
    assert template.resolve({"Fn::Sub": "${AWS::Region}:${AWS::AccountId}:${!Literal}"}) == (
        "us-east-1:123456789012:${Literal}"
    )
    assert template.resolve({"Fn::Sub": ["${A}-x", {"A": {"Ref": "LogLevel"}}]}) == "INFO-x"
    data = {
        "Resources": {
            "F": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "Handler": "m.h",
                    "Environment": {
                        "Variables": {"ARN": {"Fn::GetAtt": ["Other", "Arn"]}, "N": 5, "B": True}
                    },
                },
            }
        }
    }
    assert SamTemplate(data).function("F").variables == {"ARN": "", "N": "5", "B": "true"}, (
        "SAM's rules: unresolved intrinsics are empty, booleans lower case"
    )


def test_unknown_function_and_parameter_are_refused(template: SamTemplate) -> None:
    with pytest.raises(ConfigurationError, match=r"choose one of .*PostgreSQLRotator"):
        template.function("MySQL")
    with pytest.raises(ConfigurationError, match="unknown parameters: Nope"):
        SamTemplate.load(TEMPLATE, {"Nope": "1"})


def test_parameter_overrides_both_spellings() -> None:
    assert parse_parameter_overrides(
        "LogLevel=DEBUG ParameterKey=ExcludeCharacters,ParameterValue=/@ 'ScheduleExpression=rate(7 days)'"
    ) == {"LogLevel": "DEBUG", "ExcludeCharacters": "/@", "ScheduleExpression": "rate(7 days)"}
    with pytest.raises(ConfigurationError):
        parse_parameter_overrides("LogLevel")


def test_env_vars_precedence_is_sams(template: SamTemplate) -> None:
    spec = template.function("PostgreSQLRotator")
    shell = {"POWERTOOLS_LOG_LEVEL": "WARNING", "SECRETS_MANAGER_ENDPOINT": "http://shell", "HOME": "/root"}
    env_vars = {
        "Parameters": {
            "SECRETS_MANAGER_ENDPOINT": "http://file-global",
            "PASSWORD_LENGTH": "40",
            "EXTRA": "1",
        },
        "PostgreSQLRotator": {"SECRETS_MANAGER_ENDPOINT": "http://file-function"},
        "MySQLRotator": {"PASSWORD_LENGTH": "99"},
    }
    resolved, ignored = resolve_environment(spec, env_vars, shell)
    assert resolved["SECRETS_MANAGER_ENDPOINT"] == "http://file-function", "the function's entry wins"
    assert resolved["PASSWORD_LENGTH"] == "40", "then the file's Parameters"
    assert resolved["POWERTOOLS_LOG_LEVEL"] == "WARNING", "then the shell"
    assert resolved["POWERTOOLS_SERVICE_NAME"] == "rotators", "then the template"
    assert "HOME" not in resolved, "only declared variables"
    assert ignored == ["EXTRA"]

    by_name = {"rotators-postgresql": {"PASSWORD_LENGTH": "50"}}
    assert resolve_environment(spec, by_name, {})[0]["PASSWORD_LENGTH"] == "50", "FunctionName works too"


def test_sample_env_file_sets_only_declared_variables_of_real_functions(template: SamTemplate) -> None:
    """SAM silently ignores anything else, so a typo there would never take effect."""
    env_vars = json.loads((ROOT / "events" / "env.json").read_text())
    functions = set(template.function_ids())
    for key, variables in env_vars.items():
        assert key == "Parameters" or key in functions, key
        targets = functions if key == "Parameters" else {key}
        for logical_id in targets:
            declared = set(template.function(logical_id).variables)
            assert set(variables) <= declared, (logical_id, set(variables) - declared)


def test_sample_events_are_the_four_steps_of_one_rotation() -> None:
    events = {p.stem: json.loads(p.read_text()) for p in (ROOT / "events").glob("*Secret.json")}
    assert sorted(events) == ["createSecret", "finishSecret", "setSecret", "testSecret"]
    assert {e["Step"] for e in events.values()} == set(events)
    assert len({(e["SecretId"], e["ClientRequestToken"]) for e in events.values()}) == 1


def test_build_makefile_has_a_target_per_function_with_the_templates_handler(template: SamTemplate) -> None:
    makefile = (ROOT / "sam" / "Makefile").read_text()
    targets = dict(re.findall(r"^build-(\w+):\n\t\$\(BUNDLE\) --handler (\S+)", makefile, re.MULTILINE))
    assert targets == {i: template.function(i).handler for i in template.function_ids()}
    for logical_id in template.function_ids():
        metadata = template.data["Resources"][logical_id]["Metadata"]
        assert metadata["BuildMethod"] == "makefile" and metadata["ContextPath"] == "sam"


def test_every_rotator_has_an_exported_output_and_an_invoke_permission(template: SamTemplate) -> None:
    resources, outputs = template.data["Resources"], template.data["Outputs"]
    for engine in ENGINES.values():
        output = outputs[engine.output_key]
        assert output["Value"] == {"Fn::GetAtt": [engine.logical_id, "Arn"]}
        assert "Export" in output
        permission = resources[f"{engine.logical_id}InvokePermission"]["Properties"]
        assert permission["Principal"] == "secretsmanager.amazonaws.com"
        assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_the_engine_parameter_wires_a_secret_to_that_engines_rotator() -> None:
    """Engine offers every engine of the registry, and SecretRotationSchedule picks its function."""
    parameter = SamTemplate.load(TEMPLATE).data["Parameters"]["Engine"]
    assert parameter["AllowedValues"] == [engine.name for engine in REGISTRY]
    for engine in REGISTRY:
        template = SamTemplate.load(TEMPLATE, {"SecretArn": "arn:s", "Engine": engine.name})
        schedule = template.data["Resources"]["SecretRotationSchedule"]
        chosen = schedule["Properties"]["RotationLambdaARN"]
        while "Fn::If" in chosen:
            name, if_true, if_false = chosen["Fn::If"]
            chosen = if_true if template.condition(name) else if_false
        assert chosen == {"Fn::GetAtt": [engine.logical_id, "Arn"]}, engine.name
        assert f"{engine.logical_id}InvokePermission" in schedule["DependsOn"], engine.name


def test_each_role_may_rotate_only_the_secrets_attached_to_its_own_function(template: SamTemplate) -> None:
    with_vpc = SamTemplate.load(TEMPLATE, {"SubnetIds": "subnet-1", "MasterSecretArns": "arn:m"})
    for engine in ENGINES.values():
        function = template.data["Resources"][engine.logical_id]["Properties"]
        role = template.data["Resources"][f"{engine.logical_id}Role"]["Properties"]
        statement = role["Policies"][0]["PolicyDocument"]["Statement"][0]
        allowed = statement["Condition"]["StringEquals"]["secretsmanager:resource/AllowRotationLambdaArn"]
        assert template.resolve(allowed).endswith(":function:" + template.resolve(function["FunctionName"]))

        assert not any("VPCAccess" in str(a) for a in attached(template, role["ManagedPolicyArns"]))
        with_both = attached(with_vpc, role["ManagedPolicyArns"])
        assert any("VPCAccess" in str(a) for a in with_both), "VPC access exactly when SubnetIds is given"
        reads_masters = {"Ref": "MasterSecretsReadPolicy"} in with_both
        assert reads_masters == (engine.logical_id != "ApiKeyExampleRotator"), "the example reads no master"


def attached(template: SamTemplate, arns: list[Any]) -> list[Any]:
    """The managed policies a role gets with these parameters (Refs to policies left as they are)."""
    chosen = []
    for item in arns:
        arn = item
        if isinstance(item, dict) and "Fn::If" in item:
            name, if_true, if_false = item["Fn::If"]
            arn = if_true if template.condition(name) else if_false
        if arn != {"Ref": "AWS::NoValue"}:
            chosen.append(template.resolve(arn) if "Fn::Sub" in str(arn) else arn)
    return chosen


def test_samconfig_defaults() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]
    assert config["build"]["parameters"] == {"cached": True, "parallel": True}
    assert config["validate"]["parameters"]["lint"] is True
    deploy = config["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM" and deploy["resolve_s3"] and deploy["confirm_changeset"]
    assert config["local_invoke"]["parameters"]["env_vars"] == "events/env.json"
    assert config["global"]["parameters"]["stack_name"] == "rotators"


def test_rotation_rules_from_the_schedule_flag() -> None:
    assert rotation_rules("rate(30 days)", None) == {"ScheduleExpression": "rate(30 days)"}
    assert rotation_rules("30", "3h") == {"AutomaticallyAfterDays": 30, "Duration": "3h"}


def test_lambda_context_counts_down_from_the_timeout() -> None:
    context = LambdaContext("F", 256, "arn:aws:lambda:us-east-1:123456789012:function:F", "id", "g", "s", 60)
    assert 59_000 < context.get_remaining_time_in_millis() <= 60_000


SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"


@pytest.mark.skipif(
    not SAM_PYTHON.exists(), reason="needs the SAM CLI venv (.venv-sam), which `make sam-check` installs"
)
@pytest.mark.parametrize(
    "overrides", [[], ["LogLevel=DEBUG", "FunctionNamePrefix=team-a", "ExcludeCharacters=%"]]
)
def test_invoke_reads_each_function_as_sam_cli_itself_does(overrides: list[str]) -> None:
    import subprocess

    done = subprocess.run(
        [str(SAM_PYTHON), str(ROOT / "sam" / "local_functions.py"), str(TEMPLATE), *overrides],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    sam_view = json.loads(done.stdout)
    ours = SamTemplate.load(TEMPLATE, parse_parameter_overrides(" ".join(overrides)))
    assert sorted(sam_view) == sorted(ours.function_ids())
    for logical_id, expected in sam_view.items():
        spec = ours.function(logical_id)
        found = {
            "handler": spec.handler,
            "runtime": spec.runtime,
            "timeout": spec.timeout,
            "memory": spec.memory,
            "function_name": spec.function_name,
            "variables": dict(spec.variables),
        }
        assert found == expected, logical_id


# -- IAM: what each role may do with which secret and key ---------------------------------------------
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
MASTER = "arn:aws:secretsmanager:us-east-1:123456789012:secret:master-??????"


def statements(template: SamTemplate) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM statement of the template (roles' inline policies and managed policies), resolved."""
    found: list[tuple[str, dict[str, Any]]] = []
    for name, resource in template.data["Resources"].items():
        properties = resource.get("Properties", {})
        documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents.append(properties["PolicyDocument"])
        for document in documents:
            found += [(name, s) for s in template.resolve(document)["Statement"]]
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    listed = statement["Action"]
    return [listed] if isinstance(listed, str) else list(listed)


def test_every_database_role_is_postgresqls_with_its_own_function_name(template: SamTemplate) -> None:
    """test_template_permissions.py measures PostgreSQL's role against real calls: this covers the rest."""
    resources = template.data["Resources"]
    model = json.dumps(resources["PostgreSQLRotatorRole"], sort_keys=True)
    for engine, expected in ENGINES.items():
        if expected.logical_id == "ApiKeyExampleRotator":
            continue
        role = json.dumps(resources[f"{expected.logical_id}Role"], sort_keys=True)
        renamed = role.replace("${FunctionNamePrefix}-" + engine, "${FunctionNamePrefix}-postgresql")
        assert renamed == model, engine


def test_master_secrets_are_only_read_and_only_their_current_value() -> None:
    without_keys = SamTemplate.load(TEMPLATE, {"MasterSecretArns": MASTER})
    with_keys = SamTemplate.load(TEMPLATE, {"MasterSecretArns": MASTER, "KmsKeyArns": KMS_KEY})
    (read,) = [s for name, s in statements(without_keys) if name == "MasterSecretsReadPolicy"]
    assert read["Action"] == "secretsmanager:GetSecretValue", "no DescribeSecret, no write"
    assert read["Resource"] == [MASTER]
    assert read["Condition"] == {"ForAnyValue:StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}
    read_with_keys, decrypt = [s for name, s in statements(with_keys) if name == "MasterSecretsReadPolicy"]
    assert read_with_keys == read
    assert decrypt["Action"] == "kms:Decrypt", "a master secret is never written"
    assert decrypt["Resource"] == [KMS_KEY]
    assert decrypt["Condition"]["StringLike"] == {"kms:EncryptionContext:SecretARN": [MASTER]}


def test_kms_keys_serve_only_secrets_manager_and_only_for_secrets() -> None:
    """As AWS's rotation examples: the SecretARN encryption context, through Secrets Manager only."""
    template = SamTemplate.load(TEMPLATE, {"MasterSecretArns": MASTER, "KmsKeyArns": KMS_KEY})
    every = statements(template)
    kms = [(name, s) for name, s in every if any(a.startswith("kms:") for a in actions(s))]
    assert {name for name, _ in kms} == {"KmsKeysPolicy", "MasterSecretsReadPolicy"}
    for name, statement in kms:
        assert statement["Resource"] == [KMS_KEY], name
        condition = statement["Condition"]
        assert condition["StringEquals"] == {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}, name
        assert set(condition) == {"StringEquals", "StringLike"}, name
    (rotated,) = [s for name, s in kms if name == "KmsKeysPolicy"]
    assert sorted(rotated["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"], "read and PutSecretValue"
    rotatable = {s["Resource"] for _, s in every if "secretsmanager:PutSecretValue" in actions(s)}
    assert rotatable == {"arn:aws:secretsmanager:us-east-1:123456789012:secret:*"}
    assert rotated["Condition"]["StringLike"] == {"kms:EncryptionContext:SecretARN": rotatable.pop()}


def test_the_api_key_example_role_gets_only_what_the_issuer_uses() -> None:
    template = SamTemplate.load(
        TEMPLATE, {"DeployApiKeyExample": "true", "MasterSecretArns": MASTER, "KmsKeyArns": KMS_KEY}
    )
    role = template.data["Resources"]["ApiKeyExampleRotatorRole"]["Properties"]
    ours = [a for a in attached(template, role["ManagedPolicyArns"]) if isinstance(a, dict)]
    assert ours == [{"Ref": "KmsKeysPolicy"}], "its own secrets' key, no master secret"
    granted = {a for name, s in statements(template) if name.startswith("ApiKeyExample") for a in actions(s)}
    assert "secretsmanager:GetRandomPassword" not in granted, "the service mints the keys"
