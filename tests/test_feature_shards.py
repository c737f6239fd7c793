"""RowStore: rows read from the shard files equal the tensors written, whatever the index; and
reading leaves nothing of the files mapped (what bounds the process's resident memory)."""

import os
import pickle

import pytest
import torch

from autopmf.feature_shards import RowStore, open_shard, write_shard

ROWS_PER_SHARD = (7, 7, 5)  # 19 rows over three shards, the last one short


def make_store(tmp_path, dtype=torch.float32, row_shape=(3, 2)):
    """(a RowStore over three tiny shard files, the whole tensor they hold)."""
    generator = torch.Generator().manual_seed(0)
    whole = torch.randn((sum(ROWS_PER_SHARD), *row_shape), generator=generator).to(dtype)
    paths = []
    for i, rows in enumerate(whole.split(ROWS_PER_SHARD)):
        paths.append(tmp_path / f"train.image.{i:05d}.safetensors")
        write_shard(paths[-1], rows.clone())
    return RowStore([open_shard(p) for p in paths]), whole, paths


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8),
                                                                     b.view(torch.uint8))


INDEXES = {
    "all": slice(None),
    "slice across shards": slice(5, 16),
    "one row": 8,
    "last row": -1,
    "random": torch.randperm(19, generator=torch.Generator().manual_seed(1))[:11],
    "repeated": torch.tensor([3, 3, 18, 3, 7, 7]),
    "unsorted across shards": torch.tensor([18, 0, 13, 6, 7, 14, 1]),
    "reversed": torch.arange(18, -1, -1),
    "2-D": torch.tensor([[0, 6, 7], [13, 14, 2]]),
    "empty": torch.tensor([], dtype=torch.long),
    "mask": torch.arange(19) % 3 == 0,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", INDEXES)
def test_rows_read_equal_the_tensor_written(tmp_path, dtype, name):
    store, whole, _ = make_store(tmp_path, dtype)
    index = INDEXES[name]
    assert same(store[index], whole[index])
    assert store.dtype == dtype and store.shape == whole.shape and len(store) == len(whole)
    assert store.nbytes == whole.numel() * whole.element_size()


def test_a_subset_reads_its_rows_and_a_subset_of_it_too(tmp_path):
    store, whole, _ = make_store(tmp_path)
    rows = torch.tensor([17, 2, 9, 9, 6, 12])
    part = store.subset(rows)
    assert part.shape == (6, 3, 2) and part.nbytes == 6 * 6 * 4
    assert same(part[torch.tensor([[5, 0], [1, 3]])], whole[rows][torch.tensor([[5, 0], [1, 3]])])
    assert same(part.subset(slice(1, 4))[:], whole[rows[1:4]])


def test_reading_keeps_no_shard_file_mapped(tmp_path):
    store, whole, paths = make_store(tmp_path)
    for _ in range(2):
        assert same(store[torch.arange(len(store))], whole)
        assert same(store[torch.tensor([18, 0, 13])], whole[[18, 0, 13]])
    maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
    if not maps:
        pytest.skip("no /proc/self/maps here")
    assert not [p for p in paths if str(p) in maps]


def test_a_pickled_store_opens_its_own_files(tmp_path):
    store, whole, _ = make_store(tmp_path)
    store[torch.tensor([0, 8, 15])]  # the parent's descriptors are open
    copy = pickle.loads(pickle.dumps(store))
    assert all(shard._fd is None for shard in copy.shards)
    assert same(copy[torch.tensor([15, 0, 8])], whole[[15, 0, 8]])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_process_reads_through_the_inherited_descriptors(tmp_path):
    store, whole, _ = make_store(tmp_path)
    store[torch.tensor([0, 8, 15])]  # opened before the fork, as in a DataLoader's parent
    pid = os.fork()
    if pid == 0:  # the child: exit 0 if it reads the same rows
        try:
            os._exit(0 if same(store[torch.tensor([16, 1, 9])], whole[[16, 1, 9]]) else 1)
        except BaseException:
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0
    assert same(store[torch.tensor([2, 18])], whole[[2, 18]])  # the parent's still work


def test_a_truncated_shard_is_an_error_not_garbage(tmp_path):
    store, _, paths = make_store(tmp_path)
    os.truncate(paths[2], os.path.getsize(paths[2]) - 8)
    store[torch.tensor([0])]
    with pytest.raises(OSError, match="shorter than its header says"):
        store[torch.tensor([18])]
