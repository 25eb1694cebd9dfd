"""A gRPC client that knows no plangate types: it discovers them by server reflection.

usage: reflection_client.py ADMIN_ADDR GRPC_ADDR TOKEN KEY PLAN DATE

Lists the services of both plangate ports, then calls plangate.v1.Management's Explain and
GetUsage with messages built from the descriptors reflection returned, once without the token,
and prints everything as one JSON object for tests/reflection.rs to compare with `plangate check`
and the HTTP usage API.
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

admin, data_plane, token, key, plan, date = sys.argv[1:7]

out = {}
with grpc.insecure_channel(data_plane) as ch:
    out["data_plane_services"] = sorted(ProtoReflectionDescriptorDatabase(ch).get_services())

channel = grpc.insecure_channel(admin)
db = ProtoReflectionDescriptorDatabase(channel)
out["admin_services"] = sorted(db.get_services())
pool = descriptor_pool.DescriptorPool(db)
service = pool.FindServiceByName("plangate.v1.Management")


def call(name, fields, authorized=True):
    method = service.FindMethodByName(name)
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    rpc = channel.unary_unary(
        f"/{service.full_name}/{name}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    metadata = [("authorization", f"Bearer {token}")] if authorized else []
    try:
        response = rpc(request_type(**fields), metadata=metadata, timeout=10)
    except grpc.RpcError as e:
        return {"error": e.code().name}
    return json_format.MessageToDict(
        response,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


request = {
    "api": "petstore",
    "stage": "prod",
    "method": "GET",
    "path": "/pets",
    "api_key": key,
}
out["explain"] = call("Explain", request)
out["explain_without_token"] = call("Explain", request, authorized=False)
out["usage"] = call(
    "GetUsage", {"usage_plan_id": plan, "start_date": date, "end_date": date}
)
print(json.dumps(out))
