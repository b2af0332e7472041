"""The pure parts of bench/coldstart.py: the cost estimate, the module list, the tables.

The numbers below are worked out by hand from Lambda's rules (1,769 MB = one vCPU for an
invocation; INIT with a burst of host CPU) and its us-east-1 prices, so a change to the
arithmetic or the constants fails here.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from bench.coldstart import (
    PRICE_PER_GB_S,
    Entry,
    cost_table,
    cpu_share_title,
    estimate,
    heavy_modules,
    init_table,
    lambda_cpu_table,
    main_table,
    markdown_table,
    parse_importtime,
    ratio,
)
from bench.lambda_runtime import FULL_VCPU_MB
from bench.runtimes import Function, Result, Run, Runtime, with_a_store
from rotators.cli.samtemplate import FunctionSpec
from rotators.engines import BY_NAME
from rotators.testing.tls import CertificateAuthority


def test_the_constants_are_lambdas() -> None:
    assert FULL_VCPU_MB == 1769
    assert PRICE_PER_GB_S == {"x86_64": 0.0000166667, "arm64": 0.0000133334}


def test_below_one_vcpu_only_the_invocations_cpu_time_stretches() -> None:
    cost = estimate(init_ms=500, first_ms=1000, first_cpu_ms=400, memory_mb=256)

    # INIT as measured, 600 ms of waiting as measured, 400 ms of CPU x 1769/256 (6.91015625)
    assert cost.memory_mb == 256
    assert cost.duration_ms == pytest.approx(500 + 600 + 2764.0625)
    assert cost.gb_s == pytest.approx(0.966015625)  # 0.25 GB x 3.8640625 s
    # 1,000 x (GB-s x price + 4 requests x $0.20 per million)
    assert cost.usd_per_1000["x86_64"] == pytest.approx(0.0169002926)
    assert cost.usd_per_1000["arm64"] == pytest.approx(0.0136802727)


@pytest.mark.parametrize("memory_mb", [128, 256, 1769, 4096])
def test_init_never_stretches_it_runs_with_lambdas_burst_cpu(memory_mb: int) -> None:
    short, long = estimate(100, 900, 300, memory_mb), estimate(1100, 900, 300, memory_mb)

    # a second more of INIT is a second more of duration, at any memory size
    assert long.duration_ms - short.duration_ms == pytest.approx(1000)
    assert estimate(800, 0, 0, memory_mb).duration_ms == pytest.approx(800)  # INIT alone stands


@pytest.mark.parametrize("memory_mb", [1769, 2048])
def test_from_one_vcpu_up_the_measured_time_stands(memory_mb: int) -> None:
    cost = estimate(init_ms=200, first_ms=300, first_cpu_ms=250, memory_mb=memory_mb)

    assert cost.duration_ms == pytest.approx(500)
    assert cost.gb_s == pytest.approx(memory_mb / 1024 * 0.5)
    assert cost.usd_per_1000["x86_64"] == pytest.approx(1000 * (cost.gb_s * 0.0000166667 + 4 * 0.2e-6))


def test_cpu_time_above_the_wall_time_all_stretches() -> None:
    # two threads on two cores here; one share of a vCPU runs them one after the other
    cost = estimate(init_ms=0, first_ms=300, first_cpu_ms=500, memory_mb=128)

    assert cost.duration_ms == pytest.approx(500 * 1769 / 128)
    assert cost.gb_s == pytest.approx(0.86376953125)
    assert cost.usd_per_1000["x86_64"] == pytest.approx(0.0151961876)


def test_more_memory_costs_less_time_and_arm64_less_money() -> None:
    costs = [estimate(300, 800, 500, memory) for memory in (128, 256, 512)]

    assert [c.duration_ms for c in costs] == sorted((c.duration_ms for c in costs), reverse=True)
    for cost in costs:
        assert cost.usd_per_1000["arm64"] < cost.usd_per_1000["x86_64"]


def test_a_run_splits_its_cpu_time_into_inits_and_the_first_rotations() -> None:
    result = Result("python3.13", "postgresql", 1.0)
    result.add(Run(300, 700, 200, 60.0, cpu_ms=500, init_cpu_ms=180))
    result.add(Run(250, None, None, None, init_cpu_ms=170))  # INIT only: no rotation to split

    assert result.init_cpu_ms == [180, 170]
    assert result.cpu_ms == [500]
    assert result.first_cpu_ms == [320]
    assert result.init_and_first_ms == [1000]


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import '_io' # <class '_frozen_importlib.BuiltinImporter'>
import time:       310 |        310 |   _io
import 'marshal' # <class '_frozen_importlib.BuiltinImporter'>
import time:        95 |         95 |   marshal
{"level":"INFO","message":"a log line of the function, not an import"}
# code object from /var/task/encodings/__init__.py
import 'encodings' # <_frozen_importlib_external.SourceFileLoader object at 0x7f0a>
import time:       812 |       1217 | encodings
import 'botocore.client' # <_frozen_importlib_external.SourceFileLoader object at 0x7f0b>
import time:      2250 |      40012 |     botocore.client
import time:       123 |        123 |         cryptography
import time:        53 |        175 |       cryptography.hazmat
import 'asyncio' # <_frozen_importlib_external.SourceFileLoader object at 0x7f0c>
import time:       120 |     120000 |   asyncio
import time:         3 |          3 |         botocore.client
import 'boto3' # <_frozen_importlib_external.SourceFileLoader object at 0x7f0d>
import time:        44 |         44 | boto3
import 'sys' # <class '_frozen_importlib.BuiltinImporter'>
"""


