"""Time of one training step on CPU, measured side by side in one run.

Hidden 128, batch 64, length 256, input 10, output 9 at every step (cross-entropy), Adam.
A step is: zero_grad, forward, loss, backward, optimizer step. Candidates:

  nn.RNN      torch.nn.RNN(10, 128, nonlinearity='relu', batch_first=True) + nn.Linear (the baseline)
  BPTT        QORNN step (power iteration + STE-Björck, 15 iterations; 4-bit W and U with the STE;
              modReLU) whose recurrence is qornn.train.recurrence (hand-written backward-through-time)
  autograd    the same step with the recurrence as a Python time loop under autograd (the loop of
              QORNN.forward before it used `recurrence`)
  QORNN       qornn.train.QORNN as train/model.py has it now (with --model)
  QORNN QAT   qornn.train.QORNN with hidden-state QAT: act_bits=8, LSQ hidden scale, 8-bit inputs and V
              (the quantized recurrence kernel `qrecurrence`); always measured (issue 10's 1.5x target)

The candidates run interleaved (one step of each per round), after warm-up; the table gives the
median over the rounds and the ratio to nn.RNN. BPTT and autograd start from the same weights;
their first losses must agree bitwise (the recurrence's forward is the reference loop's).
Prints a Markdown table and writes it as the "## Training step" section of docs/benchmarks.md
(other sections are kept). --profile prints where the BPTT step spends its time.

    .venv/bin/python benchmarks/bench_training.py [--repeats 15] [--model] [--profile] [--no-write]

--epoch instead times the pMNIST epoch (section "pMNIST epoch"): hidden 170, batch 128, 784 steps of
one pixel, STE-Björck 4-bit, Adam, through qornn.train.trainer's own step (optimizer, clipping,
projections); a few hundred steps are timed and the epoch (ceil(60000 / 128) = 469 steps) and the
test pass are EXTRAPOLATED from their medians, and labelled so.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


from _docsection import write_section  # benchmarks/ is on sys.path when run as a script

from qornn.train.bjorck import bjorck, spectral_norm_estimate
from qornn.train.quantizers import fake_quantize
from qornn.train.recurrence import recurrence

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BATCH, LENGTH, INPUT, HIDDEN, OUTPUT = 64, 256, 10, 128, 9
BITS, BJORCK_ITERS, POWER_ITERS = 4, 15, 3
QAT = "qornn.train.QORNN, hidden-state QAT (8-bit h, LSQ)"


def autograd_loop(ux, W, b):
    """The reference: QORNN.forward's time loop, differentiated by autograd."""
    h = ux.new_zeros(ux.shape[0], W.shape[0])
    wt = W.t()
    hs = []
    for t in range(ux.shape[1]):
        z = h @ wt + ux[:, t]
        h = torch.sign(z) * torch.relu(z.abs() + b)
        hs.append(h)
    return torch.stack(hs, dim=1)


