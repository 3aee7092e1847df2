"""Drives moto's Lambda API with boto3 (the real AWS client): reads a JSON list of operations
on stdin, runs them against --endpoint, and prints a JSON list of results.

Keys come from MOTO_KEY_ID / MOTO_SECRET_KEY (default "testing").
Operations: {"op": "iam-user"} -> {accessKeyId, secretAccessKey} of a new all-powerful user,
{"op": "create", "name": N, "tags": {...}, "count": K (optional, creates N-0..N-K-1)},
{"op": "publish", "name": N} -> version, {"op": "alias", "name": N, "alias": A, "version": V},
{"op": "delete", "name": N}, {"op": "tag", "name": N, "tags": {...}},
{"op": "list"} -> every function name (one paginated ListFunctions)."""
import io
import json
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

endpoint, region = sys.argv[1], sys.argv[2]
client = boto3.client(
    "lambda",
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id=os.environ.get("MOTO_KEY_ID", "testing"),
    aws_secret_access_key=os.environ.get("MOTO_SECRET_KEY", "testing"),
    config=Config(retries={"max_attempts": 2}, max_pool_connections=8),
)

buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("handler.py", "def handler(event, context):\n    return event\n")
CODE = buf.getvalue()


def role():
    """moto checks that the execution role exists."""
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("MOTO_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("MOTO_SECRET_KEY", "testing"),
    )
    try:
        return iam.get_role(RoleName="lambda-role")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        return iam.create_role(
            RoleName="lambda-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]


ROLE = None


def create(name, tags):
    client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=ROLE,
        Handler="handler.handler",
        Code={"ZipFile": CODE},
        Tags=tags or {},
    )
    return name


def run(op):
    global ROLE
    kind = op["op"]
    if kind == "create" and ROLE is None:
        ROLE = role()
    if kind == "create":
        count = op.get("count")
        if count is None:
            return create(op["name"], op.get("tags"))
        names = [f"{op['name']}-{i}" for i in range(count)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: create(n, op.get("tags")), names))
        return len(names)
    if kind == "publish":
        return client.publish_version(FunctionName=op["name"])["Version"]
    if kind == "alias":
        return client.create_alias(
            FunctionName=op["name"], Name=op["alias"], FunctionVersion=op["version"]
        )["AliasArn"]
    if kind == "delete":
        client.delete_function(FunctionName=op["name"])
        return None
    if kind == "tag":
        arn = client.get_function(FunctionName=op["name"])["Configuration"]["FunctionArn"]
        client.tag_resource(Resource=arn, Tags=op["tags"])
        return None
    if kind == "iam-user":
        # Three IAM calls: with INITIAL_NO_AUTH_ACTION_COUNT=3 every later request must be
        # signed (SigV4) with this user's key.
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        iam.create_user(UserName="gloo")
        key = iam.create_access_key(UserName="gloo")["AccessKey"]
        iam.put_user_policy(
            UserName="gloo",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        return {"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]}
    if kind == "list":
        names = []
        for page in client.get_paginator("list_functions").paginate():
            names.extend(f["FunctionName"] for f in page["Functions"])
        return names
    raise SystemExit(f"unknown op {kind}")


print(json.dumps([run(op) for op in json.load(sys.stdin)]))
