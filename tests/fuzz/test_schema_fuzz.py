"""schemathesis against the server's own OpenAPI schema (`/openapi.json`): every REST
operation with generated valid and invalid parameters, headers and bodies, authenticated
with the bearer token; schemathesis' checks (no 5xx, answers that match the schema) plus the
fuzzers' oracles (tests/fuzz/harness.py).

Through schemathesis' Python API (operation strategies drawn in a Hypothesis test): its
pytest integration (`schemathesis.pytest.from_fixture`) fails on pytest 9 (`Function` has
no `_nodeid` any more)."""

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.fuzz import harness
from tests.fuzz.harness import AUTH, fuzz_settings

pytestmark = pytest.mark.slow  # every test talks to the run's gd-serve subprocess


@pytest.fixture(scope="module")
def operations(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    # The live feed (Server-Sent Events) never ends: a request-response fuzzer can only time
    # out on it; tests/server/events/test_api.py reads it as a client does.
    ops = [result.ok() for result in schema.get_all_operations()]
    return [op for op in ops if op.path != "/v1/events/feed"]


@fuzz_settings(max_examples=2 * harness.EXAMPLES)
@given(data=st.data())
def test_openapi(fuzz_server, operations, data):
    operation = data.draw(st.sampled_from(operations), label="operation")
    mode = data.draw(st.sampled_from(list(GenerationMode)), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")

    label = f"openapi {case.method} {case.path} ({mode})"

    def send(_client):
        return case.call(base_url=fuzz_server.url, headers=AUTH, timeout=harness.REQUEST_TIMEOUT_S)

    response = harness.check_http(fuzz_server, label, send)
    if response is None:
        return
    try:
        # Not "schema-valid data is accepted": the schema says `file` is any bytes, and the
        # server rightly refuses bytes that are no depth video (415/422).
        case.validate_response(response, headers=AUTH, excluded_checks=[positive_data_acceptance])
    except FailureGroup as e:
        harness.fail(fuzz_server, label, str(e)[:3000], None)
