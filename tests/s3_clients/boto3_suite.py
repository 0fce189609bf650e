"""The S3 API through boto3, against a running dfs cluster.

Run by tests/s3.rs with DFS_S3 (one node's endpoint), DFS_S3_OTHER (another
node's), DFS_KEY_ID and DFS_SECRET in the environment. Each check is a
function; the first failure ends the run with its traceback (exit 1).
"""

import base64
import hashlib
import os
import socket
import sys
import urllib.request
import urllib.error
from datetime import datetime, timedelta, timezone

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["DFS_S3"]
OTHER = os.environ["DFS_S3_OTHER"]
KEY_ID = os.environ["DFS_KEY_ID"]
SECRET = os.environ["DFS_SECRET"]
MiB = 1 << 20


def client(endpoint=ENDPOINT, key=KEY_ID, secret=SECRET, signature=None):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            signature_version=signature,
        ),
    )


s3 = client()


def error_code(call, *args, **kwargs):
    """The S3 error code `call` fails with (it must fail)."""
    try:
        call(*args, **kwargs)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code.isdigit() and code != "304" and call.__name__ not in ("head_bucket", "head_object"):
            # A bare status: say what came back, to tell a bug from a slip.
            print(f"{call.__name__}: bare {code}: {error.response}", file=sys.stderr)
        return code
    raise AssertionError(f"{call.__name__} succeeded; it should have failed")


def fails_with(code, call, *args, **kwargs):
    """`call` must fail with S3 error `code`."""
    got = error_code(call, *args, **kwargs)
    assert got == code, f"{call.__name__} failed with {got}, not {code}"


def md5(data):
    return hashlib.md5(data).hexdigest()


