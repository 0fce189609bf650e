"""The S3 half of `cargo bench --bench cluster`: boto3 with its default
transfer settings (multipart above 8 MiB, 10 threads) against a running
dfs cluster. Prints one JSON object: seconds for the big upload (through
DFS_S3) and download (through DFS_S3_OTHER), and the latency in seconds of
each small PutObject and GetObject, sequential on one client."""

import json
import os
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ["DFS_KEY_ID"],
        aws_secret_access_key=os.environ["DFS_SECRET"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def main():
    s3 = client(os.environ["DFS_S3"])
    other = client(os.environ["DFS_S3_OTHER"])
    path = os.environ["DFS_BENCH_FILE"]
    small = int(os.environ["DFS_BENCH_SMALL"])
    s3.create_bucket(Bucket="bench")
    start = time.perf_counter()
    s3.upload_file(path, "bench", "big", Config=TransferConfig())
    upload = time.perf_counter() - start
    start = time.perf_counter()
    other.download_file("bench", "big", path + ".s3", Config=TransferConfig())
    download = time.perf_counter() - start
    same = os.path.getsize(path + ".s3") == os.path.getsize(path)
    os.remove(path + ".s3")
    bodies = [os.urandom(4096) for _ in range(small)]
    # One warm-up request each, so the first connection is not counted.
    s3.put_object(Bucket="bench", Key="warm", Body=b"x")
    s3.get_object(Bucket="bench", Key="warm")["Body"].read()
    puts, gets = [], []
    for i, data in enumerate(bodies):
        start = time.perf_counter()
        s3.put_object(Bucket="bench", Key=f"small/{i}", Body=data)
        puts.append(time.perf_counter() - start)
    for i in range(small):
        start = time.perf_counter()
        got = s3.get_object(Bucket="bench", Key=f"small/{i}")["Body"].read()
        gets.append(time.perf_counter() - start)
        assert len(got) == 4096
    # The client's own cost per call: the same calls answered by botocore's
    # stubber, without a network or a server.
    from botocore.stub import Stubber

    stubbed = client(os.environ["DFS_S3"])
    stubber = Stubber(stubbed)
    for _ in range(200):
        stubber.add_response("put_object", {"ETag": '"x"'})
    stubber.activate()
    start = time.perf_counter()
    for i in range(200):
        stubbed.put_object(Bucket="bench", Key=f"stub/{i}", Body=bodies[i % len(bodies)])
    client_put = (time.perf_counter() - start) / 200
    print(json.dumps({
        "upload_s": upload,
        "download_s": download,
        "same_size": same,
        "put_s": puts,
        "get_s": gets,
        "client_put_overhead_s": client_put,
    }))


if __name__ == "__main__":
    main()
