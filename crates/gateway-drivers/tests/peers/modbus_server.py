#!/usr/bin/env python3
"""A pymodbus server holding known values, the outside peer of the Modbus
driver's tests.

It lays out a catalogue of points, one per data type and byte order plus
bits, scaled values, coils and discrete inputs, encodes each with pymodbus's
own converters and Python's struct module (not with the driver's code), and
serves them over Modbus TCP or RTU. It prints one line

    READY {"points": [...]}

when it listens, each point with its area, address, data type, byte order
and the value it holds, so the test knows what the driver must read. After
every write it prints, for each catalogue point the write touched,

    WROTE {"name": ..., "value": ...}

with the value decoded back from the datastore.

Usage: modbus_server.py (--tcp PORT | --rtu DEVICE) [--units 1,2] [--baud N]
"""

import argparse
import asyncio
import json
import sys

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.datastore import (
    ModbusServerContext,
    ModbusSlaveContext,
    ModbusSparseDataBlock,
)
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

DT = ModbusClientMixin.DATATYPE
TYPES = {
    "i16": DT.INT16, "u16": DT.UINT16, "i32": DT.INT32, "u32": DT.UINT32,
    "i64": DT.INT64, "u64": DT.UINT64, "f32": DT.FLOAT32, "f64": DT.FLOAT64,
    "string": DT.STRING,
}
ORDERS = ["ABCD", "BADC", "CDAB", "DCBA"]
STRING_LEN = 5  # registers


def swap_bytes(regs):
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


def encode(data_type, order, value, length=None):
    """Registers of `value` in byte order `order`: CDAB/DCBA reverse the
    registers (not for strings), BADC/DCBA swap the bytes of each one."""
    word_order = "little" if order in ("CDAB", "DCBA") and data_type != "string" else "big"
    regs = ModbusClientMixin.convert_to_registers(value, TYPES[data_type], word_order=word_order)
    if data_type == "string":
        regs = regs + [0] * (length - len(regs))
    if order in ("BADC", "DCBA"):
        regs = swap_bytes(regs)
    return regs


def decode(data_type, order, regs):
    if order in ("BADC", "DCBA"):
        regs = swap_bytes(regs)
    word_order = "little" if order in ("CDAB", "DCBA") and data_type != "string" else "big"
    return ModbusClientMixin.convert_from_registers(list(regs), TYPES[data_type], word_order=word_order)


def f32(x):
    """The nearest single-precision value, as Python's float."""
    return ModbusClientMixin.convert_from_registers(
        ModbusClientMixin.convert_to_registers(x, DT.FLOAT32), DT.FLOAT32)


def base_value(data_type, k):
    return {
        "i16": -12345 + k,
        "u16": 0xA1B2 + k,
        "i32": -123456789 - k,
        "u32": 0xA1B2C3D4 + k,
        "i64": -1234567890123456789 - k,
        "u64": 0xA1B2C3D4E5F60718 + k,
        "f32": f32(-1234.5678 + k),
        "f64": -6.02214076e23 * (k + 1),
        "string": "Pump-7A" + "xyz"[:k],
    }[data_type]


