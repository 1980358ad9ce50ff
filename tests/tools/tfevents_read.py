"""An independent reader of TensorBoard event files, for the tests: the TFRecord
framing with both CRC-32C checks (bitwise, from the polynomial), and a
hand-written protobuf wire-format decoder (no protoc, no generated code) that
knows TensorFlow's public field numbers (tensorboard/compat/proto/event.proto,
summary.proto, tensor.proto, tensor_shape.proto):

  Event        wall_time=1 (double), step=2, file_version=3, summary=5, session_log=7
  SessionLog   status=1 (START=1)
  Summary      value=1 (repeated)
  Value        tag=1, simple_value=2 (float), image=4, tensor=8, metadata=9
  Image        height=1, width=2, colorspace=3, encoded_image_string=4
  Metadata     plugin_data=1 {plugin_name=1, content=2}
  TensorProto  dtype=1 (DT_STRING=7), tensor_shape=2, string_val=8
"""
import glob
import os
import struct


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    """Every record's bytes; ValueError naming the offset on any framing or CRC fault."""
    data = open(path, "rb").read()
    out, off = [], 0
    while off < len(data):
        if off + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at offset {off}")
        (n,) = struct.unpack_from("<Q", data, off)
        (lcrc,) = struct.unpack_from("<I", data, off + 8)
        if masked(crc32c(data[off:off + 8])) != lcrc:
            raise ValueError(f"{path}: length CRC mismatch at offset {off}")
        if off + 12 + n + 4 > len(data):
            raise ValueError(f"{path}: truncated record data at offset {off}")
        body = data[off + 12:off + 12 + n]
        (dcrc,) = struct.unpack_from("<I", data, off + 12 + n)
        if masked(crc32c(body)) != dcrc:
            raise ValueError(f"{path}: data CRC mismatch in the record at offset {off}")
        out.append(body)
        off += 12 + n + 4
    return out


def varint(b, i):
    v, shift = 0, 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if not x & 0x80:
            return v, i
        if shift > 63:
            raise ValueError("varint too long")


def fields(b):
    """{field number: [raw values]}: varints as int, fixed64/fixed32 as bytes, length-delimited as bytes."""
    out, i = {}, 0
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        if i > len(b):
            raise ValueError("field runs past the message")
        out.setdefault(num, []).append(v)
    return out


def one(f, num, default=None):
    return f[num][-1] if num in f else default


def decode_value(b):
    f = fields(b)
    v = {"tag": one(f, 1, b"").decode()}
    if 2 in f:
        v["simple_value"] = struct.unpack("<f", one(f, 2))[0]
    if 4 in f:
        im = fields(one(f, 4))
        v["image"] = {"height": one(im, 1, 0), "width": one(im, 2, 0), "colorspace": one(im, 3, 0),
                      "png": one(im, 4, b"")}
    if 8 in f:
        t = fields(one(f, 8))
        v["tensor"] = {"dtype": one(t, 1, 0), "string_val": t.get(8, []),
                       "has_shape": 2 in t}
    if 9 in f:
        md = fields(one(f, 9))
        pd = fields(one(md, 1, b""))
        v["plugin_name"] = one(pd, 1, b"").decode()
    return v


def decode_event(b):
    f = fields(b)
    ev = {"wall_time": struct.unpack("<d", one(f, 1, b"\0" * 8))[0], "step": one(f, 2, 0)}
    if 3 in f:
        ev["file_version"] = one(f, 3).decode()
    if 5 in f:
        ev["values"] = [decode_value(v) for v in fields(one(f, 5)).get(1, [])]
    if 7 in f:
        ev["session_log_status"] = one(fields(one(f, 7)), 1, 0)
    return ev


def read_file(path):
    return [decode_event(r) for r in records(path)]


def event_files(run_dir):
    """The run's event files in the order they were written (time, then n)."""
    def key(p):
        parts = os.path.basename(p).split(".")
        return (int(parts[3]), int(parts[-1]))
    return sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")), key=key)


def merged_scalars(run_dir):
    """{(step, tag): value} as TensorBoard shows them: a SessionLog START at step s
    drops what earlier files logged at steps >= s."""
    out = {}
    for p in event_files(run_dir):
        for ev in read_file(p):
            if ev.get("session_log_status") == 1:
                out = {k: v for k, v in out.items() if k[0] < ev["step"]}
            for v in ev.get("values", []):
                if "simple_value" in v:
                    out[(ev["step"], v["tag"])] = v["simple_value"]
    return out
