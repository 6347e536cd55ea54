#!/usr/bin/env python3
"""An asyncua OPC UA server holding known values, the outside peer of the
OPC UA driver's tests and of its benchmark.

It serves, in namespace `urn:edge-gateway:test`, a folder `Plant/Line1` with
one variable per built-in scalar type (`Bool`, `SByte`, ... `DateTime`),
each holding a known value and writable, plus:

* `Counter`: an Int32 the server increments every `--tick-ms`;
* `ReadOnly`: a Double nobody may write;
* `Array`: a Double array (which the driver must refuse);
* `Load/v0..vN`: with `--load N`, N Doubles that all change every
  `--tick-ms` (the benchmark's source of values).

It prints one line when it listens:

    READY {"port": ..., "ns": ..., "points": [{"name", "node_id", "type", "value"}], "thumbprint": ...}

and, after every write a client makes, `WROTE {"name": ..., "value": ...}`.
With `--secure DIR` it offers only Basic256Sha256/SignAndEncrypt, makes its
certificate and key in DIR (reused when there), and logs users in from
`--user NAME:PASSWORD` (anonymous refused). Otherwise it offers security
None and anonymous login. Every `--tick-ms` with `--stats`, it prints
`STATS {"changes": N}` (values written since it started).

Usage: opcua_server.py --port PORT [--secure DIR --user op:secret] [--tick-ms 100] [--load N]
"""

import argparse
import asyncio
import datetime
import json
import logging
import os
import sys
import uuid

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

NS_URI = "urn:edge-gateway:test"
APP_URI = "urn:edge-gateway:test-server"

# name, OPC UA type, value
CATALOGUE = [
    ("Bool", ua.VariantType.Boolean, True),
    ("SByte", ua.VariantType.SByte, -100),
    ("Byte", ua.VariantType.Byte, 200),
    ("Int16", ua.VariantType.Int16, -30000),
    ("UInt16", ua.VariantType.UInt16, 60000),
    ("Int32", ua.VariantType.Int32, -2000000000),
    ("UInt32", ua.VariantType.UInt32, 4000000000),
    ("Int64", ua.VariantType.Int64, -9000000000000000000),
    ("UInt64", ua.VariantType.UInt64, 18000000000000000000),
    ("Float", ua.VariantType.Float, 1.5),
    ("Double", ua.VariantType.Double, -2.25),
    ("String", ua.VariantType.String, "héllo plant"),
    ("DateTime", ua.VariantType.DateTime, datetime.datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=datetime.timezone.utc)),
    ("ByteString", ua.VariantType.ByteString, b"\x01\x02\xff"),
    ("Guid", ua.VariantType.Guid, uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63")),
]


def json_value(v):
    if isinstance(v, datetime.datetime):
        return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, bytes):
        return list(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    return v


class Users(UserManager):
    def __init__(self, users):
        self.users = users

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.Admin)
        return None


def make_certificate(directory):
    """The server's certificate (DER) and key (PEM) in `directory`, made once."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID
    import ipaddress

    from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key, generate_self_signed_app_certificate

    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, "server_cert.der")
    key_path = os.path.join(directory, "server_key.pem")
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        key = generate_private_key()
        cert = generate_self_signed_app_certificate(
            key,
            "edge-gateway test server",
            {"organizationName": "edge-gateway tests"},
            [
                x509.UniformResourceIdentifier(APP_URI),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ],
            extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        with open(key_path, "wb") as f:
            f.write(dump_private_key_as_pem(key))
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.DER))
    with open(cert_path, "rb") as f:
        der = f.read()
    import hashlib

    return cert_path, key_path, hashlib.sha1(der).hexdigest().upper()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secure", metavar="DIR")
    ap.add_argument("--user", action="append", default=[])
    ap.add_argument("--tick-ms", type=int, default=100)
    ap.add_argument("--load", type=int, default=0)
    ap.add_argument("--stats", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    users = dict(u.split(":", 1) for u in args.user)
    server = Server(user_manager=Users(users) if args.secure else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/test")
    server.set_server_name("edge-gateway test server")
    await server.set_application_uri(APP_URI)
    thumbprint = None
    if args.secure:
        cert, key, thumbprint = make_certificate(args.secure)
        await server.load_certificate(cert)
        await server.load_private_key(key)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_identity_tokens([ua.UserNameIdentityToken])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])

    ns = await server.register_namespace(NS_URI)
    plant = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), ua.QualifiedName("Plant", ns))
    line = await plant.add_folder(ua.NodeId("Plant.Line1", ns), ua.QualifiedName("Line1", ns))
    points = []
    by_id = {}
    for name, vtype, value in CATALOGUE:
        node_id = ua.NodeId(f"Line1.{name}", ns)
        var = await line.add_variable(node_id, ua.QualifiedName(name, ns), ua.Variant(value, vtype))
        await var.set_writable()
        points.append({"name": name, "node_id": f"ns={ns};s=Line1.{name}", "type": vtype.name, "value": json_value(value)})
        by_id[node_id] = name
    counter = await line.add_variable(ua.NodeId("Line1.Counter", ns), ua.QualifiedName("Counter", ns), ua.Variant(0, ua.VariantType.Int32))
    points.append({"name": "Counter", "node_id": f"ns={ns};s=Line1.Counter", "type": "Int32", "value": 0})
    ro = await line.add_variable(ua.NodeId("Line1.ReadOnly", ns), ua.QualifiedName("ReadOnly", ns), ua.Variant(7.5, ua.VariantType.Double))
    points.append({"name": "ReadOnly", "node_id": f"ns={ns};s=Line1.ReadOnly", "type": "Double", "value": 7.5})
    await line.add_variable(ua.NodeId("Line1.Array", ns), ua.QualifiedName("Array", ns), ua.Variant([1.0, 2.0], ua.VariantType.Double))
    points.append({"name": "Array", "node_id": f"ns={ns};s=Line1.Array", "type": "Double[]", "value": [1.0, 2.0]})
    del ro
    load = []
    if args.load:
        folder = await server.nodes.objects.add_folder(ua.NodeId("Load", ns), ua.QualifiedName("Load", ns))
        for i in range(args.load):
            v = await folder.add_variable(ua.NodeId(f"Load.v{i}", ns), ua.QualifiedName(f"v{i}", ns), ua.Variant(0.0, ua.VariantType.Double))
            load.append(v.nodeid)

    seen = set()

    class Handler:
        def datachange_notification(self, node, val, data):
            name = by_id.get(node.nodeid)
            if name is not None and name not in seen:
                seen.add(name)  # the first notification is the initial value
            elif name is not None:
                print("WROTE " + json.dumps({"name": name, "value": json_value(val)}), flush=True)

    # The server's own subscription reports writes made by clients.
    sub = await server.create_subscription(50, Handler())
    await sub.subscribe_data_change([server.get_node(n) for n in by_id], queuesize=10)

    async with server:
        print("READY " + json.dumps({"port": args.port, "ns": ns, "points": points, "thumbprint": thumbprint}), flush=True)
        n = 0
        changes = 0
        tick = args.tick_ms / 1000.0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            n += 1
            await server.write_attribute_value(counter.nodeid, ua.DataValue(ua.Variant(n, ua.VariantType.Int32)))
            for i, nodeid in enumerate(load):
                await server.write_attribute_value(nodeid, ua.DataValue(ua.Variant(float(n * 1000 + i), ua.VariantType.Double)))
            changes += 1 + len(load)
            if args.stats:
                print("STATS " + json.dumps({"changes": changes}), flush=True)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