def body(size, seed):
    """`size` bytes that differ with `seed` (and do not repeat within a chunk)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def test_buckets():
    s3.create_bucket(Bucket="alpha")
    fails_with("BucketAlreadyOwnedByYou", s3.create_bucket, Bucket="alpha")
    fails_with("InvalidBucketName", s3.create_bucket, Bucket="Not_Valid")
    s3.head_bucket(Bucket="alpha")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "alpha" in names, names
    assert s3.get_bucket_location(Bucket="alpha").get("LocationConstraint") is None
    assert "Status" not in s3.get_bucket_versioning(Bucket="alpha")
    fails_with("404", s3.head_bucket, Bucket="missing-bucket")
    fails_with("NoSuchBucket", s3.put_object, Bucket="missing-bucket", Key="k", Body=b"x")
    s3.put_object(Bucket="alpha", Key="keep", Body=b"x")
    fails_with("BucketNotEmpty", s3.delete_bucket, Bucket="alpha")
    s3.delete_object(Bucket="alpha", Key="keep")
    s3.delete_bucket(Bucket="alpha")
    fails_with("404", s3.head_bucket, Bucket="alpha")
    assert "alpha" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_objects_and_headers():
    s3.create_bucket(Bucket="objects")
    data = body(300_000, "objects")
    put = s3.put_object(
        Bucket="objects",
        Key="report.txt",
        Body=data,
        ContentType="text/plain; charset=utf-8",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="r.txt"',
        Metadata={"owner": "team-a", "Mixed-Case": "v"},
    )
    assert put["ETag"] == f'"{md5(data)}"', put["ETag"]
    got = s3.get_object(Bucket="objects", Key="report.txt")
    assert got["Body"].read() == data
    assert got["ETag"] == f'"{md5(data)}"'
    assert got["ContentType"] == "text/plain; charset=utf-8"
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == 'attachment; filename="r.txt"'
    assert got["Metadata"] == {"owner": "team-a", "mixed-case": "v"}, got["Metadata"]
    assert got["ContentLength"] == len(data)
    head = s3.head_object(Bucket="objects", Key="report.txt")
    assert head["ContentLength"] == len(data) and head["ETag"] == got["ETag"]
    assert head["Metadata"]["owner"] == "team-a"
    # An empty object, and a default content type.
    s3.put_object(Bucket="objects", Key="empty", Body=b"")
    empty = s3.get_object(Bucket="objects", Key="empty")
    assert empty["Body"].read() == b"" and empty["ETag"] == f'"{md5(b"")}"'
    assert empty["ContentType"] == "binary/octet-stream"
    # Overwrite: the new content is what reads.
    s3.put_object(Bucket="objects", Key="report.txt", Body=b"second")
    assert s3.get_object(Bucket="objects", Key="report.txt")["Body"].read() == b"second"
    fails_with("NoSuchKey", s3.get_object, Bucket="objects", Key="nope")
    fails_with("404", s3.head_object, Bucket="objects", Key="nope")
    fails_with("NoSuchBucket", s3.get_object, Bucket="no-such-bucket", Key="x")


def test_content_md5_is_checked():
    good = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    s3.put_object(Bucket="objects", Key="checked", Body=b"payload", ContentMD5=good)
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    fails_with("BadDigest", s3.put_object, Bucket="objects", Key="checked", Body=b"payload!", ContentMD5=bad)
    # Nothing was recorded by the refused put.
    assert s3.get_object(Bucket="objects", Key="checked")["Body"].read() == b"payload"


def put_with_trailer(bucket, key, data, checksum, chunk=None):
    """PUT an aws-chunked body whose CRC32 comes in the trailer (as current
    SDKs send it), with `checksum` as that trailer; the HTTP status."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    payload = b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks)
    payload += b"0\r\nx-amz-checksum-crc32:" + checksum.encode() + b"\r\n\r\n"
    request = AWSRequest(
        method="PUT",
        url=f"{ENDPOINT}/{bucket}/{key}",
        data=payload,
        headers={
            "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
            "x-amz-trailer": "x-amz-checksum-crc32",
        },
    )
    SigV4Auth(Credentials(KEY_ID, SECRET), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    sent = urllib.request.Request(prepared.url, data=payload, method="PUT", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(sent) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (ConnectionError, urllib.error.URLError):
        # Refused before the whole body was sent.
        return None


def test_checksums_are_checked():
    # Sent as headers: the SDK's own, and a wrong one.
    s3.put_object(Bucket="objects", Key="summed", Body=b"x" * 5000, ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket="objects", Key="summed", Body=b"y" * 5000, ChecksumAlgorithm="SHA1")
    fails_with("BadDigest", s3.put_object, Bucket="objects", Key="summed", Body=b"z" * 5000, ChecksumCRC32="AAAAAA==")
    assert s3.get_object(Bucket="objects", Key="summed")["Body"].read() == b"y" * 5000
    # Sent in the trailer of an aws-chunked body.
    import zlib

    data = b"trailer body"
    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert put_with_trailer("objects", "trailed", data, "AAAAAA==") == 400
    fails_with("NoSuchKey", s3.get_object, Bucket="objects", Key="trailed")
    assert put_with_trailer("objects", "trailed", data, good) == 200
    assert s3.get_object(Bucket="objects", Key="trailed")["Body"].read() == data
    # Chunks of 1 MiB pass; one of 20 MiB is refused (a node would hold
    # a chunk whole before a byte of it is checked).
    big = body(20 * MiB, "big chunk")
    crc = base64.b64encode(zlib.crc32(big).to_bytes(4, "big")).decode()
    assert put_with_trailer("objects", "chunked", big, crc, chunk=MiB) == 200
    assert s3.get_object(Bucket="objects", Key="chunked")["Body"].read() == big
    assert put_with_trailer("objects", "one-chunk", big, crc) != 200
    fails_with("NoSuchKey", s3.get_object, Bucket="objects", Key="one-chunk")


def test_ranges():
    data = body(3 * MiB + 12345, "ranges")
    s3.put_object(Bucket="objects", Key="ranged", Body=data)
    for spec, expected in [
        ("bytes=0-9", data[0:10]),
        ("bytes=2000000-2000009", data[2000000:2000010]),
        ("bytes=-100", data[-100:]),
        (f"bytes={len(data) - 5}-", data[-5:]),
        ("bytes=1048570-2097160", data[1048570:2097161]),
    ]:
        got = s3.get_object(Bucket="objects", Key="ranged", Range=spec)
        assert got["Body"].read() == expected, spec
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"].endswith(f"/{len(data)}"), got["ContentRange"]
    fails_with("InvalidRange", s3.get_object, Bucket="objects", Key="ranged", Range=f"bytes={len(data) + 10}-")


def test_conditional_reads():
    s3.put_object(Bucket="objects", Key="cond", Body=b"conditional")
    tag = f'"{md5(b"conditional")}"'
    assert s3.get_object(Bucket="objects", Key="cond", IfMatch=tag)["Body"].read() == b"conditional"
    fails_with("PreconditionFailed", s3.get_object, Bucket="objects", Key="cond", IfMatch='"0000"')
    fails_with("304", s3.get_object, Bucket="objects", Key="cond", IfNoneMatch=tag)
    future = datetime.now(timezone.utc) + timedelta(days=1)
    past = datetime.now(timezone.utc) - timedelta(days=1)
    fails_with("304", s3.get_object, Bucket="objects", Key="cond", IfModifiedSince=future)
    assert s3.get_object(Bucket="objects", Key="cond", IfModifiedSince=past)["Body"].read() == b"conditional"
    fails_with("PreconditionFailed", s3.get_object, Bucket="objects", Key="cond", IfUnmodifiedSince=past)
    # Conditional writes: create only if absent.
    fails_with("PreconditionFailed", s3.put_object, Bucket="objects", Key="cond", Body=b"x", IfNoneMatch="*")
    s3.put_object(Bucket="objects", Key="cond-new", Body=b"x", IfNoneMatch="*")


def test_copy():
    data = body(2 * MiB, "copy")
    s3.put_object(Bucket="objects", Key="original", Body=data, ContentType="image/png", Metadata={"a": "1"})
    copied = s3.copy_object(Bucket="objects", Key="copy", CopySource={"Bucket": "objects", "Key": "original"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{md5(data)}"'
    head = s3.head_object(Bucket="objects", Key="copy")
    assert head["ContentType"] == "image/png" and head["Metadata"] == {"a": "1"}
    assert s3.get_object(Bucket="objects", Key="copy")["Body"].read() == data
    replaced = s3.copy_object(
        Bucket="objects",
        Key="copy",
        CopySource={"Bucket": "objects", "Key": "copy"},
        MetadataDirective="REPLACE",
        ContentType="text/plain",
        Metadata={"b": "2"},
    )
    assert replaced["CopyObjectResult"]["ETag"] == f'"{md5(data)}"'
    head = s3.head_object(Bucket="objects", Key="copy")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"b": "2"}
    fails_with("InvalidRequest", s3.copy_object, Bucket="objects", Key="copy", CopySource={"Bucket": "objects", "Key": "copy"})
    fails_with("NoSuchKey", s3.copy_object, Bucket="objects", Key="x", CopySource={"Bucket": "objects", "Key": "absent"})


def test_awkward_keys():
    keys = ["with space.txt", "zoë/ünïcode.txt", "plus+sign", "per%cent", "amp&ersand", "a/b/c/deep.txt", "trailing/"]
    for key in keys:
        s3.put_object(Bucket="objects", Key=key, Body=key.encode())
    for key in keys:
        assert s3.get_object(Bucket="objects", Key=key)["Body"].read() == key.encode(), key
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="objects")["Contents"]}
    assert set(keys) <= listed, listed
    # encoding-type=url: botocore asks for it on list_objects, and decodes.
    listed = {o["Key"] for o in s3.list_objects(Bucket="objects")["Contents"]}
    assert set(keys) <= listed, listed


def test_listing():
    s3.create_bucket(Bucket="listing")
    names = [f"dir{d}/file{f}" for d in range(3) for f in range(4)] + ["top1", "top2"]
    for name in names:
        s3.put_object(Bucket="listing", Key=name, Body=b"x")
    page = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["dir0/", "dir1/", "dir2/"]
    assert [o["Key"] for o in page["Contents"]] == ["top1", "top2"]
    assert page["KeyCount"] == 5
    page = s3.list_objects_v2(Bucket="listing", Prefix="dir1/")
    assert [o["Key"] for o in page["Contents"]] == [f"dir1/file{f}" for f in range(4)]
    # Pagination by continuation token, two at a time, sees every key once.
    seen, token = [], None
    while True:
        kwargs = {"Bucket": "listing", "MaxKeys": 2}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(names), seen
    # With a delimiter, pages of common prefixes too.
    seen, token = [], None
    while True:
        kwargs = {"Bucket": "listing", "MaxKeys": 2, "Delimiter": "/"}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert sorted(seen) == ["dir0/", "dir1/", "dir2/", "top1", "top2"], seen
    page = s3.list_objects_v2(Bucket="listing", StartAfter="dir2/file3")
    assert [o["Key"] for o in page["Contents"]] == ["top1", "top2"]
    # ListObjects (v1) with a marker, and the paginator.
    page = s3.list_objects(Bucket="listing", Marker="dir2/file2", MaxKeys=2)
    assert [o["Key"] for o in page["Contents"]] == ["dir2/file3", "top1"] and page["IsTruncated"]
    keys = [o["Key"] for p in s3.get_paginator("list_objects").paginate(Bucket="listing", PaginationConfig={"PageSize": 3}) for o in p.get("Contents", [])]
    assert keys == sorted(names), keys
    assert s3.list_objects_v2(Bucket="listing", MaxKeys=0)["KeyCount"] == 0


def test_delete_objects():
    for i in range(5):
        s3.put_object(Bucket="listing", Key=f"gone{i}", Body=b"x")
    result = s3.delete_objects(Bucket="listing", Delete={"Objects": [{"Key": f"gone{i}"} for i in range(5)] + [{"Key": "never-was"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted([f"gone{i}" for i in range(5)] + ["never-was"])
    assert not result.get("Errors")
    listed = s3.list_objects_v2(Bucket="listing", Prefix="gone").get("Contents", [])
    assert listed == [], listed
    # Deleting what is not there succeeds, as S3 does.
    s3.delete_object(Bucket="listing", Key="never-was")


def test_multipart():
    s3.create_bucket(Bucket="multi")
    sizes = [5 * MiB, 6 * MiB + 17, 1024]
    parts_data = [body(size, f"part{i}") for i, size in enumerate(sizes)]
    upload = s3.create_multipart_upload(Bucket="multi", Key="big.bin", ContentType="application/x-test", Metadata={"k": "v"})
    uid = upload["UploadId"]
    listed = s3.list_multipart_uploads(Bucket="multi")
    assert [u["UploadId"] for u in listed["Uploads"]] == [uid], listed
    etags = []
    for number, data in enumerate(parts_data, start=1):
        # Parts go through different nodes: any node serves any step.
        target = s3 if number % 2 else client(OTHER)
        etags.append(target.upload_part(Bucket="multi", Key="big.bin", UploadId=uid, PartNumber=number, Body=data)["ETag"])
    assert etags[0] == f'"{md5(parts_data[0])}"'
    parts = s3.list_parts(Bucket="multi", Key="big.bin", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, sizes[0]), (2, sizes[1]), (3, sizes[2])]
    fails_with("InvalidPart", 
        s3.complete_multipart_upload, Bucket="multi", Key="big.bin", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]},
    )
    fails_with("InvalidPartOrder", 
        s3.complete_multipart_upload, Bucket="multi", Key="big.bin", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]},
    )
    done = s3.complete_multipart_upload(
        Bucket="multi", Key="big.bin", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": t} for n, t in enumerate(etags)]},
    )
    joined = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest()
    assert done["ETag"] == f'"{joined}-3"', done["ETag"]
    whole = b"".join(parts_data)
    got = client(OTHER).get_object(Bucket="multi", Key="big.bin")
    assert got["Body"].read() == whole
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"k": "v"}
    assert s3.get_object(Bucket="multi", Key="big.bin", Range="bytes=5242870-5242889")["Body"].read() == whole[5242870:5242890]
    # Part by part (partNumber), as SDKs' multipart downloads read them.
    second = s3.get_object(Bucket="multi", Key="big.bin", PartNumber=2)
    assert second["Body"].read() == parts_data[1] and second["PartsCount"] == 3
    assert second["ContentRange"] == f"bytes {sizes[0]}-{sizes[0] + sizes[1] - 1}/{len(whole)}"
    assert s3.head_object(Bucket="multi", Key="big.bin", PartNumber=3)["ContentLength"] == sizes[2]
    assert error_code(s3.get_object, Bucket="multi", Key="big.bin", PartNumber=4) == "InvalidPartNumber"
    fails_with("InvalidArgument", s3.get_object, Bucket="multi", Key="big.bin", PartNumber=10001)
    fails_with("InvalidRequest", s3.get_object, Bucket="multi", Key="big.bin", PartNumber=1, Range="bytes=0-1")
    s3.put_object(Bucket="multi", Key="single.bin", Body=b"one part")
    single = s3.get_object(Bucket="multi", Key="single.bin", PartNumber=1)
    assert single["Body"].read() == b"one part" and "PartsCount" not in single
    assert error_code(s3.get_object, Bucket="multi", Key="single.bin", PartNumber=2) == "InvalidPartNumber"
    fails_with("NoSuchUpload", s3.list_parts, Bucket="multi", Key="big.bin", UploadId=uid)
    assert s3.list_multipart_uploads(Bucket="multi").get("Uploads", []) == []
    # UploadPartCopy: parts made of ranges of stored objects.
    copied = s3.create_multipart_upload(Bucket="multi", Key="copied.bin")["UploadId"]
    c1 = s3.upload_part_copy(
        Bucket="multi", Key="copied.bin", UploadId=copied, PartNumber=1,
        CopySource={"Bucket": "multi", "Key": "big.bin"}, CopySourceRange=f"bytes=100-{100 + 5 * MiB - 1}",
    )["CopyPartResult"]["ETag"]
    c2 = s3.upload_part_copy(
        Bucket="multi", Key="copied.bin", UploadId=copied, PartNumber=2,
        CopySource={"Bucket": "multi", "Key": "big.bin"},
    )["CopyPartResult"]["ETag"]
    fails_with("InvalidRange", s3.upload_part_copy,
        Bucket="multi", Key="copied.bin", UploadId=copied, PartNumber=3,
        CopySource={"Bucket": "multi", "Key": "big.bin"}, CopySourceRange=f"bytes={len(whole)}-{len(whole) + 10}")
    s3.complete_multipart_upload(
        Bucket="multi", Key="copied.bin", UploadId=copied,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": c1}, {"PartNumber": 2, "ETag": c2}]},
    )
    expected = whole[100:100 + 5 * MiB] + whole
    assert s3.get_object(Bucket="multi", Key="copied.bin")["Body"].read() == expected
    # Too small a part (not the last) is refused at completion.
    small = s3.create_multipart_upload(Bucket="multi", Key="small")["UploadId"]
    e1 = s3.upload_part(Bucket="multi", Key="small", UploadId=small, PartNumber=1, Body=b"a" * 100)["ETag"]
    e2 = s3.upload_part(Bucket="multi", Key="small", UploadId=small, PartNumber=2, Body=b"b" * 100)["ETag"]
    fails_with("EntityTooSmall", 
        s3.complete_multipart_upload, Bucket="multi", Key="small", UploadId=small,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    # Abort removes it.
    s3.abort_multipart_upload(Bucket="multi", Key="small", UploadId=small)
    fails_with("NoSuchUpload", s3.upload_part, Bucket="multi", Key="small", UploadId=small, PartNumber=3, Body=b"c")
    fails_with("NoSuchUpload", s3.upload_part, Bucket="multi", Key="small", UploadId="../../etc", PartNumber=1, Body=b"c")
    # boto3's managed transfer with its default settings (8 MiB parts).
    data = body(20 * MiB + 3, "managed")
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dfs-boto3-{os.getpid()}")
    with open(path, "wb") as f:
        f.write(data)
    s3.upload_file(path, "multi", "managed.bin", Config=TransferConfig())
    s3.download_file("multi", "managed.bin", path + ".back")
    with open(path + ".back", "rb") as f:
        assert f.read() == data
    assert s3.head_object(Bucket="multi", Key="managed.bin")["ETag"].endswith('-3"')
    os.remove(path)
    os.remove(path + ".back")


def test_upload_listing_pages_through_uploads_of_one_key():
    s3.create_bucket(Bucket="pages")
    began = [s3.create_multipart_upload(Bucket="pages", Key="same")["UploadId"] for _ in range(3)]
    seen, markers = [], {}
    while True:
        page = s3.list_multipart_uploads(Bucket="pages", MaxUploads=1, **markers)
        seen += [u["UploadId"] for u in page.get("Uploads", [])]
        if not page["IsTruncated"]:
            break
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    assert seen == began, (seen, began)
    for upload_id in began:
        s3.abort_multipart_upload(Bucket="pages", Key="same", UploadId=upload_id)


def versions_of(bucket, key):
    """(version id, is latest, is delete marker) of `key`, newest first."""
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    entries = [(v["LastModified"], v["VersionId"], v["IsLatest"], False) for v in listed.get("Versions", []) if v["Key"] == key]
    entries += [(m["LastModified"], m["VersionId"], m["IsLatest"], True) for m in listed.get("DeleteMarkers", []) if m["Key"] == key]
    # Newest first: the latest, then by time (ids of one millisecond tie).
    entries.sort(key=lambda e: (not e[2], -e[0].timestamp()))
    return [(e[1], e[2], e[3]) for e in entries]


def test_versioning():
    s3.create_bucket(Bucket="versioned")
    # Never enabled: an overwrite replaces the object; one null version.
    s3.put_object(Bucket="versioned", Key="doc", Body=b"v0")
    s3.put_object(Bucket="versioned", Key="doc", Body=b"v0b")
    assert versions_of("versioned", "doc") == [("null", True, False)]
    assert "VersionId" not in s3.head_object(Bucket="versioned", Key="doc")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="versioned")["Status"] == "Enabled"
    v1 = s3.put_object(Bucket="versioned", Key="doc", Body=b"v1")["VersionId"]
    v2 = s3.put_object(Bucket="versioned", Key="doc", Body=b"v2")["VersionId"]
    assert len({v1, v2, "null"}) == 3, (v1, v2)
    assert versions_of("versioned", "doc") == [(v2, True, False), (v1, False, False), ("null", False, False)]
    got = s3.get_object(Bucket="versioned", Key="doc", VersionId=v1)
    assert got["Body"].read() == b"v1" and got["VersionId"] == v1
    assert s3.get_object(Bucket="versioned", Key="doc", VersionId="null")["Body"].read() == b"v0b"
    assert s3.head_object(Bucket="versioned", Key="doc", VersionId=v2)["ContentLength"] == 2
    assert s3.get_object(Bucket="versioned", Key="doc")["VersionId"] == v2
    # Any node answers by version id.
    assert client(OTHER).get_object(Bucket="versioned", Key="doc", VersionId=v1)["Body"].read() == b"v1"
    fails_with("NoSuchVersion", s3.get_object, Bucket="versioned", Key="doc", VersionId="1-0-" + "ab" * 32)
    # A delete makes a delete marker; the object is gone, its versions stay.
    deleted = s3.delete_object(Bucket="versioned", Key="doc")
    marker = deleted["VersionId"]
    assert deleted["DeleteMarker"] is True
    fails_with("NoSuchKey", s3.get_object, Bucket="versioned", Key="doc")
    fails_with("MethodNotAllowed", s3.get_object, Bucket="versioned", Key="doc", VersionId=marker)
    assert versions_of("versioned", "doc") == [(marker, True, True), (v2, False, False), (v1, False, False), ("null", False, False)]
    # Deleting the marker by id brings the object back.
    assert s3.delete_object(Bucket="versioned", Key="doc", VersionId=marker)["DeleteMarker"] is True
    assert s3.get_object(Bucket="versioned", Key="doc")["Body"].read() == b"v2"
    # Deleting the current version for good makes the one before current.
    s3.delete_object(Bucket="versioned", Key="doc", VersionId=v2)
    assert s3.get_object(Bucket="versioned", Key="doc")["Body"].read() == b"v1"
    fails_with("NoSuchVersion", s3.get_object, Bucket="versioned", Key="doc", VersionId=v2)
    # Deleting a version that does not exist succeeds (S3 does).
    s3.delete_object(Bucket="versioned", Key="doc", VersionId=v2)
    # Copy from a version: its content, no data copied.
    copied = s3.copy_object(Bucket="versioned", Key="copy", CopySource={"Bucket": "versioned", "Key": "doc", "VersionId": "null"})
    assert copied["CopySourceVersionId"] == "null" and copied["VersionId"] not in ("null", v1)
    assert s3.get_object(Bucket="versioned", Key="copy")["Body"].read() == b"v0b"
    # Suspended: a write replaces the null version, and keeps the others.
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket="versioned")["Status"] == "Suspended"
    assert s3.put_object(Bucket="versioned", Key="doc", Body=b"s1")["VersionId"] == "null"
    assert versions_of("versioned", "doc") == [("null", True, False), (v1, False, False)]
    assert s3.get_object(Bucket="versioned", Key="doc", VersionId="null")["Body"].read() == b"s1"
    # DeleteObjects by version id, and the listing's pages.
    for i in range(3):
        s3.put_object(Bucket="versioned", Key=f"many{i}", Body=b"a")
    result = s3.delete_objects(Bucket="versioned", Delete={"Objects": [{"Key": "many0", "VersionId": "null"}]})
    assert result["Deleted"][0]["VersionId"] == "null" and not result.get("Errors")
    fails_with("NoSuchKey", s3.get_object, Bucket="versioned", Key="many0")
    pages = s3.get_paginator("list_object_versions").paginate(Bucket="versioned", PaginationConfig={"PageSize": 1})
    seen = [(v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions", [])]
    assert seen == [("copy", copied["VersionId"]), ("doc", "null"), ("doc", v1), ("many1", "null"), ("many2", "null")], seen
    delimited = s3.list_object_versions(Bucket="versioned", Delimiter="n")
    assert [p["Prefix"] for p in delimited.get("CommonPrefixes", [])] == ["man"], delimited
    # A bucket with versions left is not empty, as in S3.
    fails_with("BucketNotEmpty", s3.delete_bucket, Bucket="versioned")


def test_key_permissions():
    """A read-write key limited to `team/` (made by tests/s3.rs)."""
    team = client(key=os.environ["DFS_TEAM_KEY_ID"], secret=os.environ["DFS_TEAM_SECRET"])
    s3.create_bucket(Bucket="team")
    s3.put_bucket_versioning(Bucket="team", VersioningConfiguration={"Status": "Enabled"})
    first = team.put_object(Bucket="team", Key="notes", Body=b"1")["VersionId"]
    team.put_object(Bucket="team", Key="notes", Body=b"2")
    assert team.get_object(Bucket="team", Key="notes", VersionId=first)["Body"].read() == b"1"
    # Outside its prefix: nothing, not even names.
    fails_with("AccessDenied", team.get_object, Bucket="objects", Key="report.txt")
    fails_with("AccessDenied", team.put_object, Bucket="objects", Key="x", Body=b"x")
    fails_with("AccessDenied", team.list_objects_v2, Bucket="objects")
    assert [b["Name"] for b in team.list_buckets()["Buckets"]] == ["team"]
    # Erasing history is an admin's, as `prune` is; a delete marker is not.
    fails_with("AccessDenied", team.delete_object, Bucket="team", Key="notes", VersionId=first)
    assert team.delete_object(Bucket="team", Key="notes")["DeleteMarker"] is True
    assert s3.get_object(Bucket="team", Key="notes", VersionId=first)["Body"].read() == b"1"


def test_presigned_urls():
    s3.put_object(Bucket="objects", Key="shared.txt", Body=b"presigned body")
    # boto3 presigns with SigV2 by default, and SigV4 when asked.
    v4 = client(signature="s3v4")
    for signer in (s3, v4):
        url = signer.generate_presigned_url("get_object", Params={"Bucket": "objects", "Key": "shared.txt"}, ExpiresIn=300)
        with urllib.request.urlopen(url) as response:
            assert response.read() == b"presigned body"
    url = v4.generate_presigned_url("put_object", Params={"Bucket": "objects", "Key": "uploaded.txt"}, ExpiresIn=300)
    request = urllib.request.Request(url, data=b"sent by url", method="PUT")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    assert s3.get_object(Bucket="objects", Key="uploaded.txt")["Body"].read() == b"sent by url"
    tampered = url.replace("uploaded.txt", "elsewhere.txt")
    try:
        urllib.request.urlopen(urllib.request.Request(tampered, data=b"x", method="PUT"))
        raise AssertionError("a tampered presigned URL was accepted")
    except urllib.error.HTTPError as error:
        assert error.code == 403, error.code


def test_signatures():
    fails_with("SignatureDoesNotMatch", client(secret="x" * 40).list_buckets)
    fails_with("InvalidAccessKeyId", client(key="DFSAAAAAAAAAAAAAAAAA").list_buckets)
    try:
        urllib.request.urlopen(ENDPOINT + "/objects/shared.txt")
        raise AssertionError("an unsigned request was served")
    except urllib.error.HTTPError as error:
        assert error.code == 403, error.code


def test_read_after_write_through_other_nodes():
    # S3 reads are strongly consistent: whichever node a write went
    # through, a read that follows its acknowledgement sees it.
    other = client(OTHER)
    other.create_bucket(Bucket="fresh-bucket")
    s3.put_object(Bucket="fresh-bucket", Key="first", Body=b"made through another node")
    for round in range(30):
        writer, reader = (s3, other) if round % 2 else (other, s3)
        data = f"round {round}".encode()
        writer.put_object(Bucket="fresh-bucket", Key="counter", Body=data)
        got = reader.get_object(Bucket="fresh-bucket", Key="counter")["Body"].read()
        assert got == data, (round, got, writer.get_object(Bucket="fresh-bucket", Key="counter")["Body"].read())
        assert reader.head_object(Bucket="fresh-bucket", Key="counter")["ContentLength"] == len(data)
    writer.delete_object(Bucket="fresh-bucket", Key="counter")
    assert error_code(reader.get_object, Bucket="fresh-bucket", Key="counter") == "NoSuchKey"


def test_virtual_hosted_style():
    # The nodes take `BUCKET.s3.dfs.test` (--s3-domain); this process
    # resolves that domain to the node, as DNS would.
    port = ENDPOINT.rsplit(":", 1)[1]
    resolve = socket.getaddrinfo

    def to_node(host, *args, **kwargs):
        if host == "s3.dfs.test" or host.endswith(".s3.dfs.test"):
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    socket.getaddrinfo = to_node
    try:
        virtual = boto3.client(
            "s3",
            endpoint_url=f"http://s3.dfs.test:{port}",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}),
        )
        virtual.create_bucket(Bucket="hosted")
        virtual.put_object(Bucket="hosted", Key="dir/file.txt", Body=b"by host")
        assert s3.get_object(Bucket="hosted", Key="dir/file.txt")["Body"].read() == b"by host"
        assert [o["Key"] for o in virtual.list_objects_v2(Bucket="hosted")["Contents"]] == ["dir/file.txt"]
        url = virtual.generate_presigned_url("get_object", Params={"Bucket": "hosted", "Key": "dir/file.txt"})
        assert url.startswith(f"http://hosted.s3.dfs.test:{port}/"), url
        assert urllib.request.urlopen(url).read() == b"by host"
    finally:
        socket.getaddrinfo = resolve


def test_cli_files_are_objects():
    # tests/s3.rs put `clifiles/hello.txt` with the native CLI first.
    assert "clifiles" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    got = s3.get_object(Bucket="clifiles", Key="hello.txt")
    assert got["Body"].read() == b"hello from the cli\n"
    # And an object put here is read back by the CLI afterwards.
    s3.put_object(Bucket="clifiles", Key="from-s3.txt", Body=b"hello from s3\n")


def main():
    tests = [value for name, value in globals().items() if name.startswith("test_")]
    for test in tests:
        print(f"boto3: {test.__name__}", flush=True)
        test()
    print(f"boto3: {len(tests)} checks passed", flush=True)


if __name__ == "__main__":
    main()
