"""The default settings of `qornn train --task T`: for each task, the recipe that trains it.

One learning rate and a Haar init for every task left the copy task at T0 = 1000 on its memoryless
plateau, in full precision as well as at 5 bits (docs/results.md). What made it learn, measured on
a 2-core CPU (docs/results.md, "Copy task"):

- q(W) must start orthogonal: a grid init (train/inits.py) -- a signed permutation, exact on the
  narrow-range code grid at 2..8 bits (Hadamard at 1 bit);
- W barely moves: its own learning rate 1e-5 (Adam 2e-3 elsewhere), as projUNN and expRNN give
  the orthogonal matrix a far smaller rate than the rest (projUNN: lr / 32; expRNN: lr / 10);
- the blank symbol drives nothing: column 0 of U is zero and stays zero (``null_input``, like
  nn.Embedding's padding_idx). Otherwise the ~1000 blanks of a sequence add up along the cycles of
  the permutation and saturate 16-20 % of an 8-bit hidden state before anything is learned
  (a linear read-out of the untrained integer network then recalls 0.13 instead of 1.00);
- the read-out starts at zero (the loss starts at ln 9, not at 3.4: with a Kaiming-normal V the
  5-bit run was still at loss 1.5 after 200 steps, with V = 0 at 0.021) and gradients are not
  clipped;
- the rates drop tenfold after 2,500 steps: at a constant 2e-3 a run that had reached recall
  1.000 fell back to 0.92 and 0.986 for a while (spikes of Adam without clipping).

A value given on the command line always wins over the recipe; `--recipe none` gives the
trainer's historical defaults for every task. The recipe is resolved once, before training, and
its values are stored in the run like any option, so `--resume` needs nothing from here.
"""

from __future__ import annotations

from qornn.errors import QornnError

RECIPE_CHOICES = ("task", "none")

# option (as `qornn train`'s dest) -> value, per task; grid-dependent choices are made in `recipe`
RECIPES: dict[str, dict] = {
    "copy": {
        "hidden": 128, "recurrent_init": "grid", "narrow_range": "grid", "input_init": "kaiming-normal",
        "output_init": "zeros", "null_input": 0, "lr": 2e-3, "orth_lr": 1e-5, "clip_grad": 0.0,
        "steps": 4000, "lr_schedule": "step", "lr_decay_every": 2500, "lr_decay": 0.1,
    },
    # pMNIST (docs/results.md): the paper's size, a grid init, the read-out fitted before training
    # (a ridge read-out of the untrained 4-bit integer network already classifies 0.83), warm-up so
    # that Adam's first steps keep that fit, W at a tenth of the rate (expRNN's ratio)
    "pmnist": {
        "hidden": 170, "recurrent_init": "grid", "narrow_range": "grid", "input_init": "kaiming-normal",
        "readout_init": "lstsq", "lr_warmup": 200, "lr": 1e-3, "orth_lr": 1e-4, "batch_size": 128, "epochs": 2,
    },
}


# options that only make sense together: one given by the user drops the recipe's others
GROUPS = (("lr_schedule", "lr_decay_every", "lr_decay"), ("steps", "epochs"))


def recipe(task: str, given: dict, which: str = "task") -> dict:
    """The recipe's value of every option the user did not give (`given`: dest -> value or None)."""
    if which not in RECIPE_CHOICES:
        raise QornnError(f"unknown recipe {which!r}; choose one of {', '.join(RECIPE_CHOICES)}")
    if which == "none" or task not in RECIPES:
        return {}
    out = {k: v for k, v in RECIPES[task].items() if given.get(k) is None}
    for group in GROUPS:
        if any(given.get(k) is not None for k in group):
            for k in group:
                out.pop(k, None)
    wbits = given.get("recurrent_bits") or given.get("weight_bits") or 4
    hidden = given.get("hidden") or out.get("hidden", 64)
    if out.get("recurrent_init") == "grid":
        # a signed permutation is exact from 2 bits; at 1 bit only a Hadamard matrix is
        out["recurrent_init"] = ("permutation" if wbits >= 2 else
                                 "hadamard" if not hidden & (hidden - 1) else "orthogonal")
    if out.get("narrow_range") == "grid":
        out["narrow_range"] = wbits >= 2 and (given.get("input_weight_bits") or wbits) >= 2 \
            and (given.get("output_bits") or 2) >= 2
    return out
