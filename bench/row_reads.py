"""Reading a batch of cache rows: positional reads (RowStore, today) against a memory map of the
shard (the reader before issue 19), on one thread.

    OMP_NUM_THREADS=1 python bench/row_reads.py [--mib 200] [--batch 32]

Writes one shard of `--mib` MiB of bf16 image-stream rows (257 x 384, DINOv2-small at 224 px)
to a temporary folder, then times gathering `--batch` random rows (median of many draws):
warm (the file in the page cache; for the map, its pages already mapped) and cold (the
file's pages dropped from the page cache with posix_fadvise before each draw, the map made
again). Then reads every row once in batches and
says what the process holds afterwards: file-backed resident memory (RssFile) grows by the
pages a memory map touched; positional reads leave it where it was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import rss_split  # noqa: E402

from autopmf.feature_shards import RowStore, open_shard, write_shard  # noqa: E402

ROW_SHAPE = (257, 384)
MIB = 2**20


def mapped_rows(path: Path) -> torch.Tensor:
    """The shard's rows as the earlier reader mapped them (torch.from_file, private map)."""
    shard = open_shard(path)
    size = shard.offset + len(shard) * shard.row_bytes
    data = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    return data[shard.offset:].view(shard.dtype).view(shard.shape)


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages (a file just written) are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def median_ms(gather, draws: int, rows: int, batch: int, cold=None) -> float:
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(draws):
        index = torch.randperm(rows, generator=generator)[:batch]
        if cold:
            cold()
        started = time.perf_counter()
        gather(index)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e3, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warm-draws", type=int, default=300)
    parser.add_argument("--cold-draws", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    row_bytes = ROW_SHAPE[0] * ROW_SHAPE[1] * 2
    rows = int(args.mib * MIB // row_bytes)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.image.00000.safetensors"
        write_shard(path, torch.randn((rows, *ROW_SHAPE)).to(torch.bfloat16))
        store = RowStore([open_shard(path)])
        mapped = mapped_rows(path)
        assert torch.equal(store[torch.arange(rows)].view(torch.int16),
                           mapped.view(torch.int16))
        del mapped
        result = {"shard_mib": round(rows * row_bytes / MIB, 1), "rows": rows,
                  "row_kib": round(row_bytes / 1024, 1), "batch": args.batch, "threads": 1}
        holder = {}

        def remap():
            holder.pop("rows", None)
            drop_from_page_cache(path)
            holder["rows"] = mapped_rows(path)

        # Cold reads first: a page some map holds is not dropped from the cache.
        result["cold_ms"] = {
            "read": median_ms(store.__getitem__, args.cold_draws, rows, args.batch,
                              cold=lambda: drop_from_page_cache(path)),
            "mmap": median_ms(lambda i: holder["rows"][i], args.cold_draws, rows, args.batch,
                              cold=remap)}
        holder["rows"] = mapped_rows(path)
        result["warm_ms"] = {
            "read": median_ms(store.__getitem__, args.warm_draws, rows, args.batch),
            "mmap": median_ms(lambda i: holder["rows"][i], args.warm_draws, rows, args.batch)}
        holder.pop("rows")
        for name, gather in (("read", store.__getitem__),
                             ("mmap", lambda i, m=mapped_rows(path): m[i])):
            before = rss_split(os.getpid())
            for batch in torch.randperm(rows).split(args.batch):
                gather(batch)
            after = rss_split(os.getpid())
            result[f"rss_file_growth_mib_{name}"] = round(
                (after["RssFile"] - before["RssFile"]) / MIB, 1)
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