class QStep:
    """A QORNN training step (STE-Björck, 4-bit W and U, modReLU) with a pluggable recurrence."""

    def __init__(self, params: dict, loop):
        self.p = {k: nn.Parameter(v.clone()) for k, v in params.items()}
        self.u = params["power_u"].clone()
        del self.p["power_u"]
        self.loop = loop
        self.opt = torch.optim.Adam(self.p.values(), lr=1e-3)

    def loss(self, x, y):
        p = self.p
        sigma, u = spectral_norm_estimate(p["W"], POWER_ITERS, self.u)
        self.u.copy_(u)
        w = fake_quantize(bjorck(p["W"] / sigma.clamp_min(1e-12), BJORCK_ITERS), BITS)
        ux = x @ fake_quantize(p["U"], BITS).t()
        H = self.loop(ux, w, p["b"])
        logits = H @ p["V"].t() + p["c"]
        return F.cross_entropy(logits.reshape(-1, OUTPUT), y.reshape(-1))

    def __call__(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        loss.backward()
        self.opt.step()
        return loss


class RNNStep:
    def __init__(self):
        self.rnn = nn.RNN(INPUT, HIDDEN, nonlinearity="relu", batch_first=True)
        self.lin = nn.Linear(HIDDEN, OUTPUT)
        self.opt = torch.optim.Adam([*self.rnn.parameters(), *self.lin.parameters()], lr=1e-3)

    def __call__(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        out, _ = self.rnn(x)
        loss = F.cross_entropy(self.lin(out).reshape(-1, OUTPUT), y.reshape(-1))
        loss.backward()
        self.opt.step()
        return loss


class ModelStep:
    def __init__(self, **qat):
        from qornn.train import QORNN

        self.model = QORNN(INPUT, HIDDEN, OUTPUT, weight_bits=BITS, activation="modrelu", method="ste-bjorck",
                           bjorck_iters=BJORCK_ITERS, power_iters=POWER_ITERS, **qat)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def __call__(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x).reshape(-1, OUTPUT), y.reshape(-1))
        loss.backward()
        self.opt.step()
        return loss


def initial_params(g: torch.Generator) -> dict:
    return dict(
        W=torch.linalg.qr(torch.randn(HIDDEN, HIDDEN, generator=g))[0],
        U=(torch.rand(HIDDEN, INPUT, generator=g) * 2 - 1) / INPUT**0.5,
        V=(torch.rand(OUTPUT, HIDDEN, generator=g) * 2 - 1) / HIDDEN**0.5,
        c=torch.zeros(OUTPUT),
        b=torch.rand(HIDDEN, generator=g) * 0.02 - 0.01,
        power_u=F.normalize(torch.randn(HIDDEN, generator=g), dim=0),
    )


def profile_bptt(step, x, y) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step(x, y)
    phases = {}
    for _ in range(10):
        t = [time.perf_counter()]
        step.opt.zero_grad(set_to_none=True)
        p = step.p
        sigma, u = spectral_norm_estimate(p["W"], POWER_ITERS, step.u)
        w = fake_quantize(bjorck(p["W"] / sigma.clamp_min(1e-12), BJORCK_ITERS), BITS)
        ux = x @ fake_quantize(p["U"], BITS).t()
        t.append(time.perf_counter())
        H = recurrence(ux, w, p["b"])
        t.append(time.perf_counter())
        loss = F.cross_entropy((H @ p["V"].t() + p["c"]).reshape(-1, OUTPUT), y.reshape(-1))
        t.append(time.perf_counter())
        H.register_hook(lambda g: t.append(time.perf_counter()))  # head backward done
        w.register_hook(lambda g: t.append(time.perf_counter()))  # recurrence backward done
        loss.backward()
        t.append(time.perf_counter())
        step.opt.step()
        t.append(time.perf_counter())
        # chronological: start, weights, recurrence fwd, head+loss fwd, (hooks) head bwd, recurrence
        # bwd, rest of backward, Adam
        names = ["weights forward (power iteration, Björck, quantizers, x U^T)", "recurrence forward",
                 "output layer + loss forward", "output layer + loss backward", "recurrence backward",
                 "weights backward (Björck, quantizers, x U^T)", "Adam step"]
        for name, a, bb in zip(names, t, t[1:]):
            phases.setdefault(name, []).append(bb - a)
    lines = [f"| {name} | {min(v) * 1e3:.1f} |" for name, v in phases.items()]
    print("\nBPTT step, wall time by phase (min of 10, the least disturbed by other work):")
    print("\n".join(lines))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step(x, y)
    print("\nBPTT step, torch profiler over 3 steps:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return ["| phase of the BPTT step | min of 10, ms |", "|---|---:|", *lines]


def epoch_section(steps: int, hidden: int = 170, batch: int = 128, device: str = "cpu") -> str:
    """Time `steps` pMNIST training steps and 10 test batches; extrapolate one epoch and one test pass."""
    import math

    import numpy as np

    from qornn.train import QORNN
    from qornn.train.config import TrainConfig, steps_per_epoch
    from qornn.train.tasks import make_task
    from qornn.train.trainer import make_optimizer

    task = make_task("pmnist")
    try:
        task.data()
        data = "real MNIST (qornn data fetch mnist)"
    except Exception:  # noqa: BLE001 - no cache: synthetic images of the same shape time the same
        rng0 = np.random.default_rng(0)
        imgs = lambda n: rng0.integers(0, 256, (n, 784), dtype=np.uint8)  # noqa: E731
        task = make_task("pmnist", data=(imgs(60000), rng0.integers(0, 10, 60000), imgs(10000), rng0.integers(0, 10, 10000)))
        data = "synthetic images of MNIST's shape (no MNIST cache)"
    torch.manual_seed(0)
    model = QORNN(task.input_size, hidden, task.output_size, weight_bits=4, method="ste-bjorck",
                  output_mode=task.output_mode).to(device).train()
    cfg = TrainConfig(batch_size=batch)
    opt = make_optimizer(model, cfg)
    rng = np.random.default_rng(0)
    times, cpu, loads = [], [], [os.getloadavg()[0]]
    for i in range(steps + 3):
        t0, c0 = time.perf_counter(), time.process_time()
        x, y = task.batch(batch, rng)
        loss = task.loss(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    model.eval()
    eval_times = []
    with torch.no_grad():
        for x, _ in itertools.islice(task.eval_batches(batch), 10):
            t0 = time.perf_counter()
            model(x.to(device))
            eval_times.append(time.perf_counter() - t0)
    loads.append(os.getloadavg()[0])
    spe = steps_per_epoch(task, batch)
    med, ev, cmed = statistics.median(times), statistics.median(eval_times), statistics.median(cpu)
    test_batches = math.ceil(10000 / batch)
    return ("## pMNIST epoch\n\n"
            f"Permuted MNIST on {device.upper() if device == 'cpu' else device}: hidden {hidden}, batch {batch}, 784 steps "
            "of one pixel, STE-Björck (15 iterations) with 4-bit W and U, modReLU, Adam with gradient clipping "
            f"(`benchmarks/bench_training.py --epoch`; {data}; torch {torch.__version__}, {torch.get_num_threads()} "
            f"thread(s), {os.cpu_count()} CPUs).\n\n"
            "| what | measured | value |\n|---|---|---:|\n"
            f"| training step (batch + forward + backward + Adam) | median of {steps} steps | {med:.3f} s |\n"
            f"| CPU time of a training step (this process; ~ the wall time on a quiet machine) | median of {steps} "
            f"steps | {cmed:.3f} s |\n"
            f"| one epoch on a quiet machine | **extrapolated** from the CPU time | {spe * cmed / 60:.1f} min |\n"
            f"| test forward pass, batch {batch} | median of {len(eval_times)} batches | {ev:.3f} s |\n"
            f"| **one epoch = {spe} steps** | **extrapolated** from the median step | **{spe * med / 60:.1f} min** |\n"
            f"| one pass over the 10k test images ({test_batches} batches) | extrapolated | {test_batches * ev / 60:.1f} min |\n"
            f"| 5 epochs / 100 epochs (the paper's order of magnitude) | extrapolated | {5 * spe * med / 3600:.2f} h / "
            f"{100 * spe * med / 3600:.1f} h |\n\n"
            f"Min / max step: {min(times):.3f} / {max(times):.3f} s; 1-minute load average {loads[0]:.1f} at the start, "
            f"{loads[1]:.1f} at the end (2 cores shared with other work inflate the times). No GPU was lent to this "
            "session: `--device cuda` runs the same code (the recurrence's hand-written backward is device-agnostic, "
            "checkpoints store CPU tensors and the CUDA RNG state) but is untested here.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds timed (>= 10)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="2", help="torch thread counts, comma-separated (e.g. 2,1)")
    ap.add_argument("--model", action="store_true", help="also time qornn.train.QORNN as it is now")
    ap.add_argument("--no-autograd", action="store_true", help="skip the (slow) autograd-loop candidate")
    ap.add_argument("--profile", action="store_true", help="print where the BPTT step spends its time")
    ap.add_argument("--profile-threads", type=int, default=1,
                    help="thread count for --profile (1: least disturbed by other work on a shared machine)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--epoch", action="store_true", help="time the pMNIST epoch instead (section 'pMNIST epoch')")
    ap.add_argument("--epoch-steps", type=int, default=200, help="steps timed for --epoch (default 200)")
    ap.add_argument("--hidden", type=int, default=170, help="hidden units for --epoch (default 170)")
    ap.add_argument("--device", default="cpu", help="device for --epoch (default cpu)")
    ap.add_argument("--epoch-threads", type=int, default=1, help="torch threads for --epoch (default 1: on a "
                    "shared 2-core machine one thread is as fast and far less disturbed)")
    args = ap.parse_args(argv)
    if args.epoch:
        torch.set_num_threads(args.epoch_threads)
        section = epoch_section(args.epoch_steps, args.hidden, device=args.device)
        print(section)
        if not args.no_write:
            write_section(DOC, "pMNIST epoch", section)
        return 0
    if args.repeats < 10:
        ap.error("--repeats must be at least 10")
    thread_counts = [int(v) for v in args.threads.split(",")]

    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, LENGTH, INPUT, generator=g)
    y = torch.randint(0, OUTPUT, (BATCH, LENGTH), generator=g)
    params = initial_params(g)
    torch.manual_seed(0)
    cands = {"nn.RNN (relu) + Linear": RNNStep(), "QORNN, hand-written BPTT": QStep(params, recurrence)}
    if not args.no_autograd:
        cands["QORNN, autograd time loop"] = QStep(params, autograd_loop)
    if args.model:
        cands["qornn.train.QORNN (train/model.py now)"] = ModelStep()
    cands[QAT] = ModelStep(act_bits=8)

    if not args.no_autograd:  # same weights, same forward: the first losses agree bitwise
        l_bptt = cands["QORNN, hand-written BPTT"].loss(x, y)
        l_ref = cands["QORNN, autograd time loop"].loss(x, y)
        if not torch.equal(l_bptt, l_ref):
            raise SystemExit(f"BPTT loss {l_bptt.item()!r} != autograd-loop loss {l_ref.item()!r}")

    rows = ["| candidate | threads | median ms/step | min ms | ratio to nn.RNN (medians) |",
            "|---|---:|---:|---:|---:|"]
    loads = [os.getloadavg()[0]]
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for _ in range(args.warmup):
            for step in cands.values():
                step(x, y)
        times = {k: [] for k in cands}
        for _ in range(args.repeats):
            for k, step in cands.items():
                t0 = time.perf_counter()
                step(x, y)
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["nn.RNN (relu) + Linear"]
        for k in cands:
            rows.append(f"| {k} | {threads} | {med[k] * 1e3:.1f} | {min(times[k]) * 1e3:.1f} | {med[k] / base:.2f}x |")
        loads.append(os.getloadavg()[0])
    table = "\n".join(rows)
    env = (f"torch {torch.__version__}, {os.cpu_count()} CPUs ({platform.machine()}); per thread count, "
           f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds; 1-minute load "
           f"average {' / '.join(f'{v:.1f}' for v in loads)} (start / after each thread count)")
    print(table)
    print(env)

    profile = []
    if args.profile:
        torch.set_num_threads(args.profile_threads)
        profile = profile_bptt(cands["QORNN, hand-written BPTT"], x, y)

    if not args.no_write:
        busy = max(loads) > (os.cpu_count() or 1)
        section = ("## Training step\n\n"
                   f"One training step (forward, cross-entropy at every step, backward, Adam) on CPU: hidden "
                   f"{HIDDEN}, batch {BATCH}, length {LENGTH}, input {INPUT}, output {OUTPUT}; QORNN with "
                   f"STE-Björck ({BJORCK_ITERS} iterations, {POWER_ITERS} power iterations), {BITS}-bit W and U, "
                   "modReLU. `benchmarks/bench_training.py`; \"hand-written BPTT\" is "
                   "`qornn.train.recurrence.recurrence`, \"autograd time loop\" the loop it replaces; "
                   "\"hidden-state QAT\" is the model with `act_bits=8` (every step's hidden state on "
                   "8-bit codes with the spec's rounding and saturation, LSQ hidden scale, 8-bit inputs "
                   "and V): the quantized kernel `qornn.train.recurrence.qrecurrence`.\n\n"
                   f"{table}\n\n{env}."
                   + (" The load exceeded the CPU count: other work shared the cores, which inflates the "
                      "absolute times (with 2 threads most, as each small matmul waits for both threads); "
                      "the interleaved ratios are the meaningful numbers." if busy else "")
                   + ("\n\n" + "\n".join(profile) + f"\n\n(phases of the BPTT step, {args.profile_threads} thread(s))"
                      if profile else "") + "\n")
        write_section(DOC, "Training step", section)
        print(f"wrote the Training step section of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
