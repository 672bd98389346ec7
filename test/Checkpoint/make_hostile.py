#!/usr/bin/env python3
"""Writes the hostile-input corpus for loom's checkpoint readers.

Usage: make_hostile.py OUTDIR MARKER_DIR

Every file is something a malicious or broken checkpoint could contain. OUTDIR/
hostile.json lists them as {"file", "reader", "expect", "message"}: reader is
pickle | zip | torch | safetensors | dcp (a DCP folder whose optimizer loom reads);
expect is "error" (message: a substring of the
one-line error loom must give) or "opaque" (the pickle names code to run; loom must
load it as inert data, and nothing may appear in MARKER_DIR). The same files seed
the fuzzers (scripts/fuzz).
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcp_shim  # noqa: E402,F401  (before torch: see dcp_shim.py)
import torch  # noqa: E402

cases = []


def add(name, reader, data, expect="error", message=""):
    cases.append({"file": name, "reader": reader, "expect": expect, "message": message})
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


class Call:
    """Pickles as REDUCE(func, args): what an attacker's __reduce__ produces."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def pickles(marker_dir):
    system_marker = os.path.join(marker_dir, "os_system_ran")
    eval_marker = os.path.join(marker_dir, "eval_ran")
    popen_marker = os.path.join(marker_dir, "popen_ran")
    add("os_system.pkl", "pickle", pickle.dumps(Call(os.system, (f"touch {system_marker}",)),
                                                protocol=2), "opaque", "posix.system")
    add("eval.pkl", "pickle",
        pickle.dumps(Call(eval, (f"open({eval_marker!r}, 'w')",)), protocol=4),
        "opaque", "builtins.eval")
    add("popen.pkl", "pickle",
        pickle.dumps({"x": Call(subprocess.Popen, (["touch", popen_marker],))}, protocol=5),
        "opaque", "subprocess.Popen")
    # getattr(__import__('os'), 'system')(...): a call of a call's result.
    add("getattr_chain.pkl", "pickle",
        b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\nX\x02\x00\x00\x00os\x85R"
        b"X\x06\x00\x00\x00system\x86RX\x04\x00\x00\x00true\x85R.",
        message="only named globals are modelled")
    # Memo bomb: each level is a list holding the previous level twice.
    bomb = bytearray(b"\x80\x02]q\x00")
    for level in range(1, 64):
        bomb += b"h" + bytes([(level - 1) % 256]) + b"h" + bytes([(level - 1) % 256])
        bomb += b"\x86q" + bytes([level % 256])
    add("memo_bomb.pkl", "pickle", bytes(bomb + b"."), message="exceeds")
    add("deep_lists.pkl", "pickle", b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".",
        message="nesting deeper")
    add("deep_tuples.pkl", "pickle", b"\x80\x02N" + b"\x85" * 100000 + b".",
        message="nesting deeper")
    add("mark_bomb.pkl", "pickle", b"\x80\x02" + b"(" * 100000 + b".", message="MARKs nest")
    add("huge_unicode.pkl", "pickle", b"\x80\x02X\xff\xff\xff\xffabc.", message="remain")
    add("huge_bytes8.pkl", "pickle", b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"x.",
        message="remain")
    add("huge_frame.pkl", "pickle", b"\x80\x04\x95" + struct.pack("<Q", 1 << 60) + b"N.",
        message="remain")
    add("huge_long4.pkl", "pickle", b"\x80\x02\x8b\xff\xff\xff\x7f\x00.", message="remain")
    add("wide_int.pkl", "pickle", b"\x80\x02\x8a\x09" + b"\x00" * 8 + b"\x01.",
        message="wider than 64 bits")
    add("memo_missing.pkl", "pickle", b"\x80\x02j\xff\xff\xff\xff.", message="never stored")
    add("self_append.pkl", "pickle", b"\x80\x02]q\x00h\x00a.", message="recursive")
    add("underflow.pkl", "pickle", b"\x80\x02a.", message="underflow")
    add("no_stop.pkl", "pickle", pickle.dumps({"a": [1, 2, 3]}, protocol=2)[:-1],
        message="without STOP")
    add("truncated.pkl", "pickle", pickle.dumps(["x" * 100], protocol=2)[:20],
        message="remain")
    add("protocol9.pkl", "pickle", b"\x80\x09N.", message="protocol 9")
    add("text_opcode.pkl", "pickle", b"(S'x'\np0\n.", message="not supported")
    add("ext_code.pkl", "pickle", b"\x80\x02\x82\x01.", message="extension registry")
    add("persid_no_loader.pkl", "pickle", b"\x80\x02X\x01\x00\x00\x00xQ.",
        message="persistent id")
    add("build_on_int.pkl", "pickle", b"\x80\x02K\x01}b.", message="cannot set state")
    # Found by loom-fuzz-pickle: a STACK_GLOBAL name with a newline would come out of
    # loom's writer as a GLOBAL line followed by attacker-chosen opcodes.
    add("newline_global.pkl", "pickle",
        b"\x80\x04\x8c\x02os\x8c\x0dsystem\ncposix\x93\x94.", message="contains a newline")


