"""normgen.torch.SyncBatchNorm over torch.distributed (gloo, CPU) with 2 and 3 local
processes: forward, backward and running statistics equal single-process BatchNorm
(float64 torch) on the concatenated batch, for uneven per-process batches including a
process with no samples."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import assert_close

C = 6
SPLITS = {2: [5, 3], 3: [4, 0, 7]}  # samples per process (uneven; one empty)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(n_total, layout):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n_total, C, 4, 5, generator=g) * 0.5 + 30.0  # mean far above spread
    dy = torch.randn(n_total, C, 4, 5, generator=g)
    w = torch.empty(C).uniform_(0.5, 1.5, generator=g)
    b = torch.randn(C, generator=g)
    if layout == "channels_last":
        x, dy = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)
    return x, dy, w, b


def _worker(rank, world, port, layout, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import normgen.torch as ngt
        torch.set_num_threads(1)
        splits = SPLITS[world]
        x_all, dy_all, w, b = _batch(sum(splits), layout)
        lo = sum(splits[:rank])
        x = x_all[lo:lo + splits[rank]].clone().requires_grad_(True)
        dy = dy_all[lo:lo + splits[rank]]
        m = ngt.SyncBatchNorm(C, momentum=0.3)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(b)
        for step in range(2):  # twice: running statistics accumulate
            x.grad = None
            m.weight.grad = m.bias.grad = None
            y = m(x)
            (y * dy).sum().backward()
        m.eval()
        y_eval = m(x.detach())
        torch.save({"y": y.detach(), "dx": x.grad, "dw": m.weight.grad, "db": m.bias.grad,
                    "rm": m.running_mean, "rv": m.running_var, "nbt": m.num_batches_tracked, "y_eval": y_eval},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world,layout", [(2, "contiguous"), (3, "channels_last")])
def test_sync_batch_norm_equals_batch_norm_on_the_whole_batch(world, layout, tmp_path):
    mp.start_processes(_worker, args=(world, _free_port(), layout, str(tmp_path)), nprocs=world, join=True,
                       start_method="spawn")
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    splits = SPLITS[world]
    x_all, dy_all, w, b = _batch(sum(splits), layout)
    ref = torch.nn.BatchNorm2d(C, momentum=0.3).double()
    with torch.no_grad():
        ref.weight.copy_(w)
        ref.bias.copy_(b)
    x64 = x_all.double().requires_grad_(True)
    for step in range(2):
        x64.grad = None
        ref.weight.grad = ref.bias.grad = None
        y_ref = ref(x64)
        (y_ref * dy_all.double()).sum().backward()
    n = sum(splits) * 20
    y = torch.cat([r["y"] for r in res])
    dx = torch.cat([r["dx"] for r in res])
    assert_close(y, y_ref.detach(), torch.float32, n, "y")
    assert_close(dx, x64.grad, torch.float32, n, "dx", scale=x64.grad.abs().max().item() * 4)
    dw = sum(r["dw"] for r in res)  # each process's own: DDP sums (averages) them
    db = sum(r["db"] for r in res)
    assert_close(dw, ref.weight.grad, torch.float32, n, "dweight", scale=ref.weight.grad.abs().max().item() * 4)
    assert_close(db, ref.bias.grad, torch.float32, n, "dbias", scale=ref.bias.grad.abs().max().item() * 4)
    for r in res:  # every process holds the same running statistics
        assert_close(r["rm"], ref.running_mean, torch.float32, n, "running_mean")
        assert_close(r["rv"], ref.running_var, torch.float32, n, "running_var")
        assert int(r["nbt"]) == 2
    ref.eval()
    y_eval = torch.cat([r["y_eval"] for r in res])
    assert_close(y_eval, ref(x_all.double()).detach(), torch.float32, n, "eval y", scale=30.0)


def test_single_process_is_batch_norm():
    import normgen.torch as ngt
    m, ref = ngt.SyncBatchNorm(4), torch.nn.BatchNorm2d(4)
    x = torch.randn(6, 4, 3, 3) + 2
    assert_close(m(x), ref(x), torch.float32, 54, "no process group: BatchNorm")
    assert_close(m.running_var, ref.running_var, torch.float32, 54, "running_var")


def test_convert_sync_batchnorm_shares_state():
    import normgen.torch as ngt
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    bn = model[1]
    converted = ngt.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(converted[1]) is ngt.SyncBatchNorm
    assert converted[1].weight is bn.weight and converted[1].running_mean is bn.running_mean
