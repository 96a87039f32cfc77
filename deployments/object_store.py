"""The scale profile's object store: an S3-compatible server and the S3Bucket block on it.

Scenario: results, checkpoints and background tasks' parameters must be readable by every
worker on every machine, so they cannot live in a local directory.

Solution: prefect-aws's `S3Bucket` block, saved as RESULTS_BLOCK, which the scale profile's
PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK and PREFECT_TASKS_SCHEDULING_DEFAULT_STORAGE_BLOCK
name. Locally it points at moto's S3 server (`moto[s3]`, the `scale` extra), which
deployments/scale.py starts; in production save the same block against S3 or MinIO.

How to run: `make up-scale` starts the server and saves the block.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

RESULTS_BLOCK = "resilient-flows-results"
"""The S3Bucket document the scale profile's storage settings name (profiles.toml)."""

CREDENTIALS_BLOCK = "resilient-flows-object-store"
BUCKET = "resilient-flows"


def wait_answering(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers, if not to a bare GET
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"nothing answers at {url} after {timeout:.0f} s")


def save_results_block(endpoint_url: str) -> None:
    """The bucket at `endpoint_url`, and the S3Bucket document the profile's settings name."""
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket
    from pydantic import SecretStr

    # moto accepts any key; a real store's keys go in this SecretStr field, never in code.
    credentials = AwsCredentials(
        aws_access_key_id="resilient-flows",
        aws_secret_access_key=SecretStr("resilient-flows"),
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url),
    )
    credentials.save(CREDENTIALS_BLOCK, overwrite=True)
    session = credentials.get_boto3_session()
    client = session.client("s3", endpoint_url=endpoint_url)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
    S3Bucket(bucket_name=BUCKET, credentials=credentials, bucket_folder="results").save(
        RESULTS_BLOCK, overwrite=True
    )
