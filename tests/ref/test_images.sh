#!/usr/bin/env bash
# Image-folder preprocessing and image output checked against PIL/numpy
# (guided-diffusion's center_crop_arr; PNG grid; .npz read by np.load).
# Run from the repo root after `make test-build`; prints ok/not ok lines.
set -u
cd "$(dirname "$0")/../.."
TOOL=build/tools/image_dump
if [ ! -x "$TOOL" ]; then
    echo "not ok - $TOOL is missing (run make test-build)"
    exit 1
fi
SAN=build-san/tools/image_dump
[ -x "$SAN" ] || SAN=
WORK="${DDPM_TEST_TMP:-$(mktemp -d /tmp/ddpm-images.XXXXXX)}/images"
exec /usr/bin/python3 tests/ref/images_ref.py "$TOOL" $SAN "$WORK"
