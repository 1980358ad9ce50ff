#!/usr/bin/env bash
# Issue #14 rows 4 and 6 at the program level: ddpm-train given a hostile dataset
# stops at open with an error naming the file, a non-zero exit, and without
# allocating the image a header declares.
#   row 6: a 634-byte JPEG in an image folder declaring 16384x16384 (2^28 pixels)
#          whose data ends early (it used to allocate 790 MB, decode for 5-12 s and
#          train on a grey image, exit 0); the same at 8192x8192 (under the pixel
#          limit: refused by the coded-size floor); a JPEG whose entropy data is cut
#          but still ends with EOI (libjpeg fills grey and only warns)
#   row 4: a gzip IDX file without its CRC/size trailer, with a flipped byte
set -u
cd "$(dirname "$0")/../.."
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/hostile_data"
rm -rf "$TMP"; mkdir -p "$TMP"
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
[ -x build/ddpm-train ] || { fail "build/ddpm-train is missing (make)"; exit 1; }

/usr/bin/python3 - "$TMP" <<'PYEOF' || fail "could not write the test files"
import gzip, io, os, struct, sys
from PIL import Image
tmp = sys.argv[1]
def jpeg(w, h, **kw):
    b = io.BytesIO()
    Image.new("RGB", (w, h), (120, 30, 200)).save(b, "JPEG", quality=90, **kw)
    return bytearray(b.getvalue())
def set_sof(d, w, h):
    i = d.find(b"\xff\xc0")
    d[i + 5:i + 7] = struct.pack(">H", h)
    d[i + 7:i + 9] = struct.pack(">H", w)
    return d
for name, data in [("row6", set_sof(jpeg(16, 16), 16384, 16384)),
                   ("floor", set_sof(jpeg(16, 16), 8192, 8192))]:
    os.makedirs(f"{tmp}/{name}")
    for i in range(3):
        Image.new("RGB", (20, 18), (i * 50, 30, 200)).save(f"{tmp}/{name}/img{i}.png")
    open(f"{tmp}/{name}/zz_bad.jpg", "wb").write(data)
# a real 64x48 photo-like JPEG, entropy data cut to a third, EOI kept
im = Image.effect_noise((64, 48), 60).convert("RGB")
b = io.BytesIO(); im.save(b, "JPEG", quality=90); d = b.getvalue()
sos = d.find(b"\xff\xda"); cut = sos + (len(d) - sos) // 3
os.makedirs(f"{tmp}/grey")
open(f"{tmp}/grey/zz_bad.jpg", "wb").write(d[:cut] + b"\xff\xd9")
# row 4: 28x28 IDX, stored deflate, one pixel flipped, the 8-byte trailer dropped
raw = struct.pack(">IIII", 0x803, 16, 28, 28) + bytes((i * 7) % 256 for i in range(16 * 784))
g = bytearray(gzip.compress(raw, compresslevel=0))
g[-100] ^= 1
open(f"{tmp}/row4.idx.gz", "wb").write(g[:-8])
PYEOF

# train CASE PATTERN label overrides...: must fail at open, naming the file, small RSS
run_case() {
    local label="$1" pat="$2"; shift 2
    local t0=$(date +%s%N)
    /usr/bin/time -f "%M" -o "$TMP/rss" build/ddpm-train configs/tiny_fashion.yaml "$@" training.steps=2 \
        training.batch_size=2 output.dir="$TMP/out" >"$TMP/out.log" 2>&1
    local rc=$? rss ms
    rss=$(tail -1 "$TMP/rss")
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if [ $rc -ne 0 ] && grep -q -- "$pat" "$TMP/out.log" && [ "${rss:-999999}" -lt 300000 ]; then
        ok "$label: exit $rc in $ms ms, peak RSS $((rss / 1024)) MB: $(grep -m1 -- "$pat" "$TMP/out.log" | cut -c1-170)"
    else
        fail "$label: exit $rc, peak RSS ${rss} KB, expected a message matching '$pat'; got: $(tail -2 "$TMP/out.log")"
    fi
}
FOLDER=(data.format=image_folder model.image_size=16 model.in_channels=3 model.attn_resolutions=[])
run_case "row 6: 16384x16384 JPEG of 634 bytes in an image folder" "zz_bad.jpg: JPEG image 16384x16384 is too large" \
    "${FOLDER[@]}" data.path="$TMP/row6"
run_case "8192x8192 JPEG of 634 bytes: refused by the coded-size floor" "zz_bad.jpg: corrupt JPEG: .*needs at least" \
    "${FOLDER[@]}" data.path="$TMP/floor"
run_case "JPEG with cut entropy data and an EOI: an error, not a grey image" "zz_bad.jpg: corrupt JPEG" \
    "${FOLDER[@]}" data.path="$TMP/grey"
run_case "row 4: gzip IDX without its trailer, a byte flipped" "row4.idx.gz: .*trailer" \
    data.path="$TMP/row4.idx.gz"
