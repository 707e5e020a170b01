"""Writes the embedded MNIST subset (src/steinebm/assets/mnist-subset/) from the original files.

    python scripts/make_mnist_subset.py /path/to/mnist

Takes the first 6,000 training and the first 1,000 test images (and their labels) of the
original IDX files, unchanged, and writes them as IDX gz files in the same format.
"""

import gzip
import struct
import sys
from pathlib import Path

N_TRAIN, N_TEST = 6000, 1000


def cut(src: Path, dst: Path, n: int) -> None:
    raw = gzip.decompress(src.read_bytes())
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = list(struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim]))
    item = 1
    for k in dims[1:]:
        item *= k
    body = raw[4 + 4 * ndim : 4 + 4 * ndim + n * item]
    dims[0] = n
    header = struct.pack(">I", magic) + struct.pack(">" + "I" * ndim, *dims)
    # mtime=0 so the file is byte-identical on every run
    dst.write_bytes(gzip.compress(header + body, compresslevel=9, mtime=0))


def main() -> None:
    src = Path(sys.argv[1])
    out = Path(__file__).resolve().parents[1] / "src" / "steinebm" / "assets" / "mnist-subset"
    out.mkdir(parents=True, exist_ok=True)
    for name, n in [
        ("train-images-idx3-ubyte.gz", N_TRAIN),
        ("train-labels-idx1-ubyte.gz", N_TRAIN),
        ("t10k-images-idx3-ubyte.gz", N_TEST),
        ("t10k-labels-idx1-ubyte.gz", N_TEST),
    ]:
        cut(src / name, out / name, n)
        print(out / name, (out / name).stat().st_size)


if __name__ == "__main__":
    main()
