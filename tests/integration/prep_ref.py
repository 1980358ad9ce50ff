"""Reference side of tests/integration/test_prep.sh.

  prep_ref.py gen WORK
      WORK/src: LSUN-like LMDB values, one file per key (WebP lossy and lossless, JPEG
      colour and grey, a PNG; odd sizes, some large enough for BOX halvings) and
      corrupt values (truncated JPEG, truncated WebP, random bytes, text);
      WORK/folder: an image folder (sub-folder, a corrupt .jpg, a non-image file).
  prep_ref.py check SHARD_DIR SRC SIZE CHANNELS lmdb|image_folder
      Reads the shards with an independent reader (this file: header, index, crc32 via
      zlib, frames decompressed by the zstd command-line tool) and compares every
      record with guided-diffusion's center_crop_arr run with PIL on the source files
      in the source's order (LMDB: key byte order; folder: guided-diffusion's listing).
      An item PIL cannot open must be skipped and named in the manifest; all others
      must be packed, in order, within 1 LSB.
Prints "ok - ..." / "not ok - ..." lines.
"""
import hashlib
import io
import os
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
from images_ref import list_image_files_recursively, reference_image, smooth_noise  # noqa: E402

warnings.simplefilter("ignore", DeprecationWarning)
FAILS = 0


def check(cond, msg):
    global FAILS
    print(("ok - " if cond else "not ok - ") + msg, flush=True)
    if not cond:
        FAILS += 1