def test_the_module_list_is_of_the_imports_that_loaded_in_importtimes_order() -> None:
    modules = parse_importtime(IMPORTTIME)

    # cryptography was tried and is absent (-v never loaded it); sys predates -X importtime
    assert modules == ["_io", "marshal", "encodings", "botocore.client", "asyncio", "boto3"]


def test_heavy_modules_are_named_by_their_top_level_package_in_a_fixed_order() -> None:
    loaded = ["psycopg.pq", "botocore.client", "asyncio", "asyncio_helper", "rotators.log", "wrapt"]

    assert heavy_modules(loaded) == ["asyncio", "wrapt", "botocore", "psycopg"]
    assert heavy_modules(["json", "rotators"]) == []


def test_a_markdown_table_has_a_header_a_rule_and_a_line_per_row() -> None:
    table = markdown_table(["function", "INIT ms"], [["ours", "120 (110-130)"], ["sample", "180"]])

    assert table.splitlines() == [
        "| function | INIT ms |",
        "|---|---:|",
        "| ours | 120 (110-130) |",
        "| sample | 180 |",
    ]
    assert markdown_table(["a", "b", "c"], [], text_columns=2).splitlines()[1] == "|---|---|---:|"
    with pytest.raises(ValueError, match="one cell per header"):
        markdown_table(["a", "b"], [["only one"]])


def test_a_ratio_is_of_the_medians() -> None:
    assert ratio([100, 120, 500], [200, 240, 10]) == "0.60"  # 120 / 200
    assert ratio([100], []) == "-"


def entry(name: str, variant: str, *, sample: bool = False, **numbers: list[float]) -> Entry:
    runtime = Runtime("3.13", "python3.13", "3.13.0", Path("/runtime"))
    spec = FunctionSpec(name, "handler.handler", "python3.13", 60, 256, name, {})
    result = Result("python3.13", "postgresql", 12.34, variant, **numbers)
    function = Function(runtime, BY_NAME["postgresql"], spec, Path("/bundle"), result)
    return Entry(function, name, 5.678, sample=sample, modules=["json", "psycopg", "asyncio.events"])


