"""Image files decoded once: a split's images as one uint8 array [N, C, H, W] in a .npy file, then memory-mapped.

The file's name carries a key of everything that decides its pixels: each file's path, size and modification time,
the image size, the channels and the crop. A changed, added or removed file gives a new key, so a stale cache is
never read (old files are left for the user to delete). The array is written beside its final name and renamed
into place (`gan.storage.atomic_write`), so a killed run or two ranks writing at once never leave half a cache.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from gan.storage import atomic_write, cache_key

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the decoding changes, so old caches are not reused
CHUNK = 1024  # images decoded (by a thread pool: PIL releases the GIL while decoding) between writes


def cache_path(files, cache_dir: str | os.PathLike) -> Path:
    """Where the decoded array of `files` (an ImageFiles) lives under `cache_dir`."""
    stats = [(str(Path(p).resolve()), s.st_size, s.st_mtime_ns) for p in files.paths for s in [os.stat(p)]]
    key = cache_key({"format": FORMAT, "files": stats, "image_size": files.image_size, "channels": files.channels,
                     "crop": files.crop})
    shape = "x".join(map(str, (len(files), files.channels, files.image_size, files.image_size)))
    return Path(cache_dir).expanduser() / "images" / f"{shape}-{key}.npy"


def decoded_images(files, cache_dir: str | os.PathLike) -> torch.Tensor:
    """The images of `files` as a uint8 tensor [N, C, H, W] backed by a memory-mapped .npy file, decoded on first use."""
    path = cache_path(files, cache_dir)
    if not path.exists():
        log.info("Decoding %d images once into %s; later runs memory-map it.", len(files), path)
        atomic_write(path, lambda f: write_npy(f, files))
    # Copy-on-write mapping: nothing reaches the file, and torch gets the writable array it asks for.
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def write_npy(f, files) -> None:
    """Stream the decoded images into an open file in .npy format, in order, a chunk at a time."""
    shape = (len(files), files.channels, files.image_size, files.image_size)
    np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": shape})
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for lo in range(0, len(files), CHUNK):
            for image in pool.map(files.image, range(lo, min(lo + CHUNK, len(files)))):
                f.write(image.contiguous().numpy().tobytes())
