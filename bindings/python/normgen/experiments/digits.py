"""The digits experiments (see the package docstring)."""
from __future__ import annotations

import argparse
import csv
import os
import time

import numpy as np
import torch
from torch import nn

import normgen as ng
import normgen.torch as ngt

F = nn.functional
HIDDEN = 128


def load_digits_split(seed=0, test_fraction=0.2):
    """scikit-learn's digits, split per class (stratified), pixels min-max scaled to
    [0, 1] with normgen's MinMax fit on the training part: float32 tensors
    (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(digits.data.astype(np.float32), digits.target, test_size=test_fraction,
                                              stratify=digits.target, random_state=seed)
    scaler = ng.MinMax().fit(x_tr)
    return (torch.from_numpy(scaler.transform(x_tr)), torch.from_numpy(y_tr).long(),
            torch.from_numpy(scaler.transform(x_te)), torch.from_numpy(y_te).long())


def _norm(kind, width):
    return {
        "none": lambda: nn.Identity(),
        "batch_norm": lambda: ngt.BatchNorm1d(width),
        "layer_norm": lambda: ngt.LayerNorm(width),
        "group_norm": lambda: ngt.GroupNorm(8, width),
        "rms_norm": lambda: ngt.RMSNorm(width),
    }[kind]()


def mlp(kind, seed):
    """64 -> 128 -> 128 -> 10, each hidden layer Linear -> norm -> ReLU."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, HIDDEN), _norm(kind, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, HIDDEN), _norm(kind, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def evaluate(model, x, y, batch_size=None, batch_stats=False):
    """(loss, accuracy) on (x, y); batch_stats: BatchNorm normalizes each test batch with
    its own statistics (train-mode forward, running statistics left untouched)."""
    was_training = model.training
    saved = {k: v.clone() for k, v in model.state_dict().items()} if batch_stats else None
    model.train(batch_stats)
    losses, correct, n = 0.0, 0, 0
    bs = batch_size or len(x)
    with torch.no_grad():
        for i in range(0, len(x), bs):
            xb, yb = x[i:i + bs], y[i:i + bs]
            if batch_stats and len(xb) < 2:
                continue
            out = model(xb)
            losses += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
            n += len(xb)
    if saved is not None:
        model.load_state_dict(saved)
    model.train(was_training)
    return losses / n, correct / n