def encode(arr, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def gen(work):
    rng = np.random.default_rng(20240611)
    src = os.path.join(work, "src")
    os.makedirs(src, exist_ok=True)
    # (w, h, kind): LSUN images are about 256 on the short side; here 32..300 pixels
    specs = [(40, 32, "webp"), (32, 40, "jpeg"), (97, 64, "webp_lossless"), (64, 130, "jpeg"),
             (33, 33, "webp"), (256, 192, "jpeg"), (71, 300, "webp"), (48, 36, "jpeg_grey"),
             (65, 64, "png"), (300, 71, "jpeg"), (128, 128, "webp"), (45, 90, "jpeg"),
             (200, 133, "webp"), (36, 48, "jpeg"), (64, 64, "webp_lossless"), (150, 99, "jpeg"),
             (99, 150, "webp"), (50, 50, "jpeg"), (257, 256, "webp"), (80, 70, "jpeg"),
             (70, 80, "webp"), (32, 32, "jpeg"), (120, 64, "webp"), (64, 120, "jpeg")]
    for i, (w, h, kind) in enumerate(specs):
        key = hashlib.sha1(b"image %d" % i).hexdigest()  # LSUN keys are 40 hex digits
        arr = smooth_noise(rng, h, w, 3)
        if kind == "webp":
            data = encode(arr, "WEBP", quality=80)
        elif kind == "webp_lossless":
            data = encode(arr, "WEBP", lossless=True)
        elif kind == "jpeg":
            data = encode(arr, "JPEG", quality=90)
        elif kind == "jpeg_grey":
            data = encode(arr[:, :, 0], "JPEG", quality=85)
        else:
            data = encode(arr, "PNG")
        with open(os.path.join(src, key), "wb") as f:
            f.write(data)
    good_jpeg = encode(smooth_noise(rng, 60, 70, 3), "JPEG", quality=90)
    good_webp = encode(smooth_noise(rng, 60, 70, 3), "WEBP", quality=80)
    bad = {
        "0badtruncatedjpeg": good_jpeg[: len(good_jpeg) // 2],
        "5badtruncatedwebp": good_webp[: len(good_webp) // 2],
        "9badrandombytes": rng.integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "ebadtext": b"this is not an image\n",
    }
    for k, v in bad.items():
        with open(os.path.join(src, k), "wb") as f:
            f.write(v)
    # an image folder: nested, with one corrupt .jpg and a file that is not listed
    folder = os.path.join(work, "folder")
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    for i, (w, h) in enumerate([(40, 33), (90, 64), (33, 77), (64, 64), (100, 50)]):
        arr = smooth_noise(rng, h, w, 3)
        name = os.path.join(folder, "sub" if i % 2 else "", "img%02d.%s" % (i, "png" if i == 3 else "jpg"))
        with open(name, "wb") as f:
            f.write(encode(arr, "PNG" if i == 3 else "JPEG", quality=90))
    with open(os.path.join(folder, "img99_broken.jpg"), "wb") as f:
        f.write(good_jpeg[:300])
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not listed")
    print("generated %d good + %d corrupt LMDB values, and a folder" % (len(specs), len(bad)))
    return 0


def read_shards(d, size, ch, labels=None):
    """Independent reader of docs/shards.md (format 2, as ddpm-prep writes it, with its
    identity checked against the manifest). labels: each record's expected label (None:
    -1 for all). Returns (manifest lines, records, problems)."""
    lines = open(os.path.join(d, "manifest.txt")).read().splitlines()
    shards = [l.split() for l in lines if l.startswith("shard ")]
    ids = [l.split()[1] for l in lines if l.startswith("dataset_id ")]
    rb = ch * size * size
    records = []
    problems = []
    if lines[0] != "ddpm-shards 2" or len(ids) != 1:
        problems.append("manifest: not format 2 with one dataset_id")
    first = 0
    for number, (_, name, count, _end, nbytes, mcrc) in enumerate(shards):
        raw = open(os.path.join(d, name), "rb").read()
        h = raw[:128]
        magic, ver, c, s, flags, n, ioff, icrc, num = struct.unpack("<8sIIIIQQII", h[:48])
        dsid, first_rec = h[48:64], struct.unpack("<Q", h[64:72])[0]
        hcrc = struct.unpack("<I", h[124:128])[0]
        if magic != b"DDPMSHRD" or ver != 2 or c != ch or s != size or n != int(count) or flags != 0:
            problems.append("%s: header %r" % (name, (magic, ver, c, s, n)))
        if zlib.crc32(h[:124]) != hcrc or "%08x" % hcrc != mcrc or len(raw) != int(nbytes):
            problems.append("%s: header crc or size differs from the manifest" % name)
        if num != number or first_rec != first or ids and dsid.hex() != ids[0] or any(h[72:124]):
            problems.append("%s: identity %r" % (name, (num, first_rec, dsid.hex())))
        first += n
        index = raw[ioff:]
        if len(index) != 20 * n or zlib.crc32(index) != icrc:
            problems.append("%s: index size/crc" % name)
        frames = []
        pos = 128
        for i in range(n):
            off, ln, crc, label = struct.unpack("<QIIi", index[20 * i:20 * i + 20])
            want_label = labels[len(frames) + first - n] if labels else -1
            if off != pos or label != want_label:
                problems.append("%s: record %d offset or label" % (name, i))
            frames.append((raw[off:off + ln], crc))
            pos = off + ln
        # each frame on its own through the zstd tool (concatenated frames also decode,
        # but one at a time proves each is a complete frame)
        for i, (fr, crc) in enumerate(frames):
            out = subprocess.run(["zstd", "-dcq"], input=fr, stdout=subprocess.PIPE, check=True).stdout
            if len(out) != rb or zlib.crc32(out) != crc:
                problems.append("%s: record %d length %d / crc" % (name, i, len(out)))
            records.append(np.frombuffer(out, np.uint8).reshape(ch, size, size))
    return lines, records, problems


def unescape(s):
    if s == "%":
        return ""
    out = bytearray()
    i = 0
    while i < len(s):
        if s[i] == "%":
            out.append(int(s[i + 1:i + 3], 16))
            i += 3
        else:
            out += s[i].encode()
            i += 1
    return out.decode()


def check_cmd(shard_dir, src, size, ch, kind):
    size, ch = int(size), int(ch)
    if kind == "lmdb":
        items = [(k, os.path.join(src, k)) for k in sorted(os.listdir(src), key=lambda k: k.encode())]
    else:
        items = [(p, p) for p in list_image_files_recursively(src)]
    want, bad, labels = [], [], None
    if kind == "image_folder":
        # guided-diffusion's class_cond: the name before the first "_", classes sorted
        names = [os.path.basename(p).split("_")[0] for _, p in items]
        classes = {c: i for i, c in enumerate(sorted(set(names)))}
        labels = []
    for i, (key, path) in enumerate(items):
        try:
            want.append(reference_image(path, size, ch))
            if labels is not None:
                labels.append(classes[names[i]])
        except Exception as e:  # what PIL cannot open, ddpm-prep must skip
            bad.append((key, type(e).__name__))
    lines, records, problems = read_shards(shard_dir, size, ch, labels)
    check(not problems, "%s: independent reader: format 2 headers, identity (dataset id, shard number, first record, size and header crc as the manifest records them), index and record crc32s check, every frame "
          "decodes alone with the zstd tool to %d bytes%s" % (kind, ch * size * size, "" if not problems else ": " + "; ".join(problems[:5])))
    skips = [l.split(" ", 3) for l in lines if l.startswith("skip ")]
    skip_keys = [unescape(s[2]) for s in skips]
    check(skip_keys == [k for k, _ in bad],
          "%s: the %d item(s) PIL cannot open (%s) are exactly the ones skipped and named in the manifest (%s)"
          % (kind, len(bad), ", ".join("%s: %s" % b for b in bad), ", ".join(skip_keys)))
    complete = [l for l in lines if l.startswith("complete ")]
    nsh = len([l for l in lines if l.startswith("shard ")])
    check(complete == ["complete %d %d %d" % (len(want), len(bad), nsh)],
          "%s: manifest ends with 'complete %d %d %d' (%s)" % (kind, len(want), len(bad), nsh, complete))
    n = min(len(records), len(want))
    if len(records) != len(want):
        check(False, "%s: %d records packed, %d expected" % (kind, len(records), len(want)))
        return
    maxd, off1 = 0, 0
    for r, w in zip(records, want):
        d = np.abs(r.transpose(1, 2, 0).astype(int) - w.astype(int))
        maxd = max(maxd, int(d.max()))
        off1 += int((d == 1).sum())
    check(maxd <= 1, "%s: all %d records equal guided-diffusion's center_crop_arr with PIL at %dx%dx%d "
          "(max |diff| %d LSB, %d of %d values off by 1)" % (kind, n, size, size, ch, maxd, off1, n * ch * size * size))
    # self-check: the comparison notices a 2-LSB change
    if n:
        w0 = want[0].astype(int).copy()
        w0[0, 0, 0] = (w0[0, 0, 0] + 2) % 256
        d = np.abs(records[0].transpose(1, 2, 0).astype(int) - w0).max()
        check(d >= 2, "%s: the comparison sees a 2-LSB perturbation (self-check)" % kind)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        return gen(sys.argv[2])
    if len(sys.argv) == 7 and sys.argv[1] == "check":
        check_cmd(*sys.argv[2:])
        return 1 if FAILS else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
