"""Reference check of the image-folder pipeline and image output against PIL/numpy.

Usage: /usr/bin/python3 tests/ref/images_ref.py TOOL [SAN_TOOL] WORKDIR
TOOL is build/tools/image_dump (see tests/tools/image_dump.c). Prints "ok - ..." /
"not ok - ..." lines. The reference is guided-diffusion's image_datasets.py
preprocessing, run with the installed PIL.
"""
import io
import os
import subprocess
import sys
import warnings
import zipfile

import numpy as np
from PIL import Image

warnings.simplefilter("ignore", DeprecationWarning)
FAILS = 0


def check(cond, msg):
    global FAILS
    print(("ok - " if cond else "not ok - ") + msg, flush=True)
    if not cond:
        FAILS += 1


# ---- guided-diffusion's reference code (image_datasets.py), GIF left out ----
def list_image_files_recursively(data_dir):
    results = []
    for entry in sorted(os.listdir(data_dir)):
        full_path = os.path.join(data_dir, entry)
        ext = entry.split(".")[-1]
        if "." in entry and ext.lower() in ["jpg", "jpeg", "png"]:
            results.append(full_path)
        elif os.path.isdir(full_path):
            results.extend(list_image_files_recursively(full_path))
    return results


def center_crop_arr(pil_image, image_size):
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]


def reference_image(path, size, channels):
    with open(path, "rb") as f:
        pil_image = Image.open(f)
        pil_image.load()
    pil_image = pil_image.convert("RGB")
    if channels == 1:
        pil_image = pil_image.convert("L")
    arr = center_crop_arr(pil_image, size)
    return arr.reshape(size, size, channels)