def test_the_main_table_puts_our_ratios_to_the_sample_beside_each_variant() -> None:
    ours = entry("PostgreSQLRotator", "bytecode", init_ms=[100, 90, 110], init_and_first_ms=[300, 200, 250])
    source = entry("PostgreSQLRotator", "source", init_ms=[400], init_and_first_ms=[600])
    sample = entry("AwsSample", "AWS sample", sample=True, init_ms=[200], init_and_first_ms=[500])

    lines = main_table([ours, source, sample]).splitlines()

    assert len(lines) == 5
    assert lines[1].startswith("|---|---|---|---:|")  # function, Python and variant are text
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0][:4] == ["PostgreSQLRotator", "python3.13", "bytecode", "100 (90-110)"]
    assert cells[0][5] == "250 (200-300)"
    assert cells[0][9:] == ["12.3 (5.7)", "3", "asyncio, psycopg", "0.50", "0.50"]
    assert cells[1][-2:] == ["2.00", "1.20"]
    assert cells[2][-2:] == ["-", "-"]  # the sample is the reference, not compared with itself
    assert cells[2][4] == "-"  # no rotation numbers: shown as such


def test_the_cost_table_has_a_row_per_memory_size_and_marks_the_templates() -> None:
    measured = entry(
        "PostgreSQLRotator", "bytecode", init_ms=[500, 400, 600], cold_rotation_ms=[1000], first_cpu_ms=[400]
    )
    init_only = entry("AwsSample", "AWS sample", sample=True, init_ms=[200])

    lines = cost_table([measured, init_only], template_memory=256).splitlines()

    assert len(lines) == 2 + 3  # nothing to estimate for a function measured at INIT only
    row = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert row == [
        "PostgreSQLRotator",
        "python3.13",
        "bytecode",
        "256 (template)",
        "3864",
        "0.966",
        "0.0169",
        "0.0137",
    ]


def test_the_lambda_cpu_table_compares_each_row_with_the_sample_measured_the_same_way() -> None:
    ours = entry(
        "PostgreSQLRotator", "bytecode", init_ms=[300], cold_rotation_ms=[900], init_and_first_ms=[1200]
    )
    sample = entry(
        "AwsSample", "AWS sample", sample=True, init_ms=[100], cold_rotation_ms=[500], init_and_first_ms=[600]
    )

    lines = lambda_cpu_table([ours, sample]).splitlines()

    assert lines[0] == (
        "| function | Python | variant | INIT ms | first rotation ms (4 steps, cold) "
        "| INIT + first rotation ms | INIT + first ÷ sample |"
    )
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0] == [
        "PostgreSQLRotator", "python3.13", "bytecode", "300 (300-300)", "900 (900-900)", "1200 (1200-1200)",
        "2.00",
    ]  # fmt: skip
    assert lines[3].endswith("| 600 (600-600) | - |")
    assert cpu_share_title(256) == (
        "As Lambda runs it at 256 MB (INIT with burst CPU, invocations at 14.5 % of a CPU)"
    )


def test_the_init_table_has_every_bundle_with_its_median_spread_and_size(tmp_path: Path) -> None:
    """The bundles no server here can rotate (SQL Server, Oracle ...) get their INIT and size too."""
    for name, size in (("SQLServerRotator", 3 * 2**20), ("OracleRotator", 2**20 // 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "module.py").write_bytes(b"x" * size)
    runtime = Runtime(version="3.13", python="python3.13", full_version="3.13.0", client=tmp_path)
    table = init_table(runtime, tmp_path, {"SQLServerRotator": [260, 240, 300], "OracleRotator": [310]})

    lines = table.splitlines()
    assert lines[0] == "| function | Python | INIT ms (malformed event) | bundle MB unzipped | zipped MB |"
    assert lines[2].startswith("| SQLServerRotator | python3.13 | 260 (240-300) | 3.0 | ")
    assert lines[3].startswith("| OracleRotator | python3.13 | 310 (310-310) | 0.5 | ")
    assert len(lines) == 4


def test_the_functions_trust_a_bundle_the_size_of_a_real_one(tmp_path: Path) -> None:
    """Every login loads its whole CA bundle: a one-certificate bundle would hide that cost."""
    store = ssl.get_default_verify_paths().cafile
    if store is None or not Path(store).is_file():
        pytest.skip("this machine has no trust store file: the bench then uses the CA alone")
    ca = CertificateAuthority.create(tmp_path)
    bundle = with_a_store(ca.cert_path)
    text = bundle.read_text()
    assert text.startswith(ca.cert_path.read_text())
    assert text.count("BEGIN CERTIFICATE") > 100