def torch_files():
    buf = io.BytesIO()
    torch.save({"w": torch.arange(16, dtype=torch.float32)}, buf)
    good = buf.getvalue()
    add("truncated.pt", "torch", good[: len(good) // 2], message="end-of-central-directory")

    # Flip a byte of the storage record: its CRC no longer matches.
    z = zipfile.ZipFile(io.BytesIO(good))
    info = next(i for i in z.infolist() if i.filename.endswith("data/0"))
    header = info.header_offset
    name_len, extra_len = struct.unpack("<HH", good[header + 26:header + 30])
    data_at = header + 30 + name_len + extra_len
    flipped = bytearray(good)
    flipped[data_at] ^= 0xFF
    add("bad_crc.pt", "torch", bytes(flipped), message="CRC32")

    # A tensor whose view reaches past its 16-element storage.
    z = zipfile.ZipFile(io.BytesIO(good))
    entries = {i.filename: z.read(i.filename) for i in z.infolist()}
    pkl_name = next(n for n in entries if n.endswith("data.pkl"))
    entries[pkl_name] = entries[pkl_name].replace(b"K\x10\x85", b"K\x40\x85")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        for n, d in entries.items():
            w.writestr(n, d)
    add("view_past_storage.pt", "torch", out.getvalue(), message="view reaches byte")

    # Storage record shorter than the element count the pickle declares.
    entries[pkl_name] = entries[pkl_name].replace(b"K\x40\x85", b"K\x10\x85").replace(
        b"cpu", b"cpu", 1)
    data_name = next(n for n in entries if n.endswith("data/0"))
    entries[data_name] = entries[data_name][:8]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        for n, d in entries.items():
            w.writestr(n, d)
    add("short_storage.pt", "torch", out.getvalue(), message="record has 8 bytes")

    # Written on a big-endian machine (torch >= 2.1 records it): bytes would be misread.
    z = zipfile.ZipFile(io.BytesIO(good))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        for i in z.infolist():
            w.writestr(i.filename, z.read(i.filename))
        w.writestr(z.namelist()[0].split("/")[0] + "/byteorder", "big")
    add("big_endian.pt", "torch", out.getvalue(), message="byteorder 'big' is not supported")

    # A checkpoint whose pickle calls os.system: opaque inside a real torch file.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        w.writestr("archive/data.pkl", pickle.dumps(
            {"w": Call(os.system, (f"touch {os.path.join(MARKERS, 'torch_system_ran')}",))},
            protocol=2))
        w.writestr("archive/version", "3\n")
    add("os_system.pt", "torch", out.getvalue(), "opaque", "posix.system")


def local_header(name, size):
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, size, size,
                       len(name), 0) + name


def central_header(name, size, crc, offset):
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, size,
                       size, len(name), 0, 0, 0, 0, 0, offset) + name


def end_record(count, cd_size, cd_offset):
    return struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_offset, 0)


def zips():
    # Entry "b" lies inside entry "a"'s data: both headers are valid, the bytes shared.
    inner = local_header(b"b", 4) + b"BBBB"
    a_data = b"AAAA" + inner
    a = local_header(b"a", len(a_data)) + a_data
    b_offset = 30 + 1 + 4
    cd = central_header(b"a", len(a_data), zlib.crc32(a_data), 0) + \
        central_header(b"b", 4, zlib.crc32(b"BBBB"), b_offset)
    add("overlap.zip", "zip", a + cd + end_record(2, len(cd), len(a)), message="overlaps")

    data = b"hello"
    body = local_header(b"x", len(data)) + data
    cd = central_header(b"x", 0xFFFFFFF0, zlib.crc32(data), 0)
    add("huge_size.zip", "zip", body + cd + end_record(1, len(cd), len(body)),
        message="run past the data area")
    cd = central_header(b"x", len(data), zlib.crc32(data), 0)
    add("entry_count.zip", "zip", body + cd + end_record(0xFFFE, len(cd), len(body)),
        message="declares 65534 entries")
    add("cd_past_end.zip", "zip", body + cd + end_record(1, len(cd) + 1000, len(body)),
        message="runs past its end record")
    add("zip64_no_locator.zip", "zip", body + cd + end_record(0xFFFF, len(cd), len(body)),
        message="ZIP64 locator")
    cd_bad = central_header(b"y", len(data), zlib.crc32(data), 0)
    add("name_mismatch.zip", "zip", body + cd_bad + end_record(1, len(cd_bad), len(body)),
        message="local header at offset 0 names 'x'")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as w:
        w.writestr("archive/data.pkl", b"x" * 1000)
    add("deflated.zip", "zip", buf.getvalue(), message="compressed")
    add("not_a_zip.zip", "zip", b"PK\x03\x04" + b"\x00" * 40, message="end-of-central")


