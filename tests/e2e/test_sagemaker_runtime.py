"""The unmodified AWS clients (boto3, the AWS CLI, SigV4-signed requests) against a live local server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.e2e.conftest import README_EXAMPLE

DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def runtime(tiny_server):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=tiny_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_boto3_invoke_endpoint_returns_three_continuations(runtime):
    response = runtime.invoke_endpoint(
        EndpointName="gpt-2",
        ContentType="application/json",
        Body=json.dumps(README_EXAMPLE),
        CustomAttributes="trace=abc-123",
    )
    texts = json.loads(response["Body"].read())
    assert len(texts) == 3 and all(t.startswith(README_EXAMPLE["input"]) for t in texts)
    assert response["ContentType"] == "application/json"
    assert response["CustomAttributes"] == "trace=abc-123"
    assert response["InvokedProductionVariant"] == "AllTraffic"


def test_boto3_surfaces_a_container_400_as_model_error(runtime):
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(
            EndpointName="gpt-2", ContentType="application/json", Body=json.dumps({"input": "x", "top_p": 1.5})
        )
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["OriginalStatusCode"] == 400
    original = json.loads(error["OriginalMessage"])
    assert original["fields"]["top_p"] == ["must be > 0 and <= 1, got 1.5"]
    assert "top_p" in error["Error"]["Message"]


def test_boto3_jsonlines_batch_answers_each_line_in_order(runtime):
    lines = [
        {"input": "First line", "mode": "greedy", "max_new_tokens": 5},
        {"input": "Second line", "temprature": 0.5},
        {"input": "Third line", "max_new_tokens": 5, "num_return_sequences": 2},
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\n"
    response = runtime.invoke_endpoint(
        EndpointName="gpt-2", ContentType="application/jsonlines", Accept="application/jsonlines", Body=body
    )
    answer = [json.loads(line) for line in response["Body"].read().decode().splitlines()]
    assert len(answer) == 3
    assert len(answer[0]) == 1 and answer[0][0].startswith("First line")
    assert answer[1]["code"] == 400 and "temprature" in answer[1]["fields"] and answer[1]["line"] == 2
    assert len(answer[2]) == 2 and all(t.startswith("Third line") for t in answer[2])


def test_sigv4_signed_requests_call(tiny_server):
    url = f"{tiny_server.url}/endpoints/gpt-2/invocations"
    body = json.dumps({"input": "Signed request", "max_new_tokens": 4})
    signed = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("testing", "testing"), "sagemaker", "us-east-1").add_auth(signed)
    assert "Authorization" in signed.headers
    response = requests.post(url, data=body, headers=dict(signed.headers), timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()) == 3


def _aws(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    aws = Path(sys.executable).with_name("aws")
    return subprocess.run(
        [str(aws), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **DUMMY_AWS},
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _invoke_endpoint(url: str, body: dict, cwd: Path) -> subprocess.CompletedProcess:
    """`aws sagemaker-runtime invoke-endpoint` against the local server, answer in cwd/out.json."""
    return _aws(
        "sagemaker-runtime", "invoke-endpoint", "--endpoint-url", url, "--endpoint-name", "gpt-2",
        "--content-type", "application/json", "--body", json.dumps(body), "out.json", cwd=cwd,
    )  # fmt: skip


def test_aws_cli_invoke_endpoint(tiny_server, tmp_path):
    result = _invoke_endpoint(tiny_server.url, README_EXAMPLE, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ContentType"] == "application/json"
    texts = json.loads((tmp_path / "out.json").read_text())
    assert len(texts) == 3 and all(t.startswith(README_EXAMPLE["input"]) for t in texts)


def test_aws_cli_reports_a_model_error(tiny_server, tmp_path):
    result = _invoke_endpoint(tiny_server.url, {"input": "x", "mode": "greedy", "num_return_sequences": 2}, tmp_path)
    assert result.returncode != 0
    assert "ModelError" in result.stderr and "greedy yields one sequence" in result.stderr, result.stderr


def test_execution_parameters(tiny_server):
    response = requests.get(tiny_server.url + "/execution-parameters", timeout=5)
    assert response.status_code == 200
    params = response.json()
    assert set(params) == {"MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"}
    assert params["BatchStrategy"] == "MULTI_RECORD" and params["MaxPayloadInMB"] == 6
    assert params["MaxConcurrentTransforms"] >= 1