def catalogue():
    """Points and the registers/bits they occupy: (points, regs by area)."""
    points = []
    mem = {"h": {}, "i": {}, "c": {}, "d": {}}
    addr = 0
    for k, order in enumerate(ORDERS):
        for data_type in TYPES:
            value = base_value(data_type, k)
            length = STRING_LEN if data_type == "string" else None
            regs = encode(data_type, order, value, length)
            for i, r in enumerate(regs):
                mem["h"][addr + i] = r
            p = {"name": f"{data_type}_{order}", "area": "holding_register", "address": addr,
                 "data_type": data_type, "byte_order": order, "value": value}
            if length:
                p["length"] = length
            points.append(p)
            addr += len(regs)
    # Bits of one register, and a register read as a bool (non-zero).
    bits_at = addr
    mem["h"][bits_at] = 0xA053
    for bit in (0, 1, 2, 4, 15, 14):
        points.append({"name": f"bit{bit}", "area": "holding_register", "address": bits_at,
                       "data_type": "bool", "bit": bit, "value": bool((0xA053 >> bit) & 1)})
    mem["h"][bits_at + 1] = 0x0100
    points.append({"name": "nonzero", "area": "holding_register", "address": bits_at + 1,
                   "data_type": "bool", "value": True})
    # A scaled temperature: raw 650 × 0.1 − 40.
    mem["h"][bits_at + 2] = 650
    points.append({"name": "scaled", "area": "holding_register", "address": bits_at + 2,
                   "data_type": "i16", "scale": 0.1, "offset": -40.0, "value": 650 * 0.1 + -40.0})
    # Two registers with unmapped ones between them (within max_gap): a
    # merged read of both is refused with "illegal data address".
    mem["h"][1000] = 11
    mem["h"][1004] = 22
    points.append({"name": "island_a", "area": "holding_register", "address": 1000, "data_type": "u16", "value": 11})
    points.append({"name": "island_b", "area": "holding_register", "address": 1004, "data_type": "u16", "value": 22})
    # Input registers.
    for name, a, data_type, order, value in (
        ("in_u16", 0, "u16", "ABCD", 4242),
        ("in_f32", 1, "f32", "CDAB", 1.5),
        ("in_i32", 3, "i32", "DCBA", -7),
    ):
        for i, r in enumerate(encode(data_type, order, value)):
            mem["i"][a + i] = r
        points.append({"name": name, "area": "input_register", "address": a, "data_type": data_type,
                       "byte_order": order, "value": value})
    # Coils and discrete inputs.
    for a in range(20):
        mem["c"][a] = a % 3 == 0
        points.append({"name": f"coil{a}", "area": "coil", "address": a, "data_type": "bool", "value": a % 3 == 0})
        mem["d"][a] = a % 2 == 1
        points.append({"name": f"di{a}", "area": "discrete_input", "address": a, "data_type": "bool",
                       "value": a % 2 == 1})
    return points, mem


class ReportingBlock(ModbusSparseDataBlock):
    """A sparse block (unmapped addresses answer "illegal data address")
    that reports the catalogue points each write touched."""

    def __init__(self, values, area, points):
        super().__init__(values)
        self.area = area
        self.points = [p for p in points if p["area"] == area]

    def setValues(self, address, values, use_as_default=False):
        super().setValues(address, values, use_as_default)
        count = len(values) if isinstance(values, list) else 1
        first = address - 1  # pymodbus's contexts address blocks from 1
        for p in self.points:
            width = 1 if p["area"] == "coil" else (
                p.get("length") or {"i16": 1, "u16": 1, "bool": 1, "i32": 2, "u32": 2, "f32": 2}.get(p["data_type"], 4))
            if p["address"] + width <= first or p["address"] >= first + count:
                continue
            regs = [self.values[a + 1] for a in range(p["address"], p["address"] + width)]
            if p["area"] == "coil":
                value = bool(regs[0])
            elif "bit" in p:
                value = bool((regs[0] >> p["bit"]) & 1)
            elif p["data_type"] == "bool":
                value = regs[0] != 0
            else:
                value = decode(p["data_type"], p.get("byte_order", "ABCD"), regs)
            if "scale" in p:
                value = value * p["scale"] + p["offset"]
            print("WROTE " + json.dumps({"name": p["name"], "value": value}), flush=True)


def slave_context(points, mem):
    # pymodbus's slave context adds 1 to every address before the block sees it.
    def block(area):
        return ReportingBlock({a + 1: v for a, v in mem[area].items()}, area_name[area], points)
    area_name = {"h": "holding_register", "i": "input_register", "c": "coil", "d": "discrete_input"}
    return ModbusSlaveContext(di=block("d"), co=block("c"), hr=block("h"), ir=block("i"))


async def main():
    ap = argparse.ArgumentParser()
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=int, help="listen on 127.0.0.1:PORT")
    where.add_argument("--rtu", help="serve Modbus RTU on this serial device")
    ap.add_argument("--units", default="1", help="unit ids served, comma-separated; others get no answer")
    ap.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args()

    points, mem = catalogue()
    units = [int(u) for u in args.units.split(",")]
    context = ModbusServerContext(slaves={u: slave_context(points, mem) for u in units}, single=False)
    if args.tcp is not None:
        server = ModbusTcpServer(context, address=("127.0.0.1", args.tcp), ignore_missing_slaves=True)
    else:
        server = ModbusSerialServer(context, framer=FramerType.RTU, port=args.rtu, baudrate=args.baud,
                                    bytesize=8, parity="N", stopbits=1, ignore_missing_slaves=True)
    if not await server.listen():
        print("cannot listen", file=sys.stderr, flush=True)
        sys.exit(1)
    print("READY " + json.dumps({"points": points}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