def safetensors(header, data=b"", raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_files():
    f32 = lambda shape, begin, end: {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}
    add("overlap.safetensors", "safetensors",
        safetensors({"a": f32([2], 0, 8), "b": f32([2], 4, 12)}, b"\x00" * 12),
        message="overlaps")
    add("past_end.safetensors", "safetensors",
        safetensors({"a": f32([4], 0, 16)}, b"\x00" * 8), message="outside the 8-byte data")
    add("hole.safetensors", "safetensors",
        safetensors({"a": f32([1], 0, 4), "b": f32([1], 8, 12)}, b"\x00" * 12),
        message="belong to no tensor")
    add("shape_mismatch.safetensors", "safetensors",
        safetensors({"a": f32([3], 0, 8)}, b"\x00" * 8), message="does not match")
    add("shape_overflow.safetensors", "safetensors",
        safetensors({"a": f32([2**62, 2**62], 0, 8)}, b"\x00" * 8), message="does not match")
    add("bad_dtype.safetensors", "safetensors",
        safetensors({"a": {"dtype": "F8_E9", "shape": [1], "data_offsets": [0, 1]}}, b"\x00"),
        message="unsupported dtype")
    add("huge_header.safetensors", "safetensors", struct.pack("<Q", 1 << 40) + b"{}",
        message="exceeds")
    add("header_past_end.safetensors", "safetensors", struct.pack("<Q", 1000) + b"{}",
        message="runs past the end")
    add("deep.safetensors", "safetensors", safetensors(None, raw_header=b"{\"a\":" +
                                                       b"[" * 100000 + b"]" * 100000 + b"}"),
        message="nests deeper")
    add("not_json.safetensors", "safetensors", safetensors(None, raw_header=b"{nope"),
        message="invalid JSON")
    add("metadata.safetensors", "safetensors", safetensors({"__metadata__": {"a": 1}}),
        message="not a string")
    add("negative_shape.safetensors", "safetensors",
        safetensors({"a": f32([-1], 0, 0)}), message="non-negative")
    add("extra_field.safetensors", "safetensors",
        safetensors({"a": dict(f32([1], 0, 4), evil=1)}, b"\x00" * 4), message="unknown field")
    add("short.safetensors", "safetensors", b"\x01\x02", message="too short")


def dcp_folders(marker_dir):
    """A DCP checkpoint torch's own writer saves with an optimizer setting that is a
    pickled call of os.system: torch.load (what torch's DCP reader runs on bytes
    entries) would run it; loom must refuse it with one line and run nothing."""
    import torch.distributed._shard.checkpoint as dcp
    marker = os.path.join(marker_dir, "dcp_os_system_ran")
    state = {"model.w": torch.ones(2, 2), "optim.state.w.exp_avg": torch.zeros(2, 2),
             "optim.state.w.exp_avg_sq": torch.zeros(2, 2), "optim.state.w.step": torch.tensor(1.0),
             "optim.param_groups.0.lr": Call(os.system, (f"touch {marker}",)),
             "optim.param_groups.0.params": ["w"]}
    dcp.save_state_dict(state, dcp.FileSystemWriter(os.path.join(OUT, "dcp_os_system")),
                        no_dist=True)
    cases.append({"file": "dcp_os_system", "reader": "dcp", "expect": "error",
                  "message": "'optim.param_groups.0.lr' holds posix.system, not a plain value"})


if __name__ == "__main__":
    OUT, MARKERS = sys.argv[1], sys.argv[2]
    os.makedirs(OUT, exist_ok=True)
    pickles(MARKERS)
    torch_files()
    zips()
    safetensors_files()
    dcp_folders(MARKERS)
    with open(os.path.join(OUT, "hostile.json"), "w") as f:
        json.dump(cases, f, indent=1)
