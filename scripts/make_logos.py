"""Draws the kernelspec logos (kernel/assets/logo-*.png) from the SVG's geometry.

Run it after changing the logo; the PNGs are committed so builds need no Python.
"""
import struct
import zlib
from pathlib import Path

ORANGE = (206, 66, 43, 255)
WHITE = (255, 255, 255, 255)
CLEAR = (0, 0, 0, 0)


def pixel(x, y):
    """The logo on a unit square: a rounded orange tile with a white 'F' and a dot."""
    r = 0.18
    cx = min(max(x, r), 1 - r)
    cy = min(max(y, r), 1 - r)
    if (x - cx) ** 2 + (y - cy) ** 2 > r * r:
        return CLEAR
    # The F: a stem and two bars.
    if 0.28 <= x <= 0.40 and 0.22 <= y <= 0.78:
        return WHITE
    if 0.28 <= x <= 0.72 and 0.22 <= y <= 0.33:
        return WHITE
    if 0.28 <= x <= 0.62 and 0.45 <= y <= 0.55:
        return WHITE
    if (x - 0.68) ** 2 + (y - 0.72) ** 2 <= 0.065 ** 2:
        return WHITE
    return ORANGE


def png(size):
    rows = []
    samples = 4
    for py in range(size):
        row = bytearray([0])
        for px in range(size):
            acc = [0, 0, 0, 0]
            for sy in range(samples):
                for sx in range(samples):
                    c = pixel((px + (sx + 0.5) / samples) / size, (py + (sy + 0.5) / samples) / size)
                    for i in range(4):
                        acc[i] += c[i]
            row.extend(int(a / samples**2) for a in acc)
        rows.append(bytes(row))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "kernel" / "assets"
    for size in (32, 64):
        (out / f"logo-{size}x{size}.png").write_bytes(png(size))