def train(model, data, epochs, batch_size, lr, seed, on_epoch=None):
    """Adam over shuffled minibatches (the last incomplete one dropped: BatchNorm needs
    two samples); calls on_epoch(epoch, train_loss) after each epoch."""
    x_tr, y_tr = data[0], data[1]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(x_tr), generator=g)
        total, seen = 0.0, 0
        for i in range(0, len(x_tr) - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        if on_epoch:
            on_epoch(epoch, total / seen)
    return model


# ---- the experiments ------------------------------------------------------------------

def exp_norms(data, quick, seed):
    epochs = 6 if quick else 30
    kinds = ["none", "batch_norm", "layer_norm"] if quick else ["none", "batch_norm", "layer_norm", "group_norm",
                                                                "rms_norm"]
    rows = []
    for kind in kinds:
        model = mlp(kind, seed)

        def log(epoch, train_loss, kind=kind, model=model):
            test_loss, acc = evaluate(model, data[2], data[3])
            rows.append({"norm": kind, "epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
                         "test_accuracy": acc})

        train(model, data, epochs, batch_size=32, lr=1e-2, seed=seed, on_epoch=log)
    return rows


def exp_batch_size(data, quick, seed):
    epochs = 3 if quick else 10
    sizes = [2, 64] if quick else [2, 4, 8, 16, 64]
    rows = []
    for bs in sizes:
        for kind in ["batch_norm", "group_norm", "layer_norm"]:
            model = mlp(kind, seed)

            def log(epoch, train_loss, kind=kind, model=model, bs=bs):
                test_loss, acc = evaluate(model, data[2], data[3])
                rows.append({"batch_size": bs, "norm": kind, "epoch": epoch, "train_loss": train_loss,
                             "test_loss": test_loss, "test_accuracy": acc})

            # The same number of epochs each; Adam's step scaled with sqrt(batch size).
            train(model, data, epochs, batch_size=bs, lr=1e-3 * (bs / 16) ** 0.5, seed=seed, on_epoch=log)
    return rows


def exp_inference_stats(data, quick, seed):
    epochs = 4 if quick else 15
    test_sizes = [360, 16, 2]
    rows = []
    model = mlp("batch_norm", seed)

    def log(epoch, train_loss):
        _, acc = evaluate(model, data[2], data[3])
        rows.append({"epoch": epoch, "statistics": "running", "test_batch_size": len(data[2]),
                     "test_accuracy": acc})
        for bs in test_sizes:
            _, acc = evaluate(model, data[2], data[3], batch_size=bs, batch_stats=True)
            rows.append({"epoch": epoch, "statistics": "batch", "test_batch_size": bs, "test_accuracy": acc})

    train(model, data, epochs, batch_size=32, lr=1e-2, seed=seed, on_epoch=log)
    return rows


EXPERIMENTS = {"norms": exp_norms, "batch_size": exp_batch_size, "inference_stats": exp_inference_stats}


# ---- output ---------------------------------------------------------------------------

def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _plot(name, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if name == "norms":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for kind in dict.fromkeys(r["norm"] for r in rows):
            rs = [r for r in rows if r["norm"] == kind]
            axes[0].plot([r["epoch"] for r in rs], [r["train_loss"] for r in rs], label=kind)
            axes[1].plot([r["epoch"] for r in rs], [r["test_accuracy"] for r in rs], label=kind)
        axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log", title="MLP on digits, Adam lr 1e-2")
        axes[1].set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    elif name == "batch_size":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        last = max(r["epoch"] for r in rows)
        for kind in dict.fromkeys(r["norm"] for r in rows):
            rs = [r for r in rows if r["norm"] == kind and r["epoch"] == last]
            axes[0].plot([r["batch_size"] for r in rs], [r["test_accuracy"] for r in rs], "o-", label=kind)
            axes[1].plot([r["batch_size"] for r in rs], [r["test_loss"] for r in rs], "o-", label=kind)
        sizes = sorted({r["batch_size"] for r in rows})
        for ax, what in zip(axes, ("test accuracy", "test loss")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(s) for s in sizes])
            ax.minorticks_off()
            ax.set(xlabel="batch size", ylabel=what, title=f"{what} after {last} epochs")
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in dict.fromkeys((r["statistics"], r["test_batch_size"]) for r in rows):
            rs = [r for r in rows if (r["statistics"], r["test_batch_size"]) == key]
            ax.plot([r["epoch"] for r in rs], [r["test_accuracy"] for r in rs],
                    label=f"{key[0]} statistics" + (f", test batch {key[1]}" if key[0] == "batch" else ""))
        ax.set(xlabel="epoch", ylabel="test accuracy", title="BatchNorm at inference: running vs batch statistics")
    for ax in np.atleast_1d(fig.axes):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(names=None, out_dir="experiments_out", quick=False, seed=0, verbose=True):
    """Run the named experiments (default: all); returns {name: rows} and writes
    ``<out_dir>/<name>.csv`` and ``.png``."""
    os.makedirs(out_dir, exist_ok=True)
    data = load_digits_split(seed)
    results = {}
    for name in names or list(EXPERIMENTS):
        t0 = time.perf_counter()
        rows = EXPERIMENTS[name](data, quick, seed)
        _write_csv(os.path.join(out_dir, f"{name}.csv"), rows)
        _plot(name, rows, os.path.join(out_dir, f"{name}.png"))
        results[name] = rows
        if verbose:
            print(f"{name}: {len(rows)} rows in {time.perf_counter() - t0:.1f} s -> {out_dir}/{name}.csv, .png")
            print(summary(name, rows))
    return results


def summary(name, rows):
    """A few lines of the result, for the terminal and the README."""
    last = max(r["epoch"] for r in rows)
    final = [r for r in rows if r["epoch"] == last]
    if name == "norms":
        return "\n".join(f"  {r['norm']:>10}: test accuracy {r['test_accuracy']:.3f}, training loss "
                         f"{r['train_loss']:.4f} after {last} epochs" for r in final)
    if name == "batch_size":
        return "\n".join(f"  batch {r['batch_size']:>3} {r['norm']:>10}: test accuracy {r['test_accuracy']:.3f}"
                         for r in final)
    return "\n".join(f"  {r['statistics']:>7} statistics, test batch {r['test_batch_size']:>3}: test accuracy "
                     f"{r['test_accuracy']:.3f}" for r in final)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m normgen.experiments", description=__doc__)
    p.add_argument("experiments", nargs="*", choices=[*EXPERIMENTS, []], help="default: all")
    p.add_argument("--out", default="experiments_out", help="directory for the CSV and PNG files")
    p.add_argument("--quick", action="store_true", help="the reduced run CI uses (fewer epochs and variants)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, ng.num_threads()))
    run(args.experiments or None, args.out, args.quick, args.seed)
    return 0