# ---- test images ----
def smooth_noise(rng, h, w, c):
    """Gradients, a sharp-edged disc and noise: exercises both filters' lobes."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([128 + 100 * np.sin(x / 7.0 + k) * np.cos(y / 11.0 - k) for k in range(c)], -1)
    disc = ((x - w / 2) ** 2 + (y - h / 3) ** 2) < (min(h, w) / 4) ** 2
    base[disc] = 250
    base += rng.normal(0, 25, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def png_rgb16(path, arr16):
    """A 16-bit RGB PNG (PIL cannot write one): signature, IHDR, one IDAT, IEND."""
    import struct
    import zlib

    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_images(root):
    rng = np.random.default_rng(1234)
    os.makedirs(os.path.join(root, "sub", "deeper"), exist_ok=True)
    files = []

    def save(rel, im, **kw):
        p = os.path.join(root, rel)
        im.save(p, **kw)
        files.append(p)

    save("a_rgb_300x217.png", Image.fromarray(smooth_noise(rng, 217, 300, 3)))
    save("b_photo_97x131.jpg", Image.fromarray(smooth_noise(rng, 131, 97, 3)), quality=90)
    save("c_64x64.png", Image.fromarray(smooth_noise(rng, 64, 64, 3)))
    save("d_600x400.png", Image.fromarray(smooth_noise(rng, 400, 600, 3)))
    save("e_grey_150x90.png", Image.fromarray(smooth_noise(rng, 90, 150, 1)[..., 0], "L"))
    save("f_palette_120x77.png", Image.fromarray(smooth_noise(rng, 77, 120, 3)).quantize(64))
    rgba = np.concatenate([smooth_noise(rng, 200, 81, 3), rng.integers(0, 256, (200, 81, 1), dtype=np.uint8)], -1)
    save("g_rgba_81x200.png", Image.fromarray(rgba, "RGBA"))
    save("h_bilevel_33x40.png", Image.fromarray(smooth_noise(rng, 40, 33, 1)[..., 0], "L").convert("1"))
    save("i_tiny_5x3.png", Image.fromarray(smooth_noise(rng, 3, 5, 3)))
    save("sub/j_big_1000x700.JPG", Image.fromarray(smooth_noise(rng, 700, 1000, 3)), quality=75)
    save("sub/k_grey_45x60.jpeg", Image.fromarray(smooth_noise(rng, 60, 45, 1)[..., 0], "L"), quality=85)
    save("sub/deeper/l_progressive_129x257.jpg", Image.fromarray(smooth_noise(rng, 257, 129, 3)),
         quality=95, progressive=True, subsampling=0)
    save("sub/deeper/m_la_70x33.png", Image.fromarray(smooth_noise(rng, 33, 70, 1)[..., 0], "L").convert("LA"))
    save("n_odd_333x251.png", Image.fromarray(smooth_noise(rng, 251, 333, 3)))
    save("o_thin_1023x129.png", Image.fromarray(smooth_noise(rng, 129, 1023, 3)))
    p16 = os.path.join(root, "p_rgb16_50x41.png")
    png_rgb16(p16, smooth_noise(rng, 41, 50, 3).astype(np.uint16) * 256 + rng.integers(0, 256, (41, 50, 3)).astype(np.uint16))
    files.append(p16)
    with open(os.path.join(root, "notes.txt"), "w") as f:  # not an image: must be skipped
        f.write("not an image\n")
    return files


def compare(got, ref):
    """1-LSB comparator: (passes, max abs diff, fraction of values off by exactly 1)."""
    if got.shape != ref.shape:
        return False, None, None
    d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    mx = int(d.max()) if d.size else 0
    return mx <= 1, mx, float((d == 1).mean()) if d.size else 0.0


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def main():
    args = sys.argv[1:]
    tool, work = args[0], args[-1]
    san_tool = args[1] if len(args) == 3 else None
    root = os.path.join(work, "imgs")
    os.makedirs(work, exist_ok=True)
    files = make_images(root)
    listing = list_image_files_recursively(root)
    check(sorted(listing) == sorted(files) and len(listing) == 16, "reference lists the %d generated images" % len(files))

    # Decoding alone: lossless PNGs must match exactly; JPEG too (same libjpeg-turbo as PIL).
    for path in listing:
        out = os.path.join(work, "dec.raw")
        rc, so, se = run([tool, "decode", path, out])
        with open(path, "rb") as f:
            im = Image.open(f)
            im.load()
        ref = np.array(im.convert("RGB"))
        if rc != 0:
            check(False, "decode %s: tool failed: %s" % (os.path.basename(path), se.strip()))
            continue
        w, h = map(int, so.split())
        got = np.fromfile(out, np.uint8).reshape(h, w, 3)
        d = np.abs(got.astype(int) - ref.astype(int))
        check(got.shape == ref.shape and d.max() == 0,
              "decode %s (%s %dx%d) equals PIL convert('RGB') exactly (max diff %d)"
              % (os.path.basename(path), im.mode, w, h, d.max()))

    # Whole pipeline: decode, grey, center_crop_arr.
    perturb_done = False
    all_ok = True
    for size in (32, 64):
        for ch in (3, 1):
            out = os.path.join(work, "ds_%d_%d.raw" % (size, ch))
            rc, so, se = run([tool, "dataset", "folder", root, str(size), str(ch), out])
            if rc != 0:
                check(False, "folder size %d channels %d: tool failed: %s" % (size, ch, se.strip()))
                all_ok = False
                continue
            n = int(so.split()[1])
            check(n == len(listing), "folder size %d channels %d: %d images (reference lists %d)" % (size, ch, n, len(listing)))
            got = np.fromfile(out, np.uint8).reshape(n, ch, size, size).transpose(0, 2, 3, 1)
            tot_px, tot_off = 0, 0
            for i, path in enumerate(listing[:n]):
                ref = reference_image(path, size, ch)
                ok, mx, frac = compare(got[i], ref)
                all_ok &= ok
                tot_px += ref.size
                tot_off += int(round(frac * ref.size)) if frac is not None else 0
                check(ok, "size %d ch %d %s: max abs diff %s <= 1, %.4f%% of values off by 1"
                      % (size, ch, os.path.relpath(path, root), mx, 100 * (frac or 0)))
                if ok and not perturb_done:
                    # The comparator must catch a 2-LSB error at a pixel that matched exactly.
                    eq = np.argwhere(got[i] == ref)
                    if len(eq):
                        idx = tuple(eq[len(eq) // 2])
                        bad = ref.copy()
                        bad[idx] = ref[idx] + 2 if ref[idx] <= 253 else ref[idx] - 2
                        check(not compare(got[i], bad)[0], "self-check: comparator rejects a 2-LSB difference")
                        perturb_done = True
            print("# size %d ch %d: %d of %d values (%.4f%%) off by 1 LSB" % (size, ch, tot_off, tot_px, 100.0 * tot_off / max(tot_px, 1)))
            if san_tool and size == 32:
                out2 = out + ".san"
                rc, so, se = run([san_tool, "dataset", "folder", root, str(size), str(ch), out2])
                check(rc == 0 and open(out2, "rb").read() == open(out, "rb").read(),
                      "ASan build gives identical bytes (size %d ch %d) %s" % (size, ch, se.strip()[-300:]))
    check(perturb_done, "self-check ran")

    # Image output: grid PNG, plain PNG, .npz (stored and Zip64).
    for seed, n, size, ch, cols in ((7, 7, 8, 3, 3), (8, 5, 6, 1, 8), (9, 12, 5, 3, 4)):
        prefix = os.path.join(work, "out_%d" % seed)
        rc, so, se = run([tool, "write", str(seed), str(n), str(size), str(ch), str(cols), prefix])
        if rc != 0:
            check(False, "write seed %d: tool failed: %s" % (seed, se.strip()))
            continue
        data = np.fromfile(prefix + ".raw", np.uint8).reshape(n, size, size, ch)
        # torchvision.utils.make_grid(padding=2, pad_value=0) layout
        xm = min(cols, n)
        ym = (n + xm - 1) // xm
        grid = np.zeros((ym * (size + 2) + 2, xm * (size + 2) + 2, ch), np.uint8)
        for i in range(n):
            y0, x0 = 2 + (i // xm) * (size + 2), 2 + (i % xm) * (size + 2)
            grid[y0 : y0 + size, x0 : x0 + size] = data[i]
        png = np.array(Image.open(prefix + "_grid.png"))
        check(png.shape == grid.reshape(grid.shape[:2] if ch == 1 else grid.shape).shape
              and np.array_equal(png.reshape(grid.shape), grid),
              "grid PNG n %d size %d ch %d cols %d decodes to the expected %dx%d grid" % (n, size, ch, cols, grid.shape[1], grid.shape[0]))
        wide = np.array(Image.open(prefix + "_wide.png"))
        check(np.array_equal(wide.reshape(n * size, size, ch), data.reshape(n * size, size, ch))
              and Image.open(prefix + "_wide.png").mode == ("L" if ch == 1 else "RGB"),
              "PNG %dx%d ch %d round-trips through PIL" % (size, n * size, ch))
        for suffix in (".npz", "_z64.npz"):
            path = prefix + suffix
            arr = np.load(path)["arr_0"]
            with zipfile.ZipFile(path) as z:
                crc_ok = z.testzip() is None and z.namelist() == ["arr_0.npy"]
            check(arr.dtype == np.uint8 and arr.shape == data.shape and np.array_equal(arr, data) and crc_ok,
                  "np.load(%s)['arr_0'] equals the data, shape %s, CRC ok" % (os.path.basename(path), arr.shape))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
